"""The trained re-ranker: slot memory, scorer, model, checkpoints, and its runtime in a memory."""
