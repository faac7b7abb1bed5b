"""Unknown-change flags: where a board differs from its golden template and no detection explains why.

The detector only knows the defect types it was trained on. The golden template gives a label-free
cue for everything else: where the board is brighter or darker than its template (copper added or
missing, whichever polarity the camera gives copper). ``find_unknown_changes`` turns that cue into a
short list of regions a person should look at, robust to what is not a defect:

1. both images are smoothed (Gaussian) and binarised with Otsu's threshold, each on its own, so a
   brightness or contrast change between the camera and the golden scan is not a difference;
2. residual misregistration: the binary template is shifted onto the board tile by tile (the shift,
   at most ``max_shift_px``, that leaves the fewest pixels differing), because scanner and lens distortion move parts of a board
   by different amounts; frames far off must be registered first (``alignment.align_to_template``);
3. edge tolerance: a board pixel counts as changed only when the template holds the opposite state
   all around it within ``tolerance_px`` (template dilated / eroded), so an edge moved by that much by
   etching or registration is no change; a closing joins the fragments of one change;
4. opening by reconstruction: a region counts only when some part of it is at least ``core_px`` wide
   (a sliver along a long shifted edge never is) and it covers ``min_area`` pixels; the whole region is
   reported, grown back by the tolerance;
5. a change is *explained* when at least ``explained_coverage`` of its pixels lie inside a detection box
   (grown by ``box_margin_px``): the detector saw it. The rest are unknown changes.

Measured with ``benchmarks/unknown_changes.py`` (numbers in its docstring). It costs a few OpenCV
passes per frame; ``Detector.detect`` runs it only when asked (``unknown_changes=True``), so the
default path is unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

KINDS = ("brighter", "darker", "mixed")  # the board than its template (copper is dark or bright, by camera)


@dataclass(frozen=True)
class ChangeSettings:
    """How different, how large and how unexplained a region must be to be flagged."""

    max_shift_px: int = 16  # residual misregistration corrected by a whole-pixel shift per tile; 0 = none
    tile_px: int = 160  # side of the tiles each shifted on its own (scanner or lens distortion is local)
    tolerance_px: int = 1  # registration / etching tolerance: differences closer than this to the same state are ignored
    blur_px: int = 3  # Gaussian kernel side before binarising (odd; 1 = none): scanner noise is no change
    core_px: int = 3  # a change must hold a disk this wide somewhere: slivers along edges do not (1 = any)
    close_px: int = 5  # closing kernel side: joins the fragments of one change (1 = none)
    min_area: int = 20  # pixels a change must cover (after the tolerance took its share)
    explained_coverage: float = 0.5  # a change with at least this fraction inside detection boxes is explained
    box_margin_px: int = 4  # detection boxes are grown by this much before testing coverage

    def __post_init__(self) -> None:
        for name in ("max_shift_px", "tile_px", "tolerance_px", "min_area", "box_margin_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {getattr(self, name)}")
        for name in ("blur_px", "core_px", "close_px"):
            value = getattr(self, name)
            if value < 1 or (name == "blur_px" and value % 2 == 0):
                raise ValueError(f"{name}: expected a positive {'odd ' if name == 'blur_px' else ''}kernel side, "
                                 f"got {value}")
        if not 0.0 < self.explained_coverage <= 1.0:
            raise ValueError(f"explained_coverage: expected a fraction in (0, 1], got {self.explained_coverage}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class UnknownChange:
    """One region where the board differs from its template and no detection covers it."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the image passed in
    area: int  # changed pixels (template grid)
    kind: str  # the board is "brighter" or "darker" here than its template, or "mixed" (both)
    coverage: float  # fraction of the region inside detection boxes (below the explained threshold)

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "area": int(self.area), "kind": self.kind,
                "coverage": round(float(self.coverage), 3)}


