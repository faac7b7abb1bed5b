#!/usr/bin/env bash
# The shipped ARM model (model_arm.nb) on aarch64, emulated with qemu-user on an x86 machine, against
# the x86 package (see README.md, "Emulated check on x86").
#
#   deploy/arm/emulated_check.sh [PACKAGE]          # PACKAGE defaults to models/default
#   make arm-check
#
# Steps (each is skipped when its result is already in the cache):
#   1. Paddle Lite v2.13-rc's light API for armv8, cross-compiled from source with
#      aarch64-linux-gnu-g++ and tailored to the operators and kernels of PACKAGE's model
#      (paddle_lite_opt --record_tailoring_info on model.pdmodel). No step downloads anything: the
#      source comes from PADDLE_LITE_SRC (a Paddle-Lite checkout or bare git directory holding the
#      v2.13-rc tag), and only the light-API "tiny publish" is built, which needs no third-party code.
#      One fix is applied to that source first (patch_paddle_lite.py: the ARM pow kernel's thread race).
#   2. The aarch64 libraries pcb_inspect links against (OpenCV core/imgproc/imgcodecs, libcrypto),
#      from Debian's arm64 packages (dpkg --add-architecture arm64; as root).
#   3. deploy/arm/cpp cross-compiled against both.
#   4. pcb_inspect run under qemu-aarch64-static on the bundled demo boards and on the validation split
#      of the package (split.json), compared with the x86 package through the Python runtime
#      (inspector eval / Detector with the Lite x86 backend): official AP/F, COCO mAP, box by box.
#
# Environment:
#   PCB_ARM_CACHE    where builds are kept, outside git (default ${XDG_CACHE_HOME:-$HOME/.cache}/pcb-inspector-arm)
#   PADDLE_LITE_SRC  Paddle-Lite source: a checkout at v2.13-rc, or a (bare) git directory holding that tag;
#                    default $PCB_ARM_CACHE/paddle-lite-src, else a clone from GitHub (the one network step)
#   JOBS             parallel compile jobs (default 2); the build runs under nice -n 19
#   DATA             the DeepPCB trainval folder (default ../shared/datasets/deeppcb)
#   ARM_THREADS      Paddle Lite threads of the ARM runs (default 1; the demo boards are rerun with 2 and compared)
#   QEMU_CPU         qemu's -cpu for the runs (default max: has the armv8.2 dot-product instructions;
#                    cortex-a72 is a Raspberry Pi 4 without them)
# Cold build time (measured, 2 shared cores, -j2): see README.md; the script prints its own.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PACKAGE=$(realpath "${1:-$REPO_ROOT/models/default}")
CACHE=${PCB_ARM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pcb-inspector-arm}
JOBS=${JOBS:-2}
DATA=${DATA:-$REPO_ROOT/../shared/datasets/deeppcb}
QEMU_CPU=${QEMU_CPU:-max}
ARM_THREADS=${ARM_THREADS:-1}
PYTHON=${PYTHON:-$REPO_ROOT/.venv/bin/python}
LITE_TAG=v2.13-rc
LITE_COMMIT=102697b54f58bbc775f82945c14cf7f16027ddd4   # what v2.13-rc names; the exporter's paddlelite==2.13rc0
CROSS=aarch64-linux-gnu
SYSROOT=/usr/$CROSS

say() { echo "[arm-check] $*" >&2; }
die() { echo "[arm-check] error: $*" >&2; exit 2; }

need_tools() {
  local missing=()
  for tool in $CROSS-g++ $CROSS-gcc qemu-aarch64-static cmake make git file dpkg-deb apt-get; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ -x "$PYTHON" ] || missing+=("$PYTHON")
  [ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (Debian: apt-get install g++-aarch64-linux-gnu qemu-user-static cmake make git; the venv: make venv)"
  [ -f "$PACKAGE/manifest.json" ] && [ -f "$PACKAGE/model_arm.nb" ] || die "$PACKAGE: not a model package with model_arm.nb"
}

