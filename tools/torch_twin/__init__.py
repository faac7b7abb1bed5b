"""The PyTorch twin of the Paddle detector: a development tool for training on a lent GPU machine.

Why: the GPU machine this project can borrow has PyTorch but no PaddlePaddle (and no network to install
it), while everything that ships (QAT, export, Paddle Lite, the runtime) is Paddle. The twin mirrors
``inspector.models`` module for module: the same layer names (so ``state_dict`` keys equal the Paddle
names, BatchNorm's ``running_mean``/``running_var`` standing for Paddle's ``_mean``/``_variance``), the same
initialisation, BatchNorm momentum and epsilon, forward maps and decoding, so a model trained here on the
GPU comes back as numpy arrays keyed by Paddle parameter names and loads into ``inspector.models.build_model``.
It imports only torch, numpy and the paddle-free parts of ``inspector``; ``torch`` is not a product
dependency, and ``inspector/`` never imports this package.
"""
