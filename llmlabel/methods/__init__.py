"""Labeling methods that combine the LLM with labeled data beyond the prompt (kNN prompting, fusion, stacking)."""
