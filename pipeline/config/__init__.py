"""The config: typed sections (``sections``), loading and overlaying ``config.toml`` with
command-line overrides (``loading``), errors that name the key (``errors``), MQTT options.
"""
