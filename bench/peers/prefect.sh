#!/bin/sh
# Install the peer of bench part "peer" (bench/README.md): Prefect 3.x in its own venv,
# bench/peers/.venv, never in egw's environment. Optional: without it the part is skipped.
#
#   sh bench/peers/prefect.sh [python3]      # a few minutes; rerun to reinstall
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${1:-python3}
VERSION=${PREFECT_VERSION:-3.9.1}
"$PYTHON" -m venv "$HERE/.venv"
"$HERE/.venv/bin/pip" install --quiet --disable-pip-version-check "prefect==$VERSION"
"$HERE/.venv/bin/prefect" version
