"""``inspector data check``: what a labeled dataset holds and everything wrong with it.

``check_dataset`` loads the data (decoding every image by default) and summarises it;
``format_report`` renders the summary for a terminal. The CLI exits 1 when ``n_errors`` > 0
(and, with ``--strict``, when ``n_warnings`` > 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inspector.data.readers import load_dataset
from inspector.data.structures import Dataset, Problem


@dataclass(frozen=True)
class SizeStats:
    """Distribution of one box dimension, in pixels."""

    min: float
    p5: float
    median: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> "SizeStats | None":
        if len(values) == 0:
            return None
        p5, median, p95 = np.percentile(values, [5, 50, 95])
        return cls(float(values.min()), float(p5), float(median), float(p95), float(values.max()))


@dataclass
class CheckReport:
    path: Path
    format: str
    num_images: int
    num_boxes: int
    class_counts: dict[str, int]
    images_without_labels: int  # loaded with no box: defect-free boards, valid but worth knowing
    templates_present: int
    templates_missing: int
    box_width: SizeStats | None
    box_height: SizeStats | None
    box_shorter_side: SizeStats | None
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def n_errors(self) -> int:
        return len(self.errors)

    @property
    def n_warnings(self) -> int:
        return len(self.warnings)


def check_dataset(path: Path | str, format: str | None = None, verify_images: bool = True) -> CheckReport:
    """Load the dataset at ``path`` and summarise it; DataError if it can't be read at all."""
    dataset = load_dataset(path, format, verify_images=verify_images)
    return summarise(dataset, Path(path))


def summarise(dataset: Dataset, path: Path) -> CheckReport:
    boxes = np.concatenate([s.boxes for s in dataset.samples]) if dataset.samples else np.zeros((0, 4), np.float32)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    with_template = sum(1 for s in dataset.samples if s.template_path is not None)
    return CheckReport(
        path=path,
        format=dataset.format,
        num_images=len(dataset),
        num_boxes=dataset.num_boxes,
        class_counts=dataset.class_counts(),
        images_without_labels=sum(1 for s in dataset.samples if len(s) == 0),
        templates_present=with_template,
        templates_missing=len(dataset) - with_template,
        box_width=SizeStats.of(widths),
        box_height=SizeStats.of(heights),
        box_shorter_side=SizeStats.of(np.minimum(widths, heights)),
        problems=list(dataset.problems),
    )


def format_report(report: CheckReport) -> str:
    lines = [
        f"dataset    {report.path} ({report.format})",
        f"images     {report.num_images:,} ({report.images_without_labels:,} without labels)",
        f"boxes      {report.num_boxes:,}",
        f"templates  {report.templates_present:,} present, {report.templates_missing:,} missing",
        "",
        f"boxes per class ({len(report.class_counts)} classes)",
    ]
    name_width = max((len(name) for name in report.class_counts), default=0)
    lines += [f"  {name:<{name_width}}  {count:>7,}" for name, count in report.class_counts.items()]

    lines += ["", f"box size (px)  {'min':>7} {'p5':>7} {'median':>7} {'p95':>7} {'max':>7}"]
    for label, stats in (("width", report.box_width), ("height", report.box_height),
                         ("shorter side", report.box_shorter_side)):
        if stats is None:
            lines.append(f"  {label:<12}  (no boxes)")
        else:
            values = (stats.min, stats.p5, stats.median, stats.p95, stats.max)
            lines.append(f"  {label:<12} " + " ".join(f"{value:>7.1f}" for value in values))

    for title, problems in (("errors", report.errors), ("warnings", report.warnings)):
        lines += ["", f"{title}: none" if not problems else f"{title} ({len(problems)})"]
        lines += [f"  {problem}" for problem in problems]
    return "\n".join(lines)
