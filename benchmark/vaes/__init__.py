"""Trained VAEs: the on-disk cache, sharing across machines, and their MLflow runs."""
