"""Classifier (profile ``cls``): whole frames -> top-k labels, in place of detector + FER.

It publishes ``Detections`` with no faces and the labels, so the aggregator,
recorder and display treat it like any other frame.
"""
from __future__ import annotations

import time
from typing import Annotated, List, Tuple

from msgspec import Meta

from edgepipe.actors.frame_stage import FrameStage, decode_image
from edgepipe.actors.runtime.context import Context, Endpoints, RoleModels
from edgepipe.actors.runtime.engines import EngineHost
from edgepipe.actors.runtime.settings import Hwm, Section, TimeoutMs
from edgepipe.bus.messages import Detections, EncodedFrame
from edgepipe.bus.sockets import Bus
from edgepipe.models.registry import image_classifier
from edgepipe.models.spec import ModelSpec


class ClassifierConfig(Section):
    """The whole-frame classifier (profile cls)."""

    top_k: Annotated[int, Meta(ge=1, le=100, description="the classes reported per frame, best first")] = 5
    birds_only: Annotated[bool, Meta(description="keep ImageNet's bird classes only")] = False
    hwm: Annotated[int, Meta(ge=1, le=10000, description="encoded frames queued for the classifier")] = 4
    freshest: Annotated[bool, Meta(description="with a live source, drop stale frames (counted) and classify the "
                                               "newest")] = True
    depth: Annotated[int, Meta(ge=1, le=8, description="frames worked on at once: one is pre/post-processed "
                                                       "while another is on the device")] = 2
    invoke_timeout_ms: Annotated[float, Meta(ge=1, le=600000, description="watchdog: an invoke that takes "
                                             "longer is abandoned and the engine reloaded")] = 2000.0


class Classifier(FrameStage):
    role = "classifier"

    def __init__(self, name: str, bus: Bus, section: ClassifierConfig, endpoints: Endpoints, context: Context,
                 models: RoleModels) -> None:
        model = models.model
        options = {"birds_only": True} if section.birds_only else {}
        host = EngineHost(models.engine, model, name,  # e.model: the role's model, or its fallback's
                          lambda e: image_classifier(e.model, e, top_k=section.top_k, **options),
                          fallback=models.fallback_of())
        super().__init__(name, bus, section, endpoints, context, host)
        self.model = model

    async def setup(self) -> None:
        await super().setup()
        # its labels now: a labels file that is missing can never work, and must stop the start, not each frame
        await self.host.call(lambda: getattr(self.host.model, "labels", None))

    def work(self, msg: EncodedFrame) -> List[Tuple[str, float]]:
        image = decode_image(msg)
        with self.host.lend() as model:
            return model.classify(image)

    async def publish(self, msg: EncodedFrame, labels: List[Tuple[str, float]]) -> None:
        await self.pub.send(Detections(msg.frame_id, msg.t_capture, time.monotonic(), msg.width, msg.height,
                                       [], 0, [(label, float(p)) for label, p in labels], camera=msg.camera))
