"""FID, improved precision/recall and the classifier whose features they use."""

from __future__ import annotations

import dataclasses
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from experiments import classifier as classifier_experiment
from experiments import dcgan as dcgan_experiment
from experiments import evaluate as evaluate_main
from experiments import registry
from genjax import data, images
from genjax.checkpoint import tree_digest
from genjax.config import ConfigError, DCGANConfig
from genjax.evaluation import feature_net, sample_quality
from genjax.evaluation import fid as fid_lib
from genjax.evaluation.feature_net import SampleQuality
from genjax.evaluation.precision_recall import precision_recall
from genjax.models.classifier import FEATURE_DIM, Classifier
from genjax.steps import classifier as steps
from genjax.steps import fused
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


def _plain_logits(params, x):
    """The classifier through XLA's convolutions, as nn.Conv computes it by default."""
    dims = ("NHWC", "HWIO", "NHWC")
    for name in ("conv1", "conv2"):
        kernel, bias = params[name]["kernel"], params[name]["bias"]
        x = jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=dims)
        x = nn.relu(x + bias)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return x @ params["logits"]["kernel"] + params["logits"]["bias"]


def test_the_classifier_trains_without_xla_convolutions_on_cpu():
    """Its convolutions are matrix products on CPU (XLA:CPU's convolution gradients made the
    feature network's training minutes long), and the same function as XLA's convolutions."""
    assert jax.default_backend() == "cpu"
    state = steps.create_state(Classifier(), 1e-3, (28, 28, 1), jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(16, 28, 28, 1)), jnp.float32)
    batch = {"image": x, "label": jnp.arange(16) % 10}
    step = jax.make_jaxpr(steps.train_step)(state, batch, jax.random.key(1))
    assert "conv_general_dilated" not in str(step)
    np.testing.assert_allclose(
        state.apply_fn({"params": state.params}, x),
        _plain_logits(state.params, x),
        rtol=1e-5,
        atol=1e-5,
    )


def test_the_validation_pass_keeps_the_features_it_plots():
    """The feature-space picture's points come from the validation pass: the features
    (not the logits), and the metrics are those of the plain forward pass."""
    state = steps.create_state(Classifier(), 1e-3, (28, 28, 1), jax.random.key(0))
    images = (np.arange(30 * 784) % 253).astype(np.uint8).reshape(30, 28, 28, 1)
    labels = jnp.arange(30) % 10
    out = fused.evaluate(
        state,
        jnp.asarray(images),
        labels,
        jax.random.key(1),
        eval_step=steps.eval_step,
        batch_size=8,
        pixel_range=steps.PIXEL_RANGE,
        outputs=steps.EVAL_OUTPUTS,
        keep=12,
    )
    x = data.scale(images, steps.PIXEL_RANGE)
    np.testing.assert_allclose(out["features"], steps.features(state, x[:12]), rtol=1e-5, atol=1e-5)
    logits = state.apply_fn({"params": state.params}, x)
    accuracy = np.mean(np.argmax(logits, -1) == np.asarray(labels))
    assert float(out["accuracy"]) == pytest.approx(accuracy)


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
    experiment, config, state = registry.restore(workdir)
    dataset = experiment.load_data(config)
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


def test_quantize_rounds_on_the_device_as_the_host_does():
    rng = np.random.default_rng(5)
    for pixel_range in ((0.0, 1.0), (-1.0, 1.0)):
        lo, hi = pixel_range
        x = rng.uniform(lo - 0.1, hi + 0.1, (64, 28, 28, 1)).astype(np.float32)
        x[0, 0, 0, 0] = lo + (hi - lo) * 0.5 / 255  # A tie: both round half to even.
        got = np.asarray(sample_quality.quantize(jnp.asarray(x), pixel_range))
        np.testing.assert_array_equal(got, images.to_uint8(x, pixel_range))


