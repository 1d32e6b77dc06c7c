"""Hyperparameter sweeps of the course's numpy MLP on facial-expression images."""

__version__ = "0.1.0"
