"""The message bus: the only package that knows ZeroMQ and msgpack."""
