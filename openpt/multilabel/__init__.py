"""Multi-label building blocks: metrics, dev-tuned thresholds and yes/no question scoring (used by :mod:`openpt.tasks.multi_label`)."""
