"""Data-parallel training: `inspector train --nproc 2` runs two CPU ranks over gloo under
paddle.distributed.launch, on tiny synthetic boards (input 64, 12 training images, global batch 4).

Every rank records its steps in <run>/trace/rank<N>.jsonl (INSPECTOR_TRAIN_TRACE): sample keys, loss, a
digest of the trained weights, and at each epoch's end a digest of the whole state (running statistics, EMA).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inspector.data.synth import write_deeppcb
from inspector.training import trainer as trainer_module
from inspector.training.checkpoint import STATE_FILE, load_checkpoint
from inspector.training.config import TrainConfig
from inspector.training.distributed import World, local_batch_size
from inspector.training.trainer import TRACE_VARIABLE, train

pytestmark = pytest.mark.slow

EPOCHS, GLOBAL_BATCH, TRAIN_IMAGES = 2, 4, 12
# Per-step loss of 2 ranks (mean of the ranks' losses) vs 1 process with the same global batch. The samples,
# their order and augmentation and the averaged gradients are the same; on CPU each rank's BatchNorm
# normalises with its own half of the batch (Paddle has no CPU SyncBatchNorm), which moves the loss a little
# (measured: at most 0.5 % over these steps).
LOSS_RTOL = 0.03


@pytest.fixture(scope="module")
def boards(tmp_path_factory) -> Path:
    # 16 pairs, a quarter for validation: 12 training images, 3 global batches of 4 per epoch, none dropped.
    return write_deeppcb(tmp_path_factory.mktemp("synth") / "boards", n=16, seed=3, size=160)


def _arguments(data: Path, out: Path, epochs: int = EPOCHS) -> list[str]:
    return ["train", "--arch", "mbv3-small", "--data", str(data), "--out", str(out), "--epochs", str(epochs),
            "--batch", str(GLOBAL_BATCH), "--input-size", "64", "--crop-size", "0", "--val-fraction", "0.25",
            "--seed", "1", "--lr", "3e-3"]


def _config(data: Path, out: Path) -> TrainConfig:
    """What _arguments() gives, for an in-process single-rank run."""
    return TrainConfig(arch="mbv3-small", data=str(data), out=str(out), epochs=EPOCHS, batch_size=GLOBAL_BATCH,
                       input_size=64, crop_size=None, val_fraction=0.25, seed=1, lr=3e-3)


def _run_ranks(arguments: list[str], nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, TRACE_VARIABLE: "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "inspector.cli", *arguments, "--nproc", str(nproc)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _steps(run: Path, rank: int) -> list[dict]:
    return [e for e in map(json.loads, (run / "trace" / f"rank{rank}.jsonl").read_text().splitlines()) if "step" in e]


def _states(run: Path, rank: int) -> list[dict]:
    return [e for e in map(json.loads, (run / "trace" / f"rank{rank}.jsonl").read_text().splitlines())
            if "state" in e]


def _global_losses(run: Path, ranks: int) -> dict[tuple[int, int], float]:
    """(epoch, step) -> loss of the global batch: the mean of the ranks' losses."""
    per_rank = [_steps(run, rank) for rank in range(ranks)]
    return {(e["epoch"], e["step"]): sum(r[i]["loss"] for r in per_rank) / ranks for i, e in enumerate(per_rank[0])}


def _assert_losses_match(two: dict, one: dict) -> None:
    assert two.keys() == one.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=LOSS_RTOL), (key, two[key], one[key])


