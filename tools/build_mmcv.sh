#!/usr/bin/env bash
# Build mmcv 2.1.0 with its compiled CPU ops against the installed torch (mmdet 3.3 needs them).
# mmcv's sdist forces -std=c++17, but torch >= 2.10's headers need C++20: that flag is the only
# patch. The wheel is tied to the torch version it was built against; rebuild when torch changes.
# Usage: tools/build_mmcv.sh [OUT_DIR]   (prints the wheel's path; ~10-20 CPU minutes)
set -euo pipefail
out="$(realpath -m "${1:-dist}")"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip install --quiet "setuptools<81" wheel ninja  # mmcv's setup.py imports pkg_resources
python3 -m pip download --quiet --no-deps --no-binary :all: mmcv==2.1.0 -d "$work"
tar -xzf "$work"/mmcv-2.1.0.tar.gz -C "$work"
cd "$work/mmcv-2.1.0"
sed -i "s/-std=c++17/-std=c++20/g" setup.py
grep -q -- "-std=c++20" setup.py
CFLAGS=-g0 CXXFLAGS=-g0 MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    python3 -m pip wheel --no-build-isolation --no-deps . -w "$out" >&2
ls "$out"/mmcv-2.1.0-*.whl
