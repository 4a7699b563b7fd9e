"""The core of a labeling task: the task, answer parsing and prompt rendering (no heavy imports)."""
