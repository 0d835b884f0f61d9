"""Benchmark harness for semi-supervised learning with variational autoencoders."""

__version__ = "0.1.0"
