"""Simulated upstream backends, speaking their real wire protocols (used by tests and `egw dev`)."""
