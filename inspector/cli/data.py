"""``inspector data check|synth``: look at labeled data before training on it, or make some."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from inspector.cli.common import fail, user_errors
from inspector.cli.options import Format, value_of

data_app = typer.Typer(help="Inspect, validate and generate labeled data.", no_args_is_help=True)


@data_app.command("check")
def data_check(
    path: Annotated[Path, typer.Argument(help="Dataset directory (DeepPCB or VOC) or COCO JSON file.")],
    format: Format = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit non-zero on warnings too, not only errors.")] = False,
    verify_images: Annotated[bool, typer.Option("--verify-images/--no-verify-images",
                                                help="Decode every image (slower, catches corrupt files).")] = True,
) -> None:
    """Print counts per class, box-size statistics, unlabeled images and every problem found."""
    from inspector.data import DataError, check_dataset, format_report

    with user_errors(DataError):
        report = check_dataset(path, format=value_of(format), verify_images=verify_images)
    typer.echo(format_report(report))
    if report.n_errors or (strict and report.n_warnings):
        raise typer.Exit(1)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Output directory (DeepPCB layout).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of board pairs.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same boards).")] = 0,
    size: Annotated[int, typer.Option("--size", min=64, help="Image side in pixels.")] = 640,
    panel: Annotated[bool, typer.Option("--panel", help="Write N whole panels instead: grids of tile pairs with "
                                        "panel-coordinate labels (DeepPCB layout) and panels.json (sources, "
                                        "applied map).")] = False,
    cols: Annotated[int, typer.Option("--cols", min=1, help="Panel: tiles per row.")] = 4,
    rows: Annotated[int, typer.Option("--rows", min=1, help="Panel: tile rows.")] = 4,
    tiles_from: Annotated[Optional[Path], typer.Option("--tiles-from", help="Panel: labeled pairs to tile with "
                                                       "(e.g. DeepPCB); default: synthetic boards.")] = None,
    split_file: Annotated[Optional[Path], typer.Option("--split-file", help="Panel: take only one part of "
                                                       "--tiles-from, as listed in this split.json.")] = None,
    split: Annotated[str, typer.Option("--split", help="Panel: that part, val or train.")] = "val",
    margin: Annotated[int, typer.Option("--margin", min=0, help="Panel: bare board around the grid, pixels.")] = 0,
    shift: Annotated[str, typer.Option("--shift", help="Panel: misregistration of the tested panel, 'DX,DY' "
                                       "pixels.")] = "0,0",
    rotation: Annotated[float, typer.Option("--rotation", help="Panel: its rotation about the centre, "
                                            "degrees.")] = 0.0,
    scale: Annotated[float, typer.Option("--scale", min=0.5, max=2.0, help="Panel: its scale.")] = 1.0,
) -> None:
    """Generate synthetic PCB pairs (template + tested image with labeled defects) in DeepPCB layout."""
    from inspector.data import DataError
    from inspector.data.synth import write_deeppcb

    if out.exists() and any(out.iterdir()):
        fail(f"error: {out} exists and is not empty; choose a new directory (nothing was overwritten)")
    if panel:
        from inspector.data.panels import Misregistration, build_panel_dataset

        try:
            shift_x, shift_y = (float(v) for v in shift.split(","))
        except ValueError:
            fail(f"error: --shift: expected 'DX,DY' in pixels, e.g. 12.5,-7, got {shift!r}")
        with user_errors(DataError, FileNotFoundError, ValueError):
            build_panel_dataset(out, n, cols, rows, seed, tiles_from, split_file, split, margin,
                                Misregistration(shift_x, shift_y, rotation, scale))
        typer.echo(f"wrote {n} panel(s) of {cols} x {rows} tiles to {out}")
        return
    write_deeppcb(out, n=n, seed=seed, size=size)
    typer.echo(f"wrote {n} synthetic pairs to {out}")
