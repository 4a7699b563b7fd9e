"""Lightweight text classifiers: retrieval and linear baselines, and students distilled from LLM labels."""
