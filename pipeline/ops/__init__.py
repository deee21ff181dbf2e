"""Ops tools: ``doctor``, the systemd service, the Python 3.9 TPU venv, CURVE keys, and
reading the machine.
"""
