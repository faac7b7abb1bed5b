"""Open a model package and verify it before anything runs it.

``open_package`` checks, in order: the directory exists; ``manifest.json`` is present and valid
(each bad field named); every file the manifest lists is present with the listed size and sha256;
the requested target (``paddle``, ``lite-x86``, ``lite-arm``) is offered. Any failure raises
``PackageError`` with a message for the operator, so a corrupt, truncated or mismatched package is
refused here and never reaches Paddle's loaders (which crash or misbehave on such files).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from inspector.export.manifest import MANIFEST_FILE, Manifest, PackageError, read_manifest, sha256_file

# The shipped default model: models/default (a directory or a symlink to one) in this repository.
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DEFAULT_PACKAGE = MODELS_DIR / "default"


@dataclass(frozen=True)
class ModelPackage:
    """A verified package: its directory and manifest."""

    path: Path
    manifest: Manifest

    @property
    def package_id(self) -> str:
        return self.manifest.package_id

    def target_files(self, target: str) -> list[Path]:
        return [self.path / name for name in self.manifest.targets[target]]

    def target_bytes(self, target: str) -> int:
        return sum(self.manifest.files[name].bytes for name in self.manifest.targets[target])


def lite_target_for_this_machine() -> str:
    """``lite-arm`` on ARM CPUs (aarch64, arm64, armv7), ``lite-x86`` elsewhere."""
    machine = platform.machine().lower()
    return "lite-arm" if machine.startswith(("arm", "aarch")) else "lite-x86"


def is_package(path: Path | str) -> bool:
    return (Path(path) / MANIFEST_FILE).is_file()


def resolve_package_path(model: Path | str | None) -> Path:
    """``model`` as given, or the shipped default package when it is None."""
    if model is not None:
        return Path(model)
    if not DEFAULT_PACKAGE.exists():
        raise PackageError(
            f"no --model given and no default model package is installed: {DEFAULT_PACKAGE} does not exist. "
            "Export one with `inspector export --model RUN --out models/NAME` and point models/default at it "
            "(a symlink), or pass --model"
        )
    return DEFAULT_PACKAGE


def open_package(path: Path | str, target: str | None = None) -> ModelPackage:
    """Read and verify the package at ``path``; ``target``, when given, must be one it offers."""
    path = Path(path)
    if not path.is_dir():
        raise PackageError(f"{path}: no such model package directory")
    manifest = read_manifest(path)
    for name, entry in manifest.files.items():
        file = path / name
        if not file.is_file():
            raise PackageError(f"{path}: file {name} listed in {MANIFEST_FILE} is missing")
        size = file.stat().st_size
        if size != entry.bytes:
            raise PackageError(f"{file}: {size} bytes, the manifest says {entry.bytes} "
                               f"({'truncated' if size < entry.bytes else 'grown'}: incomplete copy or wrong file?)")
        if sha256_file(file) != entry.sha256:
            raise PackageError(f"{file}: sha256 differs from the manifest's (corrupted, or replaced by another "
                               "file); re-copy or re-export the package")
    if target is not None and target not in manifest.targets:
        offered = ", ".join(manifest.targets)
        raise PackageError(f"{path}: the package has no {target} model (it offers: {offered}); "
                           "re-export it with that target or choose another backend")
    return ModelPackage(path, manifest)
