#!/usr/bin/env bash
# Sets up (scripts/setup.sh: venv, install, offline data), then runs a command in the venv:
#   bash scripts/run.sh python -m experiments.autoencoder --epochs=5
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec "$@"
