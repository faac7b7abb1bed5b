"""The closed loop, scripted: a board group the model never saw, reviewed, learned, gated, measured.

1. ``base``: train a model on every board of ``--data`` except one board group (``--hold-out``), export it,
   register and promote it in a fresh registry whose golden set is the base run's validation split;
2. ``queue``: the base package inspects every board of the held-out group (detections down to
   ``threshold - near_band``, unknown-change flags on); each board is offered to the verification queue;
3. ``review``: an automated reviewer (the ground truth plays the operator) decides the top ``--top``
   queued boards: a detection that matches a labeled defect (IoU > 0.33) is confirmed (its class fixed if
   wrong), any other rejected, every labeled defect left unmatched added; the queue exports them as VOC;
4. ``finetune``: training continues from the base run on base + reviewed (``--review-weight``), with the
   base run's split, so the golden boards stay unseen; the result is exported and registered;
5. ``promote``: through the registry's gate (refused if worse on the golden set; the report says which);
6. ``measure``: recall (DeepPCB protocol at each package's threshold) and official AP/F of the base and
   the fine-tuned package on the held-out group's boards that were *not* reviewed.

``report.json`` in ``--out`` holds every number and the wall time per step. On DeepPCB (never its test
split)::

    .venv/bin/python benchmarks/review_loop.py --data ../shared/datasets/deeppcb --hold-out group20085 \
        --out /tmp/loop --epochs 24 --finetune-epochs 6 --top 30

is hours of training on a CPU; ``tests/lifecycle/test_review_loop.py`` runs the same code on synthetic boards with a
tiny schedule to prove the wiring.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector.data import Dataset, load_dataset  # noqa: E402
from inspector.data.deeppcb import LIST_FILES  # noqa: E402
from inspector.evaluation import box_iou  # noqa: E402
from inspector.registry import GoldenSet, PromotionRefused, Registry  # noqa: E402
from inspector.review_queue import DEFAULT_NEAR_BAND, ReviewQueue  # noqa: E402

REVIEWER = "auto-reviewer (ground truth)"


def without_group(data: Path, group: str, out: Path) -> Path:
    """A DeepPCB-layout directory with every trainval pair of ``data`` except those of ``group`` (links)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = (data / "trainval.txt").read_text().splitlines()
    kept = [line for line in lines if line.strip() and not line.split("/")[0] == group]
    if len(kept) == len(lines):
        raise SystemExit(f"--hold-out {group}: no pair of {data / 'trainval.txt'} is in that group")
    for folder in sorted({line.split("/")[0] for line in kept}):
        link = out / folder
        if not link.exists():
            link.symlink_to((data / folder).resolve(), target_is_directory=True)
    (out / "trainval.txt").write_text("\n".join(kept) + "\n")
    for extra in LIST_FILES:
        if extra != "trainval.txt":
            (out / extra).unlink(missing_ok=True)
    return out


def group_boards(data: Path, group: str) -> Dataset:
    dataset = load_dataset(data / "trainval.txt", format="deeppcb")  # never the official test split
    dataset = Dataset([s for s in dataset.samples if f"/{group}/" in s.image_path.as_posix()], dataset.class_names,
                      dataset.root, dataset.format)
    if not dataset.samples:
        raise SystemExit(f"--hold-out {group}: no board of {data} in that group")
    return dataset


def review_as_ground_truth(queue: ReviewQueue, item_id: int, gt_boxes: np.ndarray, gt_classes: np.ndarray,
                           class_names: list[str]) -> None:
    """The operator's decision when the operator is the label file."""
    item = queue.get(item_id)
    boxes = np.array([d["box"] for d in item.detections], np.float32).reshape(-1, 4)
    ious = box_iou(boxes, gt_boxes) if len(boxes) and len(gt_boxes) else np.zeros((len(boxes), len(gt_boxes)))
    used = np.zeros(len(gt_boxes), bool)
    verdicts = []
    for index in np.argsort([-d["score"] for d in item.detections]):  # best first, as the DeepPCB protocol
        candidates = np.where(~used & (ious[index] > 0.33))[0] if len(gt_boxes) else []
        if len(candidates):
            match = candidates[np.argmax(ious[index, candidates])]
            used[match] = True
            verdicts.append({"index": int(index), "verdict": "confirm", "class_name": class_names[int(gt_classes[match])]})
        else:
            verdicts.append({"index": int(index), "verdict": "reject"})
    added = [{"box": gt_boxes[i].tolist(), "class_name": class_names[int(gt_classes[i])]}
             for i in np.where(~used)[0]]
    queue.decide(item_id, REVIEWER, sorted(verdicts, key=lambda v: v["index"]), added)


def measure(package: Path, dataset: Dataset) -> dict:
    from inspector.runtime import Detector
    from inspector.runtime.evaluate import evaluate_detector

    detector = Detector.load(package, threads=max(1, min(4, os.cpu_count() or 1)))
    result = evaluate_detector(detector, dataset, score_threshold=detector.manifest.postprocess.score_threshold,
                               progress=False).to_dict()
    keys = ("recall", "precision", "f1_iou033", "map50", "official_ap", "official_f", "tp", "fn", "n_images")
    return {key: result[key] for key in keys if key in result}


