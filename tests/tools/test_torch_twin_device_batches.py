"""The torch twin's GPU-made batches (``tools/torch_twin/device_batches.py``) against ``BatchLoader``'s.

Weights trained on other batches would be another recipe's. So for the same draws the batch made on the device
must be the loader's: the same boards in the same order, the same dihedral elements, flips, quarter turns,
brightness/contrast tables and 3x3 blurs, the same packed grey difference, the same padded targets; with noise
(drawn on the device: other values) the same spread and mean. Both sides run in the interpreter of
``TORCH_TWIN_PYTHON`` (the loader needs no paddle), on the CPU device.
"""
from __future__ import annotations

from twin_harness import run_torch_side, torch_python

TORCH_SIDE = r'''
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from inspector.data import load_dataset
from inspector.data.augment import PairAugmentConfig
from inspector.data.loader import BatchLoader
from inspector.data.synth import write_deeppcb
from inspector.data.transforms import AugmentConfig
from tools.torch_twin.device_batches import DeviceBatches

root = Path(sys.argv[1])
dataset = load_dataset(write_deeppcb(root / "data", n=12, seed=3, size=160))
# a grey board stored as colour (DeepPCB's): the grey of a brightness/contrast table is the table of the grey
for sample in dataset.samples:
    assert sample.load_image().std(axis=2).max() == 0, "the synthetic boards are expected grey"


def loaders(mode, dihedral, augment, plain_from=None, batch=4):
    make = lambda: BatchLoader(dataset, batch, 64, mode, train=True, seed=7, augment=augment, workers=0,
                               pairs=PairAugmentConfig(dihedral=dihedral), plain_from_epoch=plain_from)
    return make(), DeviceBatches(make(), "cpu")


def same_batches(mode, dihedral, augment, epochs=3, plain_from=None):
    cpu, device = loaders(mode, dihedral, augment, plain_from)
    drawn = set()
    for epoch in range(epochs):
        cpu.set_epoch(epoch)
        for step, expected in enumerate(cpu):
            images, boxes, classes = device.batch(epoch, step)
            assert images.dtype == torch.float32 and images.shape == expected.images.shape
            assert np.array_equal(images.numpy(), expected.images), \
                (mode, epoch, step, 255 * np.abs(images.numpy() - expected.images).max())
            np.testing.assert_array_equal(boxes, expected.boxes)
            np.testing.assert_array_equal(classes, expected.classes)
            drawn |= {device.draws(epoch, position).element for position in range(step * 4, step * 4 + 4)}
    return drawn


no_noise = replace(AugmentConfig(), noise=0.0, blur=0.0)
# grey difference packed 2x2, every dihedral element, brightness/contrast tables: bit for bit
elements = same_batches("gray-diff-s2d", True, replace(no_noise, brightness_contrast=0.7), epochs=6)
assert elements == set(range(8)), elements
# colour planes, augment's own flips and quarter turns (no dihedral draw), and the plain last epoch
same_batches("image+template", False, no_noise, plain_from=2)
same_batches("image", False, no_noise)
# the grey layouts without their template plane, and without their difference plane
same_batches("gray-frame-diff-s2d", True, replace(no_noise, brightness_contrast=0.7), epochs=2)
same_batches("gray-frame-template-s2d", True, no_noise)
# blur on every picture, OpenCV's fixed point reproduced: still bit for bit
same_batches("gray-diff-s2d", True, replace(no_noise, blur=1.0))
same_batches("image+template", True, replace(no_noise, blur=1.0, brightness_contrast=1.0))

# noise: other values, the same effect. On every picture (and no other change), noisy - clean on the grey image
# planes, sample by sample (the same sigma drawn): the same spread and the same mean on both sides (the mean is
# not 0: black and white copper clip the noise, three colour planes each, before the grey conversion).
noisy = replace(AugmentConfig.off(), noise=1.0, noise_sigma_range=(4.0, 8.0))
(cpu_noisy, device_noisy), (cpu_clean, device_clean) = loaders("gray-diff-s2d", False, noisy), \
    loaders("gray-diff-s2d", False, AugmentConfig.off())
grey_image = slice(0, 4)  # the grey image's four packed planes
for expected_noisy, expected_clean, step in zip(cpu_noisy, cpu_clean, range(3)):
    got_noisy, got_clean = device_noisy.batch(0, step)[0].numpy(), device_clean.batch(0, step)[0].numpy()
    np.testing.assert_array_equal(got_clean, expected_clean.images)
    for row in range(len(got_noisy)):
        cpu_noise = 255 * (expected_noisy.images[row, grey_image] - expected_clean.images[row, grey_image])
        device_noise = 255 * (got_noisy[row, grey_image] - got_clean[row, grey_image])
        assert abs(device_noise.std() / cpu_noise.std() - 1) < 0.04, (step, row, cpu_noise.std(), device_noise.std())
        assert abs(device_noise.mean() - cpu_noise.mean()) < 0.15, (step, row, cpu_noise.mean(), device_noise.mean())
        assert cpu_noise.std() > 2.0  # the noise fired

# what it cannot make is refused by name
for settings, word in (({"crop_size": 32}, "crop_size"), ({"pairs": PairAugmentConfig(copy_paste=0.5)}, "copy_paste")):
    loader = BatchLoader(dataset, 4, 64, "gray-diff-s2d", train=True, workers=0, **settings)
    try:
        DeviceBatches(loader, "cpu")
    except ValueError as error:
        assert word in str(error), error
    else:
        raise AssertionError(f"{settings} accepted")
print("ok")
'''


def test_device_batches_are_the_loaders_for_the_same_draws(tmp_path):
    run_torch_side(torch_python(), ["-c", TORCH_SIDE, str(tmp_path)])
