"""``inspector recipe list|show|validate|create``: the per-board-type recipe files the line service runs with."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from inspector.cli.common import fail, given, user_errors
from inspector.cli.options import RecipesDir

recipe_app = typer.Typer(help="Recipes: one YAML file per board type (model package, golden template, ignore "
                         "regions, per-class thresholds, camera settings, trigger mode), reviewed in git.",
                         no_args_is_help=True)
RECIPES_DEFAULT = Path("recipes")


@recipe_app.command("list")
def recipe_list_command(directory: RecipesDir = RECIPES_DEFAULT) -> None:
    """Every recipe on file: name, version, model, and whether it validates."""
    from inspector.service.recipes import RecipeError, list_recipes, load_recipe

    with user_errors(RecipeError):
        paths = list_recipes(directory)
    for path in paths:
        try:
            recipe = load_recipe(path, read_template=False)
            typer.echo(f"{recipe.name:24s} v{recipe.version:8s} model {recipe.spec.model}  "
                       f"trigger {recipe.spec.trigger}")
        except RecipeError as error:  # listed as invalid, the others still listed
            typer.echo(f"{path.stem:24s} INVALID: {str(error).splitlines()[0]}")


@recipe_app.command("show")
def recipe_show_command(name: Annotated[str, typer.Argument(help="Recipe name (its file name without .yaml).")],
                        directory: RecipesDir = RECIPES_DEFAULT) -> None:
    """One recipe, validated, with its files resolved (JSON)."""
    from inspector.service.recipes import RecipeError, load_recipe, recipe_path

    with user_errors(RecipeError):
        recipe = load_recipe(recipe_path(directory, name))
    typer.echo(json.dumps(recipe.summary(), indent=2, default=str))


@recipe_app.command("validate")
def recipe_validate_command(
    names: Annotated[Optional[list[str]], typer.Argument(help="Recipes to check (default: all).")] = None,
    directory: RecipesDir = RECIPES_DEFAULT,
) -> None:
    """Check recipes against the schema and their files (model, template, class names); exit 1 on any error."""
    from inspector.service.recipes import RecipeError, list_recipes, load_recipe, recipe_path

    with user_errors(RecipeError):
        paths = [recipe_path(directory, name) for name in names] if names else list_recipes(directory)
    failed = 0
    for path in paths:
        try:
            recipe = load_recipe(path)
            typer.echo(f"ok: {recipe.name} v{recipe.version} ({path})")
        except RecipeError as error:  # every recipe is checked; the exit code says whether any failed
            failed += 1
            typer.secho(str(error), fg=typer.colors.RED, err=True)
    if failed:
        raise typer.Exit(1)


@recipe_app.command("create")
def recipe_create_command(
    name: Annotated[str, typer.Argument(help="Recipe name; the file is DIR/NAME.yaml.")],
    version: Annotated[str, typer.Option("--version")] = "1",
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Model package directory (relative to the recipes directory), or default (the shipped "
        "package; used when not given).")] = None,
    template: Annotated[Optional[str], typer.Option("--template",
                                                    help="Golden template image (relative path).")] = None,
    score_threshold: Annotated[Optional[float], typer.Option("--score-threshold", min=0.0, max=1.0)] = None,
    threshold: Annotated[Optional[list[str]], typer.Option("--threshold",
                                                           help="CLASS=SCORE, repeatable.")] = None,
    ignore: Annotated[Optional[list[str]], typer.Option(
        "--ignore", help="X1,Y1,X2,Y2 region in frame pixels, repeatable.")] = None,
    trigger: Annotated[Optional[str], typer.Option(
        "--trigger", help="software | hardware | free-run (not given: the recipe file's default, software).")] = None,
    description: Annotated[Optional[str], typer.Option("--description")] = None,
    part_id_pattern: Annotated[Optional[str], typer.Option(
        "--part-id-pattern", help="Regular expression a part id (PLC PartId or the board's QR code) matches in "
        "full to select this recipe (serve's recipe_by_part_id).")] = None,
    directory: RecipesDir = RECIPES_DEFAULT,
) -> None:
    """Write a new recipe file (validated first); edit it later and bump its version."""
    from pydantic import ValidationError

    from inspector.service.recipes import RecipeError, RecipeFile, load_recipe, write_recipe

    try:
        thresholds = {key: float(value) for key, _, value in (item.partition("=") for item in threshold or [])}
        regions = [tuple(float(v) for v in item.split(",")) for item in ignore or []]
    except ValueError as error:
        fail(f"error: --threshold CLASS=SCORE and --ignore X1,Y1,X2,Y2 expect numbers ({error})")
    try:
        spec = RecipeFile(name=name, version=version, template=template, ignore_regions=regions,
                          score_threshold=score_threshold, thresholds=thresholds,
                          **given(description=description, model=model, trigger=trigger,
                                  part_id_pattern=part_id_pattern))
    except ValidationError as error:
        fail("error: " + "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in error.errors()))
    with user_errors(RecipeError):
        path = write_recipe(directory, spec)
    try:
        load_recipe(path)
    except RecipeError as error:  # a file that does not load is not left behind
        path.unlink()
        fail(f"error: not written: {error}")
    typer.echo(f"wrote {path}")
