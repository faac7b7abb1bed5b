"""Augmentations of image/template pairs: the eight exact dihedral transforms and defect copy-paste.

Both keep the pair registered: every geometric change is applied identically to the tested image,
its golden template and the boxes, and a pasted defect changes only the tested image, so
``|test - template|`` shows the pasted defect and nothing else.

- **Dihedral** (``dihedral``): the 8 symmetries of a square (identity, three quarter turns, the two
  flips and the two diagonal transposes). PCB defects have no preferred orientation and the boards
  are axis-aligned, so these are exact pixel permutations, no interpolation.
- **Copy-paste** (``CopyPaste``): cut a labeled defect's tested-image patch (its box plus a small
  margin) from one board, in one of the 8 orientations, and paste it with its box and class onto
  another board where (1) that board's test and template agree (no defect there), (2) the patch does
  not touch an existing box, and (3) the destination template looks like the source template around
  the defect (``cv2.matchTemplate``, mean squared difference on a 0..1 scale at most
  ``max_mismatch``), so an open stays on a trace and a short between two traces. DeepPCB's own
  defects were synthesised by pasting like this. Where no such place exists the paste is skipped.

Images are BGR uint8 (H, W, 3) and boxes float32 (N, 4) continuous-pixel xyxy, as in
``inspector.data.transforms``. The functions work at whatever resolution they are given; the loader
calls them on the cached letterboxed sample before its crop and ``to_input``. numpy and OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import cv2
import numpy as np

from inspector.config_base import ConfigBase, setting

# Element e = transpose (when e >= 4) followed by (e % 4) counter-clockwise quarter turns.
DIHEDRAL_NAMES: tuple[str, ...] = (
    "identity", "rotate 90", "rotate 180", "rotate 270",
    "transpose", "flip vertical", "anti-transpose", "flip horizontal",
)
_ROTATE_CODES = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}

# Test and template "disagree" at a pixel when they differ by more than this (of 255) after a 3x3 opening:
# DeepPCB's pairs are registered to about a pixel, so trace edges leave 1-2 px slivers of difference
# that are not defects; the opening removes those and keeps defect-sized blobs.
DISAGREE_LEVEL = 48
_OPENING_KERNEL = np.ones((3, 3), np.uint8)
# Coarse-to-fine place search (see find_place): patches from this side up are matched at half size first;
# a coarse place is proposed when its mismatch is within _COARSE_SLACK times (the accepted mismatch + the
# patch's phase penalty, see _phase_penalty); a proposal is only verified, never accepted, at half size.
_COARSE_MIN_SIDE = 12
_COARSE_SLACK = 2.0
_VERIFY_PLACES = 8


# --------------------------------------------------------------------------- dihedral transforms


def dihedral_array(array: np.ndarray, element: int) -> np.ndarray:
    """``array`` (H, W) or (H, W, C) under dihedral ``element`` (0..7), as a new contiguous array."""
    if not 0 <= element < 8:
        raise ValueError(f"dihedral element must be in 0..7, got {element}")
    if element >= 4:
        array = cv2.transpose(array)
    turns = element % 4
    if turns:
        array = cv2.rotate(array, _ROTATE_CODES[turns])
    return np.ascontiguousarray(array)


def dihedral_boxes(boxes: np.ndarray, element: int, width: int, height: int) -> np.ndarray:
    """Boxes of a ``width`` x ``height`` image mapped to where ``dihedral_array`` moves their pixels."""
    if not 0 <= element < 8:
        raise ValueError(f"dihedral element must be in 0..7, got {element}")
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    if element >= 4:  # (x, y) -> (y, x)
        x1, y1, x2, y2 = y1, x1, y2, x2
        width, height = height, width
    for _ in range(element % 4):  # counter-clockwise: (x, y) -> (y, width - x)
        x1, y1, x2, y2 = y1, width - x2, y2, width - x1
        width, height = height, width
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32).reshape(-1, 4)


def dihedral(
    image: np.ndarray, template: np.ndarray | None, boxes: np.ndarray, element: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Image, template and boxes under the same dihedral ``element``; inputs are not modified."""
    height, width = image.shape[:2]
    return (
        dihedral_array(image, element),
        None if template is None else dihedral_array(template, element),
        dihedral_boxes(boxes, element, width, height),
    )


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PairAugmentConfig(ConfigBase):
    """The pair augmentations of a training run. All off by default (today's behaviour)."""

    KIND = "pair augmentation option"
    SOURCE = "pair augmentation"

    dihedral: bool = False  # one of the 8 dihedral transforms, uniformly, per training sample
    # probability that a training sample receives pasted defects
    copy_paste: float = setting(0.0, at_least=0.0, at_most=1.0)
    # pastes tried on such a sample (each may be skipped: no matching place)
    copy_paste_count: int = setting(2, at_least=1)
    copy_paste_balance: bool = False  # donor class drawn uniformly (favours rare classes), not by frequency
    copy_paste_margin: int = setting(3, at_least=0)  # pixels of the donor board around the defect box cut with it
    # templates' mean squared difference (0..1) at an accepted place
    copy_paste_max_mismatch: float = setting(0.02, at_least=0.0, at_most=1.0)
    # fraction of disagreeing test/template pixels allowed under a paste
    copy_paste_tolerance: float = setting(0.01, at_least=0.0, at_most=1.0)
    # (donor, orientation) searches per paste before it is skipped
    copy_paste_searches: int = setting(6, at_least=1)

    @property
    def active(self) -> bool:
        return self.dihedral or self.copy_paste > 0


