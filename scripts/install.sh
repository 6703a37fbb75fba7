#!/usr/bin/env bash
# Install multistore and everything it needs on a Debian machine without conda.
#   bash scripts/install.sh          # the package + the demo's local S3 server
#   bash scripts/install.sh dev      # + test and benchmark tools
# GDAL's Python bindings exist on PyPI only as source, so they are built
# against the system library (Debian's libgdal-dev) before xcube-core.
set -euo pipefail
extras="${1:-demo}"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

if ! command -v gdal-config >/dev/null 2>&1; then
    echo "[install] system GDAL missing: installing libgdal-dev with apt"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libgdal-dev >/dev/null
fi
gdal_version="$(gdal-config --version)"

have_bindings="$("$PY" -c 'from osgeo import gdal; print(gdal.__version__)' 2>/dev/null || true)"
if [ "$have_bindings" != "$gdal_version" ]; then
    echo "[install] building GDAL $gdal_version Python bindings against the system library"
    "$PY" -m pip install -q --upgrade pip setuptools wheel numpy
    "$PY" -m pip install -q --no-build-isolation "gdal==$gdal_version"
fi

echo "[install] installing multistore[$extras]"
"$PY" -m pip install -q -e ".[$extras]"
# pip compiles the bytecode of what it installs, but not of an editable package: do it here,
# or every run recompiles multistore where PYTHONDONTWRITEBYTECODE is set
"$PY" -m compileall -q multistore >/dev/null

if [ "$extras" = dev ] && ! command -v chromium >/dev/null 2>&1; then
    # the service's browser test drives Debian's Chromium through Playwright
    echo "[install] installing chromium with apt (browser test of multistore serve)"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
        || echo "[install] chromium could not be installed: the browser test will be skipped"
fi
