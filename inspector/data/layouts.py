"""Network input layouts: how a frame (and its golden template) becomes the network's input tensor.

One table, read by the model config, the training loader, the package manifest, the Python runtime
and (mirrored in C++) the ARM runner, so every side agrees on what a mode means:

| mode            | channels | what the planes are                                            | letterboxed to |
|-----------------|----------|----------------------------------------------------------------|----------------|
| ``image``       | 3        | the frame's R, G, B                                             | ``size``       |
| ``image+template`` | 6     | the frame's R, G, B, then the template's                        | ``size``       |
| ``gray-diff-s2d`` | 12     | grey frame, grey template, abs(frame - template), each split    | ``2 * size``   |
|                 |          | 2x2 space-to-depth (channel = plane * 4 + dy * 2 + dx)          |                |
| ``gray-frame-diff-s2d`` | 8 | grey frame, abs(frame - template), packed 2x2 likewise        | ``2 * size``   |
| ``gray-frame-template-s2d`` | 8 | grey frame, grey template, packed 2x2 likewise             | ``2 * size``   |

Why ``gray-diff-s2d``: DeepPCB boards are 640 px and binarised, and the thin-trace defects (open,
short, mousebite) are 1-3 px features. Letterboxing to 320 throws half of those pixels away, while
three identical RGB planes carry nothing a grey plane does not. Packing the native-resolution grey
planes and their difference 2x2 into depth keeps every board pixel at the cost of a 320 network
(Paddle Lite 2.13 has no pixel_unshuffle op, so the packing happens in pre-processing). The
explicit difference plane hands the network the cue the template exists for.

Why ``gray-frame-diff-s2d``: on a binarised board the template is the frame wherever the difference
is 0 and its inverse wherever it is 255, so the frame and the difference already say what the template
plane says. Leaving that plane out makes the stem a third cheaper (the stem convolution at 160 x 160 is
the network's largest layer) and the pre-processing one plane shorter. On grey-level boards the
difference's sign is lost with it (was the template brighter or darker?): measure before choosing it.

Why ``gray-frame-template-s2d``: the same stem cost, the other plane left out. What a trained ``gray-diff-s2d``
stem does with its three planes says which one it can spare: models/default's stem weight (16 outputs x 3 planes x
4 sub-pixels x 3 x 3), read as one 3-column matrix over the planes, has singular values 1 : 0.58 : 0.15, with
directions ~(t - f), ~(t + f) and ~d. The network reads the signed difference t - f (which says missing or extra
copper, where abs(f - t) does not) and the board, both linear in the frame and template; the absolute difference
is its weakest input. Converted by dropping that plane, models/default scores official AP 0.78 on the validation
split before any fine-tuning; converted to ``gray-frame-diff-s2d`` (the template plane folded out), 0.31.

Box coordinates stay in *network input* pixels for every layout: for a space-to-depth layout the
letterbox scale and padding are divided by the block, so ``unletterbox_boxes`` maps back as usual.

Standard library only: the package manifest reads this table without numpy or OpenCV.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputLayout:
    """What one input mode feeds the network."""

    mode: str
    planes: int  # image planes before space-to-depth
    block: int  # space-to-depth block: the letterbox is ``block`` times the network's side
    needs_template: bool
    color: str  # "RGB": the frame's colour planes; "GRAY": one grey plane per image
    # GRAY layouts: the grey planes in channel order, each one of "frame", "template", "difference"
    gray_planes: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return self.planes * self.block * self.block

    def letterbox_size(self, input_size: int) -> int:
        """Side of the letterboxed square the planes are made at (before space-to-depth)."""
        return input_size * self.block


INPUT_LAYOUTS: dict[str, InputLayout] = {
    layout.mode: layout
    for layout in (
        InputLayout("image", planes=3, block=1, needs_template=False, color="RGB"),
        InputLayout("image+template", planes=6, block=1, needs_template=True, color="RGB"),
        InputLayout("gray-diff-s2d", planes=3, block=2, needs_template=True, color="GRAY",
                    gray_planes=("frame", "template", "difference")),
        InputLayout("gray-frame-diff-s2d", planes=2, block=2, needs_template=True, color="GRAY",
                    gray_planes=("frame", "difference")),
        InputLayout("gray-frame-template-s2d", planes=2, block=2, needs_template=True, color="GRAY",
                    gray_planes=("frame", "template")),
    )
}
INPUT_MODES: tuple[str, ...] = tuple(INPUT_LAYOUTS)


def input_layout(mode: str, source: str = "input_mode") -> InputLayout:
    """The layout of ``mode``; a ValueError names ``source`` and the modes this version knows."""
    try:
        return INPUT_LAYOUTS[mode]
    except (KeyError, TypeError):
        raise ValueError(f"{source}: unknown input layout {mode!r}; this version knows {', '.join(INPUT_MODES)}") \
            from None
