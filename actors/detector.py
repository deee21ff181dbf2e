"""Detector: encoded frames -> detections (PUB) and one FER job per frame with faces (PUSH).

The freshest frame wins for a live source (see ``frame_stage``). FER jobs of
a frame that is kept are never dropped: sending them waits for a free FER
worker, and that back-pressure makes this actor skip stale frames instead.
"""
from __future__ import annotations

import time
from typing import Annotated, Any, List, Optional, Tuple

import numpy as np
from msgspec import Meta

from edgepipe.actors.frame_stage import FrameStage, decode_image
from edgepipe.actors.runtime.context import Context, Endpoints, RoleModels
from edgepipe.actors.runtime.engines import EngineHost
from edgepipe.actors.runtime.settings import Hwm, Section, TimeoutMs
from edgepipe.bus.box import Box
from edgepipe.bus.messages import Detections, EncodedFrame, FaceJob
from edgepipe.bus.sockets import Bus
from edgepipe.models.families.boxes import Fit
from edgepipe.models.registry import expression_model, face_detector
from edgepipe.models.spec import ModelSpec


class DetectorConfig(Section):
    """The face detector."""

    score_threshold: Annotated[Optional[Annotated[float, Meta(ge=0.0, le=1.0)]], Meta(description=(
        "faces scoring at least this are kept; unset: each model's own threshold (its manifest's min_score, "
        "tuned by `python run.py bench detectors`, e.g. 0.6 for blazeface-full)"))] = None
    max_faces: Annotated[int, Meta(ge=1, le=256, description="at most this many faces per frame (after NMS)")] = 16
    hwm: Annotated[Hwm, Meta(description="encoded frames queued on its input")] = 4
    freshest: Annotated[bool, Meta(description=(
        "live sources: drop the frames that queued up while the engine was busy (counted) and detect on the "
        "newest"))] = True
    depth: Annotated[int, Meta(ge=1, le=8, description=(
        "frames worked on at once: one is pre- or post-processed while another is on the device"))] = 2
    invoke_timeout_ms: Annotated[TimeoutMs, Meta(description=(
        "watchdog: a detection that hangs this long is dropped and the engine reloaded"))] = 2000.0



class Detector(FrameStage):
    role = "detector"

    def __init__(self, name: str, bus: Bus, section: DetectorConfig, endpoints: Endpoints, context: Context,
                 models: RoleModels) -> None:
        model, fer_model = models.model, models.fer_model
        # the engine's model: the role's, or its fallback's after a fail-over (``engine.model`` is its spec)
        host = EngineHost(models.engine, model, name, lambda e: face_detector(
            e.model, e, score_threshold=section.score_threshold, max_faces=section.max_faces),
            fallback=models.fallback_of())
        super().__init__(name, bus, section, endpoints, context, host)
        self.facejobs_endpoint = endpoints.get("facejobs")
        self.jobs_hwm = context.fer_hwm
        self.model = model
        # the crop for the FER model is made here, where the full frame is
        self.cropper = expression_model(fer_model, None) if fer_model else None
        self.jobs = None

    async def setup(self) -> None:
        await super().setup()
        if self.cropper is not None and self.facejobs_endpoint:
            self.jobs = self.channel(self.bus.push(self.facejobs_endpoint, hwm=self.jobs_hwm, bind=True,
                                                   name=self.name + ".jobs"))

    def work(self, msg: EncodedFrame) -> Tuple[List[Box], List[Any], bool]:
        """The frame's faces and FER crops, and whether the encoder's input was used (else made here)."""
        with self.host.lend() as model:
            prepared = None
            # the encoder made the input of the role's model: after a fail-over to another one, it is made here
            if msg.tensor is not None and model.spec is self.model and tuple(msg.tensor.shape) == model.input.shape:
                prepared = (msg.tensor, Fit(*msg.fit))
            # the frame's pixels are needed for the FER crops, or to make the input here
            image = decode_image(msg) if self.jobs is not None or prepared is None else None
            faces = model.detect(image, prepared, (msg.width, msg.height))
        crops = [self.cropper.prepare(image, f) for f in faces] if self.jobs is not None else []
        return faces, crops, prepared is not None

    async def publish(self, msg: EncodedFrame, result: Tuple[List[Box], List[Any], bool]) -> None:
        faces, crops, ahead = result
        if ahead:
            self.stats.count("input_ahead")  # the encoder made the input: this frame's pre-processing overlapped
        elif msg.tensor is not None:
            self.stats.count("input_mismatch")  # an input for another model (a fail-over?): made here
        # the model's boxes go out as they are; their landmarks (which shaped the FER crop) are no field
        await self.pub.send(Detections(msg.frame_id, msg.t_capture, time.monotonic(), msg.width, msg.height,
                                       faces, len(crops), camera=msg.camera))
        self.stats.count("faces", len(faces))
        if self.jobs is not None and crops:  # the frame's faces as one job: one message, one batched invoke
            await self.jobs.send(FaceJob(msg.frame_id, 0, len(crops), msg.t_capture, np.stack(crops),
                                         camera=msg.camera))
            self.stats.count("jobs")
