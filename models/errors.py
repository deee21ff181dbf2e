"""The models' error, apart from the engine interface so that every module of ``models`` can raise it."""


class EngineError(RuntimeError):
    """A model or engine problem with a message meant for the user."""

    user_facing = True  # reported as a one-line error, without a traceback
