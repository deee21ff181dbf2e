"""The message bus: the only package that knows ZeroMQ and the wire format (msgspec msgpack)."""
