"""The message bus: the only package that knows ZeroMQ and the wire format (msgspec msgpack).

``messages`` (the typed messages, one tagged union), ``codec`` (their frames), ``channel`` and
``sockets`` (typed sockets with explicit high-water marks, waiting on several at once), ``rundir``
(where ``ipc://`` endpoints live), ``control`` (the link between the main process and its groups),
``curve`` (CurveZMQ keys), ``raw`` (bare pyzmq sockets for the benchmarks that measure against it)."""
