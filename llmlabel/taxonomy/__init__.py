"""TnT-LLM taxonomy induction (Wan et al. 2024): summarize, propose, update and review a label taxonomy."""
