#!/usr/bin/env bash
# One call on the lent GPU machine: teacher, student alone (GFL and YOLO heads) and the distilled student, trained
# by the torch twin within a fixed time, their weights and logs written to $OUT (at most 8 files of 16 MiB).
#
# Timeline (seconds from the start; each job fixes its epochs after timing its first one):
#   0 ............ TEACHER_S   teacher (ppyolo-r34, GFL)
#   0 ....... STUDENT_S        student alone, GFL head      (head A/B: the same with the YOLO head)
#   teacher done ... + about STUDENT_S   distilled student, the student's epochs exactly
# Each job makes its batches on the GPU from the boards it keeps there (train.py --batches device; the --workers
# below only serve --batches workers). First, a few seconds: ms per board on the CPU and on the GPU
# (batch_speed.json in runs.tar.gz).
#
# Before it travels (on the CPU machine):
#   python -m tools.torch_twin.pack_data --data ../shared/datasets/deeppcb --out gpu_data/deeppcb
#   (gpu_data/split.json: the pipeline's fixed split, seed 0, 20 % validation; .whl/: pycocotools for Python 3.12)
# Rehearsal on a CPU with a tiny schedule:
#   OUT=/tmp/twin-out PY=/work/torchenv/bin/python TEACHER_ARCH=ppyolo-r18 INPUT_SIZE=64 TEACHER_S=40 STUDENT_S=30 \
#       WORKERS_SCALE=0 bash tools/torch_twin/device_run.sh
set -u
PY=${PY:-python3}
OUT=${OUT:?set OUT to the folder whose files travel back}
RUNS=${RUNS:-/tmp/twin-runs}
TEACHER_ARCH=${TEACHER_ARCH:-ppyolo-r34}
INPUT_SIZE=${INPUT_SIZE:-320}
INPUT_MODE=${INPUT_MODE:-gray-diff-s2d}  # gray-frame-template-s2d / gray-frame-diff-s2d: 8 planes, a cheaper stem
TEACHER_S=${TEACHER_S:-250}
STUDENT_S=${STUDENT_S:-190}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-}  # set: a fixed schedule instead of the time budget
STUDENT_EPOCHS=${STUDENT_EPOCHS:-}
WORKERS_SCALE=${WORKERS_SCALE:-1}  # 0: batches in the training process (a CPU rehearsal)
NMS=${NMS:-}  # set (hard | agnostic | matrix, NMS_THRESHOLD an IoU): the recipe's NMS; unset: the product's
NMS_THRESHOLD=${NMS_THRESHOLD:-}
w() { echo $(( $1 * WORKERS_SCALE )); }

if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import pycocotools" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, numpy, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'cv2', cv2.__version__)"
nproc --all  # (plain nproc would say 1: it follows OMP_NUM_THREADS)
rm -rf "$RUNS"; mkdir -p "$RUNS" "$OUT"
COMMON=(--data gpu_data/deeppcb --split gpu_data/split.json --input-mode "$INPUT_MODE" --input-size "$INPUT_SIZE"
        --dihedral --batch 32 --lr 0.004)
[ -n "$NMS" ] && COMMON+=(--nms "$NMS")
[ -n "$NMS_THRESHOLD" ] && COMMON+=(--nms-threshold "$NMS_THRESHOLD")
$PY -m tools.torch_twin.batch_speed --data gpu_data/deeppcb --input-size "$INPUT_SIZE" --input-mode "$INPUT_MODE" \
  > "$RUNS/batch_speed.json" \
  2> "$RUNS/batch_speed.err"; cat "$RUNS/batch_speed.json"
train() { local name=$1; shift; $PY -m tools.torch_twin.train "${COMMON[@]}" --out "$RUNS/$name" "$@" > "$RUNS/$name.out" 2>&1; }

teacher_len=(--seconds "$TEACHER_S"); [ -n "$TEACHER_EPOCHS" ] && teacher_len=(--epochs "$TEACHER_EPOCHS")
student_len=(--seconds "$STUDENT_S"); [ -n "$STUDENT_EPOCHS" ] && student_len=(--epochs "$STUDENT_EPOCHS")
train teacher --arch "$TEACHER_ARCH" --head gfl "${teacher_len[@]}" --workers "$(w 6)" --half-weights &
teacher=$!
train student --arch mbv3-small --head gfl "${student_len[@]}" --workers "$(w 4)" &
student=$!
train student-yolo --arch mbv3-small --head yolo "${student_len[@]}" --workers "$(w 3)" &
yolo=$!
wait $teacher; echo "teacher exit $?"
if [ -f "$RUNS/teacher/best.npz" ]; then
  timeout -s INT $(( ${DISTILL_DEADLINE:-530} - SECONDS )) \
    $PY -m tools.torch_twin.train "${COMMON[@]}" --out "$RUNS/distilled" --arch mbv3-small --head gfl --epochs-from "$RUNS/student" --teacher "$RUNS/teacher" \
    --workers "$(w 8)" --distill '{"temperature": 2.0, "alpha_start": 0.7, "alpha_end": 0.3, "feature_weight": 1.0}' \
    > "$RUNS/distilled.out" 2>&1 &
  distilled=$!
  wait $distilled; echo "distilled exit $?"
fi
wait $student; echo "student exit $?"
wait $yolo; echo "student-yolo exit $?"

# Back to the CPU machine: each student's best.npz (about 4 MB), the teacher's float16 weights in parts under
# 16 MiB, and one archive of every run's logs, metrics and configuration.
$PY - "$RUNS" "$OUT" <<'EOF'
import sys
from pathlib import Path
import numpy as np
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("student", "distilled", "student-yolo"):
    if (runs / name / "best.npz").is_file():
        (out / name).mkdir(exist_ok=True)
        (out / name / "best.npz").write_bytes((runs / name / "best.npz").read_bytes())
teacher = runs / "teacher" / "best.npz"
if teacher.is_file():
    (out / "teacher").mkdir(exist_ok=True)
    with np.load(teacher) as data:
        arrays = {k: data[k] for k in data}
    part, size, index = {}, 0, 0
    for key, value in arrays.items():
        if part and size + value.nbytes > 15 * 2**20:
            np.savez(out / "teacher" / f"best.part{index}.npz", **part)
            part, size, index = {}, 0, index + 1
        part[key] = value
        size += value.nbytes
    np.savez(out / "teacher" / f"best.part{index}.npz", **part)
EOF
tar -czf "$OUT/runs.tar.gz" -C "$RUNS" --exclude='*.npz' .
ls -la "$OUT" "$OUT"/*/
for f in "$RUNS"/*.out; do echo "== $f"; tail -n 4 "$f"; done