def run_loop(data: Path, hold_out: str, out: Path, arch: str = "mbv3-small", epochs: int = 24,
             finetune_epochs: int = 6, top: int = 30, review_weight: float = 3.0, input_size: int = 320,
             crop_size: int | None = 256, batch: int = 8, lr: float = 2e-3, finetune_lr: float = 5e-4,
             max_steps: int | None = None, near_band: float = DEFAULT_NEAR_BAND, targets: tuple[str, ...] = ("x86",),
             log=print) -> dict:
    from inspector.export import export_package
    from inspector.runtime import Detector
    from inspector.training.config import TrainConfig
    from inspector.training.trainer import train

    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"data": str(data), "hold_out": hold_out, "top": top, "wall_s": {}}
    started = time.perf_counter()

    def step(name: str, since: float) -> float:
        now = time.perf_counter()
        report["wall_s"][name] = round(now - since, 1)
        log(f"[loop] {name}: {now - since:.1f} s")
        return now

    # 1. base model without the group
    base_data = without_group(data, hold_out, out / "base_data")
    common = dict(arch=arch, input_size=input_size, crop_size=crop_size, batch_size=batch, input_mode="image+template",
                  max_steps_per_epoch=max_steps, workers=0)
    base_run = train(TrainConfig(data=str(base_data), out=str(out / "base_run"), epochs=epochs, lr=lr, **common))
    base_package = export_package(base_run, out / "base_package", targets=targets, progress=lambda line: None)
    registry = Registry(out / "registry")
    registry.set_golden(GoldenSet(str(base_data), str(out / "base_run" / "split.json"), "val"), by="review_loop")
    base_id = registry.register(base_package, name="base", by="review_loop")["id"]
    registry.promote(base_id, by="review_loop", reason="first model")
    moment = step("base", started)

    # 2. the held-out group through the base package into the queue
    group = group_boards(data, hold_out)
    detector = Detector.load(base_package, threads=max(1, min(4, os.cpu_count() or 1)))
    threshold = detector.manifest.postprocess.score_threshold
    queue = ReviewQueue(out / "queue.db")
    truth = {}
    for sample in group.samples:
        found = detector.detect(sample.load_image(), sample.load_template(),
                                score_threshold=max(0.01, threshold - near_band), unknown_changes=True)
        item = queue.offer_detections(sample.image_path, found, threshold, detector.class_names,
                                      template_path=sample.template_path, source=sample.source, model=base_id,
                                      near_band=near_band)
        if item is not None:
            truth[item] = sample
    report["queue"] = {"boards": len(group), **queue.counts()}
    moment = step("queue", moment)

    # 3. the top of the queue reviewed by the ground truth, exported as VOC
    reviewed_items = queue.pending(limit=top)
    for item in reviewed_items:
        sample = truth[item.id]
        review_as_ground_truth(queue, item.id, sample.boxes, sample.classes, detector.class_names)
    reviewed_dir = out / "reviewed"
    queue.export_voc(reviewed_dir)
    reviewed_keys = {truth[item.id].key for item in reviewed_items}
    report["reviewed"] = {"boards": len(reviewed_items), "reasons": sorted({i.reason for i in reviewed_items})}
    moment = step("review", moment)

    # 4. fine-tune on base + reviewed, the base split kept (the golden boards stay unseen)
    finetune_out = out / "finetune_run"
    finetune_out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "base_run" / "split.json", finetune_out / "split.json")
    finetuned_run = train(TrainConfig(data=[{"path": str(base_data), "weight": 1.0},
                                            {"path": str(reviewed_dir), "weight": review_weight}],
                                      out=str(finetune_out), epochs=finetune_epochs, lr=finetune_lr,
                                      init=str(base_run), warmup_epochs=0.0, **common))
    candidate_package = export_package(finetuned_run, out / "finetuned_package", targets=targets,
                                       progress=lambda line: None)
    candidate_id = registry.register(candidate_package, name="finetuned", by="review_loop")["id"]
    moment = step("finetune", moment)

    # 5. the gate
    try:
        event = registry.promote(candidate_id, by="review_loop", reason="reviewed boards of " + hold_out)
        report["promotion"] = {"promoted": True, "forced": event["forced"], "candidate": event["candidate"],
                               "current": event["current"]}
    except PromotionRefused as refused:
        report["promotion"] = {"promoted": False, "failures": refused.failures, "candidate": refused.candidate,
                               "current": refused.current}
    report["current_model"] = registry.current()["id"]
    moment = step("promote", moment)

    # 6. recall on the group's boards nobody reviewed, before and after
    remaining = Dataset([s for s in group.samples if s.key not in reviewed_keys], group.class_names, group.root,
                        group.format)
    report["remaining_boards"] = len(remaining)
    if remaining.samples:
        report["before"] = measure(base_package, remaining)
        report["after"] = measure(candidate_package, remaining)
    step("measure", moment)
    report["wall_s"]["total"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="DeepPCB-layout data (trainval.txt)")
    parser.add_argument("--hold-out", required=True, help="board group left out of the base model, e.g. group20085")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--arch", default="mbv3-small")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--finetune-epochs", type=int, default=6)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--review-weight", type=float, default=3.0)
    parser.add_argument("--input-size", type=int, default=320)
    parser.add_argument("--crop-size", type=int, default=256, help="0: whole images")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args(argv)
    report = run_loop(args.data, args.hold_out, args.out, args.arch, args.epochs, args.finetune_epochs, args.top,
                      args.review_weight, args.input_size, args.crop_size or None, args.batch, args.lr,
                      args.finetune_lr, args.max_steps)
    print(json.dumps({k: report[k] for k in ("queue", "reviewed", "promotion", "before", "after", "wall_s")
                      if k in report}, indent=1, default=float))
    return report


if __name__ == "__main__":
    main()
