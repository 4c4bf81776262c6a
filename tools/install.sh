#!/usr/bin/env bash
# Creates .venv with the verified stack (see requirements/constraints.txt and ../shared/INSTALL-NOTES.md).
# Idempotent: the Makefile runs it only when its inputs changed; the mmcv wheel is cached outside the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=.venv
CACHE=${VLM2_WHEEL_CACHE:-$HOME/.cache/vlm2/wheels}
C=requirements/constraints.txt
mkdir -p "$CACHE"

[ -x $VENV/bin/python ] || "$PYTHON" -m venv $VENV
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q -c $C torch torchvision
# mmcv's and xtcocotools' setup.py import pkg_resources, gone from setuptools>=82: build with an older one.
$PIP install -q "setuptools<70" wheel cython "numpy>=2,<3" ninja psutil

mmcv_whl=$(ls "$CACHE"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$mmcv_whl" ]; then
  echo "Building mmcv 2.1.0 with ops from source (about 10 minutes on 2 cores; cached in $CACHE)"
  tmp=$(mktemp -d)
  $PIP download -q --no-deps --no-binary :all: --no-build-isolation mmcv==2.1.0 -d "$tmp"
  tar -xzf "$tmp"/mmcv-2.1.0.tar.gz -C "$tmp"
  # torch>=2.10 headers require C++20.
  sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$tmp"/mmcv-2.1.0/setup.py
  (cd "$tmp"/mmcv-2.1.0 && MMCV_WITH_OPS=1 MAX_JOBS=2 "$OLDPWD"/$VENV/bin/python -m pip wheel -q --no-deps --no-build-isolation . -w "$tmp"/dist)
  cp "$tmp"/dist/mmcv-2.1.0-*.whl "$CACHE"/
  rm -rf "$tmp"
  mmcv_whl=$(ls "$CACHE"/mmcv-2.1.0-*.whl | head -n1)
fi
$PIP install -q --no-deps "$mmcv_whl"

# xtcocotools against numpy 2 (the published wheel fails with "numpy.dtype size changed").
$VENV/bin/python -c "import xtcocotools.coco" 2>/dev/null || \
  $PIP install -q --no-deps --no-build-isolation --no-binary xtcocotools -c $C xtcocotools
$PIP install -q -c $C -r requirements/runtime.txt -r requirements/tests.txt
$PIP install -q --no-deps -c $C mmpose
$PIP install -q --no-deps --no-build-isolation -e .
$VENV/bin/python -c "import mmcv.ops, mmdet.models, mmpose.models, transformers, diffusers, peft, vlm2; print('vlm2 environment ready')"
