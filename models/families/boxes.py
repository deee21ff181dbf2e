"""Box helpers shared by the detector families: fitting a frame to the input, mapping boxes back, NMS."""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgepipe.bus.box import Box

# one decoded face: box [x1, y1, x2, y2], score, points (K, 2) x then y or None, in [0, 1] input coordinates
Detection = Tuple[Sequence[float], float, Optional[np.ndarray]]


class Fit(NamedTuple):
    """How a frame went into the model input: input pixel (u, v) is frame pixel ((u - px) / sx, (v - py) / sy)."""

    sx: float
    sy: float
    px: float
    py: float


def fit_frame(image: np.ndarray, size: Tuple[int, int], stretch: bool) -> Tuple[np.ndarray, Fit]:
    """The frame to resize to the (w, h) input, and how it maps: letterboxed, or stretched (resized later)."""
    if stretch:  # the whole frame squeezed to the input: faces keep more pixels on wide frames
        h, w = image.shape[:2]
        return image, Fit(size[0] / float(w), size[1] / float(h), 0.0, 0.0)
    canvas, scale, px, py = letterbox(image, size)
    return canvas, Fit(scale, scale, px, py)


def to_frame(found: Sequence[Detection], fit: Fit, input_size: Tuple[int, int], frame_size: Tuple[int, int],
             square: bool = False,
             landmarks: Optional[Callable[[np.ndarray], List[Tuple[float, float]]]] = None) -> List[Box]:
    """Decoded faces in [0, 1] input coordinates -> Boxes in frame pixels, clipped to the frame, best first.

    ``square``: the box's centre maps per axis and its side with the larger scale (the axis squeezed
    less), for a box square in input pixels around a face about square in frame pixels (BlazeFace);
    otherwise the corners map one by one. ``landmarks`` turns the points, mapped to frame pixels,
    into the Box's five (x, y) (default: every point, as floats). Boxes under a pixel are dropped.
    """
    iw, ih = float(input_size[0]), float(input_size[1])
    fw, fh = float(frame_size[0]), float(frame_size[1])
    sx, sy, px, py = fit
    faces = []
    for box, score, points in found:
        if square:
            cx = ((box[0] + box[2]) / 2 * iw - px) / sx
            cy = ((box[1] + box[3]) / 2 * ih - py) / sy
            half = max((box[2] - box[0]) * iw, (box[3] - box[1]) * ih) / max(sx, sy) / 2
            x1, y1, x2, y2 = cx - half, cy - half, cx + half, cy + half
        else:
            x1, y1 = (box[0] * iw - px) / sx, (box[1] * ih - py) / sy
            x2, y2 = (box[2] * iw - px) / sx, (box[3] * ih - py) / sy
        x1, y1 = max(0.0, x1), max(0.0, y1)
        x2, y2 = min(fw, x2), min(fh, y2)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        marks = None
        if points is not None:
            pts = np.empty_like(points)
            pts[:, 0] = (points[:, 0] * iw - px) / sx
            pts[:, 1] = (points[:, 1] * ih - py) / sy
            marks = landmarks(pts) if landmarks is not None else [(float(x), float(y)) for x, y in pts]
        faces.append(Box.with_landmarks(x1, y1, x2, y2, float(score), marks))
    faces.sort(key=lambda f: -f.score)
    return faces


def letterbox(image: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, float, float, float]:
    """Resize ``image`` keeping its aspect ratio into a (w, h) canvas, centred, padded with black.

    Returns (canvas, scale, pad_x, pad_y): a canvas pixel (u, v) is the frame pixel
    ((u - pad_x) / scale, (v - pad_y) / scale).
    """
    out_w, out_h = size
    h, w = image.shape[:2]
    scale = min(out_w / float(w), out_h / float(h))
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    # bilinear, as MediaPipe's and Coral's own pre-processing do: INTER_AREA's anti-aliasing costs 15x more
    # (1.8 ms against 0.12 ms for 640x480 -> 192x144 here) and found the same faces (`run.py bench detectors`)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((out_h, out_w) + image.shape[2:], dtype=image.dtype)
    px, py = (out_w - nw) // 2, (out_h - nh) // 2
    canvas[py:py + nh, px:px + nw] = resized
    # the exact scale per axis after rounding of the resized size
    return canvas, nw / float(w), float(px), float(py)


def iou_matrix(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [x1, y1, x2, y2] box against N boxes."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, max_out: int) -> List[int]:
    """Greedy hard NMS; indices kept, best first."""
    order = np.argsort(-scores)
    keep: List[int] = []
    while order.size and len(keep) < max_out:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = iou_matrix(boxes[i], boxes[order[1:]])
        order = order[1:][ious <= threshold]
    return keep


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, threshold: float,
                 max_out: int) -> List[Tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's WEIGHTED non-max suppression.

    The best remaining detection and every remaining one overlapping it by more
    than ``threshold`` IoU are merged: box and keypoints are their score-weighted
    mean, the score is the best one's. Returns (box, score, points), best first.
    """
    order = np.argsort(-scores)
    out = []
    while order.size and len(out) < max_out:
        i = int(order[0])
        ious = iou_matrix(boxes[i], boxes[order])
        group = order[ious > threshold]
        if group.size == 0:
            group = order[:1]
        w = scores[group][:, None]
        total = float(np.sum(w))
        box = np.sum(boxes[group] * w, axis=0) / total
        pts = np.sum(points[group] * w[:, :, None] if points.ndim == 3 else points[group] * w, axis=0) / total
        out.append((box, float(scores[i]), pts))
        order = order[ious <= threshold]
    return out
