"""Batches of network inputs for training and evaluation.

Per sample: decode the image (and its template when the input layout uses one), letterbox the full
image to the layout's letterbox size (``input_size``, or twice that for a space-to-depth layout, see
``layouts``); in train mode then take a defect-aware crop of ``crop_size`` (in network-input pixels;
the CPU speed lever: train on small crops, infer on the whole image) and augment; last, build the
layout's input planes. Decoded, letterboxed images are cached in memory so each JPEG is decoded
once per run.

A small thread pool prepares the next batches while the current one is used; OpenCV releases
the GIL, so the threads really run in parallel. All randomness comes from ``(seed, epoch,
position in the epoch)``, so an epoch is reproducible (for resume) whatever the thread timing.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from inspector.data.augment import DefectDonors, PairAugmentConfig, PairAugmenter, dihedral
from inspector.data.layouts import INPUT_MODES, input_layout
from inspector.data.structures import DataError, Dataset, Sample
from inspector.data.transforms import AugmentConfig, augment, crop_at, crop_offset, letterbox, letterbox_boxes, to_input

__all__ = ["INPUT_MODES", "Batch", "BatchLoader", "SampleView"]


class SampleView(NamedTuple):
    """Where a training row's pixels came from, geometrically: board ``key`` letterboxed to a ``frame`` square
    (letterbox pixels), the ``size`` crop at ``(x0, y0)``, then dihedral ``element`` (``augment.dihedral``).
    Photometric changes are not described. A distillation teacher's cache
    (``inspector.compression.teacher_cache``) serves the row from the teacher's whole-board maps by it."""

    key: str
    element: int
    x0: int
    y0: int
    size: int
    frame: int


@dataclass
class Batch:
    """Network inputs and padded targets of B samples (M = most boxes of any sample, at least 1)."""

    images: np.ndarray  # (B, C, S, S) float32, C = the input layout's channels
    boxes: np.ndarray  # (B, M, 4) float32, input-pixel xyxy, padded with 0
    classes: np.ndarray  # (B, M) int64, padded with -1
    keys: list[str]  # Sample.key of each row
    scales: np.ndarray  # (B,) float32: letterbox scale (original pixels -> network input pixels)
    pads: np.ndarray  # (B, 2) float32: letterbox (pad_x, pad_y) in network input pixels
    # With ``record_views``: per row its SampleView, or None where its pixels changed otherwise (copy-paste, flips)
    views: list | None = None

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class _Letterboxed:
    """One sample's decoded images at the layout's letterbox size; the unit of the cache."""

    image: np.ndarray
    template: np.ndarray | None
    boxes: np.ndarray  # letterbox pixels
    scale: float
    pad: tuple[int, int]


class _Prepared(NamedTuple):
    """One sample ready for batching."""

    input: np.ndarray  # (C, S, S) float32
    boxes: np.ndarray  # (N, 4) float32, network input pixels
    classes: np.ndarray  # (N,) int64
    scale: float
    pad: tuple[float, float]
    view: SampleView | None = None


