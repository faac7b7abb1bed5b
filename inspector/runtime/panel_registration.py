"""Whole panels, registration: the golden panel -> tested panel map, and tiles sampled through it.

The global map is estimated on a downscaled overview of both panels by ``alignment.align_to_template``
(ORB + RANSAC, then ECC; it refuses a wrong or unreadable panel), then refined at full resolution: the
residual shift of up to 8 x 8 sample tiles (phase correlation) gives template->panel point pairs, and a
robust fit to them (``motion``: similarity by default, i.e. shift, rotation and scale; or euclidean, or
affine) is the final map. The RMS residual of that fit measures how far the panel is from rigid; the
inspector then measures each tile's own residual shift (``residual_shift``) and samples it through
``shifted_map``. A tile is a plain crop when the map's rotation and scale move no pixel more than
``_SNAP_PX`` (no resampling blur), bilinear otherwise (``sample_tile``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from inspector.data.transforms import gray_plane
from inspector.runtime.alignment import align_to_template
from inspector.runtime.panel_tiles import DEFAULT_TILE_SIZE, Tile, tile_grid

_OVERVIEW_SIDE = 1600  # the global estimate runs on both images shrunk to at most this many pixels a side
_SAMPLE_GRID = 8  # the global refinement measures at most this many x this many sample tiles
_MIN_RESPONSE = 0.15  # phase-correlation peak below this: a blank or ambiguous tile, not measured
_GREY_SHARE = 0.02  # a golden tile with fewer pixels than this between black and white is a binarised scan
_SNAP_PX = 0.5  # px: a tile map whose rotation/scale moves no pixel further than this is a plain crop
TILE_INTERPOLATION = cv2.INTER_LINEAR  # rotated tiles: bilinear (nearest measured no better: -1.0 vs -0.8 pt official AP)
MOTIONS = ("euclidean", "similarity", "affine")  # shift + rotation; + uniform scale; + shear


@dataclass(frozen=True)
class PanelRegistration:
    """The tested panel registered to its golden panel."""

    template_to_panel: np.ndarray  # (2, 3): template pixel (x, y) is seen at panel pixel M @ (x, y, 1)
    correlation: float  # of the overview after the global estimate (alignment.align_to_template)
    overlap: float  # fraction of the template covered by the panel (overview)
    sample_tiles: int  # sample tiles whose residual shift agreed with the fitted map (RANSAC inliers)
    fit_rms_px: float  # RMS residual of all measured sample tiles against the fitted map (non-rigidity + noise)
    motion: str

    @property
    def rotation_deg(self) -> float:
        """Counter-clockwise turn of the panel as seen on screen (``cv2.getRotationMatrix2D``'s sense)."""
        return math.degrees(math.atan2(-self.template_to_panel[1, 0], self.template_to_panel[0, 0]))

    @property
    def scale(self) -> float:
        """Mean linear scale of the panel relative to the template (1 = same resolution)."""
        return math.sqrt(abs(float(np.linalg.det(self.template_to_panel[:, :2]))))

    @property
    def shift(self) -> tuple[float, float]:
        """Where the template's origin lands in the panel, pixels."""
        return float(self.template_to_panel[0, 2]), float(self.template_to_panel[1, 2])

    def to_dict(self) -> dict:
        return {"rotation_deg": round(self.rotation_deg, 4), "scale": round(self.scale, 6),
                "shift": [round(v, 3) for v in self.shift],
                "template_to_panel": [[round(float(v), 6) for v in row] for row in self.template_to_panel],
                "correlation": round(self.correlation, 4), "overlap": round(self.overlap, 4),
                "sample_tiles": self.sample_tiles, "fit_rms_px": round(self.fit_rms_px, 3), "motion": self.motion}


IDENTITY_REGISTRATION = PanelRegistration(np.eye(2, 3), 1.0, 1.0, 0, 0.0, "none")


def register_panel(panel: np.ndarray, template: np.ndarray, *, motion: str = "similarity",
                   tile_size: int = DEFAULT_TILE_SIZE, min_correlation: float = 0.8,
                   min_overlap: float = 0.9) -> PanelRegistration:
    """Estimate the template->panel map of a whole panel (see the module docstring); AlignmentError when the
    panel cannot be registered (wrong panel, out of the field of view, unreadable)."""
    if motion not in MOTIONS:
        raise ValueError(f"motion: expected one of {MOTIONS}, got {motion!r}")
    scale = min(1.0, _OVERVIEW_SIDE / max(panel.shape[:2] + template.shape[:2]))
    coarse = align_to_template(_overview(panel, scale), _overview(template, scale),
                               motion="euclidean" if motion == "euclidean" else "affine",
                               min_correlation=min_correlation, min_overlap=min_overlap)
    matrix = coarse.template_to_frame.astype(np.float64).copy()
    matrix[:, 2] /= scale

    height, width = template.shape[:2]
    tiles = tile_grid(width, height, tile_size, 0)
    picks = _spread(len({t.x for t in tiles}), _SAMPLE_GRID), _spread(len({t.y for t in tiles}), _SAMPLE_GRID)
    xs, ys = sorted({t.x for t in tiles}), sorted({t.y for t in tiles})
    sources, targets = [], []
    for y in (ys[i] for i in picks[1]):
        for x in (xs[i] for i in picks[0]):
            tile = Tile(x, y, min(tile_size, width), min(tile_size, height), (False,) * 4)
            tested, used = sample_tile(panel, tile_map(matrix, tile), tile.width, tile.height)
            shift = residual_shift(gray_plane(template[y:y + tile.height, x:x + tile.width]), gray_plane(tested),
                                    max_shift=tile_size / 8)
            if shift is None:
                continue
            centre = np.array([tile.width / 2, tile.height / 2])
            sources.append(centre + (x, y))
            targets.append(_apply(used, centre + shift))  # tested(u) ~ template(u - shift)
    rms, used = 0.0, 0
    if len(sources) >= 3:
        source, target = np.float64(sources), np.float64(targets)
        fit = cv2.estimateAffine2D if motion == "affine" else cv2.estimateAffinePartial2D
        refined, inliers = fit(source, target, method=cv2.RANSAC, ransacReprojThreshold=1.5, refineIters=20)
        used = 0 if refined is None else int(inliers.sum())
        if used < 3:
            # No three tiles agree to 1.5 px: a panel far from rigid. The least-squares map over all of them is
            # the best global start; each tile's own correction (``refine_tiles``) does the rest.
            refined, used = _least_squares(source, target, motion), 0
        refined = refined.astype(np.float64)
        if motion == "euclidean":  # a similarity fit may carry a scale the motion does not have
            refined[:, :2] /= math.sqrt(abs(np.linalg.det(refined[:, :2])))
        # Over every measured tile, outliers included: tiles the global map does not fit are what
        # makes a panel non-rigid (and what per-tile refinement is for).
        residual = np.array([_apply(refined, p) for p in source]) - target
        rms, matrix = float(np.sqrt((residual ** 2).sum(axis=1).mean())), refined
    return PanelRegistration(matrix, coarse.correlation, coarse.overlap, used, rms, motion)


def _least_squares(source: np.ndarray, target: np.ndarray, motion: str) -> np.ndarray:
    """The (2, 3) map minimising the squared distances source -> target: affine, or similarity
    (``x' = a x - b y + tx``, ``y' = b x + a y + ty``) for the other motions."""
    ones, zeros = np.ones(len(source)), np.zeros(len(source))
    if motion == "affine":
        design = np.column_stack([source, ones])
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        return solution.T
    x, y = source[:, 0], source[:, 1]
    design = np.vstack([np.column_stack([x, -y, ones, zeros]), np.column_stack([y, x, zeros, ones])])
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, np.concatenate([target[:, 0], target[:, 1]]), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def _overview(image: np.ndarray, scale: float) -> np.ndarray:
    """A grey copy shrunk by ``scale`` (INTER_AREA: thin traces fade rather than vanish); resized before
    the colour conversion so a colour panel is never copied at full size."""
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    return gray_plane(small)


def _spread(count: int, most: int) -> list[int]:
    """At most ``most`` indices of ``range(count)``, evenly spread, ends included."""
    if count <= most:
        return list(range(count))
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, most)})


