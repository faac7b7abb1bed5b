"""Drive `inspector serve`'s Service from a hot folder and from a video, measure what a line would see.

    .venv/bin/python benchmarks/service_bench.py                       # hot folder, then video (about 2 min)
    .venv/bin/python benchmarks/service_bench.py --soak 600 --only video   # the 10-minute memory soak

For each source: sustained frames/s (records committed per second once the first is in), end-to-end
latency p50/p99 from capture (the frame read from its source) to its record committed in the journal,
frames dropped (live sources drop the oldest waiting frame when inference falls behind), and the
service's resident memory (VmRSS of this process plus its detector process) sampled over time. The service runs in this process exactly as
`inspector serve` runs it (Service + its HTTP server, /metrics scraped every 5 s like Prometheus would).

- hot folder: --boards DeepPCB pairs copied into a folder before the start (a scanner's backlog): never
  dropped, so frames/s is the pipeline's capacity; latency includes the wait in the bounded queue.
- video: an MJPEG .avi made from one real DeepPCB board (its tested image, --video-frames frames) played at
  --video-fps like a camera, with that board's golden template as the service's template.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "deeppcb"
TOKEN = "benchmark-token-0123456789"


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def service_rss_mb(service) -> float:
    """The service's memory: this process and its detector process."""
    return rss_mb() + rss_mb(service.detector.pid)


def deeppcb_pairs(data: Path, count: int) -> list[tuple[Path, Path]]:
    from inspector.data import load_dataset

    samples = [s for s in load_dataset(data).samples if s.template_path is not None]
    if not samples:
        raise SystemExit(f"{data}: no DeepPCB pairs with templates")
    return [(samples[i % len(samples)].image_path, samples[i % len(samples)].template_path) for i in range(count)]


def make_video(pair: tuple[Path, Path], frames: int, fps: float, out: Path) -> Path:
    image = cv2.imread(str(pair[0]))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (image.shape[1], image.shape[0]))
    if not writer.isOpened():
        raise SystemExit("cannot write an MJPEG video with this OpenCV build")
    for _ in range(frames):
        writer.write(image)
    writer.release()
    return out


class Run:
    """One service run: collects (commit time, latency) per record and RSS samples."""

    def __init__(self, name: str):
        self.name = name
        self.commits: list[tuple[float, float]] = []
        self.rss: list[tuple[float, float]] = []
        self.lock = threading.Lock()

    def observe(self, record, latency_s: float) -> None:
        with self.lock:
            self.commits.append((time.monotonic(), latency_s * 1e3))

    def summary(self, service, started: float, warmup_s: float) -> dict:
        with self.lock:
            commits = list(self.commits)
        steady = [c for c in commits if c[0] - started >= warmup_s] or commits
        span = steady[-1][0] - steady[0][0] if len(steady) > 1 else float("nan")
        latencies = np.array([latency for _, latency in steady])
        registry = service.metrics.registry
        dropped = registry.get_sample_value("inspector_frames_dropped_total", {"line": service.line}) or 0.0
        return {
            "source": self.name, "records": len(commits), "records_measured": len(steady),
            "frames_per_s": (len(steady) - 1) / span if span == span and span > 0 else float("nan"),
            "latency_p50_ms": float(np.percentile(latencies, 50)), "latency_p99_ms": float(np.percentile(latencies, 99)),
            "latency_max_ms": float(latencies.max()), "dropped": int(dropped),
            "detector_mean_ms": _detector_mean_ms(service),
            "rss_mb": [(round(t - started, 1), round(mb, 1)) for t, mb in self.rss],
        }


def _detector_mean_ms(service) -> float | None:
    registry = service.metrics.registry
    count = registry.get_sample_value("inspector_inference_seconds_count", {"line": service.line})
    total = registry.get_sample_value("inspector_inference_seconds_sum", {"line": service.line})
    return None if not count else round(total / count * 1e3, 2)  # the mean, in ms


