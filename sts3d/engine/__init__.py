"""Engine: the training loops, evaluation, distributed helpers, checkpoints on disk and run logs."""