# --- 1. Paddle Lite, tailored to the package's model ---------------------------------------------
lite_source() {
  local src=${PADDLE_LITE_SRC:-$CACHE/paddle-lite-src}
  local out=$CACHE/paddle-lite-src
  for checkout in "$src" "$out"; do
    if [ -f "$checkout/lite/api/paddle_api.h" ]; then
      echo "$checkout"; return
    fi
  done
  if [ -d "$src" ] && git --git-dir="$src" rev-parse -q --verify "$LITE_COMMIT^{commit}" >/dev/null 2>&1; then
    say "Paddle Lite source: $LITE_TAG from the git directory $src"
  elif [ -d "$src/.git" ] && git -C "$src" rev-parse -q --verify "$LITE_COMMIT^{commit}" >/dev/null 2>&1; then
    src=$src/.git
  else
    say "Paddle Lite source: cloning $LITE_TAG from GitHub into $CACHE/paddle-lite.git"
    git clone --bare --branch "$LITE_TAG" --depth 1 https://github.com/PaddlePaddle/Paddle-Lite.git "$CACHE/paddle-lite.git" >&2
    src=$CACHE/paddle-lite.git
  fi
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  git --git-dir="$src" archive "$LITE_COMMIT" | tar -x -C "$out.tmp"
  mv "$out.tmp" "$out"
  echo "$out"
}

# The operators and kernels of the package's ARM model, as paddle_lite_opt records them.
tailoring_info() {
  local dir=$1
  mkdir -p "$dir"
  "$(dirname "$PYTHON")/paddle_lite_opt" --model_file="$PACKAGE/model.pdmodel" --param_file="$PACKAGE/model.pdiparams" \
    --valid_targets=arm --optimize_out_type=naive_buffer --optimize_out="$dir/model" \
    --record_tailoring_info=true > "$dir/opt.log" 2>&1 || { cat "$dir/opt.log" >&2; die "paddle_lite_opt failed"; }
  [ -f "$dir/model/.tailored_kernels_list" ] || die "paddle_lite_opt wrote no tailoring info (see $dir/opt.log)"
}

