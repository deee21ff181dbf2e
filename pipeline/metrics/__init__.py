"""Reading a running pipeline's metrics: ``run.py metrics`` (a live table) and the
Prometheus exporter.
"""
