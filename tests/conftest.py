"""What every test folder shares: the tiny trained package, built once per session, and the rule that
a test needing it is slow.

The tests are grouped by the layer they exercise (ARCHITECTURE.md's table): ``tests/data/``,
``tests/models/`` ... ``tests/apps/``. This file's folder stays on ``sys.path`` (pytest's default
"prepend" import mode), so the shared helper modules beside it (``eval_cases.py``) import by name.

``make test-fast`` runs ``-m "not slow"``: everything except the tests that train, export or need an
exported package. Any test that asks for one of ``PACKAGE_FIXTURES`` (directly or through another fixture)
is marked slow here, so the fast set never pays for a training run by accident.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_FIXTURES = ("tiny_package", "tiny_grey_package", "tiny_frame_diff_package", "tiny_frame_template_package")


@dataclass(frozen=True)
class TinyPackage:
    data: Path  # synthetic DeepPCB-layout boards, 160 x 160
    run: Path  # a 2-epoch mbv3-small training run on them
    package: Path  # its exported package (paddle, lite-x86, lite-arm); never modify it, copy it
    input_mode: str
    input_size: int = 64


def build_tiny_package(tmp_path_factory: pytest.TempPathFactory, input_mode: str) -> TinyPackage:
    """Train 2 epochs on 8 synthetic boards and export the run: a real package whose detections are
    meaningless but whose files, manifest and engines are exactly what production loads."""
    from inspector.data.synth import write_deeppcb
    from inspector.export import export_package
    from inspector.training.config import TrainConfig
    from inspector.training.trainer import train

    base = tmp_path_factory.mktemp(f"tiny-package-{input_mode.replace('+', '-')}", numbered=False)
    result = TinyPackage(base / "boards", base / "run", base / "package", input_mode)
    write_deeppcb(result.data, n=8, seed=3, size=160)
    train(TrainConfig(arch="mbv3-small", data=str(result.data), out=str(result.run), epochs=2, batch_size=3,
                      input_size=result.input_size, crop_size=None, input_mode=input_mode, warmup_epochs=0.0,
                      val_fraction=0.25, workers=0, seed=1, augment=False, lr=1e-2))
    export_package(result.run, result.package, progress=lambda line: None)
    return result


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> TinyPackage:
    """The RGB image+template package (6 input channels), shared by the export, runtime, ARM runner,
    input layout and service tests (exporting takes a paddle child process and two Lite conversions)."""
    return build_tiny_package(tmp_path_factory, "image+template")


@pytest.fixture(scope="session")
def tiny_grey_package(tmp_path_factory) -> TinyPackage:
    """The grey space-to-depth package (gray-diff-s2d, 12 input channels)."""
    return build_tiny_package(tmp_path_factory, "gray-diff-s2d")


@pytest.fixture(scope="session")
def tiny_frame_diff_package(tmp_path_factory) -> TinyPackage:
    """The grey space-to-depth package without its template plane (gray-frame-diff-s2d, 8 input channels)."""
    return build_tiny_package(tmp_path_factory, "gray-frame-diff-s2d")


@pytest.fixture(scope="session")
def tiny_frame_template_package(tmp_path_factory) -> TinyPackage:
    """The grey space-to-depth package without its difference plane (gray-frame-template-s2d, 8 input channels)."""
    return build_tiny_package(tmp_path_factory, "gray-frame-template-s2d")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so the mark added here counts
def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in PACKAGE_FIXTURES):
            item.add_marker(pytest.mark.slow)


def pytest_unconfigure(config):
    """A test that leaves a non-daemon thread running (an asyncua sync client whose connect failed, a portal
    never closed) would make the interpreter wait for it at exit: CI would hang until its time limit. Say which
    threads, and end the run as failed instead."""
    import os
    import sys
    import threading

    left = [thread.name for thread in threading.enumerate()
            if thread is not threading.main_thread() and thread.is_alive() and not thread.daemon]
    if left:
        sys.stderr.write(f"\nerror: tests left non-daemon threads running, which would block the exit: {left}\n")
        sys.stderr.flush()
        os._exit(3)
