"""Model compression: make the trained detector small and fast enough for a factory box.

One command module per technique (``distill``, ``prune``, ``quantize``: the ``inspector`` command of the
same name), with the steps of the larger two in their own packages (``pruning/``: channel groups,
criteria, size, sensitivity; ``quantization/``: fake-quant layers, calibration, QAT fine-tuning,
sensitivity, saved programs, measurement). The steps never import their command, and nothing here
imports ``inspector.export`` or ``inspector.runtime`` (they come after compression in the layer order).
Import from the module itself (``from inspector.compression.distill import distill``), so using one
never loads the others.
"""
