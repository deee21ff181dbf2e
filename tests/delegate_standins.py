"""Stand-in Edge TPU delegate loaders for the probe tests (``EDGEPIPE_DELEGATE_LOADER``).

They run inside the real probe subprocess in place of the runtime's
``load_delegate(library, options)`` and fail the way a mismatched runtime does.
"""
import os
import signal


def crash_segv(library, options):
    """Die like tflite-runtime >= 2.12 loading libedgetpu 16.0: a segmentation fault."""
    os.kill(os.getpid(), signal.SIGSEGV)


def crash_abort(library, options):
    """Die by an abort (a failed C++ check)."""
    os.abort()


def refuse(library, options):
    """Fail the Python way: load_delegate raises ValueError when no device answers."""
    raise ValueError("Failed to load delegate from %s" % library)
