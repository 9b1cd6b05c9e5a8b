#!/usr/bin/env bash
# Make .venv with everything conceptlens needs, from nothing; safe to rerun (fast when done).
# torch==2.13.0 goes in first: it resolves to the CPU wheel, so nothing later pulls a
# multi-GB CUDA build. Debian's dataset-fashion-mnist provides the built-in dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${CONCEPTLENS_FASHION_MNIST:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing Debian's dataset-fashion-mnist" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "bootstrap: Fashion-MNIST not found. Run 'sudo apt-get install dataset-fashion-mnist'," \
         "or set CONCEPTLENS_FASHION_MNIST to a folder with the four IDX files, or pass" \
         "--download to 'conceptlens demo' on a machine with internet." >&2
  fi
fi

# Debian's Chromium (and its driver, for selenium) renders the HTML report and the explorer in
# the browser tests (they skip without one, and CI fails such a skip)
if { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "bootstrap: installing Debian's chromium and chromium-driver (for the browser tests)" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
    >/dev/null || echo "bootstrap: chromium could not be installed; the browser tests will be skipped" >&2
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,docs]"
echo "bootstrap: ready (.venv)" >&2
