"""The display actor of ``--display web``: a ``Display`` that also feeds the live view's panels.

Besides drawing and serving the frames (``Display`` with a ``WebSink``), it
hands each result it shows to the sink (faces, latency; each camera's to its
tile), tells it when a camera's frames come and when its stream ends (the
tile shows a camera live, stalled or ended), and subscribes to the
pipeline's public metrics endpoint, where the metrics hub republishes every
actor's snapshot (those of other processes too), for the per-actor panel.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from edgepipe.actors.runtime.context import Context, Endpoints
from edgepipe.actors.runtime.tasks import first
from edgepipe.actors.sinks.display import Display, DisplayConfig, Sink
from edgepipe.bus.messages import Frame, Metric, Result
from edgepipe.bus.sockets import Bus


def is_web(spec: str) -> bool:
    """Whether a ``--display`` spec is the live view."""
    return spec == "web" or spec.startswith("web:")


class LiveView(Display):
    role = "display"

    def __init__(self, name: str, bus: Bus, section: DisplayConfig, endpoints: Endpoints, context: Context,
                 sink: Sink) -> None:
        super().__init__(name, bus, section, endpoints, context, sink)
        self.public_metrics_endpoint = endpoints.get("metrics", "")
        self.metrics_sub: Any = None
        setter = getattr(sink, "set_roles", None)
        if setter is not None:
            setter(dict(context.placement), context.order)

    async def setup(self) -> None:
        await super().setup()
        if self.public_metrics_endpoint and hasattr(self.sink, "on_metric"):
            self.metrics_sub = self.channel(self.bus.sub(self.public_metrics_endpoint, hwm=1000,
                                                         name=self.name + ".metrics", topics=("metric",)))

    async def run(self) -> None:
        if self.metrics_sub is None:
            await super().run()
            return
        await first(super().run(), self._feed_metrics())  # whichever ends first (by an error, say) ends both

    async def _feed_metrics(self) -> None:
        while True:
            m = await self.metrics_sub.recv()
            if isinstance(m, Metric):
                self.sink.on_metric(m)  # type: ignore[attr-defined]

    def frame_came(self, camera: str, frame: Frame) -> None:
        on_frame = getattr(self.sink, "on_frame", None)
        if on_frame is not None:
            on_frame(camera)

    def camera_ended(self, camera: str) -> None:
        on_end = getattr(self.sink, "on_camera_end", None)
        if on_end is not None:
            on_end(camera)

    async def _show(self, r: Result) -> None:
        on_result = getattr(self.sink, "on_result", None)
        if on_result is not None and r.frame_id in self.frames.get(r.camera, ()):
            on_result(r, self._fps(r.camera))  # the tile's figures go with the frame it shows
        await super()._show(r)