def _apply(matrix: np.ndarray, point: np.ndarray) -> np.ndarray:
    return matrix[:, :2] @ point + matrix[:, 2]


def residual_shift(template_tile: np.ndarray, tested_tile: np.ndarray, max_shift: float) -> np.ndarray | None:
    """How far the tested tile's content sits from the template's, ``d`` with tested(x) ~ template(x - d);
    None when the tile has too little structure to tell (phase-correlation peak below ``_MIN_RESPONSE``).

    Measured at half resolution: the ~0.1 px it gives is what a model seeing tiles at half scale needs,
    at a twentieth of the full-resolution cost."""
    if min(template_tile.shape) < 32:
        return None
    half = [cv2.resize(im, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA).astype(np.float32)
            for im in (template_tile, tested_tile)]
    window = _hanning(half[0].shape[1], half[0].shape[0])
    (dx, dy), response = cv2.phaseCorrelate(half[0], half[1], window)
    shift = np.array([dx, dy]) * 2.0
    if response < _MIN_RESPONSE or not np.all(np.isfinite(shift)) or np.abs(shift).max() > max_shift:
        return None
    return shift


@functools.lru_cache(maxsize=8)
def _hanning(width: int, height: int) -> np.ndarray:
    """The phase-correlation window (tapers the tile's borders, which would otherwise dominate), made once per size."""
    window = cv2.createHanningWindow((width, height), cv2.CV_32F)
    window.setflags(write=False)
    return window


