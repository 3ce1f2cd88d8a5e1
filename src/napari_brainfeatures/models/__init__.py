"""Neural networks: one file per model, plus self-describing checkpoints."""
