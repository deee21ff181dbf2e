"""The model manifest: every model the project knows, by name.

Model files are never committed. Each entry names its file per engine, its
sha256 and its sources in order of preference (see ``models/fetch.py``).

Python 3.9 compatible.
"""
from __future__ import annotations

from typing import Dict

from .engine import EngineError
from .labels import EXPRESSIONS
from .spec import ModelSpec, Normalization

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

MODELS: Dict[str, ModelSpec] = {}


def _add(spec: ModelSpec) -> None:
    MODELS[spec.name] = spec


_add(ModelSpec(
    name="coral-ssd-face",
    task="face_detection",
    family="ssd_postprocess",
    input_shape=(320, 320, 3),
    input_dtype="uint8",
    color="rgb",
    files={"cpu": "ssd_mobilenet_v2_face_quant_postprocess.tflite",
           "edgetpu": "ssd_mobilenet_v2_face_quant_postprocess_edgetpu.tflite"},
    tpu_ms=8.16,
    licence="Apache-2.0 (Coral test data)",
))

_add(ModelSpec(
    name="fer64",
    task="fer",
    family="square_crop",
    input_shape=(64, 64, 1),
    input_dtype="float32",
    color="gray",
    normalization=Normalization(mean=(127.5,), std=(127.5,)),
    labels=list(EXPRESSIONS),  # angry, disgust, fear, happy, sad, surprise, neutral
    files={"cpu": "emotion_model_quantized.tflite"},
    tpu_ms=6.47,
    licence="MIT (fer)",
    extra={"crop_margin": 0.2},
))

_add(ModelSpec(
    name="fer112",
    task="fer",
    family="square_crop",  # replaced by landmark alignment where the detector gives landmarks
    input_shape=(112, 112, 3),
    input_dtype="int8",
    input_scale=0.018667,
    input_zero_point=-14,
    color="rgb",
    normalization=Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    labels=["angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised"],
    files={"cpu": "facial_expression_recognition_mobilefacenet_2022july_full_integer_quant.tflite",
           "edgetpu": "facial_expression_recognition_mobilefacenet_2022july_full_integer_quant_edgetpu.tflite"},
    tpu_ms=4.97,
    licence="Apache-2.0 (OpenCV Zoo)",
    extra={"crop_margin": 0.1},
))


def get(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise EngineError("unknown model %r; known models: %s" % (name, ", ".join(sorted(MODELS)))) from None
