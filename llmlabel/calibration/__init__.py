"""Calibration of label distributions: estimate the model's label prior in a context and divide it out."""
