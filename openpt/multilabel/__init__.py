"""Multi-label classification through prompts: per-label scoring, thresholds, metrics, BCE training."""
