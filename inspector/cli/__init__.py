"""The `inspector` command line: one verb per job (data, train, eval, ...).

One module per domain: ``data`` (check, synth), ``training`` (train, distill), ``evaluation`` (eval),
``compress`` (prune, quantize), ``deploy`` (export, bench, predict), ``apps`` (pipeline, demo, serve, gui),
``models`` (the registry), ``recipe`` and ``review``. Options several commands share are declared once in
``options``; ``common.user_errors`` turns the errors a user can fix into "error: ..." and exit code 2. An option
that sets a config field writes no default of its own: None unless given (``options.config_option``), its --help
showing the config class's default, and only the given ones passed on (``common.given``).
To add a command: write it in its domain's module and add it to ``COMMANDS`` below.

Heavy imports (paddle, cv2) happen inside the commands so that `inspector --help` answers at once, and so that
``native_logs`` can quiet Paddle's own logging before paddle is first imported.
"""
from __future__ import annotations

import os
from typing import Annotated

import typer

from inspector.cli import apps, compress, deploy, evaluation, training
from inspector.cli.data import data_app
from inspector.cli.models import models_app
from inspector.native_logs import VERBOSE_ENV, quiet_native_logs
from inspector.cli.recipe import recipe_app
from inspector.cli.review import review_app

app = typer.Typer(
    help="PCB defect inspector: import labeled data, train, compress, export and run a defect detector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def global_options(
    verbose: Annotated[bool, typer.Option(
        "--verbose", envvar=VERBOSE_ENV, help="Also show the native libraries' own logs (Paddle's glog lines, "
        "Paddle Inference's and oneDNN's pass log, Paddle Lite's), hidden by default. Give it before the "
        "command.")] = False,
) -> None:
    quiet_native_logs(verbose)


# The verbs in the order `inspector --help` lists them.
COMMANDS = (
    ("train", training.train_command),
    ("eval", evaluation.eval_command),
    ("distill", training.distill_command),
    ("prune", compress.prune_command),
    ("quantize", compress.quantize_command),
    ("pipeline", apps.pipeline_command),
    ("export", deploy.export_command),
    ("bench", deploy.bench_command),
    ("predict", deploy.predict_command),
    ("demo", apps.demo_command),
    ("serve", apps.serve_command),
    ("gui", apps.gui_command),
)
for _name, _command in COMMANDS:
    app.command(_name)(_command)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(recipe_app, name="recipe")
app.add_typer(review_app, name="review")


def main() -> None:
    # Paddle's CPU kernels use OpenMP; by default they leave cores idle (1.5x faster with all of them).
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    app()


__all__ = ["COMMANDS", "app", "main"]
