"""``inspector models list|register|golden|promote|rollback``: the model registry from the command line
(``inspector.registry`` holds the logic; this module only parses and prints)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from inspector.cli.common import fail, user_errors
from inspector.cli.options import By, RegistryDir

models_app = typer.Typer(help="Model registry: registered packages, the current model, the promotion gate and "
                         "rollback.", no_args_is_help=True)
REGISTRY_DEFAULT = Path("models/registry")


@models_app.command("list")
def models_list(registry: RegistryDir = REGISTRY_DEFAULT,
                as_json: Annotated[bool, typer.Option("--json", help="The whole index.")] = False) -> None:
    """Registered models, the current one marked with *, and the recent events."""
    from inspector.registry import Registry, RegistryError

    with user_errors(RegistryError):
        index = Registry(registry).read()
    if as_json:
        typer.echo(json.dumps(index, indent=1))
        return
    current = index["promoted"][-1] if index["promoted"] else None
    if not index["models"]:
        typer.echo(f"{registry}: no models registered")
    for model_id, entry in index["models"].items():
        metrics = entry.get("metrics") or {}
        score = metrics.get("official_ap", metrics.get("map50"))
        typer.echo(f"{'*' if model_id == current else ' '} {model_id:28s} {entry['precision']:5s} "
                   f"{'AP ' + format(score, '.4f') if isinstance(score, (int, float)) else '':11s} "
                   f"by {entry['registered_by']} at {entry['registered_at']}  {entry['path']}")
    golden = index.get("golden")
    typer.echo(f"golden set: {golden['data'] if golden else 'not set'}"
               + (f" ({golden['split']} of {golden['split_file']})" if golden and golden.get("split_file") else ""))
    for event in index["events"][-10:]:
        extra = " FORCED" if event.get("forced") else ""
        typer.echo(f"  {event['at']} {event['action']:8s} {event.get('model', '')} by {event['by']}{extra}")


@models_app.command("register")
def models_register(
    package: Annotated[Path, typer.Argument(help="Model package directory (from inspector export / pipeline).")],
    name: Annotated[Optional[str], typer.Option("--name", help="Model name (default: the manifest's).")] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    reference: Annotated[bool, typer.Option("--reference", help="Point at the package where it lies instead of "
                                            "copying it into the registry.")] = False,
    by: By = None,
    registry: RegistryDir = REGISTRY_DEFAULT,
) -> None:
    """Verify a package and add it to the registry (not yet current: `promote` does that)."""
    from inspector.registry import Registry, RegistryError

    with user_errors(RegistryError):
        entry = Registry(registry).register(package, name=name, by=by, note=note, reference=reference)
    typer.echo(f"registered {entry['id']} (package {entry['package_id']}) at {entry['path']}")


@models_app.command("golden")
def models_golden(
    data: Annotated[Path, typer.Argument(help="Labeled boards every promotion is judged on.")],
    split_file: Annotated[Optional[Path], typer.Option("--split-file",
                                                       help="Use one split of this split.json.")] = None,
    split: Annotated[str, typer.Option("--split", help="train | val (with --split-file).")] = "val",
    tolerance: Annotated[Optional[list[str]], typer.Option(
        "--tolerance", help="METRIC=VALUE, repeatable: official_ap, official_f, f1_at_threshold, "
        "class_recall.")] = None,
    by: By = None,
    registry: RegistryDir = REGISTRY_DEFAULT,
) -> None:
    """Fix the registry's golden set (and the gate's tolerances)."""
    from inspector.registry import GoldenSet, Registry, RegistryError

    if split not in ("train", "val"):
        fail(f"error: --split: expected train or val, got {split!r}")
    try:
        tolerances = {key: float(value) for key, _, value in (item.partition("=") for item in tolerance or [])}
    except ValueError as error:
        fail(f"error: --tolerance METRIC=VALUE expects a number ({error})")
    with user_errors(RegistryError, ValueError):
        event = Registry(registry).set_golden(GoldenSet(str(data), str(split_file) if split_file else None, split),
                                              by=by, tolerance=tolerances)
    typer.echo(f"golden set {event['golden']['data']} (fingerprint {event['golden']['fingerprint']}), "
               f"tolerances {event['tolerance']}")


@models_app.command("promote")
def models_promote(
    model_id: Annotated[str, typer.Argument(help="A registered model id (see `inspector models list`).")],
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate refuses it (recorded as "
                                        "forced).")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded.")] = "",
    by: By = None,
    registry: RegistryDir = REGISTRY_DEFAULT,
) -> None:
    """Evaluate the model on the golden set and make it current unless it is worse than the current one."""
    from inspector.registry import PromotionRefused, Registry, RegistryError, describe_difference, describe_failures

    with user_errors(RegistryError):
        try:
            event = Registry(registry).promote(model_id, by=by, force=force, reason=reason)
        except PromotionRefused as error:  # the gate said no: exit 1, as a failed check, not a usage error
            fail(f"refused: {error}", code=1)
    candidate = event["candidate"]
    typer.echo(f"promoted {model_id} (was {event['previous'] or 'none'}): official AP {candidate['official_ap']:.4f}, "
               f"F {candidate['official_f']:.4f}, F at threshold {candidate['f1_at_threshold']:.4f} on "
               f"{candidate['n_images']} golden boards")
    if event.get("official_ap_difference"):
        typer.echo(describe_difference(event["official_ap_difference"]))
    if event["forced"]:
        typer.secho(f"FORCED past the gate: {describe_failures(event['failures'])}", fg=typer.colors.YELLOW)


@models_app.command("rollback")
def models_rollback(reason: Annotated[str, typer.Option("--reason")] = "", by: By = None,
                    registry: RegistryDir = REGISTRY_DEFAULT) -> None:
    """Make the previously promoted model current again."""
    from inspector.registry import Registry, RegistryError

    with user_errors(RegistryError):
        event = Registry(registry).rollback(by=by, reason=reason)
    typer.echo(f"rolled back from {event['previous']} to {event['model']}")
