"""Loss accounting for one actor: frames lost in transport, end of stream, messages refused.

A PUB link numbers its messages; the receiving channel counts the gaps
(``Channel.lost``). ``LossLedger.account`` turns new gaps into ``transport``
drops; ``end_of_stream`` also counts the messages the sender says it sent
(``Eos.sent``) that never arrived. ``rejected`` sums what the actor's channels
refused (bad messages), by reason.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from edgepipe.actors.runtime.stats import Stats
from edgepipe.bus.messages import Eos
from edgepipe.bus.sockets import Channel


class LossLedger:
    def __init__(self, stats: Stats, channels: List[Channel], log: Any = None) -> None:
        self.stats = stats
        self.channels = channels  # the actor's own list: channels opened later are counted too
        self.log = log if log is not None else logging.getLogger("edgepipe.loss")
        self.eos_received = False
        self._seen: Dict[Any, int] = {}

    def account(self, ch: Channel, kind: str) -> None:
        """Count as dropped the ``kind`` messages a PUB link lost on the way to ``ch``."""
        lost = ch.lost.get(kind, 0)
        seen = self._seen.get((id(ch), kind), 0)
        if lost > seen:
            self.stats.drop("transport", lost - seen)
            self._seen[(id(ch), kind)] = lost

    def end_of_stream(self, ch: Channel, kind: str, eos: Eos) -> bool:
        """Handle an end-of-stream message; True the first time.

        The sender tells how many ``kind`` messages it sent (``eos.sent``);
        those that never arrived were lost in transport and are counted.
        """
        self.account(ch, kind)
        if self.eos_received:
            return False
        self.eos_received = True
        if eos.sent > ch.seen(kind):
            self.stats.drop("transport", eos.sent - ch.seen(kind))
        self.log.debug("end of stream after frame %s", eos.last_frame_id)
        return True

    def rejected(self) -> Dict[str, int]:
        """Messages the channels refused, by reason."""
        out: Dict[str, int] = {}
        for ch in self.channels:
            for reason, n in ch.rejected.items():
                out[reason] = out.get(reason, 0) + n
        return out
