"""Diagnostics of a run's output (motion integrity); read-only tools, never on a stage's hot path."""