build_lite() {
  local tmp=$CACHE/tailor.new
  rm -rf "$tmp"
  tailoring_info "$tmp"
  local key
  key=$(cat "$tmp"/model/.tailored_* | sha256sum | cut -c1-12)
  # "-powerfix": built with patch_paddle_lite.py (the pow kernel's thread race fixed); an unpatched
  # build of the same model is never reused.
  LITE_BUILD=$CACHE/lite-armv8-$key-powerfix
  LITE_LIB=$LITE_BUILD/inference_lite_lib.armlinux.armv8
  if [ -f "$LITE_LIB/cxx/lib/libpaddle_light_api_shared.so" ]; then
    say "Paddle Lite armv8 (tailored $key): cached in $LITE_BUILD ($(cat "$LITE_BUILD/build_seconds" 2>/dev/null || echo ?) s to build)"
    rm -rf "$tmp"; return
  fi
  local src; src=$(lite_source)
  rm -rf "$LITE_BUILD"; mkdir -p "$LITE_BUILD"
  mv "$tmp" "$LITE_BUILD/tailor"
  # Inside the source tree, as Paddle Lite's build_linux.sh does: its CMake keeps a tailored kernel's
  # path only when it lies under the source folder (cmake/generic.cmake), and breaks it otherwise.
  local build=$src/build.lite.armlinux.armv8.tailored-$key
  rm -rf "$build"
  mkdir -p "$build/lite/gen_code" "$build/lite/tools/debug"
  touch "$build/lite/gen_code/__generated_code__.cc"
  cp "$src/lite/tools/debug/analysis_tool.py" "$build/lite/tools/debug/"
  rm -f "$src/lite/api/paddle_use_ops.h" "$src/lite/api/paddle_use_kernels.h"
  python3 "$REPO_ROOT/deploy/arm/patch_paddle_lite.py" "$src" >&2 || die "could not patch the Paddle Lite source in $src"
  say "building Paddle Lite $LITE_TAG light API for armv8, tailored to $(wc -l < "$LITE_BUILD/tailor/model/.tailored_kernels_list") kernels (log: $LITE_BUILD/build.log)"
  local start=$SECONDS
  (
    cd "$build"
    cmake "$src" -DCMAKE_BUILD_TYPE=Release -DWITH_MKLDNN=OFF -DWITH_TESTING=OFF \
      -DLITE_WITH_ARM=ON -DLITE_WITH_X86=OFF -DARM_TARGET_ARCH_ABI=armv8 -DARM_TARGET_OS=armlinux \
      -DARM_TARGET_LANG=gcc -DLITE_ON_TINY_PUBLISH=ON -DLITE_BUILD_EXTRA=ON -DLITE_WITH_LOG=ON \
      -DLITE_WITH_EXCEPTION=OFF -DLITE_WITH_CV=OFF -DLITE_WITH_PYTHON=OFF -DLITE_WITH_OPENCL=OFF \
      -DWITH_ARM_DOTPROD=ON -DLITE_WITH_ARM82_FP16=OFF -DWITH_AVX=OFF \
      -DLITE_BUILD_TAILOR=ON -DLITE_OPTMODEL_DIR="$LITE_BUILD/tailor/model" \
      -DPYTHON_EXECUTABLE="$(command -v python3)"
    # The version Paddle Lite reports (and checks a .nb's opt version against) comes from `git describe`
    # in the source folder, which an exported source tree does not have: name the tag and commit.
    sed -i -e "/paddlelite_commit()/,/}/s/return \"\";/return \"${LITE_COMMIT:0:10}\";/" \
           -e "/paddlelite_tag()/,/}/s/return \"\";/return \"$LITE_TAG\";/" lite/core/version.h
    grep -q "\"$LITE_TAG\"" lite/core/version.h || { echo "could not set the version in lite/core/version.h"; exit 1; }
    nice -n 19 make publish_inference -j"$JOBS"
  ) > "$LITE_BUILD/build.log" 2>&1 || { tail -30 "$LITE_BUILD/build.log" >&2; die "Paddle Lite build failed (log: $LITE_BUILD/build.log)"; }
  cp -r "$build/inference_lite_lib.armlinux.armv8" "$LITE_LIB"
  ln -sfn "$build" "$LITE_BUILD/build"
  echo $((SECONDS - start)) > "$LITE_BUILD/build_seconds"
  say "Paddle Lite built in $((SECONDS - start)) s: $LITE_LIB"
}

# --- 2. aarch64 libraries for pcb_inspect: a private sysroot from Debian's arm64 packages --------
# apt runs on a state folder of its own (architecture arm64 only, nothing installed), so the machine's
# package set is not touched; the packages are unpacked, not installed. Their glibc (2.36) and
# libstdc++ (GCC 12) are those of Debian 12's aarch64 cross toolchain, and qemu runs the binaries with
# this folder as their root (-L).
ARM64_PACKAGES="libc6-dev libstdc++-12-dev libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libssl-dev nlohmann-json3-dev"

