"""Engines: the interface (``engine``), the settings of each engine kind (``kinds``), LiteRT on
the CPU and the Edge TPU (``litert``), the fake Edge TPU (``fake``), devices with one owner.
"""
