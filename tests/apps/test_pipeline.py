"""``inspector pipeline``: settings, stage skipping and resume, the report's arithmetic, and one tiny run
through every stage (teacher -> student -> distilled -> QAT/PTQ -> package -> measure -> report)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.data.synth import write_deeppcb
from inspector.pipeline import PipelineConfig, PipelineError, read_preset, run_pipeline
from inspector.pipeline.config import differences
from inspector.pipeline.report import summarize


def tiny_config(data, out, **changes) -> PipelineConfig:
    values = dict(data=str(data), out=str(out), input_size=64, teacher_epochs=1, teacher_crop_size=None, epochs=1,
                  crop_size=None, batch_size=2, eval_every=1, qat_epochs=1, calibration_images=2,
                  max_steps_per_epoch=2, bench_runs=3, bench_threads=[1], val_fraction=0.25, split_seed=1)
    values.update(changes)
    return PipelineConfig(**values)


def test_presets_are_valid_configs_and_unknown_options_are_named(tmp_path):
    from pathlib import Path

    for preset in sorted(Path(__file__).parents[2].glob("configs/pipeline-*.yaml")):
        PipelineConfig.from_dict({**read_preset(preset), "data": "d", "out": "o"}, source=str(preset))
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nteacher_epoch: 2\n")
    with pytest.raises(PipelineError, match=r"bad.yaml: unknown option 'teacher_epoch'; did you mean 'teacher_epochs'\?"):
        read_preset(bad)
    with pytest.raises(PipelineError, match="crop_size: 100 is not a multiple of 32"):
        PipelineConfig(data="d", out="o", crop_size=100)


def test_the_distillation_settings_of_a_pipeline_reach_its_distilled_stage(tmp_path):
    """Each distillation field of the pipeline is the same-named ``DistillConfig`` field of the distilled stage (a
    preset can tune the terms as ``inspector distill`` can); a wrong value is refused naming the field."""
    from inspector.pipeline.run import distill_settings

    cfg = PipelineConfig(data="d", out="o", temperature=3.0, alpha_start=0.9, alpha_end=0.5, feature_weight=0.0,
                         feature_method="cwd", cls_weight=4.0, box_weight=0.5, teacher_cache=True, dihedral=True,
                         teacher_cache_dir="runs/teacher-cache")
    settings = distill_settings(cfg, Path("runs/teacher")).to_dict()
    assert settings == {**settings, "teacher": "runs/teacher", "temperature": 3.0, "alpha_start": 0.9,
                        "alpha_end": 0.5, "feature_weight": 0.0, "feature_method": "cwd", "cls_weight": 4.0,
                        "box_weight": 0.5, "teacher_cache": True, "teacher_cache_dir": "runs/teacher-cache"}
    # Where the cache's store is kept does not change the result: a distilled run made with another one (or none)
    # stands in for the stage.
    from inspector.pipeline.training import matching_distill_settings

    saved = tmp_path / "distill_config.json"
    distill_settings(PipelineConfig(**{**cfg.to_dict(), "teacher_cache_dir": None}), Path("runs/teacher")).save(saved)
    matching_distill_settings(saved, distill_settings(cfg, Path("runs/teacher")))
    with pytest.raises(PipelineError, match=r"cls_weight: 4.0 \(run\) vs 2.0 \(pipeline\)"):
        matching_distill_settings(saved, distill_settings(PipelineConfig(**{**cfg.to_dict(), "cls_weight": 2.0}),
                                                          Path("runs/teacher")))
    with pytest.raises(PipelineError, match=r"feature_method: .*'pkd'"):
        PipelineConfig(data="d", out="o", feature_method="fgd")


def test_command_line_options_override_the_preset(tmp_path, monkeypatch):
    """What ``inspector pipeline`` hands to ``run_pipeline``: the preset, with each given option on top."""
    from pathlib import Path

    from typer.testing import CliRunner

    import inspector.pipeline
    from inspector.cli import app

    seen: dict = {}

    def fake_run(cfg, until=None, echo=print, redo=None):
        seen.update(cfg=cfg, until=until, redo=redo)
        return Path(cfg.out)

    monkeypatch.setattr(inspector.pipeline, "run_pipeline", fake_run)
    preset = Path(__file__).parents[2] / "configs" / "pipeline-cpu.yaml"
    result = CliRunner().invoke(app, ["pipeline", "--config", str(preset), "--data", str(tmp_path / "d"),
                                      "--out", str(tmp_path / "o"), "--epochs", "6", "--prune", "0.25",
                                      "--prune-epochs", "12", "--no-distill", "--until", "package", "--nproc", "2",
                                      "--nms", "hard", "--nms-threshold", "0.45",
                                      "--teacher-init", str(tmp_path / "old-teacher")])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.epochs, cfg.prune_ratio, cfg.prune_epochs, cfg.distill, cfg.nproc) == (6, 0.25, 12, False, 2)
    assert (cfg.nms, cfg.nms_threshold) == ("hard", 0.45)
    assert cfg.teacher_init == str(tmp_path / "old-teacher")
    assert cfg.teacher_epochs == read_preset(preset)["teacher_epochs"]  # not given: the preset's
    assert seen["until"] == "package"


def test_stages_follow_the_settings_and_students_start_from_student_init():
    from inspector.pipeline.run import active_stages
    from inspector.pipeline.training import stage_train_config

    assert active_stages(PipelineConfig(data="d", out="o"))[:3] == ["teacher", "student", "distilled"]
    # a teacher is trained to distil from; without distillation only a given teacher_run is measured beside
    assert active_stages(PipelineConfig(data="d", out="o", distill=False))[:2] == ["student", "qat"]
    with_reference = PipelineConfig(data="d", out="o", distill=False, teacher_run="t")
    assert active_stages(with_reference)[:2] == ["teacher", "student"]
    cfg = PipelineConfig(data="d", out="o", student_init="models/default")
    assert [stage_train_config(cfg, Path("o"), stage).init for stage in ("teacher", "student", "distilled")] == \
        [None, "models/default", "models/default"]
    # A teacher continued from an earlier one (teacher_init); one reused as it is (teacher_run) cannot also be.
    cfg = PipelineConfig(data="d", out="o", teacher_init="runs/old/teacher")
    assert [stage_train_config(cfg, Path("o"), stage).init for stage in ("teacher", "student")] == \
        ["runs/old/teacher", None]
    with pytest.raises(PipelineError, match=r"teacher_init.*'runs/old/teacher'.*teacher_run 't'.*give one of them"):
        PipelineConfig(data="d", out="o", teacher_init="runs/old/teacher", teacher_run="t")
    # Every training stage validates (and keeps its best checkpoint) with the NMS the package will run.
    per_class = PipelineConfig(data="d", out="o", nms="hard", nms_threshold=0.5)
    assert {(c.nms, c.nms_threshold) for c in (stage_train_config(per_class, Path("o"), stage)
                                               for stage in ("teacher", "student", "distilled"))} == {("hard", 0.5)}


def test_only_result_deciding_settings_count_as_differences():
    a = PipelineConfig(data="d", out="o1").to_dict()
    b = PipelineConfig(data="d", out="o2", bench_runs=7, epochs=9, nproc=4, ips="10.0.0.1,10.0.0.2",
                       teacher_cache_dir="runs/teacher-cache", bench_against="models/default").to_dict()
    assert differences(a, b) == ["epochs: 16 -> 9"]  # a pipeline continues with any number of ranks
    with pytest.raises(PipelineError, match="batch_size: 6 .* does not divide among nproc 4 ranks"):
        PipelineConfig(data="d", out="o", batch_size=6, nproc=4)


def _row(row, map50, map50_95, f1, p50_lite=10.0, p50_paddle=20.0, paddle_acc=None):
    accuracy = {"lite": {"map50": map50, "map50_95": map50_95, "f1_iou033": f1},
                "paddle": paddle_acc or {"map50": map50, "map50_95": map50_95, "f1_iou033": f1}}
    return {"row": row, "accuracy": accuracy,
            "bench": {"lite-2": {"p50_ms": p50_lite}, "paddle-2": {"p50_ms": p50_paddle}}}


def test_summary_states_gain_drops_and_speedup():
    rows = [_row("teacher", 0.9, 0.6, 0.9, p50_paddle=200.0), _row("student", 0.7, 0.40, 0.70),
            _row("distilled", 0.75, 0.42, 0.72),
            _row("qat", 0.74, 0.41, 0.72, p50_lite=8.0, paddle_acc={"map50": 0.73, "map50_95": 0.40, "f1_iou033": 0.7}),
            _row("ptq", 0.70, 0.38, 0.69)]
    summary = summarize(rows, [1, 2])
    assert summary["distillation_gain"] == pytest.approx({"map50": 0.05, "map50_95": 0.02, "f1_iou033": 0.02})
    # Drops compare Paddle Inference with Paddle Inference: there the INT8 graph runs (Lite x86: its FP32 twin).
    assert summary["qat_drop"] == pytest.approx({"map50": 0.02, "map50_95": 0.02, "f1_iou033": 0.02})
    assert summary["ptq_drop"] == pytest.approx({"map50": 0.05, "map50_95": 0.04, "f1_iou033": 0.03})
    assert summary["speedup_vs_teacher"] == pytest.approx(25.0)
    # With pruning, the drops are measured against the pruned FP32 model, which is what was quantized.
    pruned = summarize(rows + [_row("pruned", 0.8, 0.45, 0.75)], [2], quantized_from="pruned")
    assert pruned["fp32_reference"] == "pruned" and pruned["qat_drop"]["map50"] == pytest.approx(0.07)
    # When the student alone beat the distilled one, it is what was quantized and the drop's reference.
    alone = summarize(rows, [2], quantized_from="student")
    assert alone["qat_drop"]["map50"] == pytest.approx(-0.03)


# What format_markdown reads from a measured row besides its accuracy.
REPORT_FIELDS = {"n_images": 4, "params": 1e6, "flops": 1e9, "bytes": {},
                 "runtime": {"lite": {"precision": "fp32"}, "paddle": {"precision": "fp32"}},
                 "bench": {f"{backend}-2": {"p50_ms": 10.0, "p99_ms": 12.0, "precision": "fp32", "device": "cpu"}
                           for backend in ("lite", "paddle")}}


def test_summary_and_report_carry_the_official_metric_and_read_rows_without_it():
    from inspector.pipeline.report import format_markdown

    def full_row(row, official_ap, official_f, map50_95):
        entry = _row(row, 0.8, map50_95, 0.7)
        for backend in ("lite", "paddle"):
            entry["accuracy"][backend].update(official_ap=official_ap, official_f=official_f)
        return {**entry, **REPORT_FIELDS, "label": row}

    rows = [full_row("student", 0.80, 0.82, 0.40), full_row("distilled", 0.85, 0.86, 0.42)]
    gain = summarize(rows, [2])["distillation_gain"]
    assert gain["official_ap"] == pytest.approx(0.05) and gain["official_f"] == pytest.approx(0.04)
    markdown = format_markdown(PipelineConfig(data="d", out="o", bench_threads=[2]), {"stages": {}}, rows,
                               summarize(rows, [2]))
    assert "| official AP / F, Lite x86 |" in markdown and "| distilled | 0.8500 / 0.8600 |" in markdown
    assert "official AP +0.0500" in markdown
    # A row measured before the official metric: shown as "-", left out of the gain, nothing raises.
    old = _row("student", 0.7, 0.40, 0.70)
    old.update(REPORT_FIELDS, label="student")
    mixed = summarize([old, rows[1]], [2])
    assert "official_ap" not in mixed["distillation_gain"] and mixed["distillation_gain"]["map50_95"] == pytest.approx(0.02)
    assert "| student | - | - |" in format_markdown(PipelineConfig(data="d", out="o", bench_threads=[2]),
                                                   {"stages": {}}, [old, rows[1]], mixed)


def test_learning_curves_come_from_each_training_runs_history(tmp_path):
    from inspector.pipeline.report import describe_curve, learning_curves

    student = tmp_path / "student"
    student.mkdir()
    history = [{"epoch": 1, "train_loss": 9.0, "epoch_seconds": 60.0, "train_img_per_s": 10.0},  # not validated
               {"epoch": 2, "train_loss": 7.0, "epoch_seconds": 60.0, "train_img_per_s": 14.0, "official_ap": 0.80},
               {"epoch": 3, "train_loss": 6.0, "epoch_seconds": 60.0, "train_img_per_s": 12.0, "official_ap": 0.85},
               {"epoch": 4, "train_loss": 5.5, "epoch_seconds": 60.0, "train_img_per_s": 12.0, "official_ap": 0.83}]
    (student / "metrics.json").write_text(json.dumps(history))
    state = {"stages": {"teacher": {"run": str(tmp_path / "teacher")},  # a run without a history: no curve
                        "student": {"run": str(student)}, "qat": {"run": str(tmp_path / "qat")}}}
    curves = learning_curves(state)
    assert list(curves) == ["student"] and [epoch["epoch"] for epoch in curves["student"]] == [1, 2, 3, 4]
    assert "official_ap" not in curves["student"][0]
    assert describe_curve(curves["student"]) == {"epochs": 4, "best_epoch": 3, "best_official_ap": 0.85,
                                                 "last_official_ap": 0.83, "train_minutes": 4.0, "img_per_s": 12.0}
    # A distilled run with the teacher cache: its last epoch's (cumulative) hit rates are carried to the report.
    distilled = tmp_path / "distilled"
    distilled.mkdir()
    (distilled / "metrics.json").write_text(json.dumps([
        {**history[0], "train_teacher_cache_hit_rate": 0.0, "train_teacher_cache_from_store": 0.0},
        {**history[1], "train_teacher_cache_hit_rate": 0.31, "train_teacher_cache_from_store": 0.12}]))
    curves = learning_curves({"stages": {"distilled": {"run": str(distilled)}}})
    described = describe_curve(curves["distilled"])
    assert (described["teacher_cache_hit_rate"], described["teacher_cache_from_store"]) == (0.31, 0.12)
    assert "teacher_cache_hit_rate" not in describe_curve(learning_curves(state)["student"])
    from inspector.pipeline.report import format_markdown
    markdown = format_markdown(PipelineConfig(data="d", out="o", bench_threads=[2]), {"stages": {}}, [],
                               summarize([], [2]), curves)
    assert "Teacher cache (distilled student): 0.31 of the boards' lookups" in markdown and "0.12 from the disk" in markdown
    # Each row says what its run started from: a fine-tune's epochs and gain mean something else.
    (student / "train_config.json").write_text(json.dumps({"init": "models/default"}))
    (distilled / "train_config.json").write_text(json.dumps({"init": None}))
    state["stages"]["distilled"] = {"run": str(distilled)}
    markdown = format_markdown(PipelineConfig(data="d", out="o", bench_threads=[2]), state, [], summarize([], [2]),
                               learning_curves(state))
    assert "| student alone | `models/default` | 4 | 3 (0.8500) |" in markdown
    assert "| distilled student | random weights | 2 |" in markdown


def test_the_student_to_quantize_is_chosen_by_official_ap_and_old_records_by_map():
    from inspector.pipeline.run import _best_student

    state = {"stages": {"student": {"official_ap": 0.90, "map50_95": 0.50},
                        "distilled": {"official_ap": 0.92, "map50_95": 0.45}}}
    stage, why = _best_student(state)
    assert stage == "distilled" and "official AP" in why and "0.9200" in why
    # Recorded before the official metric (no official_ap): both compared by mAP@0.5:0.95, as then.
    state["stages"]["student"] = {"map50_95": 0.50}
    stage, why = _best_student(state)
    assert stage == "student" and why.startswith("best validation mAP@0.5:0.95")


@pytest.mark.slow
def test_tiny_pipeline_runs_every_stage_skips_finished_ones_and_refuses_other_settings(tmp_path):
    data = write_deeppcb(tmp_path / "boards", n=8, seed=4, size=160)
    out = tmp_path / "pipe"
    lines: list[str] = []

    def config(**changes) -> PipelineConfig:  # with pruning, so that every stage runs; per-class NMS, not the default
        return tiny_config(data, out, prune_ratio=0.25, prune_epochs=1, nms="hard", nms_threshold=0.5, **changes)

    run_pipeline(config(), until="student", echo=lines.append)
    state = json.loads((out / "pipeline.json").read_text())
    assert list(state["stages"]) == ["teacher", "student"]
    assert any("stopped after student" in line for line in lines)
    teacher_weights = out / "teacher" / "best" / "model.pdparams"
    stamp = teacher_weights.stat().st_mtime_ns

    with pytest.raises(PipelineError, match=r"epochs: 1 -> 2"):
        run_pipeline(config(epochs=2), echo=lines.append)

    lines.clear()
    run_pipeline(config(), echo=lines.append)
    assert any(line.startswith("[1/9] teacher: done earlier") for line in lines)
    assert any(line.startswith("[2/9] student: done earlier") for line in lines)
    assert teacher_weights.stat().st_mtime_ns == stamp  # not retrained
    state = json.loads((out / "pipeline.json").read_text())
    assert list(state["stages"]) == ["teacher", "student", "distilled", "pruned", "qat", "ptq", "package", "measure",
                                     "report"]
    assert state["stages"]["qat"]["source_stage"] == "pruned"  # pruning asked for: the pruned student is quantized

    report = json.loads((out / "report.json").read_text())
    assert [row["row"] for row in report["rows"]] == ["teacher", "student", "distilled", "pruned", "qat", "ptq"]
    for row in report["rows"]:
        assert 0.0 <= row["accuracy"]["lite"]["map50"] <= 1.0 and row["params"] > 0 and row["flops"] > 0
        assert 0.0 <= row["accuracy"]["lite"]["official_ap"] <= 1.0
        assert row["bench"]["lite-1"]["p50_ms"] > 0 and row["bench"]["paddle-1"]["p50_ms"] > 0
    qat = next(row for row in report["rows"] if row["row"] == "qat")
    # x86 Lite runs the FP32 twin; Paddle Inference runs the INT8 graph (oneDNN INT8, or its quantize/dequantize
    # operators on FP32 kernels where oneDNN cannot).
    assert qat["runtime"]["lite"]["precision"] == "fp32" and "FP32 twin" in qat["runtime"]["lite"]["note"]
    assert qat["runtime"]["paddle"]["precision"] in ("int8", "int8-simulated")
    assert set(qat["bytes"]) >= {"model_x86.nb", "model_arm.nb"}
    # Every convolution INT8 but the prediction convolutions (qat_skip_layers' default), in both INT8 runs.
    for method in ("qat", "ptq"):
        layers = json.loads((out / method / "quant_config.json").read_text())["layers"]
        assert sorted(n for n, p in layers.items() if p == "fp32") == [f"head.predictions.{i}" for i in range(3)]
        assert sum(p == "int8" for p in layers.values()) > 40
    params = {row["row"]: row["params"] for row in report["rows"]}
    assert params["teacher"] > 5 * params["student"] and params["pruned"] < 0.8 * params["student"]
    assert params["qat"] == params["ptq"] == params["pruned"]
    assert report["summary"]["fp32_reference"] == "pruned"
    assert report["summary"]["distillation_gain"] is not None and report["summary"]["qat_drop"] is not None
    markdown = (out / "report.md").read_text()
    assert "Distillation gain" in markdown and "Quantization drop, QAT INT8" in markdown
    qat_metrics = json.loads((out / "qat" / "metrics.json").read_text())  # its one epoch scored, and kept
    assert qat_metrics["qat_kept_epoch"] == 1
    assert ("**QAT epochs**: oneDNN INT8 official AP on validation after each epoch "
            f"1: {qat_metrics['qat_history'][0]['val_onednn_official_ap']:.4f}; epoch 1 is the one saved") in markdown
    # The gain and the drops with paired intervals over the validation boards, from each row's saved detections.
    intervals = json.loads((out / "measure" / "intervals.json").read_text())
    assert set(intervals) == {"distillation_gain", "qat_drop", "ptq_drop"}
    assert all(entry["low"] <= entry["high"] and entry["resamples"] == 1000 for entry in intervals.values())
    assert report["summary"]["official_ap_intervals"] == intervals
    assert markdown.count("paired interval") == 3
    assert (out / "measure" / "pruned.paddle.detections.npz").is_file()
    # Every training stage's learning curve, epoch by epoch as its run recorded it.
    assert {stage: len(curve) for stage, curve in report["learning_curves"].items()} == \
        {"teacher": 1, "student": 1, "distilled": 1, "pruned": 1}
    assert "official_ap" in report["learning_curves"]["student"][0] and "## Training" in markdown
    assert f"| pruned, fine-tuned | `{out / 'student'}`, pruned |" in markdown or \
        f"| pruned, fine-tuned | `{out / 'distilled'}`, pruned |" in markdown
    for name in ("report.md", "report.json", "report.png", "manifest.json", "model_arm.nb"):
        assert (out / "package" / name).is_file(), name

    from inspector.runtime import Detector

    detector = Detector.load(out / "package", backend="lite")
    assert detector.manifest.precision == "int8" and detector.manifest.target_precision == {"lite-x86": "fp32"}
    assert (detector.manifest.postprocess.nms, detector.manifest.postprocess.nms_threshold) == ("hard", 0.5)
    for stage in ("teacher", "student", "distilled", "pruned"):  # each stage judged by what the package runs
        assert json.loads((out / stage / "train_config.json").read_text())["nms"] == "hard", stage
    assert detector.info.precision == "fp32"
    assert detector.manifest.metrics["map50"] == qat["accuracy"]["lite"]["map50"]  # measured, then recorded

    lines.clear()  # everything done: a rerun only says so
    run_pipeline(config(bench_runs=5), echo=lines.append)
    assert sum("done earlier" in line for line in lines) == 9

    lines.clear()  # --redo measure: the measurement and the report again, nothing else
    against = out / "measure" / "student" / "package"  # another package: the FP32 student alone's
    run_pipeline(config(bench_runs=5, bench_against=str(against)), echo=lines.append, redo="measure")
    assert sum("done earlier" in line for line in lines) == 7
    report = json.loads((out / "report.json").read_text())
    assert report["rows"][1]["bench"]["lite-1"]["runs"] == 5
    # the shipped package timed against another, alternately: the ratio of the two p50s, stated in words
    latency = report["summary"]["latency_against"]
    assert latency["package"] == str(against) and latency["runs"] == 5 and latency["threads"] == 1
    assert latency["p50_ratio"] == pytest.approx(latency["p50_ms"] / latency["against_p50_ms"])
    assert f"ratio **{latency['p50_ratio']:.3f}**" in (out / "report.md").read_text()
    with pytest.raises(PipelineError, match="--redo: expected one of"):
        run_pipeline(config(), redo="student")


@pytest.mark.slow
def test_runs_trained_elsewhere_stand_in_for_the_training_stages_only_if_they_match(tmp_path):
    """Runs trained elsewhere (e.g. on a GPU, imported by tools/torch_twin/import_run.py) stand in for all three
    training stages of a new pipeline, if they are what it asks for."""
    data = write_deeppcb(tmp_path / "boards", n=8, seed=4, size=160)
    out = tmp_path / "pipe"
    run_pipeline(tiny_config(data, out), until="distilled", echo=lambda line: None)
    elsewhere = tmp_path / "pipe-reusing"
    runs = dict(teacher_run=str(out / "teacher"), student_run=str(out / "student"), distilled_run=str(out / "distilled"))
    lines: list[str] = []
    run_pipeline(tiny_config(data, elsewhere, **runs), until="distilled", echo=lines.append)
    assert any(line.startswith("teacher: reusing") for line in lines)
    assert any(line.startswith("student alone: reusing") for line in lines)
    assert any(line.startswith("distilled: reusing") for line in lines)
    state = json.loads((elsewhere / "pipeline.json").read_text())
    assert state["stages"]["distilled"]["run"] == str(out / "distilled") and state["stages"]["distilled"]["reused"]
    assert not (elsewhere / "distilled").exists()  # nothing retrained
    with pytest.raises(PipelineError, match=r"distill_config.json: distilled with other settings.*temperature"):
        run_pipeline(tiny_config(data, tmp_path / "pipe-other", temperature=3.0, **runs), echo=lines.append)
    with pytest.raises(PipelineError, match=r"train_config.json: trained with another schedule.*lr"):
        run_pipeline(tiny_config(data, tmp_path / "pipe-lr", lr=0.01, **runs), echo=lines.append)
    # A run whose best checkpoint was chosen under another NMS than the package will run: refused too.
    with pytest.raises(PipelineError, match=r"nms: 'agnostic' \(run\) vs 'hard' \(pipeline\)"):
        run_pipeline(tiny_config(data, tmp_path / "pipe-nms", nms="hard", **runs), echo=lines.append)
    # A student started from other weights (student_init, train --init) is another result: refused too.
    with pytest.raises(PipelineError, match=r"another schedule than this pipeline's: init: None \(run\) vs '.*student'"):
        run_pipeline(tiny_config(data, tmp_path / "pipe-init", student_init=str(out / "student"), **runs),
                     echo=lines.append)
    # Without distillation no teacher is needed: none is trained, and the reused student brings the split.
    lines.clear()
    alone = tmp_path / "pipe-alone"
    run_pipeline(tiny_config(data, alone, distill=False, student_run=str(out / "student")), until="student",
                 echo=lines.append)
    assert lines[0] == "[1/6] student: running" and not (alone / "teacher").exists()
    assert json.loads((alone / "split.json").read_text()) == json.loads((out / "split.json").read_text())


@pytest.mark.slow
def test_training_stages_run_as_two_ranks_and_resume_a_stage_interrupted_on_one_process(tmp_path, monkeypatch):
    """nproc: 2 trains the student and the distilled student under paddle.distributed.launch (2 CPU ranks over
    gloo), continuing a student run interrupted on one process; the stages after them stay in this process."""
    from inspector.training import trainer as trainer_module
    from inspector.training.checkpoint import load_checkpoint

    data = write_deeppcb(tmp_path / "boards", n=8, seed=4, size=160)
    out = tmp_path / "pipe"
    real_epoch = trainer_module._train_one_epoch

    def interrupted_in_the_students_second_epoch(model, optimizer, schedule, ema, loader, epoch, cfg, *args):
        if epoch == 1 and cfg.out.endswith("student"):
            raise KeyboardInterrupt  # Ctrl-C: the student's last/ holds its first epoch
        return real_epoch(model, optimizer, schedule, ema, loader, epoch, cfg, *args)

    monkeypatch.setattr(trainer_module, "_train_one_epoch", interrupted_in_the_students_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(tiny_config(data, out, epochs=2), echo=lambda line: None)
    monkeypatch.setattr(trainer_module, "_train_one_epoch", real_epoch)
    assert load_checkpoint(out / "student" / "last").info["epoch"] == 1

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # one thread per rank
    lines: list[str] = []
    run_pipeline(tiny_config(data, out, epochs=2, nproc=2), until="distilled", echo=lines.append)
    assert any(line.startswith("[1/8] teacher: done earlier") for line in lines)
    assert any(line.startswith("student: training data-parallel, 2 rank(s)") for line in lines)
    state = json.loads((out / "pipeline.json").read_text())
    assert list(state["stages"]) == ["teacher", "student", "distilled"] and state["config"]["nproc"] == 2
    assert "resumed from epoch 1" in (out / "student" / "launch" / "workerlog.0").read_text()
    for stage in ("student", "distilled"):
        run = out / stage
        assert [row["epoch"] for row in json.loads((run / "metrics.json").read_text())] == [1, 2]
        assert load_checkpoint(run / "last").info["epoch"] == 2
        assert json.loads((run / "split.json").read_text()) == json.loads((out / "split.json").read_text())
        logs = [(run / "launch" / f"workerlog.{rank}").read_text() for rank in (0, 1)]
        assert all("data parallel: 2 ranks, global batch 2 = 1 per rank" in log for log in logs)
        assert "official AP" in logs[0] and "official AP" not in logs[1]  # rank 0 alone validated
    assert "distillation" in load_checkpoint(out / "distilled" / "last").info