def drive(name: str, config, duration_s: float, warmup_s: float, sample_every_s: float,
          until_records: int | None = None) -> dict:
    import httpx

    from inspector.service import Service
    from inspector.service.api import create_app
    from inspector.service.run import HttpServer

    run = Run(name)
    service = Service(config)
    service.observers.append(run.observe)
    http = HttpServer(create_app(service, TOKEN), "127.0.0.1", 0)
    started = time.monotonic()
    service.start()
    http.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{http.port}", headers={"Authorization": f"Bearer {TOKEN}"})
    run.rss.append((time.monotonic(), service_rss_mb(service)))
    last_sample = last_scrape = time.monotonic()
    try:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            if now - last_scrape >= 5:
                client.get("/metrics").raise_for_status()
                client.get("/health").raise_for_status()
                last_scrape = now
            if now - last_sample >= sample_every_s:
                run.rss.append((now, service_rss_mb(service)))
                last_sample = now
                print(f"  [{name}] {now - started:6.0f} s  records {len(run.commits):6d}  RSS {run.rss[-1][1]:.0f} MB",
                      flush=True)
            if until_records is not None and len(run.commits) >= until_records:
                break
            if now - started >= duration_s:
                break
    finally:
        run.rss.append((time.monotonic(), service_rss_mb(service)))
        summary = run.summary(service, started, warmup_s)
        client.close()
        service.stop(drain=True)
        http.stop()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                        help="DeepPCB dataset (default ../shared/datasets/deeppcb, else the bundled pairs)")
    parser.add_argument("--only", choices=["hotfolder", "video"], default=None)
    parser.add_argument("--boards", type=int, default=200, help="hot-folder files")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the video run")
    parser.add_argument("--video-fps", type=float, default=25.0, help="rate the video is played at (a camera's)")
    parser.add_argument("--video-frames", type=int, default=250)
    parser.add_argument("--soak", type=float, default=0.0, help="seconds: run the video this long instead")
    parser.add_argument("--threads", type=int, default=1, help="inference threads")
    parser.add_argument("--queue-size", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from inspector.data.bundled import BUNDLED_DEEPPCB
    from inspector.service import ServiceConfig

    data = args.data or BUNDLED_DEEPPCB
    work = Path(tempfile.mkdtemp(prefix="service-bench-"))
    results = {"model": str(args.model.resolve()), "threads": args.threads, "cpu_count": os.cpu_count(),
               "load_average_at_start": os.getloadavg(), "runs": []}
    try:
        common = dict(model=args.model, threads=args.threads, queue_size=args.queue_size, http=None, token=TOKEN)
        if args.only in (None, "hotfolder") and not args.soak:
            folder = work / "incoming"
            folder.mkdir()
            for index, (test, temp) in enumerate(deeppcb_pairs(data, args.boards)):
                shutil.copy2(temp, folder / f"{index:05d}_temp.jpg")
                shutil.copy2(test, folder / f"{index:05d}_test.jpg")
            config = ServiceConfig(source=str(folder), data_dir=work / "data-hotfolder", **common)
            print(f"hot folder: {args.boards} DeepPCB boards from {data}", flush=True)
            results["runs"].append(drive("hotfolder", config, duration_s=3600, warmup_s=5, sample_every_s=10,
                                         until_records=args.boards))
        if args.only in (None, "video") or args.soak:
            pair = deeppcb_pairs(data, 1)[0]
            video = make_video(pair, args.video_frames, args.video_fps, work / "board.avi")
            config = ServiceConfig(source=str(video), template=pair[1], fps=args.video_fps,
                                   data_dir=work / "data-video", **common)
            duration = args.soak or args.duration
            print(f"video: {pair[0].name} x {args.video_frames} frames, looped at {args.video_fps:g} fps for "
                  f"{duration:.0f} s", flush=True)
            results["runs"].append(drive("video-soak" if args.soak else "video", config, duration_s=duration,
                                         warmup_s=10, sample_every_s=60 if args.soak else 10))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_average_at_end"] = os.getloadavg()

    print(f"\nmodel {args.model} ({args.threads} inference thread(s)), {os.cpu_count()} cores, load average "
          f"{results['load_average_at_start'][0]:.1f} -> {results['load_average_at_end'][0]:.1f}")
    for run in results["runs"]:
        rss = run["rss_mb"]
        print(f"{run['source']:>10}: {run['frames_per_s']:6.2f} frames/s sustained ({run['records']} records), "
              f"capture->commit p50 {run['latency_p50_ms']:.0f} ms  p99 {run['latency_p99_ms']:.0f} ms, "
              f"dropped {run['dropped']}, detector mean {run['detector_mean_ms']} ms, "
              f"RSS {rss[0][1]:.0f} MB at start -> {rss[-1][1]:.0f} MB at {rss[-1][0]:.0f} s "
              f"(max {max(mb for _, mb in rss):.0f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
