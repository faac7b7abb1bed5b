"""Data-parallel training on Paddle's own distributed engine (``paddle.distributed``).

One process per rank, started by ``python -m paddle.distributed.launch`` (GPUs: one rank per card, several
nodes with ``--ips``; CPU: several processes talking over gloo). ``inspector train --nproc N`` and
``inspector distill --nproc N`` start the launcher for the user (``launch_ranks``); every rank then runs the
same command, and ``inspector.training.trainer.train`` sees the rank and world size here (``init_world``).

What each rank does (see ``train``):
- the epoch's shuffled order is the single-process one (``BatchLoader``'s ``(seed, epoch)`` permutation); each
  global batch of ``--batch`` images is cut into one equal slice per rank, so every sample is seen once per
  epoch across ranks, and each sample gets the augmentation it would get in a single process;
- gradients are averaged across ranks by ``paddle.DataParallel`` in the backward pass, so every rank takes the
  same optimizer step and the learning-rate schedule counts global batches (the single-process schedule);
- BatchNorm: on GPUs, ``SyncBatchNorm`` normalises with the statistics of the whole global batch. Paddle has no
  CPU kernel for it (``sync_batch_norm`` is not registered for CPU), so over gloo each rank normalises with
  its own slice, and the running statistics (model and EMA) are averaged across ranks at the end of every
  epoch (``average_buffers``), before validation and checkpoints: every rank then holds the same state;
- validation: every rank detects on its share of the validation boards (``share_of``), rank 0 gathers the
  detections (``gather_on_main``), scores them and alone writes checkpoints, metrics, logs and plots; the others
  wait at a barrier for that. No rank waits for a whole validation: a gloo collective gives up after 30 s (Paddle
  creates its gloo group with gloo's default timeout, and has no setting for it), and a ResNet teacher validated
  on one core by rank 0 alone took 80 s, so the waiting rank's barrier failed and the pipeline stopped
  (``configs/pipeline-cpu.yaml``, 2026-12-07);

A failure in one rank ends the launcher's job: the launcher stops the other ranks. Ctrl-C reaches the process
that started the launcher (``launch_ranks``), which hands the launcher one SIGINT; the launcher sends every rank
SIGTERM (and kills what is left 30 s later). Each rank only notes the request (``StopOnSignal``), the ranks
agree at the next step boundary to stop after the same step, and rank 0 saves ``last/`` there, as one process
does on Ctrl-C (``inspector.training.trainer``). A run resumes from any ``last/`` checkpoint with any number of
ranks (the global batch must divide among them).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import paddle

log = logging.getLogger(__name__)

# Set by paddle.distributed.launch in every rank it starts.
WORLD_SIZE_VARIABLE = "PADDLE_TRAINERS_NUM"


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a data-parallel run (rank 0 of 1 without a launcher)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_ranks() -> int:
    """World size set by ``paddle.distributed.launch`` for this process; 1 outside a launched job."""
    try:
        return max(1, int(os.environ.get(WORLD_SIZE_VARIABLE, "1")))
    except ValueError:
        return 1


def init_world() -> World:
    """Join the launched job's process group (once per process); call after ``paddle.set_device``."""
    if launched_ranks() <= 1:
        return World()
    import paddle.distributed as dist

    if not dist.is_initialized():
        dist.init_parallel_env()
    return World(dist.get_rank(), dist.get_world_size())


