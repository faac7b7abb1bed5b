"""The torch half of ``test_torch_twin_model.py``: run under the torch interpreter (``TORCH_TWIN_PYTHON``).

Usage: ``python torch_twin_model_side.py JOB.npz RESULT.npz``. The job holds, per case ``{case}``, the
model config (``{case}/cfg``, JSON), a seed, the input images, the Paddle model's initial arrays
(``{case}/paddle/<state name>``) and raw head maps to decode (``{case}/raw/<level>``). The result holds what
the twin computes from them (``{case}/...`` keys, see ``run_case``); the pytest side compares with Paddle.
Imports no paddle: this is the interpreter that has none.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch

from inspector.models.config import ModelConfig
from tools.torch_twin import model as twin_model
from tools.torch_twin.model import (
    DropBlock,
    anchor_points,
    build_torch_model,
    decode,
    load_paddle_arrays,
    postprocess,
    to_paddle_arrays,
)


def _disable_drop_block(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, DropBlock):
            module.keep_prob = 1.0


def run_case(case: str, job: dict[str, np.ndarray], result: dict[str, np.ndarray]) -> None:
    cfg = ModelConfig.from_dict(json.loads(str(job[f"{case}/cfg"])))
    images = torch.from_numpy(job[f"{case}/images"])
    prefix = f"{case}/paddle/"
    paddle_arrays = {key[len(prefix):]: value for key, value in job.items() if key.startswith(prefix)}

    model = build_torch_model(cfg)
    load_paddle_arrays(model, paddle_arrays)
    _disable_drop_block(model)  # random in train mode; its distribution has a test of its own
    model.eval()
    with torch.no_grad():
        for level, output in enumerate(model(images)):
            result[f"{case}/eval/{level}"] = output.numpy()
        for level, feature in enumerate(model.features(images)):
            result[f"{case}/features/{level}"] = feature.numpy()
    model.train()
    outputs = model(images)
    for level, output in enumerate(outputs):
        result[f"{case}/train/{level}"] = output.detach().numpy()
    projections = [torch.from_numpy(job[f"{case}/projection/{level}"]) for level in range(len(outputs))]
    sum((o * r).sum() for o, r in zip(outputs, projections)).backward()
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            result[f"{case}/grad/{name}"] = parameter.grad.numpy()
    for key, value in to_paddle_arrays(model).items():
        result[f"{case}/after_train/{key}"] = value

    # The reverse direction: a torch-initialised twin, exported for the Paddle model.
    torch.manual_seed(int(job[f"{case}/seed"]))
    fresh = build_torch_model(cfg).eval()
    for key, value in to_paddle_arrays(fresh).items():
        result[f"{case}/torch_init/{key}"] = value
    with torch.no_grad():
        for level, output in enumerate(fresh(images)):
            result[f"{case}/torch_init_eval/{level}"] = output.numpy()

    raw = [torch.from_numpy(job[f"{case}/raw/{level}"]) for level in range(len(cfg.strides))]
    boxes, scores = decode(raw, cfg)
    result[f"{case}/decode/boxes"] = boxes.numpy()
    result[f"{case}/decode/scores"] = scores.numpy()
    for method in ("hard", "matrix"):
        for index, (b, s, c) in enumerate(postprocess(raw, cfg, method=method)):
            result[f"{case}/post/{method}/{index}/boxes"] = b
            result[f"{case}/post/{method}/{index}/scores"] = s
            result[f"{case}/post/{method}/{index}/classes"] = c
    # Hard NMS again through the numpy fallback (what runs where torchvision does not import).
    with_torchvision = twin_model._torchvision_nms
    twin_model._torchvision_nms = lambda: None
    try:
        for index, (b, s, c) in enumerate(postprocess(raw, cfg, method="hard")):
            result[f"{case}/post/hard-numpy/{index}/boxes"] = b
            result[f"{case}/post/hard-numpy/{index}/scores"] = s
            result[f"{case}/post/hard-numpy/{index}/classes"] = c
    finally:
        twin_model._torchvision_nms = with_torchvision
    result[f"{case}/torchvision"] = np.asarray(with_torchvision() is not None)
    grid = [(int(r.shape[2]), int(r.shape[3])) for r in raw]
    points, strides = anchor_points(grid, cfg.strides)
    result[f"{case}/anchor_points"] = points
    result[f"{case}/anchor_strides"] = strides


def drop_block_samples(result: dict[str, np.ndarray]) -> None:
    """DropBlock(3, 0.9) on ones in train mode (many draws) and in eval mode."""
    torch.manual_seed(0)
    layer = DropBlock(3, 0.9).train()
    result["drop_block/train"] = layer(torch.ones(16, 8, 16, 16)).numpy()
    result["drop_block/eval"] = layer.eval()(torch.ones(2, 3, 8, 8)).numpy()


def load_error_message() -> str:
    """What ``load_paddle_arrays`` says about a missing, an unexpected and a mis-shaped key."""
    model = build_torch_model(ModelConfig(arch="mbv3-small", head="gfl", input_size=64))
    arrays = to_paddle_arrays(model)
    arrays.pop("backbone.stem.bn._variance")
    arrays["backbone.extra.weight"] = np.zeros(3, np.float32)
    arrays["head.predictions.0.bias"] = np.zeros(5, np.float32)
    try:
        load_paddle_arrays(model, arrays)
    except ValueError as error:
        return str(error)
    return ""


def main(job_path: str, result_path: str) -> None:
    torch.set_num_threads(1)
    with np.load(job_path) as data:
        job = {key: data[key] for key in data.files}
    result: dict[str, np.ndarray] = {}
    # Checked before anything else runs: importing the twin loaded no paddle module.
    loaded = sorted(name for name in sys.modules if name == "paddle" or name.startswith("paddle."))
    result["checks/paddle_modules"] = np.asarray(json.dumps(loaded))
    small = build_torch_model(ModelConfig(arch="mbv3-small", head="gfl", input_size=64))
    result["checks/exported_keys"] = np.asarray(json.dumps(sorted(to_paddle_arrays(small))))
    result["checks/wrapped_keys"] = np.asarray(json.dumps(sorted(to_paddle_arrays(torch.nn.DataParallel(small)))))
    result["checks/load_error"] = np.asarray(load_error_message())
    for arch, head in json.loads(str(job["shape_only"])):
        exported = to_paddle_arrays(build_torch_model(ModelConfig(arch=arch, head=head, input_size=64)))
        result[f"shapes/{arch}/{head}"] = np.asarray(json.dumps({k: list(v.shape) for k, v in exported.items()}))
    for case in json.loads(str(job["cases"])):
        run_case(case, job, result)
    drop_block_samples(result)
    np.savez(result_path, **result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