def test_two_cpu_ranks_split_each_epoch_stay_identical_and_train_like_one_process(boards, tmp_path, monkeypatch):
    two = tmp_path / "two"
    result = _run_ranks(_arguments(boards, two))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    train_keys = set(json.loads((two / "split.json").read_text())["train"])
    assert len(train_keys) == TRAIN_IMAGES
    rank0, rank1 = _steps(two, 0), _steps(two, 1)
    steps_per_epoch = TRAIN_IMAGES // GLOBAL_BATCH
    assert len(rank0) == len(rank1) == EPOCHS * steps_per_epoch  # both ranks trained every step
    for epoch in range(EPOCHS):
        seen = [[key for e in steps if e["epoch"] == epoch for key in e["keys"]] for steps in (rank0, rank1)]
        assert len(seen[0]) == len(seen[1]) == TRAIN_IMAGES // 2  # each rank: half of the epoch
        assert not set(seen[0]) & set(seen[1])  # disjoint halves
        assert {Path(key).stem for key in seen[0] + seen[1]} == {Path(key).stem for key in train_keys}
    # Reshuffled per epoch: the first global batch of epoch 2 is not that of epoch 1.
    assert rank0[0]["keys"] + rank1[0]["keys"] != rank0[steps_per_epoch]["keys"] + rank1[steps_per_epoch]["keys"]
    # Same trained weights after every step; the whole state (BatchNorm statistics, EMA) after every epoch.
    assert [e["weights"] for e in rank0] == [e["weights"] for e in rank1]
    assert _states(two, 0) == _states(two, 1) and len(_states(two, 0)) == EPOCHS

    # Each rank detected on its half of the validation boards at each epoch (no rank waits through a whole
    # validation: gloo gives up after 30 s); rank 0 scored them all and alone wrote: one checkpoint pair, one
    # metrics row per epoch, on every validation board.
    val_keys = set(json.loads((two / "split.json").read_text())["val"])
    validated = [[e["validated"] for e in map(json.loads, (two / "trace" / f"rank{rank}.jsonl").read_text()
                                              .splitlines()) if "validated" in e] for rank in (0, 1)]
    assert len(validated[0]) == len(validated[1]) == EPOCHS
    for share0, share1 in zip(*validated):
        assert abs(len(share0) - len(share1)) <= 1 and not set(share0) & set(share1)
        assert {Path(key).stem for key in share0 + share1} == {Path(key).stem for key in val_keys}
    assert json.loads((two / "metrics.json").read_text())[-1]["official_ap"] is not None
    assert sorted(p.name for p in two.iterdir() if p.name in ("best", "last") or p.name.endswith((".saving", ".old"))) \
        == ["best", "last"]
    assert load_checkpoint(two / "last").info["epoch"] == EPOCHS
    assert len(json.loads((two / "metrics.json").read_text())) == EPOCHS
    assert "official AP" in (two / "launch" / "workerlog.0").read_text()
    assert "official AP" not in (two / "launch" / "workerlog.1").read_text()

    # One process, same global batch: same samples per step, the same loss curve within LOSS_RTOL.
    monkeypatch.setenv(TRACE_VARIABLE, "1")
    one = train(_config(boards, tmp_path / "one"))
    for (a, b), single in zip(zip(rank0, rank1), _steps(one, 0)):
        assert sorted(a["keys"] + b["keys"]) == sorted(single["keys"])
    _assert_losses_match(_global_losses(two, 2), _global_losses(one, 1))
    epoch_losses = [[row["train_loss"] for row in json.loads((run / "metrics.json").read_text())] for run in (two, one)]
    assert epoch_losses[0] == pytest.approx(epoch_losses[1], rel=LOSS_RTOL)