# --------------------------------------------------------------------------- copy-paste


class DefectDonors:
    """Every labeled defect of a training set, as (sample index, box index), drawn at random.

    A paste first draws its class, then searches donors of that class only: classes whose defects fit
    almost anywhere (copper on bare laminate) would otherwise crowd out those that need a matching
    trace layout (short, open). ``balance=False`` draws the class by its frequency among the defects;
    ``balance=True`` uniformly, so rare classes are pasted as often as common ones.
    """

    def __init__(self, classes_per_sample: Sequence[np.ndarray], balance: bool = False) -> None:
        pairs = [(sample, box) for sample, classes in enumerate(classes_per_sample) for box in range(len(classes))]
        self.defects = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        self.classes = np.array([int(classes_per_sample[s][b]) for s, b in pairs], dtype=np.int64)
        self.balance = balance
        self._by_class = {int(c): np.flatnonzero(self.classes == c) for c in np.unique(self.classes)}
        self._class_ids = np.array(sorted(self._by_class), dtype=np.int64)
        counts = np.array([len(self._by_class[c]) for c in self._class_ids], dtype=np.float64)
        self._class_weights = (np.full(len(counts), 1.0 / len(counts)) if balance else counts / counts.sum()) \
            if len(counts) else counts

    def __len__(self) -> int:
        return len(self.defects)

    def draw_class(self, rng: np.random.Generator) -> int:
        """A class id to paste (by frequency, or uniformly with ``balance``); the pool must not be empty."""
        return int(self._class_ids[rng.choice(len(self._class_ids), p=self._class_weights)])

    def draw(self, rng: np.random.Generator, class_id: int) -> tuple[int, int]:
        """(sample index, box index) of a random defect of ``class_id``."""
        members = self._by_class[class_id]
        sample, box = self.defects[int(members[rng.integers(len(members))])]
        return int(sample), int(box)


# fetch(sample index, destination scale or None): that donor board as (image, template, boxes, classes)
# at the destination's pixel scale, or None when it cannot be used (e.g. letterboxed at another scale).
DonorFetch = Callable[[int, "float | None"], "tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None"]


class _PlaceMaps(NamedTuple):
    """What the place search needs of one destination board."""

    template_gray: np.ndarray  # float32
    template_half: np.ndarray  # float32, half size (INTER_AREA)
    blocked_sums: np.ndarray  # integral of the blocked mask (border, boxes, earlier pastes)
    disagree_sums: np.ndarray  # integral of the test/template disagreement mask


