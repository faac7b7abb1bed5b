"""Score a loaded package on a labeled dataset, through exactly the code path that runs in production.

Used by ``inspector eval`` on a package and by ``inspector export --eval-data`` to measure the
metrics a manifest records. Detections are kept down to the low score of every evaluation
(``inspector.evaluation.protocol.EVAL_THRESHOLDS``, as training-time validation does) so mAP sees the
whole precision-recall curve; the DeepPCB F-score then picks its threshold. The NMS is the package's own
(its manifest's method and IoU threshold): what ships is what is measured.
Images larger than the model's tile (whole panels with panel-coordinate labels) are inspected in
tiles and stitched (``inspector.runtime.panel``); tile-sized images take the ordinary path unchanged.
"""
from __future__ import annotations

from tqdm import tqdm

from inspector.data import Dataset
from inspector.evaluation import EVAL_THRESHOLDS, EvalResult, ImageDetections, evaluate_samples
from inspector.runtime.detector import Detector
from inspector.runtime.panel import PanelInspector


def evaluate_detector(detector: Detector, dataset: Dataset, score_threshold: float | None = None,
                      progress: bool = True, panels: PanelInspector | None = None,
                      interval: bool = False) -> EvalResult:
    """COCO mAP and the DeepPCB protocol of ``detector`` on every sample of ``dataset``.

    ``score_threshold`` fixes the DeepPCB F-score's threshold; None picks the F-maximising one.
    ``panels``: how images larger than a tile are tiled (default: ``PanelInspector(detector)``).
    ``interval``: also the official AP's bootstrap interval over the images (``EvalResult.official_ap_interval``).
    """
    dets = detect_dataset(detector, dataset, progress, panels)
    return evaluate_samples(dataset.samples, dets, detector.class_names, score_threshold=score_threshold,
                            interval=interval)


def detect_dataset(detector: Detector, dataset: Dataset, progress: bool = True,
                   panels: PanelInspector | None = None) -> list[ImageDetections]:
    """``detector``'s detections on every sample of ``dataset``, in order, kept down to the evaluation's low score
    (what ``evaluate_detector`` scores)."""
    if dataset.class_names != detector.class_names:
        raise ValueError(f"{dataset.root}: the data has classes {dataset.class_names}, "
                         f"the model {detector.class_names}")
    if detector.needs_template and not dataset.has_templates:
        lacking = next(s for s in dataset.samples if s.template_path is None)
        raise ValueError(f"{lacking.source or lacking.image_path}: no template image, needed by this model "
                         f"(input mode {detector.layout.mode!r})")
    panels = panels or PanelInspector(detector)
    dets = []
    for sample in tqdm(dataset.samples, desc="evaluate", unit="image", disable=not progress, leave=False):
        template = sample.load_template() if detector.needs_template else None
        found = panels.inspect(sample.load_image(), template, score_threshold=EVAL_THRESHOLDS.score_threshold,
                               max_detections=EVAL_THRESHOLDS.max_detections)
        dets.append(ImageDetections(found.boxes, found.scores, found.class_ids))
    return dets
