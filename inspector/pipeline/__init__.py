"""``inspector pipeline``: one command from labeled data to a shipped INT8 model package and its report.

It sits with the apps (it drives training, compression, export and the runtime); modules top-down:
``config`` (PipelineConfig, presets), ``run`` (the stages, resume), ``measure`` (each stage's package
through the runtime), ``report`` (report.md / .json / .png).
"""
from inspector.pipeline.config import PipelineConfig, PipelineError, read_preset
from inspector.pipeline.run import STAGES, active_stages, run_pipeline

__all__ = ["STAGES", "PipelineConfig", "PipelineError", "active_stages", "read_preset", "run_pipeline"]
