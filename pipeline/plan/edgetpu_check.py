"""Is there an Edge TPU that runs this run's models? (``auto``'s question; ``pipeline/plan/placement.py``).

Nothing here opens the device without its claim: the delegate probe
(``models/engines/delegate_probe.py``) takes it first, without waiting, and a
device another process holds is reported with that process's pid.
"""
from __future__ import annotations

import ctypes
import glob
import os
from typing import Sequence, Tuple

from edgepipe import ROOT as REPO
from edgepipe.models.engines.claims import coral_usb_attached
from edgepipe.models.engines.delegate_probe import probe_once
from edgepipe.models.engines.litert import edgetpu_library
from edgepipe.pipeline.config.sections import Config


def edgetpu_present(python: str = "", models: Sequence[str] = ()) -> Tuple[bool, str]:
    """(found, why not): libedgetpu loads, a Coral shows on USB or PCIe, and in a throwaway probe process run
    by ``python`` (the TPU group's interpreter; default this one) the delegate loads and, for each of
    ``models`` (Edge TPU model files), an interpreter is built with it and invoked once: a runtime built for
    TF 2.12 or newer loads the delegate and crashes only there. Each probe first takes the device's claim
    without waiting; one another process holds is not opened, and the reason names that process. Never
    raises."""
    why = edgetpu_attached()
    if why:
        return False, why
    library = edgetpu_library()
    for model in list(models) or [""]:
        res = probe_once(library=library, model=model, python=python)
        if res.busy:
            return False, res.error
        if not res.ok:
            return False, "the Edge TPU %s: %s" % (
                "runtime fails %s" % os.path.basename(model) if model else "delegate does not load", res.error)
    return True, ""


def edgetpu_attached() -> str:
    """"" when libedgetpu loads and a Coral shows on USB or PCIe, else why not (nothing is opened)."""
    library = edgetpu_library()
    try:
        ctypes.CDLL(library)
    except OSError:
        return "the Edge TPU runtime (%s) is not installed" % library
    if not _coral_attached():
        return "no Coral on USB (1a6e:089a, 18d1:9302) or PCIe (/dev/apex_*)"
    return ""


def _coral_attached() -> bool:
    return bool(glob.glob("/dev/apex_*")) or coral_usb_attached()


def tpu_python(cfg: Config) -> str:
    """The interpreter of the group that runs the detector or the FER pool ("" = this one)."""
    for g in cfg.groups.values():
        if g.python and g.spawn and ({"detector", "fer"} & set(g.actors)):
            return g.python if os.path.isabs(g.python) else os.path.join(REPO, g.python)
    return ""