def tile_map(matrix: np.ndarray, tile: Tile) -> np.ndarray:
    """The map from a tile's own pixels (0..w, 0..h) to panel pixels under the global ``matrix``."""
    local = matrix.astype(np.float64).copy()
    local[:, 2] = _apply(matrix, np.array([tile.x, tile.y], np.float64))
    return local


def shifted_map(local: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``local`` moved so that tile pixel u is sampled where ``local`` sampled u + shift."""
    moved = local.copy()
    moved[:, 2] = _apply(local, shift)
    return moved


def sample_tile(panel: np.ndarray, local: np.ndarray, width: int, height: int,
                 fill: np.ndarray | None = None, binarised: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The tested panel seen through ``local`` (tile pixel -> panel pixel) as a ``width`` x ``height`` tile,
    and the map actually used.

    When the map's rotation/scale moves no tile pixel more than ``_SNAP_PX`` from a pure shift, the tile
    is a plain crop at the shift rounded to whole pixels (so at most ~1 px off): no resampling blur on the
    binarised scan, which the model never saw in training (DeepPCB's own pairs are registered to about a
    pixel, and the model was trained on them). Otherwise
    it is resampled (bilinear), and, for a ``binarised`` scan, thresholded back to black and white: the
    grey edges of interpolation are a look the model never saw (on 192 validation boards in panels turned
    0.3 deg it cost 1.1 points of official F; thresholded, 0.4). Pixels the panel does not show are taken
    from ``fill`` (the template tile) when given: no difference there, so no made-up defect."""
    panel_height, panel_width = panel.shape[:2]
    offset = np.round(local[:, 2])
    deviation = np.abs(local[:, :2] - np.eye(2)).sum(axis=1).max() * max(width, height)  # beyond the rounding
    x0, y0 = int(offset[0]), int(offset[1])
    if deviation <= _SNAP_PX and x0 >= 0 and y0 >= 0 and x0 + width <= panel_width and y0 + height <= panel_height:
        return panel[y0:y0 + height, x0:x0 + width], np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])
    warped = cv2.warpAffine(panel, local.astype(np.float32), (width, height),
                            flags=TILE_INTERPOLATION | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    if binarised:
        cv2.threshold(warped, 127, 255, cv2.THRESH_BINARY, dst=warped)
    if fill is not None:
        corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]],
                           np.float64) @ local[:, :2].T + local[:, 2]
        if corners.min() < 0 or np.any(corners.max(axis=0) > [panel_width - 1, panel_height - 1]):
            columns, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
            px = local[0, 0] * columns + local[0, 1] * rows + local[0, 2]
            py = local[1, 0] * columns + local[1, 1] * rows + local[1, 2]
            outside = (px < 0) | (py < 0) | (px > panel_width - 1) | (py > panel_height - 1)
            source = fill if fill.ndim == warped.ndim else (cv2.cvtColor(fill, cv2.COLOR_GRAY2BGR)
                                                            if warped.ndim == 3 else gray_plane(fill))
            warped[outside] = source[outside]
    return warped, local


def is_binarised(image: np.ndarray) -> bool:
    """True for a black-and-white scan like DeepPCB's: under ``_GREY_SHARE`` of the pixels (of one plane)
    lie between the two (JPEG ringing stays near the ends)."""
    plane = image if image.ndim == 2 else image[..., 0]
    grey = cv2.inRange(plane, 33, 222)
    return cv2.countNonZero(grey) < _GREY_SHARE * plane.size
