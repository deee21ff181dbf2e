"""Wiring: typed config, the in-process runner, the command line."""
