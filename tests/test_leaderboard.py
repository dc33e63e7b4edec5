"""experiments.leaderboard: every family's finished run in one table, picture and W&B run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from experiments import dcgan, evaluate, leaderboard, vae
from genjax import wandb_logging
from tests.conftest import write_idx_dataset


def _rows(folder):
    result = json.loads((folder / "leaderboard.json").read_text())
    return {row[0]: dict(zip(result["columns"], row, strict=True)) for row in result["rows"]}


@pytest.mark.slow
def test_two_finished_runs_in_one_table_picture_and_wandb_run(
    tmp_path, wandb_home, feature_net, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # --runs relative to it, as a user types it.
    runs = tmp_path / "runs"
    shared = ["--wandb_mode=offline", f"--feature_net={feature_net}", "--progress=false"]
    vae_flags = ["--epochs=1", "--steps_per_epoch=5", "--latent_points=50", "--eval_samples=40"]
    assert vae.main([f"--workdir={runs / 'vae'}", *vae_flags, *shared]) == 0
    gan_flags = ["--iterations=2", "--gen_interval=2", "--eval_interval=2", "--eval_samples=80"]
    gan_flags += ["--val_examples=32", "--eval_batch_size=16", "--batch_size=16"]
    assert dcgan.main([f"--workdir={runs / 'gan'}", *gan_flags, *shared]) == 0
    (runs / "notes").mkdir()  # A folder that holds no run is passed over.
    argv = ["--runs=runs", "--families=vae,dcgan,diffusion", "--shown=4", "--speed_images=8"]
    assert leaderboard.main([*argv, "--wandb_mode=offline"]) == 0

    out = runs / "leaderboard"
    rows = _rows(out)
    assert list(rows) == ["vae", "dcgan", "diffusion"]
    for name, folder in (("vae", "vae"), ("dcgan", "gan")):
        summary = json.loads((runs / folder / "summary.json").read_text())
        row = rows[name]
        assert row["run"] == f"runs/{folder}"  # As the user named the folder.
        for column, key in (("FID", "eval/fid"), ("precision", "eval/precision")):
            assert row[column] == summary[key], (name, column)
        assert row["feature net"] == summary["eval/feature_net_sha256"]
        assert row["train min"] == pytest.approx(summary["time/train_s"] / 60)
        assert row["samples/s"] > 0
    # Every network a run trains, pinned to the models' own tests (Keras-GAN's counts).
    assert rows["dcgan"]["parameters"] == 855_809 + 392_833
    assert rows["vae"]["parameters"] == 807_700
    # Cells without a figure say why, in the table.
    assert rows["diffusion"]["FID"] is None
    assert (
        "no finished run under runs: python -m experiments.diffusion"
        in (rows["diffusion"]["notes"])
    )
    assert "an implicit model" in rows["dcgan"]["notes"]
    assert "run: not at its defaults: --epochs=1 (default 20), " in rows["vae"]["notes"]
    assert "--iterations=2 (default 4000)" in rows["dcgan"]["notes"]
    assert "--binarize=dynamic" in rows["vae"]["notes"]  # Grey pixels: no Bernoulli bound.
    # 40 images' FID is not on 80 images' scale; the note gives the command that puts it there.
    assert "FID: of 40 images, the others' of 80" in rows["vae"]["notes"]
    assert "FID" not in rows["dcgan"]["notes"]
    table = (out / "leaderboard.md").read_text()
    assert table.splitlines()[0].startswith("| family | run | FID |")
    (gan_line,) = [line for line in table.splitlines() if line.startswith("| dcgan | gan [")]
    assert f" | {rows['dcgan']['FID']:.2f} | " in gan_line  # "[n]": the run's footnote.
    assert "| diffusion | — [" in table and "[1] " in table
    picture = np.asarray(Image.open(out / "leaderboard.png"))
    assert picture.shape[0] > 2 * 28 and picture.std() > 0

    (run_dir,) = wandb_logging.find_run_dirs(out)
    back = wandb_logging.read_run(run_dir)
    assert back["job_type"] == "leaderboard" and back["state"] == "finished"
    (logged,) = back["history"]
    assert logged["leaderboard/samples._type"] == "image-file"
    logged_table = json.loads((run_dir / "files" / logged["leaderboard/table.path"]).read_text())
    assert [row[0] for row in logged_table["data"]] == ["vae", "dcgan", "diffusion"]
    assert logged_table["data"][1][2] == rows["dcgan"]["FID"]
    assert logged_table["data"][2][2] is None  # Numbers stay numbers; notes say why not.

    # Re-evaluated at the others' image count, the VAE's row takes those figures.
    eval_flags = ["--eval_samples=80", "--progress=false"]
    assert evaluate.main([f"--workdir={runs / 'vae'}", *eval_flags]) == 0
    assert leaderboard.main([*argv, "--wandb_mode=disabled"]) == 0
    again = json.loads((runs / "vae" / "evaluation.json").read_text())
    assert _rows(out)["vae"]["FID"] == again["eval/fid"] and again["eval/samples"] == 80
    assert "FID" not in _rows(out)["vae"]["notes"]


@pytest.mark.slow
def test_train_missing_trains_a_family_at_its_defaults_once(tmp_path, wandb_home, feature_net):
    small = write_idx_dataset(tmp_path / "data", n_train=64, n_test=40)
    runs = tmp_path / "runs"
    argv = [
        f"--runs={runs}",
        "--families=autoencoder",
        "--train_missing",
        f"--data_dir={small}",
        "--data_source=idx",
        f"--feature_net={feature_net}",
        "--wandb_mode=offline",
        "--progress=false",
        "--speed_images=8",
    ]
    assert leaderboard.main(argv) == 0
    summary = json.loads((runs / "autoencoder" / "summary.json").read_text())
    assert summary["epoch"] == 20 and summary["config"]["latent_dim"] == 2  # Its defaults.
    assert summary["eval/samples"] == 40  # The whole (small) test split.
    row = _rows(runs / "leaderboard")["autoencoder"]
    assert row["FID"] == summary["eval/fid"] and "not a density model" in row["notes"]
    # Finished, it is read, not trained again.
    assert leaderboard.main(argv) == 0
    assert json.loads((runs / "autoencoder" / "summary.json").read_text()) == summary


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--families=vae,gan"], "--families=vae,gan: gan unknown; choose from autoencoder, vae"),
        (["--families=classifier"], "classifier unknown"),  # Not a generator.
        (["--shown=0"], "--shown=0: must be at least 1"),
    ],
)
def test_bad_flags_are_refused_before_anything_runs(tmp_path, capsys, flags, message):
    assert leaderboard.main([f"--runs={tmp_path}", *flags]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_runs_folder_names_the_fix(tmp_path, capsys):
    assert leaderboard.main([f"--runs={tmp_path / 'nothing'}"]) == 2
    assert "no such folder; train the families first" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
