"""``python run.py bench fer112-align``: FER112's labels with BlazeFace keypoints against RetinaFace landmarks.

FER112 (MobileFaceNet) is trained on faces aligned by 5 landmarks. RetinaFace gives the five (eyes, nose,
mouth corners); BlazeFace gives eyes, nose and the mouth centre (and the ear tragions). Where RetinaFace's
file is missing, ``fd+fer112`` runs BlazeFace full range, whose faces carry 5 points with the mouth corners
estimated (``models/families/blazeface.py``). This measures, on every face of the shared photos that both
detectors find (matched by IoU >= 0.5), FER112's label with

- ``retinaface``: RetinaFace's five landmarks (the reference);
- ``blazeface-5``: BlazeFace's points with estimated mouth corners (what the pipeline runs);
- ``blazeface-4``: BlazeFace's eyes, nose and mouth centre fitted to the template's (``align.TEMPLATE_4``);

and counts the faces where each BlazeFace alignment gives RetinaFace's label, and, on the photos whose
name carries the expression (``0-f1-su-ph.jpg``: surprise ...), the labels that are right. Writes
``bench_fer112_align.json`` with the machine's description.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

from edgepipe.models import registry
from edgepipe.models.engines.engine import EngineError
from edgepipe.models.families.align import align_face
from edgepipe.models.families.family import to_model_pixels
from edgepipe.models.spec import iou
from edgepipe.models.store import manifest
from edgepipe.pipeline.bench.common import DEFAULT_OUT, machine_info, write_report
from edgepipe.pipeline.bench.detectors import assets_of

ALIGNMENTS = ("retinaface", "blazeface-5", "blazeface-4")
# the expression in a labelled photo's name, as FER112 names it
TRUTH = {"su": "surprised", "hao": "happy", "anc": "angry", "di": "disgust"}


def truth_of(image: str) -> Optional[str]:
    parts = os.path.splitext(image)[0].split("-")
    return TRUTH.get(parts[2]) if len(parts) == 4 else None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def measure(assets: str, model_paths: Sequence[str], threads: int = 1) -> Dict[str, Any]:
    """Per face: the three labels and their confidences; the agreement counts."""
    def load(name: str):
        spec = manifest.get(name)
        eng = registry.make_engine("cpu", spec, threads=threads, model_paths=model_paths)
        eng.load()
        return spec, eng

    _, ret_eng = retina = load("retinaface")
    _, blaze_eng = blaze = load("blazeface-full")
    fer_spec, fer_eng = load("fer112")
    try:
        retinaface = registry.face_detector(*retina)
        blazeface = registry.face_detector(*blaze)
        fer = registry.expression_model(fer_spec, fer_eng)
        faces: List[Dict[str, Any]] = []
        unmatched: List[Dict[str, Any]] = []  # RetinaFace's faces that BlazeFace does not find
        images = sorted(f for f in os.listdir(os.path.join(assets, "images")) if f.endswith((".jpg", ".png")))
        for image in images:
            frame = cv2.imread(os.path.join(assets, "images", image))
            if frame is None:
                continue
            ret_faces, blaze_faces = retinaface.detect(frame), blazeface.detect(frame)
            for r in ret_faces:
                best = max(blaze_faces, key=lambda b: iou(r.as_list(), b.as_list()), default=None)
                if best is None or iou(r.as_list(), best.as_list()) < 0.5 or not best.landmarks:
                    unmatched.append({"image": image, "box": [round(v) for v in r.as_list()[:4]]})
                    continue
                pts = np.asarray(best.landmarks, dtype=np.float32)
                four = np.concatenate([pts[:3], pts[3:].mean(axis=0, keepdims=True)])
                inputs = {"retinaface": fer.prepare(frame, r), "blazeface-5": fer.prepare(frame, best),
                          "blazeface-4": to_model_pixels(align_face(frame, four, (112, 112)), fer_spec)}
                row: Dict[str, Any] = {"image": image, "box": [round(v) for v in r.as_list()[:4]],
                                       "truth": truth_of(image)}
                for name, x in inputs.items():
                    lab = fer.classify(x)
                    row[name] = {"label": lab.label, "confidence": round(float(lab.confidence), 3)}
                faces.append(row)
    finally:
        for eng in (ret_eng, blaze_eng, fer_eng):
            eng.close()
    summary = {name: {"agree_with_retinaface": sum(f[name]["label"] == f["retinaface"]["label"] for f in faces),
                      "right": sum(f[name]["label"] == f["truth"] for f in faces if f["truth"]),
                      "labelled": sum(1 for f in faces if f["truth"])} for name in ALIGNMENTS}
    return {"faces": faces, "summary": summary, "count": len(faces), "unmatched": unmatched}


def render(result: Dict[str, Any]) -> str:
    lines = ["| image | face box | truth | " + " | ".join(ALIGNMENTS) + " |",
             "|---|---|---|" + "---|" * len(ALIGNMENTS)]
    for f in result["faces"]:
        lines.append("| %s | %s | %s | %s |" % (f["image"], ",".join(map(str, f["box"])), f["truth"] or "-",
                                                " | ".join("%s %.2f" % (f[a]["label"], f[a]["confidence"])
                                                           for a in ALIGNMENTS)))
    n = result["count"]
    lines.append("%d faces found by both detectors; %d RetinaFace faces that BlazeFace full range misses: %s"
                 % (n, len(result["unmatched"]), ", ".join("%s %s" % (u["image"], u["box"])
                                                           for u in result["unmatched"]) or "none"))
    for a in ALIGNMENTS:
        s = result["summary"][a]
        lines.append("%s: %d/%d faces agree with RetinaFace alignment; %d/%d labelled faces right"
                     % (a, s["agree_with_retinaface"], n, s["right"], s["labelled"]))
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    a = sub.add_parser("fer112-align", help="FER112 labels with BlazeFace keypoints vs RetinaFace landmarks "
                       "on the shared face photos")
    a.add_argument("--assets", help="folder with images/ and models/ (default ../shared/assets or $EDGEPIPE_ASSETS)")
    a.add_argument("--threads", type=int, default=1, help="CPU threads per model (default 1)")
    a.add_argument("--out", default=DEFAULT_OUT, help="output folder (default ./%s)" % DEFAULT_OUT)


def main_args(args: argparse.Namespace) -> int:
    assets = assets_of(args)
    if assets is None:
        return 2
    t0 = time.perf_counter()
    try:
        result = measure(assets, [os.path.join(assets, "models")], threads=args.threads)
    except EngineError as exc:  # a model file missing: RetinaFace's is published nowhere
        print("error: %s" % exc, file=sys.stderr)
        return 1
    result["machine"] = dict(machine_info(), cpu_model=cpu_model())
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print("bench fer112-align on %s (%s CPUs)" % (result["machine"]["cpu_model"] or "this CPU",
                                                  result["machine"]["cpu_count"]))
    print(render(result))
    write_report(args.out, "bench_fer112_align.json", result)
    return 0
