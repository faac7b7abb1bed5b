"""A tiny trained run and its exported package, built once per test session and shared by the
export and runtime tests (exporting takes a paddle child process and two Lite conversions)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from inspector.data.synth import write_deeppcb

INPUT_SIZE = 64


@dataclass(frozen=True)
class TinyPackage:
    data: Path  # synthetic DeepPCB-layout boards, 160 x 160
    run: Path  # a 2-epoch mbv3-small training run on them
    package: Path  # its exported package (paddle, lite-x86, lite-arm); never modify it, copy it


def tiny_package(tmp_path_factory: pytest.TempPathFactory, input_mode: str = "image+template") -> TinyPackage:
    """The package of ``input_mode`` (one per layout, each built once per session)."""
    suffix = "" if input_mode == "image+template" else f"-{input_mode}"
    base = tmp_path_factory.getbasetemp() / f"tiny-package{suffix}"
    result = TinyPackage(base / "boards", base / "run", base / "package")
    if (result.package / "manifest.json").is_file():
        return result
    from inspector.export import export_package
    from inspector.training.config import TrainConfig
    from inspector.training.trainer import train

    write_deeppcb(result.data, n=8, seed=3, size=160)
    train(TrainConfig(arch="mbv3-small", data=str(result.data), out=str(result.run), epochs=2, batch_size=3,
                      input_size=INPUT_SIZE, crop_size=None, input_mode=input_mode, warmup_epochs=0.0,
                      val_fraction=0.25, workers=0, seed=1, augment=False, lr=1e-2))
    export_package(result.run, result.package, progress=lambda line: None)
    return result
