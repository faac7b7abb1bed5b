"""``inspector review list|export|prune``: the line's verification queue from a shell, for a station without the
HTTP API (the queue is ``data_dir/review.sqlite3`` of a service run with ``review: true``; SQLite in WAL
mode, so this reads it while the line writes). Boards are decided in the GUI or over ``/review``; the
export is the training source ``inspector train --data BASE --data EXPORT --weight 1 --weight 3`` takes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from inspector.cli.common import fail, user_errors

review_app = typer.Typer(help="The verification queue the line service fills (review: true): list it, export "
                         "the reviewed boards as training data, prune its pictures.", no_args_is_help=True)
QUEUE_DEFAULT = Path("inspector-data/review.sqlite3")
Queue = Annotated[Path, typer.Option("--queue", help="The queue database (the service's data_dir/review.sqlite3).")]


def _open(path: Path):
    from inspector.review_queue import ReviewQueue

    if not path.is_file():  # never create an empty queue by mistyping its path
        fail(f"error: --queue {path}: no such file (the service writes data_dir/review.sqlite3 with review: true)")
    return ReviewQueue(path)


@review_app.command("list")
def review_list_command(queue: Queue = QUEUE_DEFAULT,
                        limit: Annotated[int, typer.Option(min=1, help="Boards to show.")] = 30) -> None:
    """The pending boards, the most instructive first, and the counts per reason (JSON)."""
    opened = _open(queue)
    try:
        items = [{key: value for key, value in item.to_dict().items() if key not in ("class_names",)}
                 for item in opened.pending(limit)]
        typer.echo(json.dumps({"counts": opened.counts(), "items": items}, indent=2))
    finally:
        opened.close()


@review_app.command("export")
def review_export_command(
    out: Annotated[Path, typer.Argument(help="Folder for the reviewed boards (Pascal VOC: Annotations/, "
                                        "JPEGImages/, templates/); re-exporting updates it.")],
    queue: Queue = QUEUE_DEFAULT,
) -> None:
    """Every reviewed board with its latest decision, as a labeled dataset for ``inspector train --data``."""
    from inspector.review_queue import ReviewError

    opened = _open(queue)
    try:
        with user_errors(ReviewError, OSError):
            written = opened.export_voc(out)
    finally:
        opened.close()
    typer.echo(f"{len(written)} reviewed board(s) exported to {out}")


@review_app.command("prune")
def review_prune_command(
    queue: Queue = QUEUE_DEFAULT,
    max_age_days: Annotated[Optional[float], typer.Option(
        help="Pictures of reviewed boards go this long after their latest decision (export them first).")] = 90.0,
    max_gb: Annotated[Optional[float], typer.Option(
        help="Above this, reviewed boards' pictures go, the longest-decided first.")] = 10.0,
    hard_cap_gb: Annotated[Optional[float], typer.Option(
        help="Only above this do pending boards lose their pictures (least instructive first; they leave the "
             "queue as expired).")] = 20.0,
) -> None:
    """Apply the picture retention now, as the service does between boards: the pictures are the
    data_dir/review-images beside the queue; decisions and the exported training data stay."""
    from inspector.review_queue import PictureRetention, ReviewError
    from inspector.review_queue.retention import GIB

    with user_errors(ReviewError):
        retention = PictureRetention.from_dict(
            {"max_age_days": max_age_days, "max_bytes": None if max_gb is None else int(max_gb * GIB),
             "hard_cap_bytes": None if hard_cap_gb is None else int(hard_cap_gb * GIB)},
            origins={"max_age_days": "--max-age-days", "max_bytes": "--max-gb", "hard_cap_bytes": "--hard-cap-gb"})
    opened = _open(queue)
    try:
        with user_errors(ReviewError, OSError):
            report = retention.run(opened, queue.parent / "review-images")
    finally:
        opened.close()
    typer.echo(json.dumps(report.to_dict(), indent=2))
