"""The training loader's batches made on the GPU, from boards kept there: what lets a lent GPU train, not wait.

Why: on the H200 of 2026-12-04 the GPU waited for its 16 CPU cores. Every batch of ``BatchLoader`` is made on the
CPU (dihedral turn, brightness/contrast, noise, blur, the grey difference and its 2x2 packing: about 16 ms a
board), and three trainings shared the cores: 130-225 boards/s a job, a few hundred epochs short of what a detector
trained from scratch needs. The training boards of DeepPCB fit on any GPU many times over (800 pairs of 640 x 640
grey planes: 0.66 GB), so they are letterboxed once, by the loader itself, moved there, and each batch is made there.

What stays exactly the loader's (``tests/tools/test_torch_twin_device_batches.py`` compares batches):
- the order (``BatchLoader._batch_indices``: the permutation of ``(seed, epoch)``), the plain epochs from
  ``plain_from_epoch`` on (whole boards, no augmentation), the padded targets;
- every random draw of a sample, made from the same ``numpy`` generator of ``(seed, epoch, position)`` in the
  same order (the dihedral element, ``augment``'s flips, quarter turns and brightness/contrast), so for the same
  draws the batch is the same: bit for bit (the 3x3 Gaussian blur in OpenCV's own fixed point);
- the input layouts (``inspector.data.layouts``): grey, template and difference packed 2x2 as ``to_input`` does.

What differs, on purpose: a noise field is drawn on the GPU (``torch``'s generator, seeded per sample), not by
``rng.standard_normal`` over the whole board, which alone costs the CPU ~10 ms. So once a sample's noise fires, the
loader's generator has spent the field's draws and this one has not: that sample's later draws (the template's
noise, the blurs) are other values from the same distributions. A grey plane's noise is drawn as the loader draws
it, on three colour planes, each clipped and truncated, then made grey as OpenCV does.

Not supported (refused by name): crops (the GPU presets train on whole boards) and defect copy-paste.
Only torch, numpy, OpenCV and the paddle-free ``inspector.data`` are imported.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from inspector.data.augment import dihedral_boxes
from inspector.data.loader import BatchLoader, padded_targets
from inspector.data.transforms import _brightness_contrast_table, gray_plane

# OpenCV's RGB -> grey weights in 1/16384ths (R, G, B)
LUMA_WEIGHTS = (4899.0, 9617.0, 1868.0)
INV_255 = np.float32(1 / 255)


class Draws(NamedTuple):
    """One sample's random choices, drawn as ``BatchLoader._prepare`` and ``transforms.augment`` draw them."""

    element: int = 0  # dihedral element (0..7)
    flip_horizontal: bool = False
    flip_vertical: bool = False
    quarter_turns: int = 0  # counter-clockwise
    table: np.ndarray | None = None  # brightness/contrast lookup table
    noise: tuple[float | None, float | None] = (None, None)  # sigma for the image, the template
    blur: tuple[float | None, float | None] = (None, None)
    noise_seed: int = 0


