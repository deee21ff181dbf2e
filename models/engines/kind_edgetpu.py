"""The ``edgetpu`` engine kind: LiteRT with the Coral Edge TPU delegate (``[engine.edgetpu]``)."""
from __future__ import annotations

from typing import Annotated, ClassVar, List, Literal, Optional, Sequence

import msgspec
from msgspec import Meta

from edgepipe.models.engines.devices import DevicePool
from edgepipe.models.engines.engine import Engine, FaultCounter
from edgepipe.models.engines.kinds import EngineKind, Threads
from edgepipe.models.engines.litert import edgetpu_pool, make_litert_engine
from edgepipe.models.spec import ModelSpec


class EdgeTpuEngineSettings(EngineKind, tag="edgetpu"):
    """The LiteRT interpreter with the libedgetpu delegate, running the *_edgetpu.tflite model files."""

    rank: ClassVar[int] = 30

    devices: Annotated[List[str], Meta(description=(
        "one Edge TPU per entry: \"\" (the first found), \"usb:0\", \"usb:1\", \"pci:0\"; a process group's "
        "tpu key narrows it to that one"))] = msgspec.field(default_factory=lambda: [""])
    fallback: Annotated[Literal["", "cpu"], Meta(description=(
        "\"cpu\": run the CPU model when no Edge TPU is found (\"\": no Edge TPU is an error; a role "
        "that placement auto put on the Edge TPU always falls back to the CPU)"))] = ""
    threads: Annotated[int, Meta(ge=1, le=64, description=(
        "CPU threads of a model that runs on the CPU instead (the fallback, or a model with no Edge TPU "
        "file)"))] = 1

    def device_names(self) -> List[str]:
        return ["edgetpu:%s" % d for d in (self.devices or [""])]

    def open_pool(self) -> DevicePool:
        return edgetpu_pool(self.devices)

    def for_group(self, tpu: str) -> "EngineKind":
        return msgspec.structs.replace(self, devices=[tpu]) if tpu else self

    def for_auto(self) -> "EngineKind":
        """``auto`` chose the Edge TPU for the role: if it still does not load there (its probe fails, another
        process holds it), the role runs on the CPU with one warning line saying why, and the run goes on."""
        return msgspec.structs.replace(self, fallback="cpu")

    def build(self, spec: ModelSpec, *, model_paths: Sequence[str] = (),
              faults: Optional[FaultCounter] = None) -> Engine:
        return make_litert_engine("edgetpu", spec, threads=self.threads, device=(self.devices or [""])[0],
                                  fallback=self.fallback, model_paths=model_paths, open_pool=self.open_pool)
