"""Trustworthy numbers from imperfect labels.

- `llmlabel.stats.estimate`: label shares and regression coefficients from LLM labels on every row plus gold labels on
  a small sample, with valid 95% intervals: naive LLM counting (biased; shown for contrast), classical (gold only),
  PPI++ (prediction-powered inference with power tuning), DSL (design-based supervised learning) and an active
  variant (gold drawn with probabilities tilted toward uncertain rows, weighted back).
- `llmlabel.stats.audit`: rank the rows of a labeled dataset by how likely their label is wrong (cross-fitted cheap
  classifiers through cleanlab, calibrated LLM probabilities, and their ensemble) -> suspects.jsonl.
- `llmlabel.stats.recipes`: the `estimate` and `audit` recipe kinds; `llmlabel.stats.cli`: their commands.

Everything here imports numpy only at load time.
"""
