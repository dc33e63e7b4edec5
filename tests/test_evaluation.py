"""FID, improved precision/recall and the classifier whose features they use."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from experiments import classifier as classifier_experiment
from genjax import data
from genjax.evaluation import fid as fid_lib
from genjax.evaluation.precision_recall import precision_recall
from genjax.models.classifier import FEATURE_DIM, Classifier
from genjax.steps import classifier as steps
from tests.conftest import write_idx_dataset


def _scipy_fid(a, b):
    """The textbook computation (scipy's general sqrtm), for comparison."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_fid_agrees_with_a_direct_scipy_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(1.0, 2.0, size=(1500, 16)) @ rng.normal(size=(16, 16))
    assert fid_lib.fid(a, b) == pytest.approx(_scipy_fid(a, b), rel=1e-6)


def test_fid_of_identical_sets_is_zero_and_a_mean_shift_adds_its_square():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1000, 32))
    assert fid_lib.fid(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.full(32, 0.5)
    assert fid_lib.fid(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-8)


# scipy's sqrtm warns about the singular product it is given: the reason fid.py avoids it.
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_fid_is_finite_when_a_covariance_is_singular():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(20, 64))  # Fewer samples than dimensions: rank 19.
    a[:, 0] = 0.0  # And a dead feature.
    b = rng.normal(size=(500, 64))
    value = fid_lib.fid(a, b)
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(_scipy_fid(a, b), rel=1e-3)


def test_precision_and_recall_of_a_set_against_itself_are_one():
    x = np.random.default_rng(3).normal(size=(700, 8))
    assert precision_recall(x, x, k=3, block=256) == (1.0, 1.0)


def test_precision_and_recall_see_missing_modes_and_outliers():
    rng = np.random.default_rng(4)
    real = np.concatenate([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    one_mode = rng.normal(-5, 1, (1000, 2))  # Covers half of the real data.
    precision, recall = precision_recall(real, one_mode, k=3, block=300)
    assert precision > 0.9 and 0.4 < recall < 0.6
    far = rng.normal(50, 1, (1000, 2))
    assert precision_recall(real, far, k=3) == (0.0, 0.0)


def test_classifier_shapes_and_feature_space():
    model = Classifier()
    params = steps.init_params(model, jax.random.key(0))
    x = jnp.zeros((3, 28, 28, 1))
    assert model.apply({"params": params}, x).shape == (3, 10)
    assert model.apply({"params": params}, x, method="features").shape == (3, FEATURE_DIM)
    count = sum(p.size for p in jax.tree.leaves(params))
    assert count == (9 * 32 + 32) + (9 * 32 * 64 + 64) + (7 * 7 * 64 * 128 + 128) + 1290


@pytest.mark.slow
def test_a_trained_classifier_gives_small_fid_to_real_data_and_large_to_noise(tmp_path, wandb_home):
    small = write_idx_dataset(tmp_path / "data", n_train=2560, n_test=500)
    workdir = tmp_path / "classifier"
    flags = [
        f"--data_dir={small}",
        "--data_source=idx",
        f"--workdir={workdir}",
        "--wandb_mode=disabled",
        "--epochs=2",
        "--batch_size=64",
        "--latent_points=200",
        "--progress=false",
    ]
    assert classifier_experiment.main(flags) == 0
    config, state, dataset = classifier_experiment.EXPERIMENT.restore(workdir)
    assert config.epochs == 2 and int(state.step) == 2 * 2560 // 64

    def features(x):
        return np.asarray(steps.features(state, jnp.asarray(data.scale(x, (0.0, 1.0)))))

    test = features(dataset.test.images)
    accuracy = np.mean(
        np.argmax(
            state.apply_fn({"params": state.params}, data.scale(dataset.test.images, (0, 1))), -1
        )
        == dataset.test.labels
    )
    assert accuracy > 0.6  # Learned something in 80 steps (chance: 0.1).
    train = features(dataset.train.images[:500])
    noise = features(np.random.default_rng(0).integers(0, 256, (500, 28, 28, 1), np.uint8))
    fid_train, fid_noise = fid_lib.fid(test, train), fid_lib.fid(test, noise)
    assert fid_noise > 20 * fid_train
    precision, recall = precision_recall(test, train)
    assert precision > 0.5 and recall > 0.5
    noise_precision, noise_recall = precision_recall(test, noise)
    assert noise_precision < precision - 0.3 and noise_recall < 0.05