def test_generated_images_take_the_same_path_as_real_ones():
    """A 'generator' that returns the test images scores FID 0 and precision = recall = 1."""
    state = steps.create_state(Classifier(), 1e-3, (28, 28, 1), jax.random.key(0))
    feature_fn = functools.partial(steps.features, state)
    real = np.random.default_rng(6).integers(0, 256, (130, 28, 28, 1), np.uint8)
    real_features = sample_quality.features_of_uint8(feature_fn, real, batch_size=50)
    assert real_features.shape == (130, FEATURE_DIM)

    def sample(i):  # Batches of 50 in the DCGAN's [-1, 1]; the last one is cut to fit.
        return data.scale(jnp.asarray(real[i * 50 : (i + 1) * 50]), (-1.0, 1.0))

    generated = sample_quality.features_of_samples(feature_fn, sample, 130, 50, (-1.0, 1.0))
    np.testing.assert_array_equal(generated, real_features)
    scores = sample_quality.scores(sample_quality.Reference.of(real_features), generated)
    assert scores["eval/fid"] == pytest.approx(0.0, abs=1e-6)
    assert scores["eval/precision"] == scores["eval/recall"] == 1.0


@pytest.mark.slow
def test_the_feature_network_is_trained_once_when_missing_then_reused(tmp_path, capsys):
    small = write_idx_dataset(tmp_path / "data", n_train=640, n_test=100)
    net_dir = tmp_path / "net"
    config = DCGANConfig(
        data_dir=str(small),
        data_source="idx",
        feature_net=str(net_dir),
        wandb_mode="disabled",
        progress=False,
    )
    net = feature_net.load(config)
    assert "training it once (5 epochs" in capsys.readouterr().err
    assert int(net.state.step) == 5 * (640 // 128)  # The default classifier settings.
    summary = json.loads((net_dir / "summary.json").read_text())
    assert net.accuracy == summary["val/accuracy"] > 0.3
    assert "eval/fid_train_test" in summary  # The floor of eval/fid in this feature space.

    feature_net._LOADED.clear()  # As a new process would find it.
    again = feature_net.load(config)
    assert "training it once" not in capsys.readouterr().err
    assert tree_digest(again.state) == tree_digest(net.state)
    assert json.loads((net_dir / "summary.json").read_text()) == summary

    feature_net._LOADED.clear()
    with pytest.raises(ConfigError, match="not a feature network of 'mnist'"):
        feature_net.load(dataclasses.replace(config, dataset="mnist"))


@pytest.mark.slow
def test_the_feature_network_trains_to_the_same_digest_every_time(tmp_path, feature_net):
    """A fixed ruler: the same settings and data give the same parameters, bit for bit, so
    eval/feature_net_sha256 names the network and not the machine's mood."""
    small = write_idx_dataset(tmp_path / "data", n_train=1000, n_test=200)  # The fixture's.
    again = tmp_path / "net"
    flags = [
        f"--data_dir={small}",
        "--data_source=idx",
        f"--workdir={again}",
        "--epochs=1",
        "--batch_size=50",
        "--latent_points=100",
        "--wandb_mode=disabled",
        "--progress=false",
    ]
    assert classifier_experiment.main(flags) == 0
    first, second = (json.loads((d / "summary.json").read_text()) for d in (feature_net, again))
    assert second["state_sha256"] == first["state_sha256"]
    assert second["val/accuracy"] == first["val/accuracy"]


def test_too_few_eval_samples_are_refused_before_training(tmp_path, capsys):
    small = write_idx_dataset(tmp_path / "data", n_train=64, n_test=40)
    workdir = tmp_path / "gan"
    common = [f"--data_dir={small}", "--data_source=idx", f"--workdir={workdir}"]
    assert dcgan_experiment.main([*common, "--eval_samples=5"]) == 2
    assert "--eval_samples=5: use 0" in capsys.readouterr().err
    assert not workdir.exists()  # Refused before anything was made.


def test_more_eval_samples_than_test_images_take_the_whole_split(tmp_path, capsys, feature_net):
    """N beyond the test split is the split's size on both sides, said once on stderr; the
    figures carry the feature network's test accuracy and its digest."""
    small = write_idx_dataset(tmp_path / "data", n_train=64, n_test=40)
    config = DCGANConfig(
        data_dir=str(small), data_source="idx", feature_net=str(feature_net), eval_samples=41
    )
    dataset = data.load_dataset(config.dataset, config.data_dir, config.data_source)
    quality = SampleQuality(config, dataset)
    quality.prepare()
    err = capsys.readouterr().err
    assert "--eval_samples=41: the test split holds 40 images" in err
    assert "compare 40 generated images with all of them" in err
    real = data.scale(jnp.asarray(dataset.test.images), (-1.0, 1.0))
    figures = quality(lambda i: real, (-1.0, 1.0))  # The test images as a "generator".
    assert "--eval_samples" not in capsys.readouterr().err  # Said once.
    assert figures["eval/samples"] == 40
    assert figures["eval/fid"] == pytest.approx(0.0, abs=1e-4)
    assert figures["eval/precision"] == figures["eval/recall"] == 1.0
    summary = json.loads((feature_net / "summary.json").read_text())
    assert figures["eval/feature_net_accuracy"] == summary["val/accuracy"]
    # Numbers for W&B history rows, and the network's digest for the summary.
    digest = figures.pop("eval/feature_net_sha256")
    assert all(isinstance(v, float | int) for v in figures.values())
    assert digest == summary["state_sha256"] == tree_digest(quality.net.state)


def test_evaluating_what_is_not_a_run_is_a_clear_error(tmp_path, capsys, feature_net):
    assert evaluate_main.main([f"--workdir={tmp_path}"]) == 2
    assert "holds no checkpoints/" in capsys.readouterr().err
    # The folder is the first thing wrong, whatever else is.
    assert evaluate_main.main([f"--workdir={tmp_path}", "--out=/no/such/dir/x.json"]) == 2
    assert "holds no checkpoints/" in capsys.readouterr().err
    assert evaluate_main.main([]) == 2
    assert "--workdir is required" in capsys.readouterr().err
    # A feature network's own figures: real training images scored as a generator would be.
    out = tmp_path / "floor.json"
    assert evaluate_main.main([f"--workdir={feature_net}", f"--out={out}"]) == 0
    floor = json.loads(out.read_text())
    assert floor["experiment"] == "classifier"
    assert evaluate_main.main([f"--workdir={feature_net}", "--eval_samples=100"]) == 2
    assert "--eval_samples: classifier runs have no samples" in capsys.readouterr().err
    assert 0 <= floor["eval/fid_train_test"] < 50 and floor["eval/recall_train_test"] > 0.3


def test_the_feature_scatter_names_features_not_latent_codes():
    from genjax.config import ClassifierConfig

    labels = np.arange(40) % 10
    features = np.random.default_rng(0).normal(size=(40, FEATURE_DIM)).astype(np.float32)
    shown = feature_net.feature_pictures(ClassifierConfig(), tuple("abcdefghij"), labels, features)
    scatter = shown["scatters"]["feature_space_scatter"]
    assert scatter.title.startswith(f"feature space, PCA of {FEATURE_DIM}-D features (")


def test_class_accuracy_of_a_conditional_generator():
    """A generator that draws the class it is asked for scores 1; one that ignores the label
    scores 1/10, and 0 for its worst class. Each class is asked for equally often."""
    levels = 20.0  # Class c is drawn as a flat image of grey level 20 c (exact in uint8).

    def net(images):  # Reads the class back from the grey level.
        c = jnp.round(jnp.mean(images, axis=(1, 2, 3)) * 255 / levels).astype(jnp.int32)
        return images.reshape(images.shape[0], -1)[:, :4], jax.nn.one_hot(c, 10)

    def obedient(i, labels):
        return jnp.broadcast_to((labels * levels / 255)[:, None, None, None], (50, 28, 28, 1))

    def stubborn(i, labels):
        return obedient(i, jnp.zeros_like(labels))

    feats, wanted, predicted = sample_quality.conditional_features(
        net, obedient, 130, 50, 10, (0.0, 1.0)
    )
    assert feats.shape == (130, 4) and np.bincount(wanted).tolist() == [13] * 10
    np.testing.assert_array_equal(predicted, wanted)
    assert sample_quality.class_accuracy(wanted, predicted, 10) == {
        "eval/class_accuracy": 1.0,
        "eval/class_accuracy_worst": 1.0,
    }
    _, wanted, predicted = sample_quality.conditional_features(net, stubborn, 130, 50, 10, (0, 1))
    scores = sample_quality.class_accuracy(wanted, predicted, 10)
    assert scores == {"eval/class_accuracy": 0.1, "eval/class_accuracy_worst": 0.0}
