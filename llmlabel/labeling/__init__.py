"""The labeling engine: rows -> prompts -> backend -> labels with probabilities (see `labeler.Labeler`)."""
