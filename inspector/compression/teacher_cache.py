"""The teacher's outputs computed once per training board and orientation, cropped for each training crop.

Why: on 2 cores a ResNet teacher's forward pass costs more than the student's whole training step, and a
distillation run repeats it for every crop of every epoch. The teacher is frozen, so its output on a given
input never changes; only the crop window and the orientation differ between visits of a board. So:

- the cache is keyed by ``(board key, dihedral element)``: ``TeacherView.cache_key``. It holds the teacher's
  raw head maps (and, when a feature term reads them, its neck features) on the *whole* letterboxed board in
  that orientation, computed on the first visit;
- a training crop is taken at offsets that are multiples of the coarsest stride (in letterbox pixels: the
  stride times the layout's space-to-depth block; the loader's ``crop_align``), so on every level the crop is a
  whole number of cells, and the cached maps are simply sliced (``crop_maps``);
- the orientation is applied *after* the crop in the loader; the crop window is moved to the oriented board
  (``oriented_window``) and the oriented board's maps are sliced there.

A sliced map is the teacher's output on the crop *with the rest of the board around it*, i.e. what the teacher
gives at inference, where it sees whole boards. It is not bit-identical to a forward pass on the crop: within the
receptive field of a crop edge the fresh pass sees zero padding where the cached one saw board, PP-YOLO's
CoordConv feeds coordinates relative to the map (the crop's, not the board's), and MobileNetV3's squeeze-and-
excitation pools the whole map. For a purely local network the slices are exact (tested); measured with
``benchmarks/distill_cache.py`` on 8 DeepPCB crops of 256 from 320 boards, gray-diff-s2d, raw head logits:
untrained PP-YOLO ResNet18 gfl teacher, max |cached - fresh| 0.76 (logits up to 5.0), 0.20 at least 64 input px
from the crop edge, mean 0.005 there (stride 8); a trained MobileNetV3 gfl student (SE), max 5.1 (logits up
to 12.7), mean 0.11 in the interior. The cache is therefore a choice of target (the teacher with full
context), not a free speed-up of the same computation; ``DistillConfig.teacher_cache`` is off by default.

What is *not* keyed, on purpose: photometric augmentation (brightness, contrast, noise, blur). The cached
targets are the teacher's on the clean board; the student learns to give them on its perturbed copy (the
"clean teacher, perturbed student" arrangement of consistency training). A view whose pixels were changed in
any other way (copy-paste) has no ``TeacherView`` (None) and gets a fresh teacher pass on exactly its input.

Memory: float16 maps; an LRU bound (``max_bytes``) evicts the least recently used boards. At input 320 with 6
classes and reg_max 7, one board's head maps are 2,100 cells x 38 channels x 2 bytes = 160 KB; with a ResNet18
teacher's neck features for a feature term 0.49 MB per board and orientation (measured), so 800 boards x 8
orientations = 3.2 GB: above the default 2 GB bound, the least recently used entries are reloaded when met again.

Disk (``store``, optional): every computed entry is also written to a directory, one file per key, and an entry
missing from memory is read from there before the teacher is asked. Why: data-parallel ranks each see a different
share of the boards every epoch (the batches are the single-process order, sliced), so caches private to the ranks
miss where one process would hit (measured on the CPU preset with 2 ranks: hit rate 0.29 over 12 epochs; about
0.41 expected for one process over its 10 dihedral epochs); the ranks of a node share one directory, and a resumed
run keeps what the interrupted one computed. Files are written under a temporary name and renamed, so a reader
never sees half an entry and two ranks computing the same key at once is harmless. The directory must belong to
one teacher (``store_for``: named by a digest of the teacher's weights and the cache's layout).

A store may outlive its run (``DistillConfig.teacher_cache_dir``): a second distillation from the same teacher
(another weight schedule, another student) then reads every board's maps instead of computing them. Each entry's
file name includes the board's ``board_version`` (its files' sizes and modification times, from the loader), so
a board whose image or template changed since is computed afresh, never served stale. Such a root keeps the
stores of the ``KEPT_STORES`` most recently used teachers (``retire_stores``); older ones are removed when a run
opens it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import paddle

DIHEDRAL_ELEMENTS = 8
STORE_FORMAT = 1  # bump when the file layout or what an entry means changes: old directories are then not read
# Stores a kept root holds at most (``retire_stores``): one teacher's is GBs, and every retrained teacher makes one.
KEPT_STORES = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherView:
    """Where one training input came from, geometrically: board ``key`` letterboxed to a ``frame`` x ``frame``
    square (letterbox pixels), the ``size`` x ``size`` crop at ``(x0, y0)`` of it, then dihedral ``element``
    (0..7: a transpose when >= 4, then ``element % 4`` counter-clockwise quarter turns; the convention of
    ``inspector.data.augment``)."""

    key: str
    element: int
    x0: int
    y0: int
    size: int
    frame: int

    def __post_init__(self) -> None:
        if not 0 <= self.element < DIHEDRAL_ELEMENTS:
            raise ValueError(f"element: expected 0..7, got {self.element}")
        if not (0 <= self.x0 and 0 <= self.y0 and self.x0 + self.size <= self.frame
                and self.y0 + self.size <= self.frame and self.size > 0):
            raise ValueError(f"crop ({self.x0}, {self.y0}, size {self.size}) is not inside the {self.frame} px frame")

    @property
    def cache_key(self) -> tuple[str, int, int]:
        """What the cached whole-board maps depend on: the board, its orientation, the frame size."""
        return self.key, self.element, self.frame


def orient_array(array: np.ndarray, element: int) -> np.ndarray:
    """``array`` (H, W, ...) under dihedral ``element`` (transpose if >= 4, then CCW quarter turns)."""
    if element >= 4:
        array = np.swapaxes(array, 0, 1)
    return np.ascontiguousarray(np.rot90(array, element % 4, axes=(0, 1)))


def oriented_window(x0: int, y0: int, size: int, frame: int, element: int) -> tuple[int, int]:
    """The top-left corner of the square window ``(x0, y0, size)`` of a ``frame`` square after ``element``."""
    x1, y1, x2, y2 = x0, y0, x0 + size, y0 + size
    if element >= 4:  # transpose: (x, y) -> (y, x)
        x1, y1, x2, y2 = y1, x1, y2, x2
    for _ in range(element % 4):  # a counter-clockwise quarter turn: (x, y) -> (y, frame - x)
        x1, y1, x2, y2 = y1, frame - x2, y2, frame - x1
    return x1, y1


def crop_maps(maps: Sequence[np.ndarray], view: TeacherView, strides: Sequence[int], block: int) -> list[np.ndarray]:
    """Slice whole-board maps (C, H, W) per level down to the view's crop (its window moved by the orientation).

    ValueError when the window is not on the coarsest stride's grid (the loader's crops must be aligned)."""
    x, y = oriented_window(view.x0, view.y0, view.size, view.frame, view.element)
    cropped = []
    for level_map, stride in zip(maps, strides):
        cell = stride * block  # letterbox pixels per cell of this level
        if x % cell or y % cell or view.size % cell:
            raise ValueError(f"crop at ({x}, {y}) size {view.size} is not aligned to the {cell} px cells of stride "
                             f"{stride} (block {block}): the loader must align crops (crop_align)")
        row, col, cells = y // cell, x // cell, view.size // cell
        cropped.append(level_map[:, row : row + cells, col : col + cells])
    return cropped


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    fresh: int = 0  # samples without a view (pixels changed otherwise): a teacher pass on exactly their input
    evictions: int = 0
    from_store: int = 0  # entries read from the disk store instead of computed (counted in hits)

    @property
    def hit_rate(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


# full_input(key, element) -> the network input (C, S, S) float32 of the whole letterboxed board in that orientation
FullInput = Callable[[str, int], np.ndarray]
# board_version(key) -> what identifies the board's files as they are now (sizes, modification times)
BoardVersion = Callable[[str], str]
# teacher(images (B, C, H, W)) -> (neck features or None, head maps), each a list of (B, C', h, w) tensors
TeacherForward = Callable[[paddle.Tensor], "tuple[list[paddle.Tensor] | None, list[paddle.Tensor]]"]


class TeacherCache:
    """The teacher's whole-board outputs per ``TeacherView.cache_key``, cropped to each batch's views.

    ``teacher`` runs the frozen teacher; ``full_input`` builds a board's whole input in an orientation (the
    loader's letterboxed copy); ``strides`` and ``block`` (the layout's space-to-depth block) place the crops
    on the levels' grids; ``with_features``: keep neck features as well (for a feature term); ``store``: a
    directory of this teacher's entries shared with other processes and later runs (``store_for``), or None;
    ``board_version``: names each stored entry after its board's files as they are (None: after the key alone).
    """

    def __init__(self, teacher: TeacherForward, full_input: FullInput, strides: Sequence[int], block: int,
                 with_features: bool = False, max_bytes: int = 2 << 30, store: Path | None = None,
                 board_version: BoardVersion | None = None) -> None:
        self.teacher = teacher
        self.full_input = full_input
        self.strides = tuple(int(s) for s in strides)
        self.block = int(block)
        self.with_features = with_features
        self.max_bytes = int(max_bytes)
        self.stats = CacheStats()
        self._entries: OrderedDict[tuple, tuple[list[np.ndarray], list[np.ndarray] | None]] = OrderedDict()
        self._bytes = 0
        self.board_version = board_version
        self._versions: dict[str, str] = {}  # per board, read once per process
        self.store = Path(store) if store is not None else None
        if self.store is not None:
            self.store.mkdir(parents=True, exist_ok=True)

    @property
    def alignment(self) -> int:
        """Crop offsets must be multiples of this many letterbox pixels: the coarsest stride's cell."""
        return max(self.strides) * self.block

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def _fill(self, views: Sequence[TeacherView | None]) -> None:
        """Compute the entries the batch's views lack, in one teacher pass over their whole boards."""
        missing: dict[tuple, TeacherView] = {}
        for view in views:
            if view is not None and view.cache_key not in self._entries and view.cache_key not in missing:
                missing[view.cache_key] = view
        if not missing:
            return
        boards = np.stack([self.full_input(view.key, view.element) for view in missing.values()])
        features, maps = self.teacher(paddle.to_tensor(boards))
        maps_np = [m.numpy().astype(np.float16) for m in maps]
        features_np = [f.numpy().astype(np.float16) for f in features] if self.with_features and features else None
        for row, key in enumerate(missing):
            entry = ([m[row] for m in maps_np], [f[row] for f in features_np] if features_np else None)
            self._keep(key, entry)
            self._write(key, entry)

    def _keep(self, key: tuple, entry: tuple[list[np.ndarray], list[np.ndarray] | None]) -> None:
        self._entries[key] = entry
        self._bytes += sum(a.nbytes for a in entry[0]) + sum(a.nbytes for a in entry[1] or [])

    def _path(self, key: tuple) -> Path:
        version = None
        if self.board_version is not None:
            board = key[0]
            if board not in self._versions:
                self._versions[board] = self.board_version(board)
            version = self._versions[board]
        named = key if version is None else (*key, version)
        return self.store / (hashlib.sha1(repr(named).encode()).hexdigest() + ".npz")

    def _write(self, key: tuple, entry: tuple[list[np.ndarray], list[np.ndarray] | None]) -> None:
        if self.store is None:
            return
        arrays = {f"map{level}": m for level, m in enumerate(entry[0])}
        arrays.update({f"feature{level}": f for level, f in enumerate(entry[1] or [])})
        path = self._path(key)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.partial")
        with open(partial, "wb") as file:  # a file object: np.savez would append .npz to a name
            np.savez(file, **arrays)
        os.replace(partial, path)  # atomic: a reader sees the old state or the whole entry

    def _read(self, key: tuple) -> bool:
        """Load ``key`` from the store into memory; False when it is not there (or unreadable: then recomputed)."""
        if self.store is None:
            return False
        path = self._path(key)
        try:
            with np.load(path) as data:
                maps = [data[f"map{level}"] for level in range(len(self.strides))]
                features = ([data[f"feature{level}"] for level in range(len(self.strides))]
                            if self.with_features else None)
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            log.warning("teacher cache: %s unreadable (%s); the teacher computes it again", path, error)
            return False
        self._keep(key, (maps, features))
        return True

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            _, (old_maps, old_features) = self._entries.popitem(last=False)
            self._bytes -= sum(a.nbytes for a in old_maps) + sum(a.nbytes for a in old_features or [])
            self.stats.evictions += 1

    def outputs(self, images: paddle.Tensor, views: Sequence[TeacherView | None]
                ) -> tuple[list[paddle.Tensor] | None, list[paddle.Tensor]]:
        """The teacher's (neck features or None, head maps) for the batch ``images`` whose samples came from
        ``views``: cached crops for samples with a view, one fresh pass over the others."""
        if len(views) != int(images.shape[0]):
            raise ValueError(f"{len(views)} views for a batch of {int(images.shape[0])} images")
        fresh = [row for row, view in enumerate(views) if view is None]
        fresh_out = self.teacher(paddle.gather(images, paddle.to_tensor(fresh))) if fresh else None
        self.stats.fresh += len(fresh)
        # A miss: a whole-board pass (one per absent key, however many rows share it); every other row a hit.
        keys = [view.cache_key for view in views if view is not None]
        absent = {key for key in keys if key not in self._entries}
        for key in set(keys) - absent:
            self._entries.move_to_end(key)
        stored = {key for key in sorted(absent) if self._read(key)}
        absent -= stored
        self.stats.from_store += len(stored)
        self.stats.misses += len(absent)
        self.stats.hits += len(keys) - len(absent)
        self._fill(views)
        levels = len(self.strides)
        maps: list[list[np.ndarray]] = [[] for _ in range(levels)]
        feats: list[list[np.ndarray]] = [[] for _ in range(levels)]
        for row, view in enumerate(views):
            if view is None:
                index = fresh.index(row)
                fresh_features, fresh_maps = fresh_out
                for level in range(levels):
                    maps[level].append(fresh_maps[level].numpy()[index])
                    if self.with_features:
                        feats[level].append(fresh_features[level].numpy()[index])
                continue
            level_maps, level_features = self._entries[view.cache_key]
            for level, m in enumerate(crop_maps(level_maps, view, self.strides, self.block)):
                maps[level].append(m.astype(np.float32))
            if self.with_features:
                for level, f in enumerate(crop_maps(level_features, view, self.strides, self.block)):
                    feats[level].append(f.astype(np.float32))
        self._evict()  # after the batch: its own entries are all still needed above
        head = [paddle.to_tensor(np.stack(level)) for level in maps]
        features = [paddle.to_tensor(np.stack(level)) for level in feats] if self.with_features else None
        return features, head


