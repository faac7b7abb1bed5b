# Two entry points (see README): `make run` and `make test`. Both build .venv from nothing if needed.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
# Paddle Lite's x86 wheel exists only for CPython 3.10; find one even when pyenv has not activated it.
PYTHON310 ?= $(shell for c in python3.10 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10*/bin/python3.10; do "$$c" -c "import sys; assert sys.version_info[:2] == (3, 10)" 2>/dev/null && { echo "$$c"; break; }; done)
STAMP := $(VENV)/.installed

.PHONY: setup sysdeps genicam run test test-fast arm-check clean-venv
setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON310)" || { echo "error: python3.10 not found (needed by paddlelite==2.13rc0); install it (e.g. pyenv install 3.10)"; exit 1; }
	@echo "creating $(VENV) with $(PYTHON310)"
	$(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps paddleslim==2.6.0
	$(PY) -c "import cv2, paddle, paddleslim, paddlelite.lite, PySide6.QtWidgets; print('stack ok: cv2', cv2.__version__, 'paddle', paddle.__version__)"
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/inspector demo --out runs/demo

# System packages for the GUI tests on a real X server (Xvfb) and Qt's xcb platform plugin.
SYSDEPS := xvfb xauth libgl1 libegl1 libfontconfig1 libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 \
           libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 \
           libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1
# The service tests start a real MQTT broker and PostgreSQL server (binaries only; the tests run their own).
SYSDEPS += mosquitto postgresql
# The ARM runner's C++ pre/post-processing test (tests/deploy/test_arm_runner.py) builds against these.
SYSDEPS += cmake g++ libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev nlohmann-json3-dev libssl-dev
# GenICam cameras (tests/capture/test_genicam.py): Aravis' binding and fake GigE Vision camera; PyGObject builds against these.
SYSDEPS += aravis-tools gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev pkg-config
sysdeps:
	@if command -v Xvfb >/dev/null && ldconfig -p | grep -q libxcb-cursor.so.0 \
	    && [ -x /usr/sbin/mosquitto ] && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
	    && command -v cmake >/dev/null && [ -f /usr/include/opencv4/opencv2/imgcodecs.hpp ] \
	    && [ -f /usr/include/nlohmann/json.hpp ] && [ -f /usr/include/openssl/evp.h ] \
	    && [ -x /usr/bin/arv-fake-gv-camera-0.8 ] && [ -f /usr/include/gobject-introspection-1.0/girepository.h ] \
	    && [ -f /usr/include/cairo/cairo.h ]; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing system packages: $(SYSDEPS)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSDEPS) >/dev/null; \
	else echo "warning: install these system packages for the display and service tests: $(SYSDEPS)"; fi

# PyGObject (the GenICam binding, pyproject extra 'genicam') compiles against the system packages above.
genicam: $(STAMP) sysdeps
	@$(PY) -c "import gi" 2>/dev/null || $(PY) -m pip install -q 'pygobject>=3.42,<3.50' \
	  || echo "warning: PyGObject did not install; the GenICam tests are skipped"

test: $(STAMP) sysdeps genicam
	OMP_NUM_THREADS=$$(nproc) QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

# The edit-test loop: every test but the slow ones (they train, export, need the exported tiny package or run the
# product end to end; tests/conftest.py). Under a minute on an idle 2-core machine; `make test` runs everything.
test-fast: $(STAMP) sysdeps genicam
	OMP_NUM_THREADS=$$(nproc) QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m "not slow"

# The ARM model on aarch64 under qemu-user, against the x86 package (deploy/arm/emulated_check.sh; not part of
# `make test`: a cold run builds Paddle Lite for armv8 from source, see deploy/arm/README.md).
ARM_SYSDEPS := g++-aarch64-linux-gnu qemu-user-static cmake make git file
arm-check: $(STAMP)
	@if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64-static >/dev/null \
	    || ! command -v file >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages: $(ARM_SYSDEPS)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(ARM_SYSDEPS) >/dev/null; \
	  else echo "error: install these system packages first: $(ARM_SYSDEPS)"; exit 1; fi; fi
	deploy/arm/emulated_check.sh

clean-venv:
	rm -rf $(VENV)
