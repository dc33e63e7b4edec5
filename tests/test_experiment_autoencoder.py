"""The autoencoder experiment end to end on real Fashion-MNIST, read back from its W&B files."""

import json
import math
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import autoencoder, registry
from experiments import evaluate as evaluate_main
from genjax import data, wandb_logging
from genjax.config import AutoencoderConfig as Config
from genjax.steps import autoencoder as steps
from tests.conftest import write_idx_dataset

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, **overrides):
    workdir = tmp_path / "run"
    flags = dict(
        workdir=workdir,
        wandb_mode="offline",
        epochs=2,
        steps_per_epoch=40,
        steps_per_dispatch=15,
        latent_points=600,
        eval_samples=0,  # No FID unless asked: the default network is the repo's runs/.
        progress="false",
    )
    argv = [f"--{k}={v}" for k, v in {**flags, **overrides}.items()]
    assert autoencoder.main(argv) == 0
    return workdir


@pytest.mark.slow
def test_end_to_end_run_reads_back_from_wandb(wandb_home, tmp_path, capsys, feature_net):
    workdir = _run(tmp_path, eval_samples=500, feature_net=feature_net)
    out = capsys.readouterr().out
    summary = json.loads((workdir / "summary.json").read_text())
    run_dir = Path(summary["wandb_run"]["dir"])
    # The final message says where the run, the images and summary.json are.
    assert str(run_dir) in out and str(workdir / "summary.json") in out
    assert f"wandb sync {run_dir}" in out and str(workdir / "images") in out
    assert run_dir.parent == workdir / "wandb"

    back = wandb_logging.read_run(run_dir)
    assert back["state"] == "finished"
    config = back["config"]
    assert config["latent_dim"] == 2 and config["batch_size"] == 32
    assert config["learning_rate"] == 1e-3 and config["latent_activation"] == "leaky_relu"
    assert "fashion-mnist" in config["data_source"]

    history = back["history"]
    assert [h["_step"] for h in history] == [1, 2]  # One W&B step per epoch.
    for h in history:
        for key in ("train/loss", "val/loss"):
            assert math.isfinite(h[key]) and 0 < h[key] < 0.2, (key, h[key])
        assert h["reconstructions._type"] == "image-file"
        assert h["latent_space._type"] == "image-file"
        assert (run_dir / "files" / h["reconstructions.path"]).is_file()
    # The native scatter every scatter_table_interval (5) epochs and at the last epoch.
    assert "latent_space_scatter_table._type" not in history[0]
    assert history[1]["latent_space_scatter_table._type"] == "table-file"
    assert history[1]["latent_space_scatter_table.nrows"] == 600
    assert history[1]["latent_space_scatter_table.ncols"] == 3
    assert history[1]["train/loss"] < history[0]["train/loss"]
    # The native scatter has a label column with class names.
    table_path = run_dir / "files" / history[1]["latent_space_scatter_table.path"]
    table = json.loads(table_path.read_text())
    assert table["columns"] == ["x", "y", "label"]
    assert {row[2] for row in table["data"]} >= {"Trouser", "Bag", "Ankle boot"}
    assert back["charts"]["latent_space_scatter"]["stringSettings"]["title"] == "latent space"
    # Its points are the codes of the first 600 test images under the final state (kept
    # from the validation pass, not encoded again), in the test split's order.
    _, config, state = registry.restore(workdir)
    dataset = autoencoder.load_data(config)
    shown, labels = dataset.fixed_test_examples(600)
    codes = steps.encode(state, data.scale(shown, steps.PIXEL_RANGE))
    np.testing.assert_allclose([r[:2] for r in table["data"]], codes, rtol=1e-4, atol=1e-5)
    names = dataset.info.class_names
    assert [r[2] for r in table["data"]] == [names[i] for i in labels]
    # 32 fixed test images and their reconstructions: 8 columns, 4 pairs of rows.
    assert history[1]["reconstructions.width"] == 8 * 30 + 2
    assert history[1]["reconstructions.height"] == 8 * 30 + 2

    assert summary["val/loss"] == history[1]["val/loss"]
    assert summary["config"]["epochs"] == 2 and summary["step"] == 80
    assert back["summary"]["val/loss"] == summary["val/loss"]
    # The test reconstruction error, at the end only: the whole test split, per pixel.
    assert "eval/recon_mse" not in history[0]
    assert history[1]["eval/recon_mse"] == pytest.approx(summary["val/loss"], rel=1e-6)
    assert summary["eval/recon_psnr"] == history[1]["eval/recon_psnr"]
    assert 10 < summary["eval/recon_psnr"] < 40  # dB: -10 log10(per-image MSE), averaged.
    # As a generator (a Gaussian over its training codes), on the VAE's scale, beside the
    # feature network's test accuracy; its digest in the summary (rows take numbers).
    net = json.loads((feature_net / "summary.json").read_text())
    assert summary["eval/samples"] == 500
    assert summary["eval/feature_net_accuracy"] == net["val/accuracy"]
    assert summary["eval/feature_net_sha256"] == net["state_sha256"]
    assert back["summary"]["eval/feature_net_sha256"] == net["state_sha256"]
    assert re.search(rf"eval/feature_net_sha256 +{net['state_sha256']}\n", out)  # Final table.
    assert 0 < summary["eval/fid"] and 0 <= summary["eval/precision"] <= 1
    for key in ("eval/fid", "eval/precision", "eval/recall", "eval/feature_net_accuracy"):
        assert history[1][key] == summary[key] and key not in history[0], key
    assert "eval/feature_net_sha256" not in history[1]
    # The decodings of that Gaussian's draws, at the end only: 32 in 4 rows of 8.
    assert "generated_images._type" not in history[0]
    assert history[1]["generated_images._type"] == "image-file"
    assert history[1]["generated_images.width"] == 8 * 30 + 2
    assert history[1]["generated_images.height"] == 4 * 30 + 2
    # experiments.evaluate computes the same figures from the checkpoint.
    assert evaluate_main.main([f"--workdir={workdir}", "--progress=false"]) == 0
    evaluated = json.loads((workdir / "evaluation.json").read_text())
    for key in ("eval/recon_mse", "eval/recon_psnr", "eval/fid", "eval/precision", "eval/recall"):
        assert evaluated[key] == pytest.approx(summary[key], rel=1e-5), key
    assert evaluated["eval/feature_net_sha256"] == net["state_sha256"]
    printed = capsys.readouterr().out
    assert re.search(rf"eval/feature_net_sha256 +{net['state_sha256']}\n", printed)
    quiet = tmp_path / "quiet.json"
    assert evaluate_main.main([f"--workdir={workdir}", "--eval_samples=0", f"--out={quiet}"]) == 0
    assert "eval/fid" not in json.loads(quiet.read_text())
    nowhere = tmp_path / "missing" / "figures.json"
    assert evaluate_main.main([f"--workdir={workdir}", f"--out={nowhere}"]) == 2
    assert f"{nowhere.parent} is no writable folder" in capsys.readouterr().err
    for name in ("reconstructions.png", "latent_space.png", "generated_images.png"):
        assert (workdir / "images" / name).is_file()
    # What logging cost this run: the loop's and the W&B thread's seconds, over its wall time.
    assert summary["time/wall_s"] > 0 and 0 < summary["time/logging_share"] < 1
    assert back["summary"]["time/logging_share"] == summary["time/logging_share"]
    assert sorted(k for k in summary if k.startswith("time/")) == [
        "time/logging_share",
        "time/train_s",
        "time/wall_s",
    ]
    assert summary["time/train_s"] == summary["time/wall_s"]  # One process, no resume.