build_sysroot() {
  SYSROOT_ARM64=$CACHE/sysroot-arm64
  if [ -f "$SYSROOT_ARM64/.complete" ]; then
    say "aarch64 sysroot: cached in $SYSROOT_ARM64"; return
  fi
  local apt_dir=$CACHE/apt-arm64
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  : > "$apt_dir/status"
  local apt_options=(-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status"
    -o "Dir::Cache=$apt_dir" -o "Dir::Cache::archives=$apt_dir/archives" -o APT::Architecture=arm64
    -o APT::Architectures::=arm64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  say "aarch64 sysroot: fetching Debian arm64 packages ($ARM64_PACKAGES and their dependencies)"
  apt-get "${apt_options[@]}" -qq update >&2 || die "apt-get update (arm64 package lists) failed"
  apt-get "${apt_options[@]}" -qq -y -d --no-install-recommends install $ARM64_PACKAGES >&2 \
    || die "apt-get could not fetch the arm64 packages"
  rm -rf "$SYSROOT_ARM64"; mkdir -p "$SYSROOT_ARM64/usr/lib" "$SYSROOT_ARM64/usr/bin" "$SYSROOT_ARM64/usr/sbin"
  ln -s usr/lib "$SYSROOT_ARM64/lib"; ln -s usr/bin "$SYSROOT_ARM64/bin"; ln -s usr/sbin "$SYSROOT_ARM64/sbin"
  local deb
  for deb in "$apt_dir"/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$SYSROOT_ARM64" || die "could not unpack $deb"
  done
  # What the packages' maintainer scripts would do: the BLAS/LAPACK alternatives OpenCV links against.
  local lib=$SYSROOT_ARM64/usr/lib/aarch64-linux-gnu
  ln -sfn blas/libblas.so.3 "$lib/libblas.so.3"; ln -sfn lapack/liblapack.so.3 "$lib/liblapack.so.3"
  ls "$apt_dir"/archives/*.deb | xargs -n1 basename > "$SYSROOT_ARM64/packages.txt"
  touch "$SYSROOT_ARM64/.complete"
  say "aarch64 sysroot: $(wc -l < "$SYSROOT_ARM64/packages.txt") packages in $SYSROOT_ARM64"
}

# --- 3. pcb_inspect, cross-compiled -----------------------------------------------------------------
build_runner() {
  RUNNER_BUILD=$CACHE/pcb_inspect-armv8-$(basename "$LITE_BUILD" | sed 's/^lite-armv8-//')
  local toolchain=$CACHE/aarch64-toolchain.cmake
  cat > "$toolchain" <<TOOLCHAIN
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER $CROSS-gcc)
set(CMAKE_CXX_COMPILER $CROSS-g++)
set(CMAKE_SYSROOT $SYSROOT_ARM64)
set(CMAKE_FIND_ROOT_PATH $LITE_LIB)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
TOOLCHAIN
  say "cross-compiling deploy/arm/cpp (pcb_inspect) into $RUNNER_BUILD"
  cmake -S "$REPO_ROOT/deploy/arm/cpp" -B "$RUNNER_BUILD" -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
    -DPADDLE_LITE_DIR="$LITE_LIB" > "$RUNNER_BUILD.log" 2>&1 \
    && nice -n 19 cmake --build "$RUNNER_BUILD" -j"$JOBS" >> "$RUNNER_BUILD.log" 2>&1 \
    || { tail -30 "$RUNNER_BUILD.log" >&2; die "pcb_inspect cross-build failed (log: $RUNNER_BUILD.log)"; }
  file "$RUNNER_BUILD/pcb_inspect" | grep -q "ARM aarch64" || die "$RUNNER_BUILD/pcb_inspect is not an aarch64 binary"
}

# --- 4. Run and compare ---------------------------------------------------------------------------
compare() {
  say "running model_arm.nb under qemu-aarch64-static (-cpu $QEMU_CPU) and the x86 package, then comparing"
  "$PYTHON" "$REPO_ROOT/deploy/arm/emulated_compare.py" --package "$PACKAGE" --data "$DATA" \
    --runner "$RUNNER_BUILD/pcb_inspect" --sysroot "$SYSROOT_ARM64" --qemu-cpu "$QEMU_CPU" \
    --threads "$ARM_THREADS" --out "$CACHE/results/$(basename "$PACKAGE")-$QEMU_CPU" \
    --lite-build-seconds "$(cat "$LITE_BUILD/build_seconds" 2>/dev/null || echo 0)"
}

need_tools
mkdir -p "$CACHE"
case "${ARM_CHECK_STAGE:-all}" in
  lite) build_lite ;;
  sysroot) build_sysroot ;;
  runner) build_lite; build_sysroot; build_runner ;;
  all) build_lite; build_sysroot; build_runner; compare ;;
  *) die "ARM_CHECK_STAGE: expected lite, sysroot, runner or all, got '$ARM_CHECK_STAGE'" ;;
esac
