#!/usr/bin/env bash
# One-command environment for mmaddp: creates .venv at the repository root and
# installs the pinned OpenMMLab stack (torch, mmengine, mmcv with compiled ops,
# mmdet, mmsegmentation, mmpretrain, timm, pycocotools) plus mmaddp (editable).
#
# Re-running on a set-up tree is quick and changes nothing: a stamp keyed on the
# requirement files and this script short-circuits once the imports check out.
#
# mmcv 2.1.0 is built from its PyPI source with ops. Its setup.py asks for
# -std=c++17/c++14 while torch 2.14 headers need C++20, so the flags are patched.
# A ready wheel in ../shared/wheels (or $MMADDP_WHEEL_CACHE) is used as a cache
# only when its Python tag, architecture and sha256 match.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)
STAMP="$VENV/.mmaddp-setup-stamp"
MMCV_VERSION=2.1.0
WHEEL_CACHE="${MMADDP_WHEEL_CACHE:-$ROOT/../shared/wheels}"
MMCV_CACHE_SHA256=53ebf3a21b7107a284b44dd08cbff2a16620b38a7cb0a1087331576ba7a07395

log() { printf '[setup] %s\n' "$*"; }

fingerprint() {
  cat requirements/*.txt setup.py tools/setup_env.sh | sha256sum | cut -d' ' -f1
}

check_imports() {
  "$PY" - <<'PY' >/dev/null 2>&1
import torch, torchvision, mmengine, mmcv, mmdet, mmseg, mmpretrain, timm
import pycocotools, numpy, pkg_resources  # mmengine needs pkg_resources
from mmcv.ops import RoIAlign, nms  # compiled ops present
import mmaddp
assert mmcv.__version__ == '2.1.0' and numpy.__version__.startswith('1.')
PY
}

if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(fingerprint)" ] && check_imports; then
  log "environment in .venv is up to date (nothing to do)"
  exit 0
fi

if [ ! -x "$PY" ]; then
  log "creating virtual environment in .venv with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

log "installing build requirements (torch, torchvision, numpy<2, ninja)"
"${PIP[@]}" -r requirements/build.txt

log "installing runtime requirements and mmengine (what mmcv imports)"
"${PIP[@]}" -r requirements/runtime.txt "$(grep -E '^mmengine' requirements/mminstall.txt)"

mmcv_ok() {
  "$PY" -c "import mmcv, mmcv.ops; from mmcv.ops import nms; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1
}

if ! mmcv_ok; then
  pytag="cp$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
  arch="$(uname -m)"
  cached="$WHEEL_CACHE/mmcv-$MMCV_VERSION-$pytag-$pytag-linux_$arch.whl"
  used_cache=0
  if [ -f "$cached" ] && [ "$pytag" = cp311 ] && [ "$arch" = x86_64 ] \
      && [ "$(sha256sum "$cached" | cut -d' ' -f1)" = "$MMCV_CACHE_SHA256" ]; then
    log "installing mmcv $MMCV_VERSION from the wheel cache $cached"
    if "${PIP[@]}" --no-deps "$cached" && mmcv_ok; then
      used_cache=1
    else
      log "cached wheel did not import; building from source instead"
    fi
  fi
  if [ "$used_cache" = 0 ]; then
    log "building mmcv $MMCV_VERSION with ops from source (about 10 minutes on 2 cores)"
    work="$ROOT/.cache/mmcv-build"
    rm -rf "$work" && mkdir -p "$work/src" "$work/dist"
    # mmcv 2.1.0's setup.py imports pkg_resources and needs setuptools<70;
    # torch 2.14 wants >=77 at run time, so the old one serves this build only
    # and the pinned one of requirements/build.txt comes back right after.
    "${PIP[@]}" "setuptools<70"
    "$PY" -m pip download --disable-pip-version-check --no-deps --no-binary mmcv \
      --no-build-isolation "mmcv==$MMCV_VERSION" -d "$work"
    tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work/src"
    src="$work/src/mmcv-$MMCV_VERSION"
    sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$src/setup.py"
    grep -q 'c++20' "$src/setup.py" || { echo "mmcv setup.py patch failed" >&2; exit 1; }
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" "$PY" -m pip wheel \
       --disable-pip-version-check --no-deps --no-build-isolation . -w "$work/dist")
    "${PIP[@]}" "$(grep -E '^setuptools' requirements/build.txt)"
    "${PIP[@]}" --no-deps "$work"/dist/mmcv-*.whl
    mmcv_ok || { echo "mmcv built but its ops do not import" >&2; exit 1; }
  fi
fi

log "installing OpenMMLab and test requirements"
"${PIP[@]}" -r requirements/mminstall.txt -r requirements/tests.txt
log "installing mmaddp in editable mode"
"${PIP[@]}" --no-deps --no-build-isolation -e .

check_imports || { echo "setup finished but the imports check failed" >&2; "$PY" -c "import mmaddp"; exit 1; }
fingerprint > "$STAMP"
log "done: activate with 'source .venv/bin/activate'"
