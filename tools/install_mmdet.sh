#!/usr/bin/env bash
# Install mmdet 3.3.0 on top of gapbench: mmcv 2.1.0 with compiled ops (a prebuilt wheel from
# ../shared/wheels or $MMCV_WHEEL when there is one, else built by tools/build_mmcv.sh), then
# mmengine and mmdet (--no-deps: mmdet's pins would replace torch).
set -euo pipefail
cd "$(dirname "$0")/.."
wheel="${MMCV_WHEEL:-$(ls ../shared/wheels/mmcv-2.1.0-*.whl 2>/dev/null | head -1 || true)}"
if [ -z "$wheel" ]; then
    wheel="$(tools/build_mmcv.sh "${TMPDIR:-/tmp}/mmcv-wheel" | tail -1)"
fi
pip() { python3 -m pip --disable-pip-version-check "$@"; }
pip install --quiet "setuptools<81"  # mmengine resolves mmdet:: configs through pkg_resources
pip install --quiet --no-deps "$wheel"
pip install --quiet mmengine==0.10.7 shapely terminaltables
pip install --quiet --no-deps mmdet==3.3.0
python3 -c "import mmcv.ops, mmdet.models; print('mmdet', __import__('mmdet').__version__, 'ready')"
