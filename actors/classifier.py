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
    top_k: Annotated[int, Meta(ge=1, le=100)] = 5
    birds_only: bool = False  # keep ImageNet's bird classes only (profile cls)
    hwm: Hwm = 4
    freshest: bool = True  # drop stale frames (counted) and work on the newest
    depth: Annotated[int, Meta(ge=1, le=8)] = 2  # frames worked on at once (pre/post overlap the invoke)
    invoke_timeout_ms: TimeoutMs = 2000.0  # watchdog: reload a stuck engine



class Classifier(FrameStage):
    role = "classifier"

    def __init__(self, name: str, bus: Bus, section: ClassifierConfig, endpoints: Endpoints, context: Context,
                 models: RoleModels) -> None:
        model = models.model
        options = {"birds_only": True} if section.birds_only else {}
        host = EngineHost(models.engine, model, name,
                          lambda e: image_classifier(model, e, top_k=section.top_k, **options))
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
                                       [], 0, [(label, float(p)) for label, p in labels]))
