"""The actors: the stages of the frame path here (capture, encoder, detector, fer, classifier,
aggregator); the actor runtime in ``runtime/``, frame sources in ``sources/``, sinks in ``sinks/``,
the metrics hub and the machine's sensors in ``monitoring/``.
"""
