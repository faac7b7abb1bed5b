"""``inspector export``, ``bench`` and ``predict``: write a model package, time it, and run it on images."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from inspector.cli.common import all_cores, user_errors
from inspector.cli.evaluation import echo_eval, evaluate_package, load_eval_dataset
from inspector.cli.options import Backend, DataFormat, EngineBackend, JsonOut, NmsChoice, Package, Split, value_of
from inspector.models.nms import DEFAULT_NMS, DEFAULT_NMS_THRESHOLD


def export_command(
    model: Annotated[Path, typer.Option(
        "--model", help="Training run or checkpoint (exported in FP32), or a directory holding an inference model "
        "NAME.pdmodel + NAME.pdiparams (e.g. INT8 from quantize).")],
    out: Annotated[Path, typer.Option("--out", help="Package directory to create, e.g. models/NAME.")],
    targets: Annotated[str, typer.Option("--targets",
                                         help="Paddle Lite targets, comma-separated: x86, arm.")] = "x86,arm",
    eval_data: Annotated[Optional[Path], typer.Option(
        "--eval-data", help="Labeled data to measure the package on; the metrics go into its "
        "manifest.json.")] = None,
    eval_split: Annotated[Split, typer.Option(
        "--eval-split", help="Part of --eval-data to measure on (train/val from the source run's split.json, or "
        "all).")] = Split.val,
    format: Annotated[Optional[DataFormat], typer.Option(
        "--format", help="Format of --eval-data (auto-detected).")] = None,
    x86_int8: Annotated[bool, typer.Option(
        "--x86-int8", help="INT8 sources: convert the INT8 graph for x86 too (default: the x86 .nb is the FP32 "
        "twin; Lite's x86 INT8 kernels are ~20% faster but lost 2.5 pt mAP@0.5 on the DeepPCB student).")] = False,
    nms: Annotated[Optional[NmsChoice], typer.Option(
        "--nms", help="NMS the package's users run: 'agnostic' (greedy across classes, one report per defect), "
        "'hard' (greedy per class: one spot may be reported under two classes) or 'matrix' (soft decay; not in "
        "the ARM C++ runner). Default: the model's training recipe's (inspector train --nms), else "
        f"{DEFAULT_NMS}.")] = None,
    nms_threshold: Annotated[Optional[float], typer.Option(
        "--nms-threshold", help="IoU above which the NMS suppresses. Default: the model's training recipe's, else "
        f"{DEFAULT_NMS_THRESHOLD} (the official DeepPCB metric's match IoU).")] = None,
) -> None:
    """Write a model package: Paddle inference model, Paddle Lite .nb per target, manifest.json."""
    from inspector.export import ExportError, PackageError, export_package, record_metrics
    from inspector.runtime import BackendError, Detector
    from inspector.runtime.package import lite_target_for_this_machine

    target_list = tuple(t.strip() for t in targets.split(",") if t.strip())
    runnable_here = lite_target_for_this_machine().removeprefix("lite-") in target_list
    with user_errors(ExportError, PackageError, BackendError, FileNotFoundError, ValueError):
        package = export_package(model, out, targets=target_list, progress=typer.echo, x86_int8=x86_int8,
                                 nms=value_of(nms), nms_threshold=nms_threshold)
        # The package must load and run through the runtime before anyone else sees it.
        detector = Detector.load(package, backend="lite" if runnable_here else "paddle", threads=all_cores())
    typer.echo(f"loaded through the runtime: {detector.info.engine}, precision {detector.info.precision}")
    if eval_data is None:
        return
    dataset = load_eval_dataset(eval_data, format, eval_split, package)
    result = evaluate_package(detector, dataset, None)
    metrics = {**result.to_dict(), "data": str(eval_data), "split": eval_split.value, "backend": detector.info.backend,
               "precision_ran": detector.info.precision, "engine": detector.info.engine}
    record_metrics(package, metrics, score_threshold=result.score_threshold)
    echo_eval(result, len(dataset))
    typer.echo(f"metrics recorded in {package / 'manifest.json'}")


def bench_command(
    model: Package = None,
    backend: EngineBackend = Backend.lite,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Threads the engine may use.")] = 1,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs.")] = 100,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 10,
    image: Annotated[Optional[Path], typer.Option(
        "--image", help="Frame to time (default: a bundled 640x640 DeepPCB pair).")] = None,
    template: Annotated[Optional[Path], typer.Option(
        "--template", help="Its golden template (models that compare with one).")] = None,
    against: Annotated[Optional[Path], typer.Option(
        "--against", help="Also time this package (e.g. the one shipped before), its frames alternating with "
        "--model's in this one process so that both see the same spell of the machine, and print the ratio of "
        "the p50s (--model / --against).")] = None,
    json_path: JsonOut = None,
) -> None:
    """Latency of a package on a real-sized frame: p50/p99 ms, FPS, model size, peak memory."""
    from inspector.data import DataError, load_dataset, read_image
    from inspector.data.bundled import BUNDLED_DEEPPCB
    from inspector.runtime import BackendError, Detector, PackageError
    from inspector.runtime.bench import benchmark_alternately

    with user_errors(PackageError, BackendError, DataError, ValueError):
        detectors = [Detector.load(model, backend=backend.value, threads=threads)]
        if against is not None:
            detectors.append(Detector.load(against, backend=backend.value, threads=threads))
        if image is None:
            sample = load_dataset(BUNDLED_DEEPPCB).samples[0]
            frame, golden = sample.load_image(), sample.load_template()
        else:
            frame, golden = read_image(image), None if template is None else read_image(template)
        if golden is None and any(detector.needs_template for detector in detectors):
            raise ValueError(f"{image}: this model compares each frame with its golden template: pass --template")
        results = benchmark_alternately(detectors, frame, golden, runs=runs, warmup=warmup)
    for result in results:
        if len(results) > 1:
            typer.echo(f"{result.package}:")
        typer.echo(f"{result.engine} on {result.device}, {result.threads} thread(s), precision {result.precision}")
        typer.echo(f"frame {result.frame_size[0]}x{result.frame_size[1]} -> input {result.input_size}: "
                   f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  {result.fps:.1f} FPS  "
                   f"(network p50 {result.infer_p50_ms:.2f} ms, pre-processing {result.preprocess_p50_ms:.2f}, "
                   f"post-processing {result.postprocess_p50_ms:.2f})  model {result.model_bytes / 1e6:.2f} MB  "
                   f"peak RSS {result.peak_rss_mb:.0f} MB")
    summary = results[0].to_dict()
    if len(results) > 1:
        ratio = results[0].p50_ms / results[1].p50_ms
        typer.echo(f"p50 ratio {ratio:.3f} ({results[0].package} / {results[1].package}; {runs} frames each, "
                   f"alternately)")
        summary.update(against=results[1].to_dict(), p50_ratio=ratio)
    if json_path:
        json_path.write_text(json.dumps(summary, indent=2))


def predict_command(
    images: Annotated[list[Path], typer.Argument(help="Images to inspect.")],
    model: Package = None,
    template: Annotated[Optional[Path], typer.Option(
        "--template", help="Golden template for every image (default for DeepPCB-named X_test.jpg: X_temp.jpg "
        "beside it).")] = None,
    align: Annotated[bool, typer.Option(
        "--align", help="Register each image to the template first (camera frames that are not pre-aligned); "
        "images that cannot be aligned are refused.")] = False,
    out: Annotated[Path, typer.Option(
        "--out", help="Directory for annotated images and detections.json.")] = Path("predictions"),
    backend: EngineBackend = Backend.lite,
    score_threshold: Annotated[Optional[float], typer.Option("--score-threshold",
                                                             help="Default: the package's.")] = None,
    tile_size: Annotated[int, typer.Option(
        "--tile-size", min=32, help="Images larger than this (whole panels) are registered to the template, "
        "inspected in tiles of this side and stitched.")] = 640,
    overlap: Annotated[int, typer.Option("--overlap", min=0,
                                         help="Pixels neighbouring panel tiles share.")] = 64,
) -> None:
    """Detect defects in images: annotated copies and one detections.json in --out.

    A whole panel (larger than a tile) gets a shrunk overview with every defect boxed and numbered, and
    its detections in panel pixels (and golden-panel pixels) in detections.json."""
    import cv2

    from inspector.data import DataError, read_image
    from inspector.runtime import AlignmentError, BackendError, Detector, PackageError
    from inspector.runtime.draw import draw_detections
    from inspector.runtime.panel import PanelInspector, draw_overview

    with user_errors(PackageError, BackendError, DataError, ValueError):
        detector = Detector.load(model, backend=backend.value, threads=all_cores())
        golden = read_image(template) if template is not None and detector.needs_template else None
    with user_errors(ValueError):
        panels = PanelInspector(detector, tile_size=tile_size, overlap=overlap)
    if template is not None and not detector.needs_template:
        typer.secho(f"note: this model takes no template; --template {template} is not used", err=True)
    out.mkdir(parents=True, exist_ok=True)
    records, refused, used_names = [], 0, set()
    for path in images:
        record = {"image": str(path)}
        template_path = None
        try:
            frame = read_image(path)
            template_path = template
            if detector.needs_template and golden is None:
                template_path = _deeppcb_template(path)
            record["template"] = None if template_path is None else str(template_path)
            frame_template = (golden if golden is not None else read_image(template_path)) \
                if detector.needs_template else None
            found = panels.inspect(frame, frame_template, align=align, score_threshold=score_threshold)
        except (DataError, AlignmentError, ValueError) as error:  # one bad image is reported, the others judged
            refused += 1
            record["error"] = str(error)
            origin = path if template_path is None else f"{path} (template {template_path})"
            typer.secho(f"{origin}: not judged: {error}", fg=typer.colors.RED, err=True)
            records.append(record)
            continue
        name = _unique_name(path, used_names)
        if found.is_panel:
            overview, overview_scale = draw_overview(frame, found)
            cv2.imwrite(str(out / name), overview)
            record.update(annotated=name, overview_scale=round(overview_scale, 6), **found.to_dict())
            found_ms = found.timing_ms["total"]
        else:
            cv2.imwrite(str(out / name), draw_detections(frame, found.frame))
            record.update(annotated=name, **found.frame.to_dict())
            found_ms = found.frame.timing.total_ms
        records.append(record)
        summary = ", ".join(f"{n} {s:.2f}" for n, s in zip(found.class_names, found.scores)) or "no defects"
        tiles = f", panel in {found.tiles} tiles" if found.is_panel else ""
        typer.echo(f"{path}: {summary}  ({found_ms:.1f} ms{tiles})")
    report = {"model": detector.info.package, "runtime": detector.info.to_dict(),
              "score_threshold": detector.manifest.postprocess.score_threshold if score_threshold is None
              else score_threshold, "images": records}
    (out / "detections.json").write_text(json.dumps(report, indent=2))
    typer.echo(f"wrote {len(records) - refused} annotated image(s) and detections.json to {out}")
    if refused:
        raise typer.Exit(1)


def _deeppcb_template(image: Path) -> Path:
    """DeepPCB names a tested image X_test.jpg and its golden template X_temp.jpg."""
    if not image.stem.endswith("_test"):
        raise ValueError(f"{image}: this model needs a golden template; pass --template (only DeepPCB-named "
                         "X_test.jpg images find theirs, X_temp.jpg, on their own)")
    return image.with_name(image.stem[: -len("_test")] + "_temp" + image.suffix)


def _unique_name(path: Path, used: set[str]) -> str:
    name, index = f"{path.stem}.jpg", 1
    while name in used:
        name, index = f"{path.stem}_{index}.jpg", index + 1
    used.add(name)
    return name
