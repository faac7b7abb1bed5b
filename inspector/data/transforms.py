"""Image pre-processing shared by training and the runtime, and training-time augmentation.

The runtime imports this module, so it depends on numpy and OpenCV only.

Conventions: images are BGR uint8 (H, W, 3) as OpenCV reads them; boxes are float32 (N, 4)
``xyxy`` in continuous pixel coordinates, so a box ``[x1, y1, x2, y2]`` covers the pixel
columns ``x1 .. x2 - 1`` and rows ``y1 .. y2 - 1``. A template (the aligned defect-free
image of the same board area) always receives the same geometric transform as its image.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inspector.data.layouts import input_layout

PAD_VALUE = 0  # letterbox border: black, like the background of a binarised scan


class Scratch:
    """Named arrays reused from call to call by a caller that pre-processes frame after frame (the runtime).

    Why: glibc serves arrays above its mmap threshold (128 KB at first) with fresh pages and may give them back
    when they are freed, so a frame-sized temporary can cost its page faults at every frame: on this 2-core AMD,
    splitting a 640 px BGR board into three planes took 1.0 ms into new arrays and 0.03 ms into reused ones in a
    fresh process; in the detector's loop, models/default's pre-processing went from 1.1-1.2 ms to 1.0 ms. An
    array taken from here stays valid until the same name is asked for again: use it within one frame.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
        """The array kept under ``name``, made afresh when the shape or type asked for differs."""
        kept = self._arrays.get(name)
        if kept is None or kept.shape != tuple(shape) or kept.dtype != dtype:
            kept = self._arrays[name] = np.empty(shape, dtype)
        return kept


# --------------------------------------------------------------------------- pre-processing


def letterbox(image: np.ndarray, size: int, scratch: Scratch | None = None,
              name: str = "image") -> tuple[np.ndarray, float, tuple[int, int]]:
    """Fit ``image`` into a ``size`` x ``size`` BGR square, keeping its aspect ratio (grey frames become BGR).

    Returns ``(resized, scale, (pad_x, pad_y))``: a pixel ``(x, y)`` of the input lands at
    ``(x * scale + pad_x, y * scale + pad_y)``; the border is filled with ``PAD_VALUE``.
    ``scratch``: the resized and padded arrays are ``scratch``'s (under ``name``), valid until its next frame.
    """
    return _fit_square(_as_bgr(image), size, scratch, name)


def letterbox_gray(image: np.ndarray, size: int, scratch: Scratch | None = None,
                   name: str = "image") -> tuple[np.ndarray, float, tuple[int, int]]:
    """``letterbox`` for the grey layouts: one ``size`` x ``size`` grey plane (BGR through ``gray_plane``).

    Why not ``letterbox`` then grey: a grey camera's frame would be tripled to BGR and folded back per frame.
    """
    return _fit_square(gray_plane(image), size, scratch, name)


def _fit_square(image: np.ndarray, size: int, scratch: Scratch | None = None,
                name: str = "image") -> tuple[np.ndarray, float, tuple[int, int]]:
    height, width = image.shape[:2]
    scale = min(size / width, size / height)
    new_width = max(1, min(size, round(width * scale)))
    new_height = max(1, min(size, round(height * scale)))
    if (new_width, new_height) != (width, height):
        # INTER_AREA averages when shrinking, so thin copper traces fade instead of vanishing.
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = None if scratch is None else scratch.array(f"{name}-resized", (new_height, new_width) +
                                                             image.shape[2:])
        image = cv2.resize(image, (new_width, new_height), dst=resized, interpolation=interpolation)
    pad_x = (size - new_width) // 2
    pad_y = (size - new_height) // 2
    if (new_width, new_height) == (size, size):
        return np.ascontiguousarray(image), scale, (0, 0)
    if scratch is None:
        square = np.full((size, size) + image.shape[2:], PAD_VALUE, dtype=np.uint8)
    else:
        square = scratch.array(f"{name}-square", (size, size) + image.shape[2:])
        square.fill(PAD_VALUE)  # the previous frame's pixels may lie where this one's border is
    square[pad_y : pad_y + new_height, pad_x : pad_x + new_width] = image
    return square, scale, (pad_x, pad_y)


