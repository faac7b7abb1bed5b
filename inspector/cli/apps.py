"""The applications: ``inspector pipeline`` (retraining end to end), ``demo`` (what `make run` shows), ``serve``
(the headless line service) and ``gui`` (the operator window)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from inspector.cli.common import data_sources, user_errors
from inspector.cli.options import (Format, Head, InputMode, Ips, MaxSteps, Nms, NmsThreshold, Package, Weight,
                                   config_option, for_config, value_of)
from inspector.pipeline.config import PipelineConfig

PipelineNms = for_config(Nms, PipelineConfig, "nms")
PipelineNmsThreshold = for_config(NmsThreshold, PipelineConfig, "nms_threshold")
# Options whose flag is not --field-name (origins of a bad value, and the defaults test)
PIPELINE_FLAGS = {"teacher_run": "--teacher", "student_run": "--student", "distilled_run": "--distilled",
                  "prune_ratio": "--prune", "package_name": "--name", "max_steps_per_epoch": "--max-steps"}


def pipeline_command(
    data: Annotated[Optional[list[Path]], typer.Option(
        "--data", help="Labeled data: DeepPCB / VOC directory or COCO JSON; repeat for several sources (base set + "
        "reviewed boards).")] = None,
    weight: Weight = None,
    out: Annotated[Path, typer.Option(
        "--out", help="Pipeline directory (one sub-directory per stage, report.md/json/png); run the same command "
        "again to continue it.")] = ...,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML preset, e.g. configs/pipeline-cpu.yaml (2-core CPU) or configs/pipeline-gpu.yaml; "
        "options below override it (the defaults they show are those without a preset).")] = None,
    format: Format = None,
    teacher_arch: Annotated[Optional[str], config_option(
        PipelineConfig, "teacher_arch", "--teacher-arch", help="ppyolo-r18 | ppyolo-r34 | ppyolo-r50 ...")] = None,
    student_arch: Annotated[Optional[str], config_option(
        PipelineConfig, "student_arch", "--student-arch", help="mbv3-small | mbv3-large (-x0.75 ...).")] = None,
    head: Annotated[Optional[Head], config_option(
        PipelineConfig, "head", "--head",
        help="Head of the teacher and students: yolo (anchor-based) or gfl (anchor-free).")] = None,
    input_size: Annotated[Optional[int], config_option(
        PipelineConfig, "input_size", "--input-size", help="Network input side (multiple of 32).")] = None,
    input_mode: Annotated[Optional[InputMode], config_option(
        PipelineConfig, "input_mode", "--input-mode",
        help="image, image+template, gray-diff-s2d, gray-frame-diff-s2d or gray-frame-template-s2d.")] = None,
    teacher: Annotated[Optional[Path], typer.Option(
        "--teacher", help="Reuse this trained teacher run instead of training one (same input size and "
        "mode).")] = None,
    student: Annotated[Optional[Path], typer.Option(
        "--student", help="Reuse this student-alone run as the baseline (it must have the pipeline's schedule and "
        "split).")] = None,
    distilled: Annotated[Optional[Path], typer.Option(
        "--distilled", help="Reuse this distilled run (the students' schedule and split, distilled from the "
        "pipeline's teacher with its settings), e.g. one trained on a GPU and imported.")] = None,
    student_init: Annotated[Optional[Path], typer.Option(
        "--student-init", help="Both students start from this run, checkpoint or model package (train --init), e.g. "
        "models/default: fine-tuning instead of training from random weights.")] = None,
    teacher_init: Annotated[Optional[Path], typer.Option(
        "--teacher-init", help="The teacher trained here starts from this run, checkpoint or model package (train "
        "--init, same arch), e.g. an earlier teacher continued with a new schedule.")] = None,
    teacher_cache_dir: Annotated[Optional[Path], typer.Option(
        "--teacher-cache-dir", help="Keep the teacher cache's disk store here after the distilled stage "
        "(teacher_cache: true): the next pipeline distilling from the same teacher reads its maps instead of "
        "computing them.")] = None,
    teacher_epochs: Annotated[Optional[int], config_option(
        PipelineConfig, "teacher_epochs", "--teacher-epochs", min=1)] = None,
    epochs: Annotated[Optional[int], config_option(
        PipelineConfig, "epochs", "--epochs", min=1, help="Epochs of the student alone and of the distilled student "
        "(the same schedule, so the gain is comparable).")] = None,
    crop_size: Annotated[Optional[int], config_option(
        PipelineConfig, "crop_size", "--crop-size", help="Training crop of both students (0: whole image).")] = None,
    qat_epochs: Annotated[Optional[int], config_option(PipelineConfig, "qat_epochs", "--qat-epochs", min=0)] = None,
    prune: Annotated[Optional[float], typer.Option(
        "--prune", help="Also prune this fraction of the channels of the best FP32 student (then fine-tune) before "
        "quantizing.")] = None,
    prune_epochs: Annotated[Optional[int], config_option(
        PipelineConfig, "prune_epochs", "--prune-epochs", min=1,
        help="Fine-tuning epochs after pruning (a heavily pruned model needs more to recover).")] = None,
    distill: Annotated[Optional[bool], config_option(
        PipelineConfig, "distill", "--distill/--no-distill", help="--no-distill: no distilled stage (when the "
        "teacher cannot beat the student in the time there is).")] = None,
    nms: PipelineNms = None,
    nms_threshold: PipelineNmsThreshold = None,
    name: Annotated[Optional[str], typer.Option(
        "--name", help="Name of the shipped package (default OUT-int8).")] = None,
    bench_against: Annotated[Optional[Path], typer.Option(
        "--bench-against", help="Also time the shipped package against this one (e.g. the package shipped before), "
        "their frames alternately in one process, and report the p50 ratio.")] = None,
    until: Annotated[Optional[str], typer.Option(
        "--until", help="Stop after this stage (teacher, student, distilled, pruned, qat, ptq, package, measure, "
        "report).")] = None,
    redo: Annotated[Optional[str], typer.Option(
        "--redo", help="Redo this finished stage and all later ones (qat, ptq, package, measure or report), e.g. "
        "after an exporter update.")] = None,
    max_steps: MaxSteps = None,
    nproc: Annotated[Optional[int], config_option(
        PipelineConfig, "nproc", "--nproc", min=1, help="Train the teacher and students data-parallel in N "
        "processes on this node under paddle.distributed.launch (GPUs: one per card; CPU: gloo); the batch is the "
        "global batch. The other stages run in this process.")] = None,
    ips: Ips = None,
    rank_stage: Annotated[Optional[str], typer.Option(
        "--rank-stage", hidden=True, help="Internal: run this training stage of the pipeline in OUT as one rank "
        "(what --nproc starts under the launcher).")] = None,
) -> None:
    """Teacher -> student alone -> distilled student -> (pruned) -> QAT and PTQ INT8 -> model package, every stage
    measured through the runtime, with report.md / report.json / report.png. Resumable stage by stage."""
    import json

    from inspector.data import DataError
    from inspector.export import ExportError, PackageError
    from inspector.pipeline import PipelineError, read_preset, run_pipeline
    from inspector.pipeline.run import STATE_FILE

    if rank_stage is not None:
        from inspector.pipeline.run import train_stage_rank

        with user_errors(PipelineError, DataError, FileExistsError, FileNotFoundError, ValueError,
                         interrupted=f"interrupted: rank 0 saved {out / rank_stage}/last"):
            train_stage_rank(out, rank_stage)
        return
    with user_errors(PipelineError, DataError, ExportError, PackageError, FileExistsError, FileNotFoundError,
                     ValueError,
                     interrupted=f"interrupted: finished stages are kept; run the same command to continue {out}"):
        values = read_preset(config) if config else {}
        source = str(config) if config else "command line"
        if (out / STATE_FILE).is_file() and config is None and not data:
            values = json.loads((out / STATE_FILE).read_text())["config"]  # continue with the saved settings
            source = str(out / STATE_FILE)
        overrides = {"data": data_sources(data, weight) if data else None, "out": str(out),
                     "format": value_of(format),
                     "teacher_arch": teacher_arch, "student_arch": student_arch, "input_size": input_size,
                     "head": value_of(head),
                     "input_mode": value_of(input_mode),
                     "teacher_run": str(teacher) if teacher else None, "student_run": str(student) if student else None,
                     "distilled_run": str(distilled) if distilled else None,
                     "student_init": str(student_init) if student_init else None,
                     "teacher_init": str(teacher_init) if teacher_init else None,
                     "teacher_cache_dir": str(teacher_cache_dir) if teacher_cache_dir else None,
                     "teacher_epochs": teacher_epochs, "epochs": epochs, "qat_epochs": qat_epochs,
                     "crop_size": crop_size,
                     "prune_ratio": prune, "prune_epochs": prune_epochs, "distill": distill, "package_name": name,
                     "bench_against": str(bench_against) if bench_against else None,
                     "nms": value_of(nms), "nms_threshold": nms_threshold,
                     "max_steps_per_epoch": max_steps, "nproc": nproc, "ips": ips}
        values.update({key: value for key, value in overrides.items() if value is not None})
        cfg = PipelineConfig.from_dict(values, source=source,
                                       origins={key: PIPELINE_FLAGS.get(key, "--" + key.replace("_", "-"))
                                                for key, value in overrides.items() if value is not None})
        run = run_pipeline(cfg, until=until, echo=typer.echo, redo=redo)
    report = run / "report.md"
    if report.is_file():
        typer.echo(f"report: {report}")
    typer.echo(f"done: {run}")


def demo_command(
    out: Annotated[Path, typer.Option(
        "--out", help="Where the demo writes its predictions and pipeline.")] = Path("runs/demo"),
) -> None:
    """The main job on bundled data: the shipped model on real validation boards (eval, latency, annotated
    images), then the retraining pipeline on synthetic boards with a tiny schedule."""
    from inspector.demo import run_demo
    from inspector.runtime import BackendError, PackageError

    with user_errors(PackageError, BackendError):
        run_demo(out)


def serve_command(
    source: Annotated[Optional[str], typer.Option(
        "--source", help="Camera index, video file, rtsp/http(s) URL, hot-folder directory, or demo.")] = None,
    model: Package = None,
    line: Annotated[Optional[str], typer.Option(
        "--line", help="Production line name (MQTT topics, records).")] = None,
    db: Annotated[Optional[str], typer.Option(
        "--db", help="postgresql://... record store. Default: SQLite in --data-dir.")] = None,
    mqtt: Annotated[Optional[str], typer.Option(
        "--mqtt", help="mqtt://host:port broker for results and alarms.")] = None,
    http: Annotated[Optional[str], typer.Option(
        "--http", help="HOST:PORT of the HTTP API (default 127.0.0.1:8080; empty: none). The bearer token comes "
        "from the config or INSPECTOR_TOKEN.")] = None,
    evidence: Annotated[Optional[Path], typer.Option("--evidence",
                                                     help="Directory for JPEGs of NG frames.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        "--data-dir", help="Records database, spool, hot-folder ledger.")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(
        "--tls-cert", help="PEM certificate: the API is served over HTTPS only (with --tls-key).")] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML settings file (see deploy/service/); INSPECTOR_* variables and these options "
        "override it.")] = None,
    opcua: Annotated[Optional[str], typer.Option(
        "--opcua", help="opc.tcp://HOST:PORT: OPC UA server for the PLC handshake; frames are then inspected on "
        "trigger (deploy/plc/README.md).")] = None,
    opcua_cert: Annotated[Optional[Path], typer.Option(
        "--opcua-cert", help="The station's X.509 certificate (PEM/DER): OPC UA with Basic256Sha256 Sign and "
        "SignAndEncrypt only (with --opcua-key; policy None only with opcua_allow_unsecured).")] = None,
    opcua_key: Annotated[Optional[Path], typer.Option(
        "--opcua-key", help="Private key of --opcua-cert (PEM/DER, unencrypted).")] = None,
    opcua_trusted_clients: Annotated[Optional[Path], typer.Option(
        "--opcua-trusted-clients", help="Directory of the PLCs' certificates (PEM/DER, one per file): only those "
        "clients get a secure channel (read at start-up; without it any client certificate: commissioning "
        "only).")] = None,
    modbus: Annotated[Optional[str], typer.Option(
        "--modbus", help="HOST:PORT: Modbus TCP server for the PLC handshake (trigger mode; register map in "
        "deploy/plc/README.md).")] = None,
    recipes: Annotated[Optional[Path], typer.Option(
        "--recipes", help="Directory of recipe files (inspector recipe).")] = None,
    recipe: Annotated[Optional[str], typer.Option(
        "--recipe", help="Recipe to start with (default: the last active).")] = None,
    read_serial_code: Annotated[Optional[bool], typer.Option(
        "--read-serial-code/--no-read-serial-code", help="Read each board's serial from a code in the frame when "
        "the PLC gives no PartId (default: the config's, off).", show_default=False)] = None,
    serial_code_formats: Annotated[Optional[str], typer.Option(
        "--serial-code-formats", help="Codes a serial is read from, comma-separated, in priority order: some of "
        "datamatrix, qr, code128, ... (default: datamatrix,qr,code128).")] = None,
) -> None:
    """Headless line service: inspect every frame, store and publish verdicts, serve health, metrics and results.
    Runs until SIGTERM/SIGINT, then finishes the queued frames and exits 0."""
    import logging

    from inspector.service.run import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"source": source, "model": model, "line": line, "db": db, "mqtt": mqtt, "http": http,
                 "evidence": evidence, "data_dir": data_dir, "opcua": opcua, "modbus": modbus, "recipes": recipes,
                 "recipe": recipe, "tls_cert": tls_cert, "tls_key": tls_key, "opcua_cert": opcua_cert,
                 "opcua_key": opcua_key, "opcua_trusted_clients": opcua_trusted_clients,
                 "read_serial_code": read_serial_code, "serial_code_formats": serial_code_formats}
    raise typer.Exit(serve(config, overrides))


def gui_command(
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="Model package. Default: the last one used, else the shipped package.")] = None,
    source: Annotated[Optional[str], typer.Option(
        "--source", help="demo | camera index (0, 1 ...) | video file | rtsp:// or http(s):// URL | folder of "
        "images (hot folder). Default: the last one used, else demo.")] = None,
    fps: Annotated[Optional[float], typer.Option(
        "--fps", min=0.1, help="Pace of the demo and of video files (default: demo 2 frames/s, a video its own "
        "rate).")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="Settings file (default: $INSPECTOR_GUI_CONFIG, else "
        "~/.config/pcb-inspector/gui.json).")] = None,
    panel: Annotated[Optional[Path], typer.Option(
        "--panel", help="Review one whole panel instead: its defect map; click a defect to see it at full "
        "resolution beside the golden panel.")] = None,
    template: Annotated[Optional[Path], typer.Option(
        "--template", help="With --panel: the golden panel (default: X_temp beside X_test).")] = None,
) -> None:
    """The operator window: live inspection with PASS/NG, counters, defect log, review to labeled data."""
    if panel is not None:
        from gui.panel_view import main as review_panel

        arguments = [str(panel)] + (["--template", str(template)] if template else []) + \
            (["--model", str(model)] if model else [])
        raise typer.Exit(review_panel(arguments))
    from gui.app import run_gui

    raise typer.Exit(run_gui(model=str(model) if model else None, source=source, fps=fps, config=config))
