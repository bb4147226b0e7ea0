#!/usr/bin/env bash
# Installs everything meteor_tf needs on a fresh machine: Debian's Fashion-MNIST files (when apt is there),
# a virtual environment in .venv and the package with the pinned versions of constraints.txt.
# Usage: bash scripts/setup.sh [--test]      (--test adds the test tools)
# Safe to rerun: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else sudo="NO"; fi
    fi
    if [ "$sudo" = "NO" ]; then
      echo "setup: not root and no sudo: skipping apt package dataset-fashion-mnist (Fashion-MNIST will be downloaded by tfds when online)" >&2
    else
      echo "setup: installing Debian package dataset-fashion-mnist (Fashion-MNIST IDX files, used offline)"
      $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || {
        $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
        echo "setup: could not install dataset-fashion-mnist; Fashion-MNIST will need a download" >&2
    fi
  else
    echo "setup: no apt-get here: Fashion-MNIST will be downloaded by tfds when online" >&2
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=".venv/.meteor_tf-installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "setup: installing meteor_tf$extras into .venv (pinned by constraints.txt; ~2 GB, a few minutes the first time)"
  # pip's "Location ... is ignored" lines are noise from this machine's local mirrors
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -c constraints.txt -e ".$extras" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import meteor_tf, tensorflow, keras, tensorflow_datasets" || {
    echo "setup: the install failed (see the pip messages above)" >&2; exit 1; }
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/python)"
