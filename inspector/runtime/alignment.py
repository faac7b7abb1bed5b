"""Register a camera frame to its golden template, or refuse to judge it.

A model that compares a board with its golden template (input mode ``image+template``) assumes the
two are aligned pixel for pixel, as DeepPCB's pairs are. A line camera's frames are not: the board
sits a little shifted and turned. ``align_to_template`` estimates the motion in two stages:

1. coarse, for any shift or turn: ORB features matched between the two images, and a RANSAC fit of
   a rotation + translation (``euclidean``) or a full affine map to the matches;
2. fine, to a fraction of a pixel: OpenCV's ECC (enhanced correlation coefficient) maximisation,
   started from the coarse estimate and run coarse-to-fine on an image pyramid.

The frame is then resampled onto the template's pixel grid. Quality is measured on the result: the
zero-mean normalised cross-correlation between the aligned frame and the template over the area they
share (1 = identical up to brightness and contrast; defects lower it only slightly), and that shared
area's fraction of the template. Below the thresholds, ``AlignmentError`` says so with the numbers:
a wrong board, a blurred or empty frame, or a board out of the field of view is never judged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

MOTIONS = {"translation": cv2.MOTION_TRANSLATION, "euclidean": cv2.MOTION_EUCLIDEAN, "affine": cv2.MOTION_AFFINE}
DEFAULT_MIN_CORRELATION = 0.8
DEFAULT_MIN_OVERLAP = 0.9
_ORB_FEATURES = 2000
_FEATURE_SIDE = 400
_RATIO_TEST = 0.8  # Lowe's ratio: a match must be clearly better than the second best
_MIN_INLIERS = 12
_PYRAMID_MIN_SIDE = 80  # ECC's coarsest level keeps at least this many pixels per side
_ECC_MAX_SIDE = 400


class AlignmentError(ValueError):
    """The frame could not be registered to the template well enough to be judged."""

    def __init__(self, message: str, correlation: float | None = None, overlap: float | None = None) -> None:
        super().__init__(message)
        self.correlation = correlation
        self.overlap = overlap


@dataclass(frozen=True)
class Alignment:
    """A frame registered to its template."""

    template_to_frame: np.ndarray  # (2, 3): template pixel (x, y) is seen at frame pixel M @ (x, y, 1)
    aligned: np.ndarray  # the frame on the template's grid; where the frame shows nothing, the template's pixels
    correlation: float  # normalised cross-correlation of ``aligned`` and the template over the overlap
    overlap: float  # fraction of the template's area covered by the frame
    feature_inliers: int  # ORB matches consistent with the coarse estimate (0: ECC started from identity)
    motion: str

    @property
    def rotation_deg(self) -> float:
        """How far the board is turned in the frame, degrees, counter-clockwise as seen on screen
        (the convention of ``cv2.getRotationMatrix2D``)."""
        return math.degrees(math.atan2(-self.template_to_frame[1, 0], self.template_to_frame[0, 0]))

    @property
    def shift(self) -> tuple[float, float]:
        """Where the template's origin lands in the frame, pixels."""
        return float(self.template_to_frame[0, 2]), float(self.template_to_frame[1, 2])

    def boxes_to_frame(self, boxes: np.ndarray, frame_size: tuple[int, int] | None = None) -> np.ndarray:
        """Map xyxy boxes from template pixels to frame pixels (the box around the moved corners)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]], axis=1)
        moved = corners @ self.template_to_frame[:, :2].T + self.template_to_frame[:, 2]
        mapped = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)
        if frame_size is not None:
            width, height = frame_size
            mapped = np.clip(mapped, 0, [width, height, width, height])
        return mapped.astype(np.float32)

    def to_dict(self) -> dict:
        return {"correlation": round(self.correlation, 4), "overlap": round(self.overlap, 4),
                "rotation_deg": round(self.rotation_deg, 3), "shift": [round(v, 2) for v in self.shift],
                "feature_inliers": self.feature_inliers, "motion": self.motion}


def align_to_template(
    frame: np.ndarray,
    template: np.ndarray,
    motion: str = "euclidean",
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> Alignment:
    """Register ``frame`` to ``template`` (BGR or grey uint8 images); AlignmentError if it can't be done well."""
    if motion not in MOTIONS:
        raise ValueError(f"motion: expected one of {list(MOTIONS)}, got {motion!r}")
    frame_gray, template_gray = _gray(frame, "frame"), _gray(template, "template")
    coarse, inliers = _feature_estimate(template_gray, frame_gray, motion)
    matrix = _refine_ecc(template_gray, frame_gray, coarse, motion)

    height, width = template_gray.shape
    warp = dict(dsize=(width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    # Template pixels whose whole interpolation footprint lies inside the frame.
    inside = cv2.warpAffine(np.ones(frame_gray.shape, np.float32), matrix, borderValue=0, **warp) > 0.999
    overlap = float(inside.mean())
    aligned_gray = cv2.warpAffine(frame_gray, matrix, borderValue=0, **warp)
    correlation = _correlation(aligned_gray[inside], template_gray[inside]) if inside.any() else 0.0
    aligned = cv2.warpAffine(frame, matrix, borderValue=0, **warp)
    if aligned.shape == template.shape:
        # Where the frame shows nothing, show the template: no difference, so no made-up defect there.
        aligned[~inside] = template[~inside]
    if overlap < min_overlap:
        raise AlignmentError(f"the frame covers only {overlap:.0%} of the template after alignment (need "
                             f"{min_overlap:.0%}): board out of the field of view?", correlation, overlap)
    if correlation < min_correlation:
        raise AlignmentError(f"the aligned frame does not match the template (correlation {correlation:.2f}, need "
                             f"{min_correlation:.2f}): wrong board, wrong side, or a blurred/empty frame?",
                             correlation, overlap)
    return Alignment(matrix.astype(np.float64), aligned, correlation, overlap, inliers, motion)


def _gray(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"{name}: expected a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 and image.shape[2] == 3 else image.reshape(image.shape[:2])
    return gray.astype(np.float32) / 255.0


def _feature_estimate(template: np.ndarray, frame: np.ndarray, motion: str) -> tuple[np.ndarray, int]:
    """Coarse template->frame map from ORB matches and RANSAC; identity (and 0 inliers) when it fails."""
    identity = np.eye(2, 3, dtype=np.float32)
    # Features on images of at most _FEATURE_SIDE pixels: enough for a start ECC refines, and fast.
    scale = min(1.0, _FEATURE_SIDE / max(template.shape + frame.shape))
    orb = cv2.ORB_create(nfeatures=_ORB_FEATURES)
    kp_t, des_t = orb.detectAndCompute(_to_uint8(template, scale), None)
    kp_f, des_f = orb.detectAndCompute(_to_uint8(frame, scale), None)
    if des_t is None or des_f is None or len(kp_t) < _MIN_INLIERS or len(kp_f) < _MIN_INLIERS:
        return identity, 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(des_t, des_f, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < _RATIO_TEST * p[1].distance]
    if len(good) < _MIN_INLIERS:
        return identity, 0
    source = np.float32([kp_t[m.queryIdx].pt for m in good])
    target = np.float32([kp_f[m.trainIdx].pt for m in good])
    fit = cv2.estimateAffine2D if motion == "affine" else cv2.estimateAffinePartial2D
    matrix, mask = fit(source, target, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    inliers = int(mask.sum()) if mask is not None else 0
    if matrix is None or inliers < _MIN_INLIERS:
        return identity, 0
    matrix = matrix.astype(np.float32)
    matrix[:, 2] /= scale
    if motion == "euclidean":  # drop the scale a similarity fit may carry
        scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
        matrix[:, :2] /= scale
    elif motion == "translation":
        matrix[:, :2] = np.eye(2)
    return matrix, inliers


def _to_uint8(image: np.ndarray, scale: float) -> np.ndarray:
    if scale < 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


def _refine_ecc(template: np.ndarray, frame: np.ndarray, start: np.ndarray, motion: str) -> np.ndarray:
    """ECC on a pyramid, coarse to fine, from ``start``; returns the template->frame map.

    The finest level ECC runs on has at most ``_ECC_MAX_SIDE`` pixels per side: at DeepPCB's 640 px
    that is half resolution, already accurate to a fraction of a pixel, for a third of the time.
    """
    pyramid = [(template, frame)]
    while min(pyramid[-1][0].shape) // 2 >= _PYRAMID_MIN_SIDE:
        pyramid.append(tuple(cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for im in pyramid[-1]))
    finest = next(level for level, (t, _) in enumerate(pyramid) if max(t.shape) <= _ECC_MAX_SIDE or
                  level == len(pyramid) - 1)
    matrix = start.astype(np.float32).copy()
    matrix[:, 2] /= 2 ** (len(pyramid) - 1)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    for level in range(len(pyramid) - 1, finest - 1, -1):
        try:
            # Blurring (gaussFiltSize 5) gives the binary scans' step edges a slope ECC can climb.
            _, matrix = cv2.findTransformECC(*pyramid[level], matrix, MOTIONS[motion], criteria, None, 5)
        except cv2.error as error:
            reason = getattr(error, "err", "") or str(error).strip().splitlines()[-1]
            raise AlignmentError("the frame could not be registered to the template (ECC did not converge: "
                                 f"{reason}): wrong board, or a blurred/empty frame?") from error
        if level > finest:
            matrix[:, 2] *= 2  # to the next finer level
    matrix[:, 2] *= 2 ** finest
    return matrix


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalised cross-correlation of two equally sized arrays; 0 if either is flat."""
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 1e-12 else 0.0
