"""What every command does the same way: refuse with a message and an exit code, map the errors a user can fix
to that, turn repeated ``--data``/``--weight`` into a config's sources, start data-parallel ranks."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn, Optional

import typer

USAGE_ERROR = 2  # bad input: a file, a value or a combination of options; nothing was changed
INTERRUPTED = 130  # Ctrl-C, as a shell reports it


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Print MESSAGE in red on stderr and exit with CODE."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors(*errors: type[BaseException], interrupted: Optional[str] = None) -> Iterator[None]:
    """Inside the block, ERRORS (the ones a user can fix: a missing file, a bad value, a broken package) end the
    command with "error: <what>" and exit code 2 instead of a traceback; with INTERRUPTED, Ctrl-C ends it with
    that message (what was kept, how to continue) and exit code 130. Anything else still raises: a traceback
    there is a bug to report, not a message to hide."""
    try:
        yield
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        fail(interrupted, code=INTERRUPTED)
    except errors as error:
        fail(f"error: {error}")


def data_sources(data: list[Path], weight: Optional[list[float]]):
    """``--data`` (repeatable) and ``--weight`` as a config's ``data``: one path, or a list of sources
    (``inspector.data.sources``: one class list, a fixed split each, per-source weights)."""
    if weight and len(weight) != len(data):
        fail(f"error: --weight given {len(weight)} times for {len(data)} --data sources: one per source, in order")
    if len(data) == 1 and not weight:
        return str(data[0])
    return [{"path": str(path), "weight": w} for path, w in zip(data, weight or [1.0] * len(data))]


def given(**options):
    """The OPTIONS the user gave: an option left unset (None) is dropped, so the config's own default applies
    (``options.config_option``); the config class is the one place a default is written."""
    return {name: value for name, value in options.items() if value is not None}


def config_from_options(config_class, flags: dict[str, str], **values):
    """A config (``inspector.config_base.ConfigBase``) from command-line VALUES; a bad one ends the command
    with "error: --flag: what was expected" (FLAGS: the flag of each field not spelled --field-name)."""
    origins = {name: flags.get(name, "--" + name.replace("_", "-")) for name in values}
    try:
        return config_class.from_dict(values, source="command line", origins=origins)
    except ValueError as error:
        fail(f"error: {error}")


def launch_ranks_if_asked(nproc: int, ips: Optional[str], out: Path) -> None:
    """--nproc/--ips outside a launched job: run this same command line as data-parallel ranks under
    paddle.distributed.launch (rank logs in OUT/launch/workerlog.N) and exit with its status."""
    if nproc == 1 and not ips:
        return
    import sys

    from inspector.training.distributed import launch_ranks, launched_ranks

    if launched_ranks() > 1:  # this process is one of the ranks
        return
    status = launch_ranks(sys.argv[1:], nproc, out / "launch", ips)
    if status:
        fail(f"the ranks stopped (launcher status {status}); each rank's output is in {out / 'launch'}/workerlog.N; "
             f"an interrupted run continues from its last finished epoch with --resume", code=status)
    raise typer.Exit(0)  # the ranks did the work


def all_cores() -> int:
    import os

    return os.cpu_count() or 1