def padded_targets(boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A batch's per-sample boxes (N_i, 4) and classes (N_i,) as (B, M, 4) float32 and (B, M) int64, M the most
    boxes of any sample; padding slots are zero boxes of class -1 (what the losses skip). At least one slot, so a
    batch without defects still has well-formed (B, 1, 4) targets."""
    most = max([1] + [len(b) for b in boxes])
    padded_boxes = np.zeros((len(boxes), most, 4), dtype=np.float32)
    padded_classes = np.full((len(boxes), most), -1, dtype=np.int64)
    for row, (sample_boxes, sample_classes) in enumerate(zip(boxes, classes)):
        padded_boxes[row, : len(sample_boxes)] = sample_boxes
        padded_classes[row, : len(sample_classes)] = sample_classes
    return padded_boxes, padded_classes


class BatchLoader:
    """Iterate a dataset in batches; ``len()`` is the number of batches per epoch.

    Train mode shuffles (the order depends on the seed and the epoch), augments, and drops the
    last partial batch; eval mode keeps the dataset order, every sample, and never augments.
    ``augment=None`` means the default ``AugmentConfig()`` in train mode; pass
    ``AugmentConfig.off()`` to train without augmentation. Each complete pass advances the
    epoch by one; ``set_epoch(e)`` sets it explicitly (resume from epoch ``e``).
    ``workers`` threads prepare batches ahead (0: in the calling thread, for debugging); the
    cache lives as long as the loader, so keep one loader for the whole run.
    ``rank`` of ``ranks`` (data-parallel training, ``inspector.training.distributed``): ``batch_size`` is the
    global batch and this loader yields the rank's equal slice of each one, so the ranks together see every
    sample once per epoch, in the single-process order and with the same augmentation draws.
    ``pairs``: the pair augmentations (``inspector.data.augment``: dihedral, defect copy-paste from the
    other boards of this dataset), train mode only. From epoch ``plain_from_epoch`` on, training batches
    are what evaluation sees (whole letterboxed images: no crop, paste, flip or photometric change), only
    shuffled: the end of the schedule trains on the inference distribution (like Ultralytics' close_mosaic).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        input_size: int,
        input_mode: str = "image",
        train: bool = False,
        seed: int = 0,
        crop_size: int | None = None,
        augment: AugmentConfig | None = None,
        workers: int = 2,
        cache: bool = True,
        prefetch: int = 2,
        pairs: PairAugmentConfig | None = None,
        plain_from_epoch: int | None = None,
        rank: int = 0,
        ranks: int = 1,
    ) -> None:
        self.layout = input_layout(input_mode)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if crop_size is not None and not 0 < crop_size <= input_size:
            raise ValueError(f"crop_size must be in (0, input_size={input_size}], got {crop_size}")
        if not 0 <= rank < ranks or batch_size % ranks:
            raise ValueError(f"rank {rank} of {ranks}: the batch of {batch_size} must divide evenly among the ranks")
        if train and len(dataset) < batch_size:
            raise ValueError(f"the training set has {len(dataset)} samples, fewer than one batch of {batch_size}")
        if self.layout.needs_template:
            lacking = [s for s in dataset.samples if s.template_path is None]
            if lacking:
                raise DataError(
                    f"{lacking[0].source or lacking[0].image_path}: no template image, needed by input mode "
                    f"{input_mode!r} ({len(lacking)} of {len(dataset)} samples lack one)"
                )
        self.dataset = dataset
        self.batch_size = batch_size
        self.input_size = input_size
        self.input_mode = input_mode
        self.train = train
        self.seed = seed
        self.crop_size = crop_size if train else None  # evaluation always sees the whole image
        self.augment = (augment or AugmentConfig()) if train else None
        self.workers = workers
        self.prefetch = max(1, prefetch)
        self.epoch = 0
        self._cache: dict[str, _Letterboxed] | None = {} if cache else None
        # Set by distillation's teacher cache: crop offsets on multiples of crop_align letterbox pixels, and the
        # SampleView of every training row in Batch.views.
        self.crop_align = 1
        self.record_views = False
        self._index_of_key: dict[str, int] | None = None
        self.plain_from_epoch = plain_from_epoch if train else None
        self.rank, self.ranks = (rank, ranks) if train else (0, 1)
        self._pairs = self._pair_augmenter(pairs) if train and pairs is not None and pairs.active else None

    @property
    def output_size(self) -> int:
        """Side of the images in a batch: the crop size in train mode with cropping, else the input size."""
        return self.crop_size or self.input_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.train:
            return len(self.dataset) // self.batch_size
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        batches = self._batch_indices(epoch)
        if self.workers <= 0:
            for start, indices in batches:
                yield self._make_batch(indices, epoch, start)
        else:
            yield from self._prefetched(batches, epoch)
        self.epoch = epoch + 1

    def _prefetched(self, batches: list[tuple[int, np.ndarray]], epoch: int) -> Iterator[Batch]:
        # Keep up to `workers + prefetch` batches in flight, hand them out in order; on an early
        # exit (break, exception, garbage collection) cancel what has not started and join the threads.
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="batch-loader")
        pending: deque[Future[Batch]] = deque()
        upcoming = iter(batches)
        try:
            for start, indices in upcoming:
                pending.append(pool.submit(self._make_batch, indices, epoch, start))
                if len(pending) >= self.workers + self.prefetch:
                    break
            while pending:
                batch = pending.popleft().result()
                next_batch = next(upcoming, None)
                if next_batch is not None:
                    pending.append(pool.submit(self._make_batch, next_batch[1], epoch, next_batch[0]))
                yield batch
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _batch_indices(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """(position of the batch's first sample in the epoch, dataset indices) per batch."""
        count = len(self.dataset)
        if self.train:
            order = np.random.default_rng([self.seed, epoch]).permutation(count)
            usable = count - count % self.batch_size
        else:
            order, usable = np.arange(count), count
        starts = range(0, usable, self.batch_size)
        if self.ranks > 1:  # data-parallel training: this rank's equal slice of every global batch
            share = self.batch_size // self.ranks
            return [(start + self.rank * share, order[start + self.rank * share : start + (self.rank + 1) * share])
                    for start in starts]
        return [(start, order[start : min(start + self.batch_size, usable)]) for start in starts]

    def _make_batch(self, indices: np.ndarray, epoch: int, start: int) -> Batch:
        prepared = [self._prepare(int(index), epoch, start + offset) for offset, index in enumerate(indices)]
        count = len(prepared)
        boxes, classes = padded_targets([p.boxes for p in prepared], [p.classes for p in prepared])
        return Batch(
            images=np.stack([p.input for p in prepared]),
            boxes=boxes,
            classes=classes,
            keys=[self.dataset[int(i)].key for i in indices],
            scales=np.array([p.scale for p in prepared], dtype=np.float32),
            pads=np.array([p.pad for p in prepared], dtype=np.float32).reshape(count, 2),
            views=[p.view for p in prepared] if self.record_views else None,
        )

    def _prepare(self, index: int, epoch: int, position: int) -> _Prepared:
        """One sample at input size, cropped and augmented in train mode."""
        sample = self.dataset[index]
        item = self._letterboxed(sample)
        image, template, boxes, classes = item.image, item.template, item.boxes, sample.classes
        block = self.layout.block
        frame = item.image.shape[0] if item.image.shape[0] == item.image.shape[1] else None
        view = SampleView(sample.key, 0, 0, 0, frame, frame) if self.record_views and frame else None
        if self.train and (self.plain_from_epoch is None or epoch < self.plain_from_epoch):
            rng = np.random.default_rng([self.seed, epoch, position])
            if self._pairs is not None:  # pastes go anywhere on the board, before the crop picks its window
                image, template, boxes, classes = self._pairs.paste(image, template, boxes, classes, rng, index,
                                                                    self._board_region(item), item.scale)
                if image is not item.image:  # pasted: no longer the board the view names
                    view = None
            if self.crop_size is not None:
                size = self.crop_size * block
                offset = crop_offset(image.shape[1], image.shape[0], boxes, size, rng, align=self.crop_align)
                image, template, boxes, classes = crop_at(image, template, boxes, classes, offset, size)
                view = view and view._replace(x0=offset[0], y0=offset[1], size=size)
            if self._pairs is not None and self._pairs.cfg.dihedral:  # PairAugmenter.orient's draw, kept for the view
                element = int(rng.integers(8))
                image, template, boxes = dihedral(image, template, boxes, element)
                view = view and view._replace(element=element)
            if self.augment.flip_horizontal or self.augment.flip_vertical or self.augment.rotate90:
                view = None  # augment's own flips and turns are not recorded
            image, template, boxes, classes = augment(image, template, boxes, classes, rng, self.augment)
        # Space-to-depth shrinks the letterboxed frame by `block`: boxes, scale and padding follow it.
        return _Prepared(to_input(image, template, self.layout.mode), boxes / np.float32(block), classes,
                         item.scale / block, (item.pad[0] / block, item.pad[1] / block), view)

    def _index_of(self, key: str) -> int:
        """The dataset index of board ``key`` (KeyError naming it when the dataset has no such sample)."""
        if self._index_of_key is None:
            self._index_of_key = {sample.key: index for index, sample in enumerate(self.dataset.samples)}
        if key not in self._index_of_key:
            raise KeyError(f"{key}: not a sample of this loader's dataset")
        return self._index_of_key[key]

    def board_version(self, key: str) -> str:
        """What identifies board ``key``'s files as they are now: each file's size and modification time (a
        teacher cache kept across runs names its entries with it, so an edited board is computed afresh)."""
        sample = self.dataset.samples[self._index_of(key)]
        parts = []
        for path in (sample.image_path, sample.template_path):
            if path is not None:
                stat = os.stat(path)
                parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
        return "/".join(parts)

    def full_input(self, key: str, element: int = 0) -> np.ndarray:
        """The network input (C, S, S) of the whole letterboxed board ``key`` under dihedral ``element``, without
        any other augmentation: what a distillation teacher's cache computes its whole-board maps on."""
        item = self._letterboxed(self.dataset[self._index_of(key)])
        image, template, _ = dihedral(item.image, item.template, np.zeros((0, 4), np.float32), element)
        return to_input(image, template, self.layout.mode)

    def _pair_augmenter(self, cfg: PairAugmentConfig) -> PairAugmenter:
        if cfg.dihedral and self.augment is not None:
            # The uniform dihedral draw subsumes the flips and quarter turns: keep only the photometric part.
            self.augment = replace(self.augment, flip_horizontal=0.0, flip_vertical=0.0, rotate90=0.0)
        if cfg.copy_paste <= 0:
            return PairAugmenter(cfg)
        if not self.layout.needs_template:
            raise ValueError(f"copy-paste finds its places by comparing each board with its golden template; "
                             f"input mode {self.input_mode!r} loads none (use a mode with a template)")
        return PairAugmenter(cfg, DefectDonors([s.classes for s in self.dataset.samples], cfg.copy_paste_balance),
                             self._donor_board)

    def _donor_board(self, index: int, scale: float | None):
        """A donor for copy-paste: (image, template, boxes, classes) letterboxed at ``scale``, else None."""
        sample = self.dataset[index]
        item = self._letterboxed(sample)
        if scale is not None and abs(item.scale - scale) > 1e-6 * scale:
            return None  # letterboxed at another scale: a pasted defect would change size
        return item.image, item.template, item.boxes, sample.classes

    def _board_region(self, item: _Letterboxed) -> tuple[int, int, int, int]:
        """The board inside its letterbox border, (x1, y1, x2, y2); a paste must not reach into the border."""
        size = item.image.shape[1], item.image.shape[0]
        # letterbox() puts the odd pixel of padding on the far side: leave one pixel there to be safe.
        far = [size[axis] - item.pad[axis] - (1 if item.pad[axis] else 0) for axis in (0, 1)]
        return item.pad[0], item.pad[1], far[0], far[1]

    def _letterboxed(self, sample: Sample) -> _Letterboxed:
        if self._cache is not None and sample.key in self._cache:
            return self._cache[sample.key]
        image = sample.load_image()
        size = self.layout.letterbox_size(self.input_size)
        resized, scale, pad = letterbox(image, size)
        template = None
        if self.layout.needs_template:
            raw_template = sample.load_template()
            if raw_template.shape != image.shape:
                raise DataError(
                    f"{sample.template_path}: template is {raw_template.shape[1]}x{raw_template.shape[0]}, "
                    f"but its image {sample.image_path} is {image.shape[1]}x{image.shape[0]}; they must be aligned"
                )
            template = letterbox(raw_template, size)[0]
        item = _Letterboxed(resized, template, letterbox_boxes(sample.boxes, scale, pad), scale, pad)
        for array in (item.image, item.template, item.boxes):
            if array is not None:
                array.flags.writeable = False  # shared by every epoch: an in-place edit would leak into the next
        if self._cache is not None:
            self._cache[sample.key] = item  # a plain dict store is atomic under the GIL
        return item