class DeviceBatches:
    """``loader``'s training batches (its dataset, seed, augmentation, pair augmentation, layout), made on ``device``
    from the letterboxed boards copied there once. ``batch(epoch, step)`` -> (images (B, C, S, S) float32 on the
    device, boxes (B, M, 4) float32, classes (B, M) int64), as ``loader``'s batch ``step`` of ``epoch``."""

    def __init__(self, loader: BatchLoader, device: torch.device | str = "cpu") -> None:
        if not loader.train:
            raise ValueError("device batches: the loader must be a training loader (train=True)")
        if loader.crop_size is not None:
            raise ValueError(f"device batches: crop_size {loader.crop_size} is not supported; train on whole boards "
                             "(crop_size None)")
        if loader._pairs is not None and loader._pairs.copy_paste is not None:
            raise ValueError(f"device batches: copy_paste {loader._pairs.cfg.copy_paste} is not supported (pasting "
                             "is CPU work); set it to 0")
        self.loader = loader
        self.device = torch.device(device)
        self.layout = loader.layout
        self.dihedral = loader._pairs is not None and loader._pairs.cfg.dihedral
        self.augment = loader.augment
        self.gray = self.layout.color == "GRAY"
        planes, self.boxes, self.classes = [], [], []
        for sample in loader.dataset.samples:
            item = loader._letterboxed(sample)
            pictures = [item.image] + ([item.template] if self.layout.needs_template else [])
            if self.gray:
                planes.append(np.stack([gray_plane(p) for p in pictures]))
            else:  # BGR (H, W, 3) -> RGB planes, the image's then the template's, as to_input orders them
                planes.append(np.concatenate([p[:, :, ::-1].transpose(2, 0, 1) for p in pictures]))
            self.boxes.append(np.asarray(item.boxes, dtype=np.float32).reshape(-1, 4))
            self.classes.append(np.asarray(sample.classes, dtype=np.int64).reshape(-1))
        self.planes = torch.from_numpy(np.stack(planes)).to(self.device)  # (N, P, F, F) uint8
        self.pictures = 2 if self.layout.needs_template else 1
        self.planes_per_picture = self.planes.shape[1] // self.pictures
        self._epoch: int | None = None
        self._indices: list | None = None

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def nbytes(self) -> int:
        return self.planes.numel()

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        if self._epoch != epoch:
            self._epoch, self._indices = epoch, self.loader._batch_indices(epoch)
        start, indices = self._indices[step]
        plain = self.loader.plain_from_epoch is not None and epoch >= self.loader.plain_from_epoch
        pictures, boxes = [], []
        for offset, index in enumerate(indices):
            draws = Draws() if plain else self.draws(epoch, start + offset)
            picture, sample_boxes = self._geometry(int(index), draws)
            pictures.append(self._photometric(picture, draws))
            boxes.append(sample_boxes)
        images = self._to_input(torch.stack(pictures))
        padded_boxes, padded_classes = padded_targets([b / np.float32(self.layout.block) for b in boxes],
                                                      [self.classes[int(index)] for index in indices])
        return images, padded_boxes, padded_classes

    def draws(self, epoch: int, position: int) -> Draws:
        """The random choices of the sample at ``position`` of ``epoch``, in the loader's order of draws."""
        rng = np.random.default_rng([self.loader.seed, epoch, position])
        cfg = self.augment
        element = int(rng.integers(8)) if self.dihedral else 0
        flip_h = bool(rng.random() < cfg.flip_horizontal)
        flip_v = bool(rng.random() < cfg.flip_vertical)
        turns = int(rng.integers(1, 4)) if rng.random() < cfg.rotate90 else 0
        table = None
        if rng.random() < cfg.brightness_contrast:
            table = _brightness_contrast_table(rng.uniform(*cfg.brightness_range), rng.uniform(*cfg.contrast_range))
        noise = tuple(rng.uniform(*cfg.noise_sigma_range) if rng.random() < cfg.noise else None
                      for _ in range(self.pictures))
        blur = tuple(rng.uniform(*cfg.blur_sigma_range) if rng.random() < cfg.blur else None
                     for _ in range(self.pictures))
        return Draws(element, flip_h, flip_v, turns, table, noise + (None,) * (2 - len(noise)),
                     blur + (None,) * (2 - len(blur)), int(rng.integers(2**62)))

    def _geometry(self, index: int, draws: Draws) -> tuple[torch.Tensor, np.ndarray]:
        """The board's planes and boxes under the dihedral element, then augment's flips and quarter turns."""
        picture = self.planes[index]
        boxes = self.boxes[index]
        size = picture.shape[-1]  # letterboxed squares: every transform keeps the side
        if draws.element:
            if draws.element >= 4:
                picture = picture.transpose(-2, -1)
            picture = torch.rot90(picture, draws.element % 4, dims=(-2, -1))
            boxes = dihedral_boxes(boxes, draws.element, size, size)
        if draws.flip_horizontal:
            picture = torch.flip(picture, dims=(-1,))
            boxes = boxes[:, [2, 1, 0, 3]] * np.float32([-1, 1, -1, 1]) + np.float32([size, 0, size, 0])
        if draws.flip_vertical:
            picture = torch.flip(picture, dims=(-2,))
            boxes = boxes[:, [0, 3, 2, 1]] * np.float32([1, -1, 1, -1]) + np.float32([0, size, 0, size])
        for _ in range(draws.quarter_turns):  # counter-clockwise: new x = old y, new y = side - old x
            picture = torch.rot90(picture, 1, dims=(-2, -1))
            boxes = np.stack([boxes[:, 1], size - boxes[:, 2], boxes[:, 3], size - boxes[:, 0]], axis=1)
        return picture, np.asarray(boxes, dtype=np.float32).reshape(-1, 4)

    def _photometric(self, picture: torch.Tensor, draws: Draws) -> torch.Tensor:
        """Brightness/contrast (one table for image and template), then each picture's own noise and blur;
        uint8 values in a float32 tensor, as the loader's uint8 pictures hold them."""
        if draws.table is not None:
            picture = torch.from_numpy(draws.table).to(self.device)[picture.long()]
        picture = picture.float()
        if draws.noise == (None, None) and draws.blur == (None, None):
            return picture
        generator = torch.Generator(device=self.device).manual_seed(draws.noise_seed)
        parts = list(picture.split(self.planes_per_picture))
        for which, part in enumerate(parts):
            sigma = draws.noise[which]
            if sigma is not None:
                part = self._noisy(part, sigma, generator)
            if draws.blur[which] is not None:
                part = gaussian_blur_3x3(part, draws.blur[which])
            parts[which] = part
        return torch.cat(parts)

    def _noisy(self, part: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
        """``transforms._maybe_noise``: Gaussian noise, clipped, truncated to grey levels. A grey plane stands for
        the loader's three identical colour planes: each gets its own noise and truncation, then OpenCV's grey
        conversion (fixed point, 14 bits) makes one plane again. (Noise added to the grey plane directly would be
        weaker at the clipped black and white copper, most of a binarised board.)"""
        if not self.gray:
            noise = torch.randn(part.shape, generator=generator, device=self.device) * sigma
            return torch.clamp(part + noise, 0, 255).floor()  # the loader's astype(uint8) truncates
        noise = torch.randn((3, *part.shape), generator=generator, device=self.device) * sigma
        channels = torch.clamp(part[None] + noise, 0, 255).floor()
        red, green, blue = LUMA_WEIGHTS  # written out: a matrix product may run in TF32 on a GPU
        return torch.floor((red * channels[0] + green * channels[1] + blue * channels[2] + 8192.0) / 16384.0)

    def _to_input(self, pictures: torch.Tensor) -> torch.Tensor:
        """(B, P, F, F) uint8 values -> the layout's network input (B, C, S, S) float32 in [0, 1]."""
        if self.gray:  # the layout's grey planes (image, template, their difference), packed block x block into depth
            made = {"frame": pictures[:, :1], "template": pictures[:, 1:2],
                    "difference": (pictures[:, :1] - pictures[:, 1:2]).abs()}
            pictures = torch.cat([made[name] for name in self.layout.gray_planes], dim=1)
            pictures = F.pixel_unshuffle(pictures, self.layout.block)
        return pictures * torch.tensor(INV_255, device=self.device)


def gaussian_blur_3x3(planes: torch.Tensor, sigma: float) -> torch.Tensor:
    """``cv2.GaussianBlur(plane, (3, 3), sigma)`` of each (H, W) grey-level plane of ``planes`` (P, H, W), bit for bit.

    OpenCV blurs uint8 pictures in fixed point: the kernel in 1/256ths (its sides rounded, the centre what makes
    256), the rows, then the columns, the sum rounded half up. In units of 1/65536 every partial sum is an integer
    below 2^24, so float32 holds it exactly; the sums are written as shifted adds, not as a convolution, which a
    GPU may run in TF32 (10-bit mantissa). Border: reflect-101 (OpenCV's default, torch's "reflect").
    Checked against OpenCV for sigma 0.3-0.9, the augmentation's range."""
    side = float(np.round(cv2.getGaussianKernel(3, sigma)[0, 0] * 256))
    centre = 256.0 - 2 * side
    x = F.pad(planes[:, None], (1, 1, 1, 1), mode="reflect")[:, 0]
    x = side * (x[:, :, :-2] + x[:, :, 2:]) + centre * x[:, :, 1:-1]  # along the rows
    x = side * (x[:, :-2] + x[:, 2:]) + centre * x[:, 1:-1]  # along the columns
    return torch.floor((x + 32768.0) / 65536.0)