def difference_masks(image: np.ndarray, template: np.ndarray, settings: ChangeSettings) -> tuple[np.ndarray, np.ndarray]:
    """``(brighter, darker)`` uint8 masks (255 = changed) on the image's grid: where the board is
    brighter / darker than the template beyond the registration tolerance.

    With tile shifts, a pixel is changed only when it differs under its own tile's shift and under
    those of the neighbouring tiles: where two tiles took different shifts, the seam is no change.
    """
    board_gray, golden_gray = _gray(image, "image"), _gray(template, "template")
    if board_gray.shape != golden_gray.shape:
        raise ValueError(f"image is {board_gray.shape[1]}x{board_gray.shape[0]} but the template is "
                         f"{golden_gray.shape[1]}x{golden_gray.shape[0]}: register the frame to the template first")
    board = _binarize(board_gray, settings.blur_px)
    golden = _binarize(golden_gray, settings.blur_px)
    # Bright on the board where the template is dark even `tolerance_px` around, and the reverse.
    if settings.tolerance_px > 0:
        grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * settings.tolerance_px + 1,) * 2)
        golden_bright, golden_dark = cv2.dilate(golden, grow), cv2.erode(golden, grow)
    else:
        golden_bright = golden_dark = golden
    not_board = cv2.bitwise_not(board)

    def masks_for(shift: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        bright, valid = _shifted(golden_bright, shift)
        dark, _ = _shifted(golden_dark, shift)
        brighter = cv2.bitwise_and(board, cv2.bitwise_not(bright))
        darker = cv2.bitwise_and(not_board, dark)
        brighter[~valid], darker[~valid] = 0, 0  # the band the shifted template does not cover
        return brighter, darker

    if settings.max_shift_px <= 0:
        return masks_for((0, 0))
    rows, cols, shifts = _tile_shifts(golden, board, settings.max_shift_px, settings.tile_px)
    per_shift = {shift: masks_for(shift) for shift in set(shifts.values())}
    brighter, darker = np.zeros_like(board), np.zeros_like(board)
    for r, (top, bottom) in enumerate(zip(rows[:-1], rows[1:])):
        for c, (left, right) in enumerate(zip(cols[:-1], cols[1:])):
            near = {shifts[(r2, c2)] for r2 in (r - 1, r, r + 1) for c2 in (c - 1, c, c + 1) if (r2, c2) in shifts}
            tile = (slice(top, bottom), slice(left, right))
            bright_tile, dark_tile = (m[tile].copy() for m in per_shift[shifts[(r, c)]])
            for shift in near:
                cv2.bitwise_and(bright_tile, per_shift[shift][0][tile], dst=bright_tile)
                cv2.bitwise_and(dark_tile, per_shift[shift][1][tile], dst=dark_tile)
            brighter[tile], darker[tile] = bright_tile, dark_tile
    return brighter, darker


def find_unknown_changes(
    image: np.ndarray,
    template: np.ndarray,
    detection_boxes: np.ndarray | None = None,
    settings: ChangeSettings | None = None,
) -> list[UnknownChange]:
    """Regions where ``image`` (registered to ``template``, same size) differs and no box explains it.

    ``detection_boxes``: (N, 4) xyxy on the same pixel grid, the detector's findings. Largest change first.
    """
    settings = settings or ChangeSettings()
    brighter, darker = difference_masks(image, template, settings)
    changed = cv2.bitwise_or(brighter, darker)
    grouped = changed  # a closing joins the fragments of one change into one region
    if settings.close_px > 1:
        grouped = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (settings.close_px,) * 2))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
    if count <= 1:
        return []
    height, width = changed.shape
    # Opening by reconstruction: a region counts when some part of it holds a `core_px` disk (a sliver
    # along a shifted edge never does); the whole region is then reported, not just its core. Cores are
    # taken before the closing, which would otherwise weld parallel slivers into a wide block.
    if settings.core_px > 1:
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (settings.core_px,) * 2)
        core = cv2.bitwise_or(cv2.morphologyEx(brighter, cv2.MORPH_OPEN, disk),
                              cv2.morphologyEx(darker, cv2.MORPH_OPEN, disk))
        has_core = np.bincount(labels[core > 0], minlength=count) > 0
    else:
        has_core = np.ones(count, bool)
    areas = np.bincount(labels[changed > 0], minlength=count)  # changed pixels, not the closing's filler
    candidates = [label for label in range(1, count) if has_core[label] and areas[label] >= settings.min_area]
    if not candidates:
        return []
    explained_area = _box_mask(detection_boxes, settings.box_margin_px, (height, width))
    explained = (np.bincount(labels[explained_area], minlength=count) if explained_area is not None
                 else np.zeros(count, np.int64))
    bright_count = np.bincount(labels[brighter > 0], minlength=count)
    dark_count = np.bincount(labels[darker > 0], minlength=count)
    found: list[UnknownChange] = []
    grow = settings.tolerance_px  # the tolerance ate this much of the change's rim
    for label in candidates:
        coverage = float(explained[label]) / float(stats[label, cv2.CC_STAT_AREA])
        if coverage >= settings.explained_coverage:
            continue
        x, y, w, h = (int(v) for v in stats[label, :4])
        box = (float(max(0, x - grow)), float(max(0, y - grow)), float(min(width, x + w + grow)),
               float(min(height, y + h + grow)))
        kind = ("mixed" if bright_count[label] and dark_count[label] else
                "brighter" if bright_count[label] else "darker")
        found.append(UnknownChange(box, int(areas[label]), kind, coverage))
    found.sort(key=lambda change: -change.area)
    return found


