#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a virtual environment in .venv with genjax and its
# dev tools, and the offline default data (Debian's full Fashion-MNIST) where apt exists.
# Quick when nothing changed: the install is redone only when pyproject.toml changes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
venv="$root/.venv"
stamp="$venv/.genjax-installed"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "[setup] genjax needs Python >= 3.11; $python is $("$python" --version 2>&1)." \
       "Set PYTHON=/path/to/python3.11 and run again" >&2
  exit 1
fi
if [ ! -x "$venv/bin/pip" ]; then
  echo "[setup] creating virtual environment in $venv" >&2
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian and Ubuntu ship venv separately; install it where apt is at hand.
    rm -rf "$venv"
    if command -v apt-get >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo -n"; fi
      $sudo apt-get update -qq >/dev/null 2>&1 || true
      pyver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "python$pyver-venv" \
        >/dev/null 2>&1 || true
    fi
    "$python" -m venv "$venv" || {
      echo "[setup] could not create a virtual environment: install python3-venv" >&2
      rm -rf "$venv"
      exit 1
    }
  fi
fi
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing genjax and its dependencies (about a minute the first time)" >&2
  log="$venv/pip-install.log"
  if ! { "$venv/bin/python" -m pip install --upgrade pip &&
         "$venv/bin/python" -m pip install -e ".[dev]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "[setup] pip install failed; the whole log is in $log" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi

fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo -n"; fi
  echo "[setup] installing Debian's dataset-fashion-mnist (the offline default data)" >&2
  if ! { $sudo apt-get update -qq && \
         DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist; } \
       >/dev/null 2>&1; then
    echo "[setup] could not install dataset-fashion-mnist with apt; put the four IDX .gz" \
         "files in a folder and pass --data_dir=FOLDER" >&2
  fi
fi
