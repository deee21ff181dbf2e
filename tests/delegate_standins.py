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


# -- stand-ins that return a delegate (a real TfLiteDelegate struct, built with ctypes) ---------------------
# The runtime's Interpreter applies each delegate with ModifyGraphWithDelegate(pointer), which calls the
# struct's Prepare. ``works`` claims no node (the model runs on the runtime's own kernels: give it a CPU
# model file); ``crash_with_model`` loads fine and kills the process once an interpreter is built with a
# model, as a runtime built for TF 2.12 or newer does with libedgetpu 16.0. Each stand-in first writes
# the device it was asked for to $EDGEPIPE_STANDIN_OPENED (when set): a test that must not open the device
# checks that the file stays absent.
import ctypes  # noqa: E402

PREPARE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class _TfLiteDelegate(ctypes.Structure):
    _fields_ = [("data_", ctypes.c_void_p), ("Prepare", PREPARE), ("CopyFromBufferHandle", ctypes.c_void_p),
                ("CopyToBufferHandle", ctypes.c_void_p), ("FreeBufferHandle", ctypes.c_void_p),
                ("flags", ctypes.c_int64), ("opaque_delegate_builder", ctypes.c_void_p)]


class StandInDelegate:
    """What ``load_delegate`` returns, as far as the Interpreter uses it."""

    def __init__(self, prepare):
        self._prepare = PREPARE(prepare)  # kept alive as long as the delegate
        self._struct = _TfLiteDelegate(None, self._prepare, None, None, None, 0, None)

    def _get_native_delegate_pointer(self):
        return ctypes.addressof(self._struct)


def _mark(options):
    path = os.environ.get("EDGEPIPE_STANDIN_OPENED")
    if path:
        with open(path, "a") as fh:
            fh.write("opened %s\n" % options.get("device", ""))


def works(library, options):
    """A delegate that loads and lets the model run (it takes over no node)."""
    _mark(options)
    return StandInDelegate(lambda context, delegate: 0)  # kTfLiteOk


def _segv(context, delegate):
    os.kill(os.getpid(), signal.SIGSEGV)
    return 1


def crash_with_model(library, options):
    """A delegate that loads, then kills the process when the interpreter is built with a model."""
    _mark(options)
    return StandInDelegate(_segv)