def test_a_one_process_checkpoint_resumes_on_two_ranks(boards, tmp_path, monkeypatch):
    monkeypatch.setenv(TRACE_VARIABLE, "1")
    straight = train(_config(boards, tmp_path / "straight"))

    real_epoch = trainer_module._train_one_epoch

    def interrupted_in_epoch_two(model, optimizer, schedule, ema, loader, epoch, *args):
        if epoch == 1:
            raise KeyboardInterrupt  # Ctrl-C in the second epoch: last/ holds the end of the first
        return real_epoch(model, optimizer, schedule, ema, loader, epoch, *args)

    monkeypatch.setattr(trainer_module, "_train_one_epoch", interrupted_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(_config(boards, tmp_path / "resumed"))
    monkeypatch.setattr(trainer_module, "_train_one_epoch", real_epoch)
    (tmp_path / "resumed" / "trace" / "rank0.jsonl").unlink()

    result = _run_ranks(_arguments(boards, tmp_path / "resumed") + ["--resume"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resumed = tmp_path / "resumed"
    assert [row["epoch"] for row in json.loads((resumed / "metrics.json").read_text())] == [1, 2]
    assert load_checkpoint(resumed / "last").info["epoch"] == EPOCHS
    # The second epoch on two ranks: the single run's batches, split, and its loss curve.
    second = {key: loss for key, loss in _global_losses(straight, 1).items() if key[0] == 1}
    _assert_losses_match(_global_losses(resumed, 2), second)
    assert [e["weights"] for e in _steps(resumed, 0)] == [e["weights"] for e in _steps(resumed, 1)]


def test_a_failing_rank_stops_every_rank(boards, tmp_path):
    run = tmp_path / "failing"
    (run / "trace" / "rank1.jsonl").mkdir(parents=True)  # rank 1 cannot write its trace: it fails after step 1
    result = _run_ranks(_arguments(boards, run), timeout=240)  # rank 0 must not wait for it for ever
    assert result.returncode != 0
    assert "the ranks stopped" in result.stderr and "--resume" in result.stderr
    assert "IsADirectoryError" in (run / "launch" / "workerlog.1").read_text()
    assert not (run / "last").exists()


def test_the_loader_gives_each_rank_its_slice_of_the_single_process_batches(boards):
    from inspector.data import load_dataset
    from inspector.data.loader import BatchLoader

    dataset = load_dataset(str(boards))
    kwargs = dict(batch_size=4, input_size=64, input_mode="image+template", train=True, seed=5, workers=0)
    single = list(BatchLoader(dataset, **kwargs))
    ranks = [list(BatchLoader(dataset, rank=rank, ranks=2, **kwargs)) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for whole, first, second in zip(single, *ranks):
        assert first.keys + second.keys == whole.keys  # the global batch, cut in order
        # each image gets the augmentation it gets in one process (its draws follow its place in the epoch)
        assert (whole.images == np.concatenate([first.images, second.images])).all()


def test_a_global_batch_that_does_not_divide_among_the_ranks_is_refused():
    assert local_batch_size(8, World(rank=1, size=4)) == 2
    with pytest.raises(ValueError, match="batch_size 6 .* does not divide among 4 ranks: choose a multiple of 4"):
        local_batch_size(6, World(rank=0, size=4))


def _processes_of(run: Path) -> list[int]:
    """Processes whose command line names this run directory (the launcher and its ranks)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # ended meanwhile
                continue
            if str(run) in command:
                pids.append(int(entry.name))
    return pids


def _trained_weights_digest(checkpoint_dir: Path) -> str:
    """The digest the trace records after a step, of the model weights in a checkpoint's training state."""
    import paddle

    model = load_checkpoint(checkpoint_dir).build()
    model.set_state_dict(paddle.load(str(checkpoint_dir / STATE_FILE))["model"])
    return trainer_module._digest([(name, p) for name, p in model.named_parameters() if not p.stop_gradient])


def _alive(pid: int) -> bool:
    """Running, not gone nor a zombie waiting for its parent (here: init, as its parent was killed)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_launcher_that_does_not_stop_after_ctrl_c_is_killed_with_every_process_under_it():
    """However the launcher hangs, Ctrl-C ends the command and leaves no rank behind."""
    from inspector.training.distributed import _wait_uninterrupted, process_tree

    stubborn = subprocess.Popen(["bash", "-c", "trap '' INT TERM; sleep 300 & sleep 300 & wait"])
    try:
        while len(process_tree(stubborn.pid)) < 3:  # await both children
            assert stubborn.poll() is None
            time.sleep(0.01)
        below = process_tree(stubborn.pid)
        stubborn.send_signal(signal.SIGINT)  # ignored, as a hung launcher would
        assert _wait_uninterrupted(stubborn, limit_s=1.0) == -signal.SIGKILL
        deadline = time.monotonic() + 10  # SIGKILL is sent; await its delivery
        while any(_alive(pid) for pid in below[1:]):
            assert time.monotonic() < deadline, f"still running: {[pid for pid in below[1:] if _alive(pid)]}"
            time.sleep(0.05)
    finally:
        for pid in process_tree(stubborn.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_ctrl_c_stops_every_rank_after_one_step_with_a_checkpoint_there_and_resume_finishes(boards, tmp_path):
    run = tmp_path / "interrupted"
    env = {**os.environ, TRACE_VARIABLE: "1", "OMP_NUM_THREADS": "2"}
    # Its own process group with Ctrl-C's default action, as a terminal's foreground job: a test run started in the
    # background of a non-interactive shell (a CI runner may) inherits SIGINT ignored, and so would the command.
    process = subprocess.Popen([sys.executable, "-m", "inspector.cli", *_arguments(boards, run, epochs=200),
                                "--nproc", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # Await the first finished epoch (its checkpoint), polling half a second apart.
        while not (run / "last" / "checkpoint.json").is_file():
            assert process.poll() is None, "the run ended before it could be interrupted"
            try:
                process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal
        try:  # the launcher's grace is 30 s and the command's own limit 60 s (LAUNCHER_STOP_SECONDS)
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            logs = {log.name: log.read_text()[-2000:] for log in sorted((run / "launch").glob("*"))}
            pytest.fail(f"not stopped 120 s after Ctrl-C; processes {_processes_of(run)}; logs {logs}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr[-3000:]
    assert f"interrupted: last checkpoint saved in {run}/last" in stderr
    assert _processes_of(run) == []  # no rank left behind
    for rank in (0, 1):  # each rank stopped through the trainer, none was killed
        assert "interrupted: last checkpoint saved" in (run / "launch" / f"workerlog.{rank}").read_text()

    # Rank 0 saved last/ after the step every rank completed: the interrupted epoch is repeated on resume.
    last = load_checkpoint(run / "last")
    stopped = last.info["interrupted"]
    epochs_done = last.info["epoch"]
    assert epochs_done >= 1 and stopped["epoch"] == epochs_done + 1
    steps_per_epoch = TRAIN_IMAGES // GLOBAL_BATCH
    rank0, rank1 = _steps(run, 0), _steps(run, 1)
    assert len(rank0) == len(rank1) == epochs_done * steps_per_epoch + stopped["completed_steps"]
    assert rank0[-1]["weights"] == rank1[-1]["weights"] == _trained_weights_digest(run / "last")

    # Resume on one process (another number of ranks) to the end of the interrupted epoch.
    result = subprocess.run([sys.executable, "-m", "inspector.cli",
                             *_arguments(boards, run, epochs=epochs_done + 1), "--resume"],
                            env={**os.environ, "OMP_NUM_THREADS": "2"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = load_checkpoint(run / "last")
    assert last.info["epoch"] == epochs_done + 1 and "interrupted" not in last.info
    assert [row["epoch"] for row in json.loads((run / "metrics.json").read_text())] == list(range(1, epochs_done + 2))
