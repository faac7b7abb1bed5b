"""The package's ARM model run by the cross-built ``pcb_inspect`` under qemu-user, against the x86 package.

Called by ``deploy/arm/emulated_check.sh`` (which builds the runner); run it with the project's venv.

- **Validation split** (the package's ``split.json``: seed 0, 200 of DeepPCB's 1,000 trainval pairs; never
  DeepPCB's test pairs): the x86 side is ``inspector eval --backend lite --split val`` (the runtime's
  ``evaluate_detector`` with the Lite x86 engine, which runs ``model_x86.nb``); the ARM side is
  ``pcb_inspect`` on ``model_arm.nb`` with the same evaluation post-processing (score >= 0.01, NMS 0.5,
  100 boxes), scored by the same ``evaluate_samples``. Official DeepPCB AP/F and COCO mAP, side by side.
- **Demo boards** (``inspector/assets/deeppcb_demo``, 12 pairs): detections at the package's threshold,
  matched box by box (same class, best IoU), every difference listed.

Emulated timing is printed as such: qemu translates every ARM instruction, so it says nothing about a board.
The last line reads ``ARM official AP <a> vs x86 <b>`` (validation split).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_BOARDS = REPO_ROOT / "inspector" / "assets" / "deeppcb_demo"
MATCH_IOU = 0.5  # a box on one side and one on the other are "the same defect" at this IoU or more


@dataclass
class Found:
    """One image's detections: boxes (K, 4) xyxy image pixels, scores (K,), classes (K,)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def from_json(cls, detections: list[dict]) -> "Found":
        return cls(np.array([d["box"] for d in detections], np.float64).reshape(-1, 4),
                   np.array([d["score"] for d in detections], np.float64),
                   np.array([d["class_id"] for d in detections], np.int64))


def run_pcb_inspect(runner: Path, sysroot: Path, qemu_cpu: str, package: Path, images: list[Path],
                    score_threshold: float | None, threads: int) -> tuple[dict, list[Found], float]:
    """``pcb_inspect`` under ``qemu-aarch64-static`` on ``images`` (templates: DeepPCB's X_temp.jpg beside
    X_test.jpg), one process for all; returns its runtime line, the detections in order, and wall seconds."""
    command = ["qemu-aarch64-static", "-L", str(sysroot), "-cpu", qemu_cpu, str(runner), "--model", str(package),
               "--threads", str(threads)]
    if score_threshold is not None:
        command += ["--score-threshold", repr(float(score_threshold))]
    command += [str(p) for p in images]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"pcb_inspect failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    runtime, rows = lines[0]["runtime"], lines[1:]
    if len(rows) != len(images):
        raise SystemExit(f"pcb_inspect answered {len(rows)} lines for {len(images)} images")
    for row, image in zip(rows, images):
        if "error" in row or Path(row["image"]).name != image.name:
            raise SystemExit(f"pcb_inspect on {image}: {row}")
    return runtime, [Found.from_json(row["detections"]) for row in rows], seconds


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def match(x86: Found, arm: Found) -> tuple[list[tuple[int, int, float]], list[int], list[int]]:
    """Pairs (x86 index, ARM index, IoU) of the same class, greedily by IoU >= MATCH_IOU; then the unmatched."""
    iou = box_iou(x86.boxes, arm.boxes)
    iou[x86.classes[:, None] != arm.classes[None, :]] = 0
    pairs, used_x, used_a = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < MATCH_IOU:
            break
        if i in used_x or j in used_a:
            continue
        pairs.append((int(i), int(j), float(iou[i, j])))
        used_x.add(i)
        used_a.add(j)
    return (pairs, [i for i in range(len(x86.scores)) if i not in used_x],
            [j for j in range(len(arm.scores)) if j not in used_a])


def describe(found: Found, index: int, class_names: list[str]) -> str:
    box = ", ".join(f"{v:.1f}" for v in found.boxes[index])
    return f"{class_names[found.classes[index]]} {found.scores[index]:.3f} [{box}]"


