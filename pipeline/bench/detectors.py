"""``python run.py bench detectors``: which face detector finds the faces, on the CPU.

For each candidate detector (default: every face detector whose CPU file is
found), on the annotated photos of ``tests/data/faces.json`` (the shared
assets' images, with every face boxed by hand):

- recall: annotated faces found (IoU >= 0.5 with a detection), over all
  faces, and over the group photos alone (``multi_face.jpg``,
  ``seed_image00/01.png``: several people, some a few metres away);
- false faces: detections that match no annotated face, on every photo,
  the face-free ones included;
- the same at the capture size the pipeline uses (each photo resized to
  640x480, as a camera frame would be; boxes scaled alike);
- frames with a face on a video with no face (``no_face.mp4``; goal <= 1%);
- speed: median milliseconds per ``detect()`` (letterbox, invoke, decode) on
  a 640x480 frame, 2 threads.

Results go to ``bench_detectors.json`` in ``--out`` with the machine's
description. The ranking is by group-photo recall at 640x480, then false
faces, then speed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepipe import ROOT as REPO
from edgepipe.models import registry
from edgepipe.models.spec import iou
from edgepipe.models.store import manifest
from edgepipe.models.store.fetch import file_for, locate
from edgepipe.pipeline.bench.common import DEFAULT_OUT, machine_info, write_report
from edgepipe.pipeline.bench.table import text_table

TRUTH = os.path.join(REPO, "tests", "data", "faces.json")
GROUP_PHOTOS = ("multi_face.jpg", "seed_image00.png", "seed_image01.png")
CAPTURE = (640, 480)
MATCH_IOU = 0.5


def default_assets() -> str:
    return os.environ.get("EDGEPIPE_ASSETS", os.path.join(os.path.dirname(REPO), "shared", "assets"))


def assets_of(args: argparse.Namespace) -> Optional[str]:
    """The assets folder a bench was given (--assets, else the default); None, said on stderr, without images/."""
    assets = args.assets or default_assets()
    if not os.path.isdir(os.path.join(assets, "images")):
        print("error: no images/ folder in %s (pass --assets DIR)" % assets, file=sys.stderr)
        return None
    return assets


def candidates(model_paths: Sequence[str]) -> List[str]:
    """Face detectors in the manifest whose CPU file is found here."""
    out = []
    for name, spec in sorted(manifest.MODELS.items()):
        if spec.task != "face_detection" or "cpu" not in spec.files:
            continue
        if locate(spec, file_for(spec, "cpu"), model_paths) is not None:
            out.append(name)
    return out


def match(truth: Sequence[Sequence[float]], found: Sequence[Sequence[float]]) -> Tuple[int, int]:
    """(true faces found, false detections): greedy one-to-one matching by IoU >= MATCH_IOU."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f = set(), set()
    for score, i, j in pairs:
        if score < MATCH_IOU:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
    return len(used_t), len(found) - len(used_f)


def _scaled(box: Sequence[float], sx: float, sy: float) -> List[float]:
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