def store_for(root: Path, teacher_weights: Path, strides: Sequence[int], block: int, with_features: bool,
              layout: str = "") -> Path:
    """The directory under ``root`` for the entries of the teacher whose weights are the file ``teacher_weights``,
    at these strides, block and features setting and input ``layout`` (the loader's input mode; the frame size is
    in each entry's key):
    another teacher (or a retrained one) gets another directory, so a store never serves a stale teacher's maps."""
    digest = hashlib.sha256()
    with open(teacher_weights, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(repr((STORE_FORMAT, tuple(int(s) for s in strides), int(block), bool(with_features),
                        str(layout))).encode())
    return Path(root) / digest.hexdigest()[:16]


def retire_stores(current: Path, keep: int = KEPT_STORES) -> list[tuple[Path, int]]:
    """Mark the store ``current`` as just used and remove the least recently used other stores of its root
    beyond ``keep`` in all; returns each removed store with the bytes it held.

    Why: a kept root (``DistillConfig.teacher_cache_dir``) gains a store per teacher, retrained teacher and input
    layout, at up to 3 GB each on DeepPCB, and nothing else ever removes one. Only directories named as
    ``store_for`` names them are considered; a store in use by a concurrent run was marked when that run opened
    it, so it is among the most recent (``keep`` of 3 leaves room for two runs at once beside this one)."""
    current = Path(current)
    current.mkdir(parents=True, exist_ok=True)
    os.utime(current)  # reading entries does not change a directory's time; opening it for a run does
    stores = [path for path in current.parent.iterdir()
              if path.is_dir() and len(path.name) == 16 and all(c in "0123456789abcdef" for c in path.name)]
    others = sorted((path for path in stores if path != current), key=lambda path: path.stat().st_mtime,
                    reverse=True)
    removed = []
    for path in others[max(0, keep - 1):]:
        held = sum(entry.stat().st_size for entry in path.glob("*") if entry.is_file())
        shutil.rmtree(path, ignore_errors=True)  # another rank may be removing it too
        removed.append((path, held))
    return removed


def crop_agreement(cached: Sequence[np.ndarray], fresh: Sequence[np.ndarray], margin_cells: Sequence[int]
                   ) -> dict[str, float]:
    """How far cached crops are from a fresh pass: max |difference| over all cells and over the interior (cells
    at least ``margin_cells[level]`` from the crop's edge), and the maximum absolute value for scale."""
    whole, interior, scale = 0.0, 0.0, 0.0
    for c, f, margin in zip(cached, fresh, margin_cells):
        difference = np.abs(np.asarray(c, np.float64) - np.asarray(f, np.float64))
        whole = max(whole, float(difference.max()))
        scale = max(scale, float(np.abs(f).max()))
        h, w = difference.shape[-2:]
        if h > 2 * margin and w > 2 * margin:
            interior = max(interior, float(difference[..., margin : h - margin, margin : w - margin].max()))
    return {"max_abs": whole, "interior_max_abs": interior, "scale": scale}
