"""Actors that watch the pipeline: the metrics hub every actor reports to, and the machine's
sensors (CPU, memory, a Pi's temperature and power).
"""