class CopyPaste:
    """Paste labeled defects of other boards onto a board where they fit (see the module docstring)."""

    def __init__(self, donors: DefectDonors, fetch: DonorFetch, cfg: PairAugmentConfig) -> None:
        self.donors = donors
        self.fetch = fetch
        self.cfg = cfg

    def __call__(
        self,
        image: np.ndarray,
        template: np.ndarray,
        boxes: np.ndarray,
        classes: np.ndarray,
        rng: np.random.Generator,
        exclude: int | None = None,
        region: tuple[int, int, int, int] | None = None,
        scale: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Try ``cfg.copy_paste_count`` pastes; returns (image, boxes, classes) with the pasted ones appended.

        ``exclude``: the destination's own sample index (never its own donor). ``region = (x1, y1, x2, y2)``:
        where pastes may go (the letterboxed board without its border); default the whole image.
        ``scale``: the destination's letterbox scale, passed to ``fetch``. The template is never changed;
        the inputs are not modified.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        if not len(self.donors):
            return image, boxes, classes
        height, width = image.shape[:2]
        template_gray = cv2.cvtColor(template, cv2.COLOR_BGR2GRAY).astype(np.float32)
        template_half = cv2.resize(template_gray, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        blocked = np.ones((height, width), np.uint8)  # 1: a paste may not cover this pixel
        x1, y1, x2, y2 = region or (0, 0, width, height)
        blocked[max(0, y1) : min(height, y2), max(0, x1) : min(width, x2)] = 0
        for box in boxes:
            _mark(blocked, box)
        maps = _PlaceMaps(template_gray, template_half, _integral(blocked), _integral(disagreement(image, template)))
        new_boxes, new_classes = [boxes], [classes]
        pasted = image
        for _ in range(self.cfg.copy_paste_count):
            placed = self._paste_one(maps, rng, exclude, scale)
            if placed is None:
                continue
            (x, y), patch, box, class_id = placed
            if pasted is image:
                pasted = image.copy()
            h, w = patch.shape[:2]
            pasted[y : y + h, x : x + w] = patch
            blocked[y : y + h, x : x + w] = 1  # a later paste keeps clear of this one, margin included
            maps = maps._replace(blocked_sums=_integral(blocked))
            new_boxes.append(box.reshape(1, 4))
            new_classes.append(np.array([class_id], np.int64))
        return pasted, np.concatenate(new_boxes).astype(np.float32), np.concatenate(new_classes)

    def _paste_one(self, maps: "_PlaceMaps", rng, exclude, scale):
        """One defect placed: ((x, y), oriented test patch, its box at the destination, class), or None."""
        class_id = self.donors.draw_class(rng)
        for _ in range(self.cfg.copy_paste_searches):
            sample, box_index = self.donors.draw(rng, class_id)
            element = int(rng.integers(8))
            if sample == exclude:
                continue
            donor = self.fetch(sample, scale)
            if donor is None:
                continue
            cut = cut_patch(*donor, box_index, self.cfg.copy_paste_margin)
            if cut is None:
                continue
            test_patch, template_patch, patch_box, _ = cut
            ph, pw = test_patch.shape[:2]
            test_patch = dihedral_array(test_patch, element)
            template_patch = dihedral_array(template_patch, element)
            patch_box = dihedral_boxes(patch_box, element, pw, ph)[0]
            place = find_place(maps.template_gray, maps.blocked_sums, maps.disagree_sums, template_patch, rng,
                               self.cfg.copy_paste_max_mismatch, self.cfg.copy_paste_tolerance, maps.template_half)
            if place is None:
                continue
            x, y = place
            return (x, y), test_patch, patch_box + np.float32([x, y, x, y]), class_id
        return None


def cut_patch(
    image: np.ndarray, template: np.ndarray, boxes: np.ndarray, classes: np.ndarray, box_index: int, margin: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """A defect's test and template patches (box + margin, clipped to the image) and its box in the patch.

    None when the patch would carry part of another labeled defect (it would arrive unlabeled).
    """
    height, width = image.shape[:2]
    box = np.asarray(boxes[box_index], dtype=np.float32)
    x1, y1 = max(0, int(np.floor(box[0])) - margin), max(0, int(np.floor(box[1])) - margin)
    x2, y2 = min(width, int(np.ceil(box[2])) + margin), min(height, int(np.ceil(box[3])) + margin)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    others = np.delete(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), box_index, axis=0)
    if len(others) and np.any((others[:, 0] < x2) & (others[:, 2] > x1) & (others[:, 1] < y2) & (others[:, 3] > y1)):
        return None
    window = (slice(y1, y2), slice(x1, x2))
    patch_box = box - np.float32([x1, y1, x1, y1])
    return image[window], cv2.cvtColor(template[window], cv2.COLOR_BGR2GRAY), patch_box, int(classes[box_index])


def find_place(
    template_gray: np.ndarray,
    blocked_sums: np.ndarray,
    disagree_sums: np.ndarray,
    template_patch: np.ndarray,
    rng: np.random.Generator,
    max_mismatch: float,
    tolerance: float,
    template_half: np.ndarray | None = None,
) -> tuple[int, int] | None:
    """Top-left (x, y) of a random acceptable place for a patch whose source template is ``template_patch``.

    Acceptable: no blocked pixel under the patch, at most ``tolerance`` of its pixels where test and
    template disagree, templates' mean squared difference (0..1) at most ``max_mismatch``, and the best
    match among its neighbours (so the patch lands on the traces, not a pixel beside them).
    ``*_sums`` are ``cv2.integral`` images of the blocked and disagreement masks (float32 grey template).

    With ``template_half`` (the template at half size, INTER_AREA) a patch of at least
    ``_COARSE_MIN_SIDE`` pixels is searched coarse to fine: the half-size match (a quarter of the work
    of a full-size one, which dominates copy-paste's cost) proposes places, and up to
    ``_VERIFY_PLACES`` of them, best coarse score first and equally good ones in random order, are
    refined and accepted at full size by the criteria above. Without it every place is scored at full
    size and one acceptable place drawn uniformly.
    """
    ph, pw = template_patch.shape[:2]
    height, width = template_gray.shape[:2]
    if ph > height or pw > width:
        return None
    patch = template_patch.astype(np.float32)
    scale = np.float32(1.0 / (ph * pw * 255.0 * 255.0))
    if template_half is None or min(ph, pw) < _COARSE_MIN_SIDE:
        free = _window_sums(blocked_sums, ph, pw) == 0
        free &= _window_sums(disagree_sums, ph, pw) <= tolerance * ph * pw
        if not free.any():
            return None
        mismatch = cv2.matchTemplate(template_gray, patch, cv2.TM_SQDIFF) * scale
        local_best = mismatch <= cv2.erode(mismatch, _OPENING_KERNEL)
        candidates = np.flatnonzero(free & local_best & (mismatch <= max_mismatch))
        if not len(candidates):
            return None
        y, x = np.unravel_index(int(candidates[rng.integers(len(candidates))]), mismatch.shape)
        return int(x), int(y)

    half_patch = cv2.resize(patch, (pw // 2, ph // 2), interpolation=cv2.INTER_AREA)
    coarse = cv2.matchTemplate(template_half, half_patch, cv2.TM_SQDIFF)
    coarse *= np.float32(1.0 / (half_patch.size * 255.0 * 255.0))
    limit = _COARSE_SLACK * (max_mismatch + _phase_penalty(patch))
    proposed = (coarse <= cv2.erode(coarse, _OPENING_KERNEL)) & (coarse <= limit)
    ys, xs = np.nonzero(proposed)
    scores = coarse[ys, xs]
    ys, xs = np.minimum(2 * ys, height - ph), np.minimum(2 * xs, width - pw)
    keep = _free_at(blocked_sums, disagree_sums, xs, ys, ph, pw, tolerance)
    ys, xs, scores = ys[keep], xs[keep], scores[keep]
    shuffled = rng.permutation(len(ys))  # best coarse score first, equal scores (a long trace, bare laminate) at random
    for pick in shuffled[np.argsort(scores[shuffled], kind="stable")][:_VERIFY_PLACES]:
        # The full-size place is within a pixel of twice the coarse one: score the 5x5 around it exactly.
        x0, y0 = max(0, int(xs[pick]) - 2), max(0, int(ys[pick]) - 2)
        x1, y1 = min(width - pw, int(xs[pick]) + 2), min(height - ph, int(ys[pick]) + 2)
        fine = cv2.matchTemplate(template_gray[y0 : y1 + ph, x0 : x1 + pw], patch, cv2.TM_SQDIFF) * scale
        grid_y, grid_x = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
        fine[~_free_at(blocked_sums, disagree_sums, grid_x, grid_y, ph, pw, tolerance)] = np.inf
        best = np.unravel_index(int(np.argmin(fine)), fine.shape)
        if fine[best] <= max_mismatch:
            return x0 + int(best[1]), y0 + int(best[0])
    return None


def _phase_penalty(patch: np.ndarray) -> float:
    """How much worse a perfect match can score at half size when it sits at an odd pixel.

    The half-size board is sampled on even pixels; a match at an odd position is seen through the
    patch shifted by one pixel, which at half size blurs its edges differently. The largest coarse
    mismatch between the patch and its one-pixel shifts bounds that, so no real match is lost.
    """
    h2, w2 = (patch.shape[0] - 1) // 2, (patch.shape[1] - 1) // 2

    def half(dy: int, dx: int) -> np.ndarray:
        return cv2.resize(patch[dy : dy + 2 * h2, dx : dx + 2 * w2], (w2, h2), interpolation=cv2.INTER_AREA)

    base = half(0, 0)
    worst = max(float(np.mean((half(dy, dx) - base) ** 2)) for dy, dx in ((0, 1), (1, 0), (1, 1)))
    return worst / (255.0 * 255.0)


def _free_at(blocked_sums, disagree_sums, xs, ys, height, width, tolerance) -> np.ndarray:
    """Whether the height x width windows at top-lefts (xs, ys) are unblocked and agree enough."""
    def window(sums):
        return sums[ys + height, xs + width] - sums[ys, xs + width] - sums[ys + height, xs] + sums[ys, xs]

    return (window(blocked_sums) == 0) & (window(disagree_sums) <= tolerance * height * width)


def disagreement(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """uint8 mask (1: test and template disagree there) without the registration slivers along edges."""
    difference = cv2.absdiff(image, template)
    if difference.ndim == 3:  # the largest channel difference (cv2: numpy's strided max(axis=2) is ~10x slower)
        planes = cv2.split(difference)
        difference = planes[0]
        for plane in planes[1:]:
            difference = cv2.max(difference, plane)
    mask = (difference > DISAGREE_LEVEL).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, _OPENING_KERNEL)


def _mark(mask: np.ndarray, box: np.ndarray) -> None:
    """Set the pixels a continuous-coordinate box touches."""
    height, width = mask.shape[:2]
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    mask[y1:y2, x1:x2] = 1


def _integral(mask: np.ndarray) -> np.ndarray:
    return cv2.integral(mask, sdepth=cv2.CV_32S)


def _window_sums(sums: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sum of the mask under every height x width window, indexed by its top-left (matchTemplate's layout)."""
    return sums[height:, width:] - sums[:-height, width:] - sums[height:, :-width] + sums[:-height, :-width]


# --------------------------------------------------------------------------- the loader's entry point


class PairAugmenter:
    """What the loader applies to one training sample: pastes on the whole board, dihedral after the crop."""

    def __init__(self, cfg: PairAugmentConfig, donors: DefectDonors | None = None,
                 fetch: DonorFetch | None = None) -> None:
        if cfg.copy_paste > 0 and (donors is None or fetch is None):
            raise ValueError("copy_paste needs a donor pool and a way to fetch donor boards")
        self.cfg = cfg
        self.copy_paste = CopyPaste(donors, fetch, cfg) if cfg.copy_paste > 0 else None

    def paste(self, image, template, boxes, classes, rng, exclude=None, region=None, scale=None):
        """Copy-paste with probability ``cfg.copy_paste`` (draws nothing from ``rng`` when it is off)."""
        if self.copy_paste is None or rng.random() >= self.cfg.copy_paste:
            return image, template, boxes, classes
        image, boxes, classes = self.copy_paste(image, template, boxes, classes, rng, exclude, region, scale)
        return image, template, boxes, classes

    def orient(self, image, template, boxes, classes, rng):
        """A uniformly drawn dihedral transform (draws nothing from ``rng`` when it is off)."""
        if not self.cfg.dihedral:
            return image, template, boxes, classes
        image, template, boxes = dihedral(image, template, boxes, int(rng.integers(8)))
        return image, template, boxes, classes
