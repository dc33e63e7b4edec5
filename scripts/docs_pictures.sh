#!/usr/bin/env bash
# Runs the report's experiments at their defaults (W&B offline, workdirs under runs/docs/)
# and copies one picture of each into docs/, where the README shows them. Resumable: a
# finished run is not trained again. About 40 minutes on a 2-core CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run() { bash "$root/scripts/run.sh" "$@"; }
cd "$root"
mkdir -p runs/docs docs
run python -m experiments.autoencoder --workdir=runs/docs/autoencoder --wandb_mode=offline
cp runs/docs/autoencoder/images/latent_space.png docs/autoencoder_latent_space.png
run python -m experiments.vae --workdir=runs/docs/vae --wandb_mode=offline
cp runs/docs/vae/images/latent_manifold.png docs/vae_latent_manifold.png
run python -m experiments.dcgan --workdir=runs/docs/dcgan --wandb_mode=offline
cp runs/docs/dcgan/images/generated_images.png docs/dcgan_generated.png
echo "pictures written to $root/docs"
