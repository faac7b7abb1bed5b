"""Latency of a loaded package on a real-sized frame: warm-up runs, then timed runs, one at a time.

Each timed run is a whole ``Detector.detect`` call (letterbox, network, NMS), what a production
line waits for per frame; each stage's median is reported beside it (medians need not add up to the
whole frame's). ``fps`` is frames per second over the timed runs, back to back on one thread of the
caller (the engine may use more).

Two packages are compared by timing them alternately, frame after frame, in one process
(``benchmark_alternately``): this VM's speed drifts by a third between spells, so two separate runs (each its
own process, its own spell) can be 10 % apart for the same package, while alternating frames see the same spell.
"""
from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from inspector.runtime.detector import Detector


@dataclass(frozen=True)
class BenchResult:
    p50_ms: float  # whole frame: preprocess + network + NMS
    p99_ms: float
    mean_ms: float
    fps: float
    infer_p50_ms: float  # the network alone
    preprocess_p50_ms: float  # letterbox, colour checks, input planes (Timing.preprocess_ms)
    postprocess_p50_ms: float  # NMS and boxes mapped back
    backend: str
    precision: str  # what ran (Detector.info), not what was asked for
    threads: int
    input_size: int
    model_bytes: int  # the files this backend loads
    peak_rss_mb: float  # of this whole process, engine and Python included
    runs: int
    warmup: int
    frame_size: list[int]  # (width, height) of the benchmarked frame
    engine: str
    device: str
    package: str
    package_id: str

    def to_dict(self) -> dict:
        return asdict(self)


def benchmark(detector: Detector, image: np.ndarray, template: np.ndarray | None = None, runs: int = 100,
              warmup: int = 10) -> BenchResult:
    """Time ``runs`` detections of ``image`` after ``warmup`` untimed ones."""
    return benchmark_alternately([detector], image, template, runs, warmup)[0]


def benchmark_alternately(detectors: Sequence[Detector], image: np.ndarray, template: np.ndarray | None = None,
                          runs: int = 100, warmup: int = 10) -> list[BenchResult]:
    """``benchmark`` of each detector, their frames alternately: run i of every detector, then run i + 1 of every
    detector. ``template`` goes to those that compare with one (and to no other)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    goldens = [template if detector.needs_template else None for detector in detectors]
    for detector, golden in zip(detectors, goldens):
        for _ in range(warmup):
            detector.detect(image, golden)
    totals: list[list[float]] = [[] for _ in detectors]
    stages: list[list[tuple[float, float, float]]] = [[] for _ in detectors]
    elapsed = [0.0 for _ in detectors]
    for _ in range(runs):
        for index, (detector, golden) in enumerate(zip(detectors, goldens)):
            before = time.perf_counter()
            result = detector.detect(image, golden)
            took = time.perf_counter() - before
            elapsed[index] += took
            totals[index].append(took * 1e3)
            stages[index].append((result.timing.preprocess_ms, result.timing.infer_ms, result.timing.postprocess_ms))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return [_result(detector, image, times, parts, runs / spent, runs, warmup, peak_rss_mb)
            for detector, times, parts, spent in zip(detectors, totals, stages, elapsed)]


def _result(detector: Detector, image: np.ndarray, totals: list[float], stages: list[tuple[float, float, float]],
            fps: float, runs: int, warmup: int, peak_rss_mb: float) -> BenchResult:
    info = detector.info
    pre_p50, infer_p50, post_p50 = (float(v) for v in np.percentile(np.array(stages), 50, axis=0))
    return BenchResult(
        p50_ms=float(np.percentile(totals, 50)),
        p99_ms=float(np.percentile(totals, 99)),
        mean_ms=float(np.mean(totals)),
        fps=fps,
        infer_p50_ms=infer_p50,
        preprocess_p50_ms=pre_p50,
        postprocess_p50_ms=post_p50,
        backend=info.backend,
        precision=info.precision,
        threads=info.threads,
        input_size=detector.input_size,
        model_bytes=detector.package.target_bytes(info.target),
        peak_rss_mb=peak_rss_mb,
        runs=runs,
        warmup=warmup,
        frame_size=[int(image.shape[1]), int(image.shape[0])],
        engine=info.engine,
        device=info.device,
        package=info.package,
        package_id=info.package_id,
    )
