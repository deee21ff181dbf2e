"""Wiring: building the actors from the config, the runner, placement, the summary and the
command line; config in ``config/``, process groups in ``processes/``, benchmarks in ``bench/``,
metrics tools in ``metrics/``, ops tools (doctor, service, TPU venv, keys) in ``ops/``.
"""
