"""Data: image and video datasets, frame sampling, clip transforms and the synthetic embedded default."""
