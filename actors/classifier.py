"""Classifier (profile ``cls``): whole frames -> top-k labels, in place of detector + FER.

It publishes ``Detections`` with no faces and the labels, so the aggregator,
recorder and display treat it like any other frame.
"""
from __future__ import annotations

import time
from typing import Annotated, List, Tuple

from msgspec import Meta

from edgepipe.actors.frame_stage import FrameStage, decode_image
from edgepipe.actors.runtime.engines import EngineHost, EngineSettings
from edgepipe.actors.runtime.settings import Section
from edgepipe.bus.messages import Detections, EncodedFrame
from edgepipe.bus.sockets import Bus
from edgepipe.models.registry import image_classifier
from edgepipe.models.spec import ModelSpec


class ClassifierConfig(Section):
    """The whole-frame classifier (profile cls)."""

    top_k: Annotated[int, Meta(ge=1, le=100, description="the classes reported per frame, best first")] = 5
    birds_only: Annotated[bool, Meta(description="keep ImageNet's bird classes only")] = False



class Classifier(FrameStage):
    kind = "classifier"

    def __init__(self, name: str, bus: Bus, *, engine: EngineSettings, model: ModelSpec, top_k: int = 5,
                 birds_only: bool = False, **kw) -> None:
        options = {"birds_only": True} if birds_only else {}
        host = EngineHost(engine, model, name, lambda e: image_classifier(model, e, top_k=top_k, **options))
        super().__init__(name, bus, host=host, **kw)
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
