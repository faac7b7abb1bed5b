#!/bin/bash
# The deployment bench table: `inspector bench` on the teacher FP32 (Paddle Inference), the student FP32 and the
# shipped INT8 package (Paddle Lite and Paddle Inference), 1 and 2 threads, one line per run; JSON kept in OUT.
#
#   benchmarks/bench_table.sh TEACHER_PKG STUDENT_PKG SHIPPED_PKG OUT_DIR [RUNS]
#
# Packages come from `inspector export` (or a pipeline's measure stage). Run it on an otherwise idle machine.
set -euo pipefail
if [ $# -lt 4 ]; then sed -n 2,7p "$0"; exit 2; fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
INSPECTOR=${INSPECTOR:-$REPO/.venv/bin/inspector}
PY=${PY:-$REPO/.venv/bin/python}
OUT=$4; RUNS=${5:-100}
mkdir -p "$OUT"
for row in "teacher:$1" "student:$2" "shipped:$3"; do
  name=${row%%:*}; package=${row#*:}
  for backend in lite paddle; do
    [ "$name" = teacher ] && [ "$backend" = lite ] && continue  # the teacher is compared on Paddle Inference
    for threads in 1 2; do
      json="$OUT/$name-$backend-$threads.json"
      log="$OUT/$name-$backend-$threads.log"  # the engines' own chatter (oneDNN's pass log), shown on failure
      if ! "$INSPECTOR" bench --model "$package" --backend "$backend" --threads "$threads" --runs "$RUNS" \
          --json "$json" >"$log" 2>&1; then
        cat "$log" >&2; echo "bench failed: $package ($backend, $threads threads)" >&2; exit 1
      fi
      "$PY" - "$name" "$json" <<'PYEOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
print(f"{name:8s} {d['backend']:6s} {d['precision']:5s} x{d['threads']}  p50 {d['p50_ms']:6.1f} ms  p99 {d['p99_ms']:6.1f} ms  "
      f"{d['fps']:5.1f} FPS  {d['model_bytes'] / 1e6:6.2f} MB  peak RSS {d['peak_rss_mb']:.0f} MB")
PYEOF
    done
  done
done
