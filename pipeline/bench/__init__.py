"""``python run.py bench ...``: models alone, the whole pipeline, the bus, the detectors;
their tables, reports and charts. The CPU comparison with the serial loop is in ``cpu/``.
"""
