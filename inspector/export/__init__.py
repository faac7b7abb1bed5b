"""Model packages: what ships to the factory box (see ``manifest`` for the format).

Modules, top-down: ``manifest`` (the format, stdlib only), ``legacy_program`` (checkpoint -> Paddle
inference model, in a child process), ``lite`` (-> Paddle Lite ``.nb``), ``package``
(``export_package``, ``record_metrics``).
"""
from inspector.export.legacy_program import ExportError
from inspector.export.lite import ConversionError
from inspector.export.manifest import Manifest, PackageError, read_manifest
from inspector.export.package import export_package, record_metrics, resolve_source

__all__ = [
    "ConversionError",
    "ExportError",
    "Manifest",
    "PackageError",
    "export_package",
    "read_manifest",
    "record_metrics",
    "resolve_source",
]
