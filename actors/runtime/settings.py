"""The base of every config section: a msgspec Struct that refuses unknown keys, and the value types
sections share. An actor's section is defined beside the actor (``DetectorConfig`` in
``actors/detector.py``) and the actor takes it whole; ``pipeline/config/sections.py`` puts them together
into ``Config``."""
from typing import Annotated

import msgspec
from msgspec import Meta

Hwm = Annotated[int, Meta(ge=1, le=10000, description="a socket's high-water mark (messages)")]
TimeoutMs = Annotated[float, Meta(ge=1, le=600000)]


class Section(msgspec.Struct, forbid_unknown_fields=True):
    """A table of the config: unknown keys are refused."""