def barrier(world: World) -> None:
    if world.distributed:
        import paddle.distributed as dist

        dist.barrier()


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (it may write a file such as split.json), the other ranks after it."""
    if not world.is_main:
        barrier(world)
    yield
    if world.is_main:
        barrier(world)


def local_batch_size(global_batch: int, world: World) -> int:
    """Images per rank per step; the global batch (``--batch``) must divide evenly among the ranks."""
    if global_batch % world.size:
        raise ValueError(f"batch_size {global_batch} (the global batch, all ranks together) does not divide among "
                         f"{world.size} ranks: choose a multiple of {world.size}")
    return global_batch // world.size


def data_parallel(step: paddle.nn.Layer, world: World, device: str, may_skip_layers: bool = False) -> paddle.nn.Layer:
    """``step`` with gradients averaged across ranks (and BatchNorm synchronised on GPUs).

    ``may_skip_layers``: some trainable layers may take no part in a step's loss (e.g. distillation's adapters
    with a zero feature weight); the reducer then searches the backward graph each step instead of waiting
    for their gradients for ever."""
    if not world.distributed:
        return step
    if device == "gpu":
        step = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(step)
    return paddle.DataParallel(step, find_unused_parameters=may_skip_layers)


def share_of(dataset, world: World):
    """This rank's share of an evaluation set: every ``world.size``-th sample from its rank on, in the set's order
    (the whole set in one process)."""
    if not world.distributed:
        return dataset
    return dataset.subset([sample.key for sample in dataset.samples[world.rank::world.size]])


def gather_on_main(part: dict, world: World) -> dict | None:
    """Every rank's ``part`` (a dict, e.g. detections by sample key) merged on rank 0; None on the other ranks.
    ``part`` itself in one process."""
    if not world.distributed:
        return part
    import paddle.distributed as dist

    parts: list = []
    dist.all_gather_object(parts, part)
    if not world.is_main:
        return None
    merged: dict = {}
    for other in parts:
        merged.update(other)
    return merged


@paddle.no_grad()
def all_reduce_mean(values: dict[str, float], world: World) -> dict[str, float]:
    """The mean over ranks of each value (every rank gets the same result)."""
    if not world.distributed or not values:
        return dict(values)
    import paddle.distributed as dist

    keys = sorted(values)
    tensor = paddle.to_tensor([float(values[key]) for key in keys], dtype="float64")
    dist.all_reduce(tensor)
    return {key: float(value) / world.size for key, value in zip(keys, tensor.numpy())}


@paddle.no_grad()
def average_buffers(tensors: dict[str, paddle.Tensor], world: World) -> None:
    """Average floating-point tensors (``running_statistics``) across ranks, in place."""
    if not world.distributed:
        return
    import paddle.distributed as dist

    floats = [tensors[name] for name in sorted(tensors) if paddle.is_floating_point(tensors[name])]
    if not floats:
        return
    # One collective for all of them: concatenated, reduced, split back.
    flat = paddle.concat([t.astype("float64").reshape([-1]) for t in floats])
    dist.all_reduce(flat)
    flat = flat / world.size
    offset = 0
    for tensor in floats:
        count = int(tensor.numel())
        tensor.set_value(flat[offset:offset + count].reshape(tensor.shape).astype(tensor.dtype))
        offset += count


def running_statistics(layer: paddle.nn.Layer) -> dict[str, paddle.Tensor]:
    """What a layer keeps besides its trained weights, by structured name: Paddle's BatchNorm holds its
    running mean and variance as parameters that take no gradient, other layers may hold buffers."""
    state = {name: p for name, p in layer.named_parameters() if p.stop_gradient}
    state.update(dict(layer.named_buffers()))
    return state


def launch_ranks(args: list[str], nproc: int, log_dir: Path, ips: str | None = None) -> int:
    """Run ``inspector ARGS`` as ``nproc`` ranks per node under ``python -m paddle.distributed.launch``.

    Returns the launcher's exit status (non-zero when any rank failed; the launcher then stops the others).
    On CPU the machine's threads (``OMP_NUM_THREADS``, else every core) are split among the local ranks.
    Ctrl-C or SIGTERM here: the launcher gets one SIGINT (it runs in its own session, so a terminal's Ctrl-C
    reaches it only this way, exactly once; a second one would make it kill the ranks after 10 s instead of
    letting them checkpoint), this waits for it to stop every rank, then raises ``KeyboardInterrupt``.
    """
    if nproc < 1:
        raise ValueError(f"--nproc: at least 1 expected, got {nproc}")
    env = dict(os.environ)
    if not (paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        threads = int(env.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        env["OMP_NUM_THREADS"] = str(max(1, threads // nproc))
    entry = Path(__file__).with_name("rank_main.py")
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc),
               "--log_dir", str(log_dir)]
    if ips:
        command += ["--ips", ips]
    command += [str(entry), *args]
    log.info("launching %d rank(s) per node: %s", nproc, " ".join(command))
    process = subprocess.Popen(command, env=env, start_new_session=True)
    with _terminate_as_interrupt():
        try:
            return process.wait()
        except KeyboardInterrupt:
            pass
    log.warning("interrupted: the ranks stop after their current step; rank 0 saves last/")
    process.send_signal(signal.SIGINT)
    _wait_uninterrupted(process)
    raise KeyboardInterrupt


# How long the launcher may take to stop after Ctrl-C: its own grace for the ranks is 30 s (then it kills them).
LAUNCHER_STOP_SECONDS = 60.0


def _wait_uninterrupted(process: subprocess.Popen, limit_s: float = LAUNCHER_STOP_SECONDS) -> int:
    """Wait for ``process`` even through further Ctrl-C (leaving now would orphan the ranks), but not for
    ever: a launcher still running LIMIT_S seconds after the interrupt is killed with every process under it,
    so Ctrl-C always ends the command (the last checkpoint on disk stays what it was)."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            return process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            log.warning("still stopping the ranks; waiting for the launcher (it kills them after 30 s)")
        except subprocess.TimeoutExpired:
            log.error("the launcher did not stop within %.0f s of the interrupt; killing it and its ranks", limit_s)
            # From the top: killed first, the launcher cannot see its children die and exit 0 on its own.
            for pid in process_tree(process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            return process.wait()


def process_tree(pid: int) -> list[int]:
    """PID and every process below it, parents before children (read from Linux's /proc; elsewhere PID
    alone): the launcher puts each rank in a process group of its own, so one killpg would miss them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a service manager stopping this command) handled as Ctrl-C while the ranks run."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RanksStopped(KeyboardInterrupt):
    """Every rank stops after the same step: ``steps`` steps of (0-based) ``epoch`` completed."""

    def __init__(self, epoch: int, steps: int):
        super().__init__(f"stopped on request in epoch {epoch + 1} after {steps} step(s)")
        self.epoch, self.steps = epoch, steps


class StopOnSignal:
    """In a rank of a data-parallel run: SIGTERM (the launcher stopping its ranks) and SIGINT only note the
    request; ``agreed()`` at each step boundary tells every rank whether any rank got one.

    Stopping where the signal lands would leave the ranks at different steps, some inside a collective that
    the others never join (gloo then waits for its timeout), or an optimizer step half applied. Agreeing
    costs one all-reduce of one number per step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, world: World):
        self.world = world
        self.requested = False
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._note)

    def restore(self) -> None:
        """The handlers from before ``install`` (a signal after training ends stops the rank at once)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _note(self, signum, frame) -> None:
        if not self.requested:
            log.warning("rank %d: %s received; stopping after this step", self.world.rank,
                        signal.Signals(signum).name)
        self.requested = True

    @paddle.no_grad()
    def agreed(self) -> bool:
        """True on every rank when any rank was asked to stop (a collective: every rank calls it each step)."""
        if not self.world.distributed:
            return self.requested
        import paddle.distributed as dist

        flag = paddle.to_tensor([1 if self.requested else 0], dtype="int32")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(int(flag.numpy()[0]))
