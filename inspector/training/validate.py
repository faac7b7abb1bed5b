"""Run a Paddle (dygraph) detector over a dataset and score it; helpers for anchor fitting."""
from __future__ import annotations

import numpy as np
import paddle
from PIL import Image
from tqdm import tqdm

from inspector.data import Dataset
from inspector.data.loader import BatchLoader
from inspector.data.transforms import unletterbox_boxes
from inspector.evaluation import EvalResult, ImageDetections, ImageGT, evaluate


@paddle.no_grad()
def predict_loader(model: paddle.nn.Layer, loader: BatchLoader, score_threshold: float = 0.01,
                   nms_threshold: float = 0.5, max_detections: int = 100,
                   progress: bool = True) -> dict[str, ImageDetections]:
    """Detections per sample key, in original image pixels."""
    model.eval()
    results: dict[str, ImageDetections] = {}
    for batch in tqdm(loader, desc="validate", unit="batch", disable=not progress, leave=False):
        outputs = model(paddle.to_tensor(batch.images))
        per_image = model.postprocess(outputs, score_threshold, nms_threshold, max_detections)
        for key, scale, pad, (boxes, scores, classes) in zip(batch.keys, batch.scales, batch.pads, per_image):
            results[key] = ImageDetections(unletterbox_boxes(boxes, float(scale), (float(pad[0]), float(pad[1]))),
                                           scores, classes)
    return results


def validate(model: paddle.nn.Layer, loader: BatchLoader, class_names: list[str],
             score_threshold: float | None = None, progress: bool = True) -> EvalResult:
    """COCO mAP and the DeepPCB F-score of `model` on the loader's (whole, un-augmented) dataset."""
    detections = predict_loader(model, loader, progress=progress)
    samples = loader.dataset.samples
    gts = [ImageGT(s.boxes, s.classes) for s in samples]
    dets = [detections[s.key] for s in samples]
    return evaluate(gts, dets, class_names, score_threshold=score_threshold)


def box_sizes_at_input(dataset: Dataset, input_size: int) -> np.ndarray:
    """(N, 2) widths and heights of every box after letterboxing its image to `input_size`."""
    sizes = []
    for sample in dataset.samples:
        if len(sample) == 0:
            continue
        if sample.width and sample.height:
            width, height = sample.width, sample.height
        else:
            with Image.open(sample.image_path) as image:  # reads the header only
                width, height = image.size
        scale = input_size / max(width, height)
        wh = (sample.boxes[:, 2:] - sample.boxes[:, :2]) * scale
        sizes.append(wh)
    return np.concatenate(sizes).astype(np.float32) if sizes else np.zeros((0, 2), np.float32)