def letterbox_boxes(boxes: np.ndarray, scale: float, pad: tuple[float, float]) -> np.ndarray:
    """Map boxes from original image pixels to letterboxed input pixels."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    offset = np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float32)
    return boxes * np.float32(scale) + offset


def unletterbox_boxes(
    boxes: np.ndarray,
    scale: float,
    pad: tuple[float, float],
    original_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Map boxes from letterboxed input pixels back to original image pixels.

    The result is clipped at 0 and, when ``original_size = (width, height)`` is given, at the
    image's right and bottom edges (detections may reach into the letterbox border).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    offset = np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float32)
    mapped = (boxes - offset) / np.float32(scale)
    upper = np.inf if original_size is None else np.array(
        [original_size[0], original_size[1], original_size[0], original_size[1]], dtype=np.float32
    )
    return np.clip(mapped, 0, upper).astype(np.float32)


def to_input(image: np.ndarray, template: np.ndarray | None = None, mode: str | None = None,
             out: np.ndarray | None = None, scratch: Scratch | None = None) -> np.ndarray:
    """The network input for one letterboxed image: float32 (C, H, W) in [0, 1] (see ``layouts``).

    ``mode`` None means ``image`` without a template and ``image+template`` with one: RGB planes,
    the image's three then the template's. ``gray-diff-s2d`` takes an image and template at twice the
    network's side and returns 12 planes at the network's side.
    ``out``: a float32 (C, H, W) array to write the input into and return, reused from frame to frame by the
    runtime: a fresh 5 MB array per frame is given back to the kernel and page-faulted in again at every frame
    by glibc's allocator (measured: 2.6 ms of a grey board's 3.9 ms pre-processing on this CPU). ``scratch``
    likewise keeps the intermediate planes (``Scratch``).
    """
    layout = input_layout(mode or ("image" if template is None else "image+template"), "to_input mode")
    if layout.needs_template and template is None:
        raise ValueError(f"input layout {layout.mode!r} needs the golden template")
    if not layout.needs_template and template is not None:
        raise ValueError(f"input layout {layout.mode!r} takes no template")
    if template is not None and template.shape != image.shape:
        raise ValueError(f"template shape {template.shape} differs from image shape {image.shape}")
    height, width = image.shape[:2]
    shape = (layout.channels, height // layout.block, width // layout.block)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"to_input out: expected a contiguous float32 array of shape {shape}, got {out.dtype} "
                         f"{out.shape}")
    if layout.color == "GRAY":
        return _gray_space_to_depth(gray_plane(image), gray_plane(template), layout.gray_planes, layout.block, out,
                                    scratch)
    planes = [image] if template is None else [image, template]
    # cv2.split makes contiguous uint8 channel planes; copying those into the float block is ~10x faster
    # than numpy's strided HWC -> CHW cast (0.25 ms vs 2.5 ms for 2 x 320x320 on this CPU): per frame that
    # is a tenth of the network's time.
    for index, plane in enumerate(planes):
        channels = None if scratch is None else [scratch.array(f"channel{c}", plane.shape[:2]) for c in range(3)]
        blue, green, red = cv2.split(np.ascontiguousarray(plane), channels)
        out[3 * index], out[3 * index + 1], out[3 * index + 2] = red, green, blue
    out *= np.float32(1 / 255)
    return out


def _gray_space_to_depth(image: np.ndarray, template: np.ndarray, contents: tuple[str, ...], block: int,
                         out: np.ndarray, scratch: Scratch | None = None) -> np.ndarray:
    """The grey planes ``contents`` names ("frame", "template", "difference": the absolute difference), in
    that order, each packed ``block`` x ``block`` into depth in ``out``: channel ``plane * block**2 + dy * block
    + dx`` holds pixels ``[dy::block, dx::block]`` (the order of paddle's pixel_unshuffle)."""
    height, width = image.shape
    if height % block or width % block:
        raise ValueError(f"space-to-depth by {block} needs sides divisible by {block}, got {width}x{height}")
    difference = None if scratch is None else scratch.array("difference", image.shape)
    made = {"frame": lambda: image, "template": lambda: template,
            "difference": lambda: cv2.absdiff(image, template, dst=difference)}
    planes = [made[name]() for name in contents]
    columns_out = None if scratch is None or block == 1 else \
        [scratch.array(f"columns{dx}", (height, width // block)) for dx in range(block)]
    channel = 0
    # cv2.split of a plane viewed as `block`-channel pixels separates the columns (dx) in one SIMD pass; the
    # rows (dy) are then plain row slices, cast into the float planes (half the time of strided float copies).
    for plane in planes:
        columns = cv2.split(plane.reshape(height, width // block, block), columns_out) if block > 1 else (plane,)
        for dy in range(block):
            for dx in range(block):
                out[channel] = columns[dx][dy::block]
                channel += 1
    out *= np.float32(1 / 255)
    return out


def gray_plane(image: np.ndarray) -> np.ndarray:
    """One grey plane: (H, W) and (H, W, 1) as they are, BGR through OpenCV's luma weights (exact for the
    identical planes of a grey image stored as colour)."""
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.ascontiguousarray(image[:, :, 0])
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept (H, W) or (H, W, 1) grayscale too: a line camera may deliver single-channel frames."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) BGR image, got shape {image.shape}")
    return image


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the training augmentations (each applied independently).

    PCB scans have no canonical orientation, so flips and 90-degree turns are label-preserving.
    Photometric changes stay mild: defects are defined by copper shape, not by shade.
    """

    flip_horizontal: float = 0.5
    flip_vertical: float = 0.5
    rotate90: float = 0.5  # then a quarter, half or three-quarter turn, uniformly
    brightness_contrast: float = 0.5
    brightness_range: tuple[float, float] = (-0.15, 0.15)  # added, as a fraction of full scale
    contrast_range: tuple[float, float] = (0.8, 1.2)  # gain around mid-grey
    noise: float = 0.3
    noise_sigma_range: tuple[float, float] = (2.0, 8.0)  # grey levels
    blur: float = 0.1
    blur_sigma_range: tuple[float, float] = (0.3, 0.9)  # a 3x3 Gaussian: slight camera defocus

    @classmethod
    def off(cls) -> "AugmentConfig":
        """No augmentation at all."""
        return cls(flip_horizontal=0, flip_vertical=0, rotate90=0, brightness_contrast=0, noise=0, blur=0)


def augment(
    image: np.ndarray,
    template: np.ndarray | None,
    boxes: np.ndarray,
    classes: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Randomly transform an image (and its template) with its boxes; inputs are not modified.

    Geometric transforms and brightness/contrast are applied identically to the template (it
    must stay aligned and is lit like the image); noise and blur are drawn independently.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if rng.random() < cfg.flip_horizontal:
        image, template, boxes = flip_horizontal(image, template, boxes)
    if rng.random() < cfg.flip_vertical:
        image, template, boxes = flip_vertical(image, template, boxes)
    if rng.random() < cfg.rotate90:
        image, template, boxes = rotate90(image, template, boxes, quarter_turns=int(rng.integers(1, 4)))
    if rng.random() < cfg.brightness_contrast:
        table = _brightness_contrast_table(rng.uniform(*cfg.brightness_range), rng.uniform(*cfg.contrast_range))
        image = cv2.LUT(image, table)
        template = None if template is None else cv2.LUT(template, table)
    image = _maybe_noise(image, rng, cfg)
    template = None if template is None else _maybe_noise(template, rng, cfg)
    image = _maybe_blur(image, rng, cfg)
    template = None if template is None else _maybe_blur(template, rng, cfg)
    return image, template, boxes, classes


def flip_horizontal(
    image: np.ndarray, template: np.ndarray | None, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Mirror left-right."""
    width = image.shape[1]
    flipped = boxes[:, [2, 1, 0, 3]] * np.float32([-1, 1, -1, 1]) + np.float32([width, 0, width, 0])
    return cv2.flip(image, 1), None if template is None else cv2.flip(template, 1), flipped


def flip_vertical(
    image: np.ndarray, template: np.ndarray | None, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Mirror top-bottom."""
    height = image.shape[0]
    flipped = boxes[:, [0, 3, 2, 1]] * np.float32([1, -1, 1, -1]) + np.float32([0, height, 0, height])
    return cv2.flip(image, 0), None if template is None else cv2.flip(template, 0), flipped


def rotate90(
    image: np.ndarray, template: np.ndarray | None, boxes: np.ndarray, quarter_turns: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Rotate counter-clockwise by ``quarter_turns`` x 90 degrees."""
    for _ in range(quarter_turns % 4):
        width = image.shape[1]
        # Counter-clockwise: new x = old y, new y = width - old x.
        boxes = np.stack([boxes[:, 1], width - boxes[:, 2], boxes[:, 3], width - boxes[:, 0]], axis=1)
        image = cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
        template = None if template is None else cv2.rotate(template, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image, template, boxes.astype(np.float32).reshape(-1, 4)


def random_crop(
    image: np.ndarray,
    template: np.ndarray | None,
    boxes: np.ndarray,
    classes: np.ndarray,
    crop_size: int,
    rng: np.random.Generator,
    min_visible: float = 0.4,
    tries: int = 5,
    align: int = 1,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """A ``crop_size`` square crop that keeps most defects, with its boxes in crop pixels.

    Each of ``tries`` places the window at a random position that contains a randomly chosen
    box (anywhere when there are none); the try keeping the most box area wins. So crops move
    around but rarely miss the defects. Boxes cut by the crop are clipped to it and dropped
    when less than ``min_visible`` of their area remains. ``align``: window offsets are multiples of
    it (``crop_offset``).
    """
    offset = crop_offset(image.shape[1], image.shape[0], boxes, crop_size, rng, min_visible, tries, align)
    return crop_at(image, template, boxes, classes, offset, crop_size, min_visible)


def crop_offset(
    width: int,
    height: int,
    boxes: np.ndarray,
    crop_size: int,
    rng: np.random.Generator,
    min_visible: float = 0.4,
    tries: int = 5,
    align: int = 1,
) -> tuple[int, int]:
    """The ``(x0, y0)`` of ``random_crop``'s window in a ``width`` x ``height`` image.

    ``align > 1``: both offsets are multiples of ``align`` (a distillation teacher's cached whole-board maps
    then crop cell for cell with the image: ``inspector.compression.teacher_cache``); a window that covers a
    box is still preferred, among the aligned positions. ``align=1`` draws exactly as before.
    """
    if crop_size > height or crop_size > width:
        raise ValueError(f"crop size {crop_size} is larger than the {width}x{height} image")
    if align < 1:
        raise ValueError(f"align must be at least 1, got {align}")
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    best_offset, best_kept = (0, 0), -1.0
    for _ in range(tries if len(boxes) else 1):
        anchor = boxes[rng.integers(len(boxes))] if len(boxes) else None
        offset = (
            _window_start(rng, width - crop_size, crop_size, None if anchor is None else (anchor[0], anchor[2]), align),
            _window_start(rng, height - crop_size, crop_size, None if anchor is None else (anchor[1], anchor[3]), align),
        )
        kept = float(_visible_fraction(boxes, offset, crop_size).sum())
        if kept > best_kept:
            best_offset, best_kept = offset, kept
    return best_offset


def crop_at(
    image: np.ndarray,
    template: np.ndarray | None,
    boxes: np.ndarray,
    classes: np.ndarray,
    offset: tuple[int, int],
    crop_size: int,
    min_visible: float = 0.4,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """The ``crop_size`` window at ``offset = (x0, y0)``, its boxes clipped (dropped below ``min_visible``)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    x0, y0 = offset
    keep = _visible_fraction(boxes, offset, crop_size) >= min_visible
    shifted = boxes[keep] - np.float32([x0, y0, x0, y0])
    cropped_boxes = np.clip(shifted, 0, crop_size).astype(np.float32)
    window = (slice(y0, y0 + crop_size), slice(x0, x0 + crop_size))
    return (
        np.ascontiguousarray(image[window]),
        None if template is None else np.ascontiguousarray(template[window]),
        cropped_boxes,
        classes[keep],
    )


def _window_start(rng: np.random.Generator, last: int, crop_size: int, span: tuple[float, float] | None,
                  align: int = 1) -> int:
    """A random window start in ``0..last`` along one axis, covering ``span = (lo, hi)`` when it fits; a multiple
    of ``align`` (then ``last`` is rounded down to one)."""
    if span is None:
        return int(rng.integers(0, last // align + 1)) * align
    lo = int(np.clip(np.ceil(span[1]) - crop_size, 0, last))  # the window's end reaches the span's end
    hi = int(np.clip(np.floor(span[0]), 0, last))  # the window starts before the span does
    lo, hi = min(lo, hi), max(lo, hi)  # a span longer than the window: a window inside it
    if align == 1:
        return int(rng.integers(lo, hi + 1))
    first, final = -(-lo // align), min(hi, last) // align
    if first > final:  # no aligned start covers the span: the aligned start nearest to it
        first = final = min(int(round(lo / align)), last // align)
    return int(rng.integers(first, final + 1)) * align


def _visible_fraction(boxes: np.ndarray, offset: tuple[int, int], crop_size: int) -> np.ndarray:
    """Per box, the fraction of its area inside the crop window at ``offset``."""
    x0, y0 = offset
    inter_w = np.clip(np.minimum(boxes[:, 2], x0 + crop_size) - np.maximum(boxes[:, 0], x0), 0, None)
    inter_h = np.clip(np.minimum(boxes[:, 3], y0 + crop_size) - np.maximum(boxes[:, 1], y0), 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.where(area > 0, inter_w * inter_h / np.maximum(area, 1e-6), 0.0)


def _brightness_contrast_table(brightness: float, contrast: float) -> np.ndarray:
    """A 256-entry lookup table: contrast around mid-grey, then a brightness shift."""
    levels = np.arange(256, dtype=np.float32)
    mapped = (levels - 127.5) * contrast + 127.5 + brightness * 255
    return np.clip(np.rint(mapped), 0, 255).astype(np.uint8)


def _maybe_noise(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    if rng.random() >= cfg.noise:
        return image
    sigma = rng.uniform(*cfg.noise_sigma_range)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _maybe_blur(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    if rng.random() >= cfg.blur:
        return image
    return cv2.GaussianBlur(image, (3, 3), rng.uniform(*cfg.blur_sigma_range))
