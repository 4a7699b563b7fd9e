"""Training students from LLM labels: distillation, weak-to-strong, symbol tuning."""
