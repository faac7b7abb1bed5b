"""INT8 quantization, by responsibility; the command that strings it together is ``inspector.compression.quantize``.

Modules, in the order a run uses them (none imports the command; import from the module itself):

- ``config``: ``QuantizeConfig`` and the methods (standard library only: the command line reads its defaults);
- ``layers``: the technique: which convolutions, BatchNorm folding, PaddleSlim's fake-quant wrappers;
- ``calibrate``: activation scales from a few training images (all of PTQ, QAT's starting point);
- ``finetune``: quantization-aware fine-tuning through the fake-quant model (QAT);
- ``sensitivity``: the accuracy each convolution's quantization costs (mixed precision picks from it);
- ``program``: saving the model as an inference program, reading back which layers are INT8;
- ``measure``: accuracy of a saved program through Paddle Inference, and what ran.
"""
