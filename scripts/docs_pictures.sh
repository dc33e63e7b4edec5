#!/usr/bin/env bash
# Runs the report's experiments at their defaults (W&B offline, workdirs under runs/docs/)
# and copies one picture of each into docs/, where the README shows them. Resumable: a
# finished run is not trained again. About 2 hours on a 2-core CPU. WGAN-GP runs 1,000 of
# its 30,000 default iterations here (about 1.6 iterations/s on such a CPU).
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
run python -m experiments.cvae --workdir=runs/docs/cvae --wandb_mode=offline
cp runs/docs/cvae/images/generated_by_class.png docs/cvae_generated_by_class.png
run python -m experiments.aae --workdir=runs/docs/aae --wandb_mode=offline
run python -m experiments.aae --workdir=runs/docs/aae_2d --wandb_mode=offline --latent_dim=2
cp runs/docs/aae_2d/images/latent_space.png docs/aae_latent_space.png
run python -m experiments.cgan --workdir=runs/docs/cgan --wandb_mode=offline
cp runs/docs/cgan/images/generated_by_class.png docs/cgan_generated_by_class.png
run python -m experiments.wgan_gp --workdir=runs/docs/wgan_gp --wandb_mode=offline \
  --iterations=1000
cp runs/docs/wgan_gp/images/generated_images.png docs/wgan_gp_generated.png
run python -m experiments.diffusion --workdir=runs/docs/diffusion --wandb_mode=offline
cp runs/docs/diffusion/images/generated_images.png docs/diffusion_generated.png
run python -m experiments.flow_matching --workdir=runs/docs/flow_matching --wandb_mode=offline
cp runs/docs/flow_matching/images/trajectory.png docs/flow_matching_trajectory.png
# The README's results table: every run above in one table and one picture.
run python -m experiments.leaderboard --runs=runs/docs --wandb_mode=offline
cp runs/docs/leaderboard/leaderboard.png docs/leaderboard.png
echo "pictures written to $root/docs"