@pytest.mark.slow
def test_larger_latent_is_projected_with_pca(wandb_home, tmp_path):
    workdir = _run(
        tmp_path, latent_dim=10, epochs=1, latent_activation="relu", scatter_table_points=250
    )
    summary = json.loads((workdir / "summary.json").read_text())
    back = wandb_logging.read_run(summary["wandb_run"]["dir"])
    # The native scatter holds the first 250 of the 600 plotted points (the flag reaches it).
    assert back["history"][0]["latent_space_scatter_table.nrows"] == 250
    assert back["config"]["latent_dim"] == 10 and back["config"]["latent_activation"] == "relu"
    chart = back["charts"]["latent_space_scatter"]
    assert chart["fieldSettings"] == {"x": "x", "y": "y"}
    assert "PCA of 10-D codes" in chart["stringSettings"]["title"]
    assert back["history"][0]["latent_space._type"] == "image-file"


def test_the_code_gaussian_has_the_training_codes_mean_and_covariance(tmp_path):
    """Fitted to the whole training split's codes; a code that never varies (a dead ReLU
    unit) makes the covariance singular, which the fit takes (a Cholesky factor would not)."""
    small = write_idx_dataset(tmp_path / "data", n_train=300, n_test=40)
    config = Config(
        data_dir=str(small),
        data_source="idx",
        latent_dim=3,
        hidden_dim=16,
        latent_activation="relu",
        eval_batch_size=128,  # Three batches, the last one padded.
    )
    dataset = autoencoder.load_data(config)
    state = autoencoder.create_state(config, dataset.info, jax.random.key(0))
    params = jax.tree.map(lambda x: x, state.params)  # New dicts, the same arrays.
    params["encoder_latent"]["bias"] = params["encoder_latent"]["bias"].at[0].set(-1e3)
    state = state.replace(params=params)
    codes = np.asarray(
        steps.encode(state, data.scale(dataset.train.images, steps.PIXEL_RANGE)), np.float64
    )
    assert np.all(codes[:, 0] == 0)
    mean, scale = autoencoder.code_gaussian(config, state, dataset)
    np.testing.assert_allclose(mean, codes.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scale @ scale.T, np.cov(codes, rowvar=False), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scale[0], 0.0, atol=1e-6)
    key = jax.random.key(3)
    drawn = steps.generate(state, mean, scale, key, 5)
    z = mean + jax.random.normal(key, (5, 3)) @ scale.T
    expected = state.apply_fn({"params": state.params}, z, method="decode")
    np.testing.assert_allclose(drawn, expected, rtol=1e-6, atol=1e-6)
