"""Agent traces: the program/turn format, loaders for the shared real traces, and a synthetic
coding-agent generator."""
