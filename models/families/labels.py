"""Expression label names and their canonical forms.

Models disagree on spelling ("fear" / "fearful", "surprise" / "surprised");
results are compared on the canonical name.
"""
from __future__ import annotations

from typing import List

# The canonical order used by the synthetic source and by truth records.
EXPRESSIONS: List[str] = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

_SYNONYMS = {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "scared": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "calm": "neutral",
}


def canonical(label: str) -> str:
    key = label.strip().lower()
    return _SYNONYMS.get(key, key)