def score_photos(detector: Any, images_dir: str, truth: Dict[str, Any], size: Optional[Tuple[int, int]]
                 ) -> Dict[str, Any]:
    """Recall and false faces over the annotated photos, at their own size or resized to ``size``."""
    per_image: Dict[str, Dict[str, int]] = {}
    names = sorted(truth["images"]) + sorted(truth.get("no_face", []))
    for name in names:
        img = cv2.imread(os.path.join(images_dir, name), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError("cannot read %s in %s" % (name, images_dir))
        boxes = [t["box"] for t in truth["images"].get(name, [])]
        if size is not None:
            sx, sy = size[0] / img.shape[1], size[1] / img.shape[0]
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            boxes = [_scaled(b, sx, sy) for b in boxes]
        found = [f.as_list() for f in detector.detect(img)]
        hit, false = match(boxes, found)
        per_image[name] = {"faces": len(boxes), "found": hit, "false": false}
    tot = {k: sum(v[k] for v in per_image.values()) for k in ("faces", "found", "false")}
    grp = {k: sum(per_image[n][k] for n in GROUP_PHOTOS if n in per_image) for k in ("faces", "found")}
    return {"recall": tot["found"] / tot["faces"] if tot["faces"] else None,
            "group_recall": grp["found"] / grp["faces"] if grp["faces"] else None,
            "found": tot["found"], "faces": tot["faces"], "false": tot["false"],
            "group_found": grp["found"], "group_faces": grp["faces"], "images": per_image}


def score_video(detector: Any, path: str, max_frames: int) -> Dict[str, Any]:
    """Frames of a face-free video in which the detector reports a face."""
    cap = cv2.VideoCapture(path)
    try:
        frames = with_face = 0
        while frames < max_frames:
            ok, img = cap.read()
            if not ok:
                break
            frames += 1
            if detector.detect(img):
                with_face += 1
    finally:
        cap.release()
    if frames == 0:
        raise FileNotFoundError("cannot read frames from %s" % path)
    return {"frames": frames, "with_face": with_face, "fraction": with_face / frames}


def time_detect(detector: Any, img: np.ndarray, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        detector.detect(img)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        detector.detect(img)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def bench_detectors(names: Sequence[str], assets: str, model_paths: Sequence[str], runs: int = 50,
                    video_frames: int = 1000, threads: int = 2) -> Dict[str, Any]:

    with open(TRUTH) as fh:
        truth = json.load(fh)
    images = os.path.join(assets, "images")
    video = os.path.join(assets, "video", "no_face.mp4")
    seed = cv2.resize(cv2.imread(os.path.join(images, "seed_image00.png"), cv2.IMREAD_COLOR), CAPTURE,
                      interpolation=cv2.INTER_AREA)
    rows = []
    for name in names:
        spec = manifest.get(name)
        eng = registry.make_engine("cpu", spec, threads=threads, model_paths=list(model_paths))
        eng.load()
        try:
            det = registry.face_detector(spec, eng)
            row: Dict[str, Any] = {"detector": name, "input": "%dx%d" % (spec.input_shape[1], spec.input_shape[0])}
            row["native"] = score_photos(det, images, truth, None)
            row["capture"] = score_photos(det, images, truth, CAPTURE)
            row["no_face_video"] = score_video(det, video, video_frames)
            row["ms_640x480"] = time_detect(det, seed, runs)
        finally:
            eng.close()
        rows.append(row)
    rows.sort(key=lambda r: (-(r["capture"]["group_recall"] or 0), r["capture"]["false"], r["ms_640x480"]))
    return {"machine": machine_info(), "threads": threads, "match_iou": MATCH_IOU,
            "group_photos": list(GROUP_PHOTOS), "capture_size": "%dx%d" % CAPTURE, "rows": rows}


def render(result: Dict[str, Any]) -> str:
    head = ["detector", "input", "group recall 640x480", "recall 640x480", "false", "recall native",
            "false", "no-face video", "ms/frame"]
    body = []
    for r in result["rows"]:
        c, n, v = r["capture"], r["native"], r["no_face_video"]
        body.append([r["detector"], r["input"],
                     "%d/%d" % (c["group_found"], c["group_faces"]), "%d/%d" % (c["found"], c["faces"]),
                     str(c["false"]), "%d/%d" % (n["found"], n["faces"]), str(n["false"]),
                     "%.1f%% of %d" % (100.0 * v["fraction"], v["frames"]), "%.1f" % r["ms_640x480"]])
    lines = text_table(head, body)
    lines.append("(%s; CPU, %d threads; a face is found at IoU >= %.1f with its hand-made box)"
                 % ("%s CPUs %s" % (result["machine"]["cpu_count"], result["machine"]["machine"]), result["threads"], result["match_iou"]))
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    d = sub.add_parser("detectors", help="face detectors on the CPU: recall and false faces on annotated "
                       "photos (own size and 640x480), a face-free video, speed")
    d.add_argument("--models", help="comma-separated detector names (default: every one whose CPU file is found)")
    d.add_argument("--assets", help="folder with images/ and video/ (default ../shared/assets or "
                   "$EDGEPIPE_ASSETS)")
    d.add_argument("--runs", type=int, default=50, help="timed detects per detector (default 50)")
    d.add_argument("--video-frames", type=int, default=1000, help="frames of no_face.mp4 at most (default 1000)")
    d.add_argument("--quick", action="store_true", help="10 timed detects and 100 video frames")
    d.add_argument("--out", default=DEFAULT_OUT, help="output folder (default ./%s)" % DEFAULT_OUT)


def main_args(args: argparse.Namespace) -> int:
    assets = assets_of(args)
    if assets is None:
        return 2
    paths = [os.path.join(assets, "models")]
    names = args.models.split(",") if args.models else candidates(paths)
    if not names:
        print("error: no face detector file found (run `python run.py models fetch`)", file=sys.stderr)
        return 1
    runs, frames = (10, 100) if args.quick else (args.runs, args.video_frames)
    if runs < 1 or frames < 1:
        print("error: --runs and --video-frames must be at least 1", file=sys.stderr)
        return 2
    print("bench detectors: %s on the CPU" % ", ".join(names), flush=True)
    result = bench_detectors(names, assets, paths, runs=runs, video_frames=frames)
    print(render(result))
    write_report(args.out, "bench_detectors.json", result)
    return 0
