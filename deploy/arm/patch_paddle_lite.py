"""Fix a data race in Paddle Lite v2.13-rc's ARM ``pow`` kernel, in a source tree, before it is built.

``lite/backends/arm/math/power.cc`` (``power<float>``) splits its blocks of 16 values across OpenMP
threads but reads and writes them through two pointers shared by all threads (``ptr_in += 4``), so
with more than one thread the threads skip, repeat and overrun blocks. The package's IoU-aware score
uses ``pow``; with two threads the emulated check saw 100 boxes with scores above 1 on some frames.
The fix gives each block its own pointers from its index. Idempotent; refuses a file it does not
recognise rather than guessing. Usage: ``python3 patch_paddle_lite.py PADDLE_LITE_SOURCE_DIR``.
"""
from __future__ import annotations

import sys
from pathlib import Path

MARKER = "pcb-inspector: per-block pointers"
OLD_LOOP = "  LITE_PARALLEL_BEGIN(nums, tid, cnt) {\n    float32x4_t vr0 = vld1q_f32(ptr_in);"
NEW_LOOP = ("  LITE_PARALLEL_BEGIN(nums, tid, cnt) {\n"
            f"    // {MARKER}: each block of 16 from its own index, not from pointers shared by the threads\n"
            "    const float* ptr_in = din + 16 * nums;\n"
            "    float* ptr_out = dout + 16 * nums;\n"
            "    float32x4_t vr0 = vld1q_f32(ptr_in);")
OLD_TAIL = "  LITE_PARALLEL_END()\n  for (int j = 0; j < remain; ++j) {"
NEW_TAIL = ("  LITE_PARALLEL_END()\n"
            "  ptr_in = din + 16 * cnt;\n"
            "  ptr_out = dout + 16 * cnt;\n"
            "  for (int j = 0; j < remain; ++j) {")


def patch_power(source: Path) -> str:
    """Patch ``power.cc`` under ``source``; returns what was done."""
    path = source / "lite" / "backends" / "arm" / "math" / "power.cc"
    text = path.read_text()
    if MARKER in text:
        return f"{path}: already patched"
    if text.count(OLD_LOOP) != 1 or text.count(OLD_TAIL) != 1:
        raise SystemExit(f"{path}: not the v2.13-rc power<float> this patch was written for; not patched")
    path.write_text(text.replace(OLD_LOOP, NEW_LOOP).replace(OLD_TAIL, NEW_TAIL))
    return f"{path}: patched (per-block pointers in the OpenMP loop)"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: patch_paddle_lite.py PADDLE_LITE_SOURCE_DIR")
    print(patch_power(Path(sys.argv[1])))