def compare_boards(names: list[str], x86: list[Found], arm: list[Found], class_names: list[str],
                   list_all: bool) -> dict:
    """Box-by-box agreement; prints every difference when ``list_all``, else a summary."""
    total = {"x86": 0, "arm": 0, "matched": 0, "only_x86": [], "only_arm": [], "max_box_px": 0.0,
             "max_score": 0.0, "boards_identical": 0}
    for name, x, a in zip(names, x86, arm):
        pairs, only_x, only_a = match(x, a)
        box_d = max((float(np.abs(x.boxes[i] - a.boxes[j]).max()) for i, j, _ in pairs), default=0.0)
        score_d = max((abs(float(x.scores[i] - a.scores[j])) for i, j, _ in pairs), default=0.0)
        total["x86"] += len(x.scores)
        total["arm"] += len(a.scores)
        total["matched"] += len(pairs)
        total["max_box_px"] = max(total["max_box_px"], box_d)
        total["max_score"] = max(total["max_score"], score_d)
        total["only_x86"] += [f"{name}: {describe(x, i, class_names)}" for i in only_x]
        total["only_arm"] += [f"{name}: {describe(a, j, class_names)}" for j in only_a]
        total["boards_identical"] += int(not only_x and not only_a)
        if list_all:
            print(f"  {name}: x86 {len(x.scores)}, ARM {len(a.scores)}, matched {len(pairs)}, "
                  f"max |d box| {box_d:.2f} px, max |d score| {score_d:.4f}")
            for i, j, iou in pairs:
                print(f"      x86 {describe(x, i, class_names)}  ARM {a.scores[j]:.3f} "
                      f"[{', '.join(f'{v:.1f}' for v in a.boxes[j])}]  IoU {iou:.3f}")
            for i in only_x:
                print(f"    only x86: {describe(x, i, class_names)}")
            for j in only_a:
                print(f"    only ARM: {describe(a, j, class_names)}")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="DeepPCB trainval folder (the validation split)")
    parser.add_argument("--runner", type=Path, required=True, help="the cross-built pcb_inspect")
    parser.add_argument("--sysroot", type=Path, required=True, help="the aarch64 root qemu loads libraries from")
    parser.add_argument("--qemu-cpu", default="max")
    parser.add_argument("--threads", type=int, default=1, help="Paddle Lite threads of the ARM runs")
    parser.add_argument("--thread-check", type=int, default=2,
                        help="also run the demo boards with this many ARM threads and compare (0: skip)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json")
    parser.add_argument("--lite-build-seconds", type=float, default=0.0)
    parser.add_argument("--limit", type=int, default=0, help="first N validation boards only (0: all)")
    args = parser.parse_args(argv)

    from inspector.data import load_dataset
    from inspector.data.split import load_split
    from inspector.evaluation import EVAL_THRESHOLDS, ImageDetections, evaluate_samples
    from inspector.runtime import Detector
    from inspector.runtime.evaluate import evaluate_detector

    package = args.package.resolve()
    detector = Detector.load(package, backend="lite", threads=2)
    class_names = detector.class_names
    print(f"package {package.name} ({detector.info.package_precision}); x86: {detector.info.engine}, "
          f"precision {detector.info.precision}")

    # --- demo boards, at the package's own threshold ---
    demo = load_dataset(DEMO_BOARDS).samples
    demo_images = [s.image_path for s in demo]
    runtime, arm_demo, seconds = run_pcb_inspect(args.runner, args.sysroot, args.qemu_cpu, package, demo_images,
                                                 None, args.threads)
    print(f"ARM: pcb_inspect {runtime.get('engine')} on {runtime.get('model_file')} ({runtime.get('package_precision')}), "
          f"qemu-aarch64 -cpu {args.qemu_cpu}, threshold {runtime.get('score_threshold'):.4f}")
    x86_demo = []
    for s in demo:
        found = detector.detect(s.load_image(), s.load_template())
        x86_demo.append(Found(found.boxes.astype(np.float64), found.scores.astype(np.float64),
                              found.class_ids.astype(np.int64)))
    print(f"\nDemo boards ({len(demo)} pairs in {DEMO_BOARDS.relative_to(REPO_ROOT)}), box by box "
          f"(same class, IoU >= {MATCH_IOU}):")
    demo_total = compare_boards([s.image_path.stem for s in demo], x86_demo, arm_demo, class_names, list_all=True)
    print(f"  total: x86 {demo_total['x86']} boxes, ARM {demo_total['arm']}, matched {demo_total['matched']}, "
          f"only x86 {len(demo_total['only_x86'])}, only ARM {len(demo_total['only_arm'])}; boards identical "
          f"{demo_total['boards_identical']}/{len(demo)}; max |d box| {demo_total['max_box_px']:.2f} px, "
          f"max |d score| {demo_total['max_score']:.4f}")
    print(f"  emulated time: {seconds:.1f} s for {len(demo)} boards incl. loading (qemu; not an ARM speed figure)")
    thread_check = None
    if args.thread_check and args.thread_check != args.threads:
        _, arm_threads, _ = run_pcb_inspect(args.runner, args.sysroot, args.qemu_cpu, package, demo_images, None,
                                            args.thread_check)
        print(f"\nDemo boards, ARM {args.thread_check} threads vs ARM {args.threads} thread(s):")
        thread_check = compare_boards([s.image_path.stem for s in demo], arm_demo, arm_threads, class_names,
                                      list_all=False)
        impossible = sum(int((f.scores > 1).sum()) for f in arm_threads)
        thread_check["scores_above_1"] = impossible
        print(f"  matched {thread_check['matched']} of {thread_check['x86']} / {thread_check['arm']} boxes; boards "
              f"identical {thread_check['boards_identical']}/{len(demo)}; max |d box| {thread_check['max_box_px']:.2f} "
              f"px, max |d score| {thread_check['max_score']:.4f}; scores > 1 (impossible): {impossible}")
        for line in thread_check["only_arm"][:8]:
            print(f"    only with {args.thread_check} threads: {line}")

    # --- validation split ---
    dataset = load_dataset(args.data)
    _, val = load_split(dataset, package / "split.json")
    if args.limit:
        val.samples = val.samples[:args.limit]
    print(f"\nValidation split: {len(val.samples)} boards ({package / 'split.json'})")
    x86_result = evaluate_detector(detector, val, progress=False)
    _, arm_val, seconds = run_pcb_inspect(args.runner, args.sysroot, args.qemu_cpu, package,
                                          [s.image_path for s in val.samples], EVAL_THRESHOLDS.score_threshold,
                                          args.threads)
    arm_result = evaluate_samples(val.samples, [ImageDetections(f.boxes, f.scores, f.classes) for f in arm_val],
                                  class_names)
    print(f"  emulated time: {seconds:.1f} s for {len(val.samples)} boards (qemu; not an ARM speed figure)")
    rows = [("official DeepPCB AP", "official_ap"), ("official DeepPCB F", "official_f"),
            ("COCO mAP@0.5", "map50"), ("COCO mAP@0.5:0.95", "map50_95"), ("F (IoU>0.33, class-aware)", "f1_iou033")]
    print(f"  {'metric':28s} {'ARM (qemu)':>11s} {'x86':>8s} {'ARM - x86':>10s}")
    for label, key in rows:
        a, b = getattr(arm_result, key), getattr(x86_result, key)
        print(f"  {label:28s} {a:11.4f} {b:8.4f} {a - b:+10.4f}")
    x86_val = []
    for s in val.samples:
        found = detector.detect(s.load_image(), s.load_template(), score_threshold=EVAL_THRESHOLDS.score_threshold,
                                max_detections=EVAL_THRESHOLDS.max_detections)
        x86_val.append(Found(found.boxes.astype(np.float64), found.scores.astype(np.float64),
                             found.class_ids.astype(np.int64)))
    deploy_threshold = runtime["score_threshold"]

    def above(found: Found) -> Found:
        keep = found.scores >= deploy_threshold
        return Found(found.boxes[keep], found.scores[keep], found.classes[keep])

    val_total = compare_boards([s.image_path.stem for s in val.samples], [above(f) for f in x86_val],
                               [above(f) for f in arm_val], class_names, list_all=False)
    print(f"  box by box at the package threshold {deploy_threshold:.4f}: x86 {val_total['x86']}, ARM "
          f"{val_total['arm']}, matched {val_total['matched']}, only x86 {len(val_total['only_x86'])}, only ARM "
          f"{len(val_total['only_arm'])}; boards identical {val_total['boards_identical']}/{len(val.samples)}; "
          f"max |d box| {val_total['max_box_px']:.2f} px, max |d score| {val_total['max_score']:.4f}")
    for line in val_total["only_x86"][:20]:
        print(f"    only x86: {line}")
    for line in val_total["only_arm"][:20]:
        print(f"    only ARM: {line}")

    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "package": str(package), "qemu_cpu": args.qemu_cpu, "arm_runtime": runtime, "x86_engine": detector.info.engine,
        "x86_precision": detector.info.precision, "lite_build_seconds": args.lite_build_seconds,
        "val": {"n_images": len(val.samples), "arm": arm_result.to_dict(), "x86": x86_result.to_dict(),
                "box_by_box": val_total},
        "demo": {"n_images": len(demo), "box_by_box": demo_total},
        "arm_threads": args.threads, "thread_check": {"threads": args.thread_check, "vs_threads": args.threads,
                                                      "box_by_box": thread_check},
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"\nresults: {args.out / 'results.json'}")
    print(f"ARM official AP {arm_result.official_ap:.4f} vs x86 {x86_result.official_ap:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