def _gray(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"{name}: expected a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 and image.shape[2] == 3 else image.reshape(image.shape[:2])


def _tile_shifts(golden: np.ndarray, board: np.ndarray, max_shift: int,
                 tile: int) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], tuple[int, int]]]:
    """Row and column edges of tiles of about ``tile`` pixels, and per tile ``(row, col)`` the whole-pixel
    shift ``(dy, dx)`` that lays the binary template best on the board: ``board[y, x] ~ golden[y - dy, x - dx]``.

    Each tile's inner part (``max_shift`` in from each side, at most under half the tile) is searched for
    within the tile with ``cv2.matchTemplate``: squared differences of binary images count the pixels
    that differ. A small penalty on the shift's length keeps featureless tiles where they are.
    """
    height, width = golden.shape
    rows_n, cols_n = (max(1, round(height / tile)), max(1, round(width / tile))) if tile else (1, 1)
    rows = np.linspace(0, height, rows_n + 1, dtype=int)
    cols = np.linspace(0, width, cols_n + 1, dtype=int)
    shifts: dict[tuple[int, int], tuple[int, int]] = {}
    for r, (top, bottom) in enumerate(zip(rows[:-1], rows[1:])):
        for c, (left, right) in enumerate(zip(cols[:-1], cols[1:])):
            margin = min(max_shift, (bottom - top - 1) // 2, (right - left - 1) // 2)
            if margin <= 0:
                shifts[(r, c)] = (0, 0)
                continue
            patch = golden[top + margin:bottom - margin, left + margin:right - margin]
            cost = cv2.matchTemplate(board[top:bottom, left:right], patch, cv2.TM_SQDIFF)
            dy, dx = np.mgrid[-margin:cost.shape[0] - margin, -margin:cost.shape[1] - margin]
            cost = cost / (255.0 * 255.0) + 0.5 * (dx * dx + dy * dy)
            best = np.unravel_index(int(np.argmin(cost)), cost.shape)
            shifts[(r, c)] = (int(dy[best]), int(dx[best]))
    return rows, cols, shifts


def _shifted(image: np.ndarray, shift: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``image`` moved by whole pixels ``(dy, dx)`` (zeros where nothing moved in), and where it is valid."""
    dy, dx = shift
    if dy == 0 and dx == 0:
        return image, np.ones(image.shape, bool)
    height, width = image.shape
    moved = np.zeros_like(image)
    valid = np.zeros(image.shape, bool)
    target = (slice(max(0, dy), min(height, height + dy)), slice(max(0, dx), min(width, width + dx)))
    source = (slice(max(0, -dy), min(height, height - dy)), slice(max(0, -dx), min(width, width - dx)))
    moved[target] = image[source]
    valid[target] = True
    return moved, valid


def _binarize(gray: np.ndarray, blur_px: int) -> np.ndarray:
    """Copper (bright) = 255, substrate = 0, by Otsu's threshold on the smoothed grey image."""
    if blur_px > 1:
        gray = cv2.GaussianBlur(gray, (blur_px, blur_px), 0)
    _, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return binary


def _box_mask(boxes: np.ndarray | None, margin: int, shape: tuple[int, int]) -> np.ndarray | None:
    if boxes is None or len(boxes) == 0:
        return None
    height, width = shape
    mask = np.zeros(shape, bool)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        left, top = max(0, int(np.floor(x1)) - margin), max(0, int(np.floor(y1)) - margin)
        right, bottom = min(width, int(np.ceil(x2)) + margin), min(height, int(np.ceil(y2)) + margin)
        if right > left and bottom > top:
            mask[top:bottom, left:right] = True
    return mask
