"""The feature network of genjax's FID, and the sample-quality figures in its feature space.

A small CNN classifier of the training split (genjax/models/classifier.py): its penultimate
layer is where eval/fid, eval/precision and eval/recall compare generated images with test
images. It lives in runs/feature_nets/<dataset> (or --feature_net) and is trained there the
first time an evaluation needs it; `python -m experiments.classifier` trains it on purpose.
A changed network changes every FID: each figure is reported beside the network's test
accuracy (eval/feature_net_accuracy) and its parameters' digest (eval/feature_net_sha256).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from genjax import data, images, run
from genjax.checkpoint import Checkpoints, tree_digest
from genjax.config import ClassifierConfig as Config
from genjax.config import ConfigError
from genjax.evaluation import sample_quality
from genjax.loops import epochs
from genjax.models.classifier import Classifier
from genjax.steps import classifier as steps

NAME = "classifier"
IDENTITY = ()  # Its shape is fixed; the shared settings define the run.
VECTOR_FIELDS = ("seed", "learning_rate")
# Images per feature-network (and generator) call: a fixed size, so that every evaluation
# compiles once and is computed the same way.
EVAL_BATCH = 500


def default_workdir(dataset: str) -> str:
    """Where the feature network of `dataset` is trained and looked for."""
    return os.path.join("runs", "feature_nets", dataset)


def load_data(config: Config) -> data.Dataset:
    return data.load_dataset(config.dataset, config.data_dir, config.data_source)


def create_state(config: Config, info: data.DatasetInfo, key: jax.Array):
    """The classifier and its optimizer, freshly initialised."""
    model = Classifier(num_classes=info.num_classes)
    return steps.create_state(model, config.learning_rate, info.image_shape, key)


def train(configs: list[Config], early_stops=None) -> list[dict]:
    """Trains (or resumes) a feature network per config (workdir "" = its default one)."""
    configs = [c if c.workdir else _with_default_workdir(c) for c in configs]
    config = configs[0]
    dataset = load_data(config)
    states = [create_state(c, dataset.info, run.keys(c.seed).init) for c in configs]
    total = epochs.total_steps(config, dataset)
    _, labels = dataset.fixed_test_examples(config.latent_points)

    def pictures(config, state, epoch, outputs):
        # Features of the first latent_points test images, from the validation pass.
        return feature_pictures(config, dataset.info.class_names, labels, outputs["features"])

    with run.open(NAME, configs, states, IDENTITY, dataset, total, early_stops) as runs:
        return epochs.train(
            runs,
            dataset,
            steps,
            pictures=pictures,
            keep=len(labels),
            evaluate=lambda config, state: evaluate(config, state, dataset),
        )


def feature_pictures(config: Config, class_names, labels, features) -> dict:
    """The feature space of test images, coloured by class: a PNG and a native W&B scatter."""
    png, scatter = images.latent_plots(
        features,
        labels,
        class_names,
        config.scatter_table_points,
        space="feature space",
        vectors="features",
    )
    return {"images": {"feature_space": png}, "scatters": {"feature_space_scatter": scatter}}


def evaluate(config: Config, state, dataset: data.Dataset) -> dict[str, float]:
    """The floor of eval/fid in this feature space: real training images against the test
    images (as many of each, up to 10,000), as a generator would be scored."""
    n = min(len(dataset.test), len(dataset.train), 10000)
    features = functools.partial(steps.features, state)
    test = sample_quality.features_of_uint8(features, dataset.test.images[:n], EVAL_BATCH)
    train_ = sample_quality.features_of_uint8(features, dataset.train.images[:n], EVAL_BATCH)
    scores = sample_quality.scores(sample_quality.Reference.of(test), train_)
    return {f"{k}_train_test": v for k, v in scores.items()}


def _with_default_workdir(config: Config) -> Config:
    return dataclasses.replace(config, workdir=default_workdir(config.dataset))


@dataclasses.dataclass(frozen=True)
class FeatureNet:
    """A trained classifier; its penultimate layer is the FID feature space."""

    workdir: Path
    state: Any
    accuracy: float  # Its test accuracy: val/accuracy of its summary.json.
    dataset: str  # What it was trained on: it measures only images of that dataset.
    sha256: str  # Its parameters' digest: state_sha256 of its summary.json.

    def features(self, images: jax.Array) -> jax.Array:
        """Float images [B, 28, 28, C] in [0, 1] -> features [B, 128]."""
        return steps.features(self.state, images)

    def features_and_logits(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Float images [B, 28, 28, C] in [0, 1] -> (features [B, 128], logits [B, classes])."""
        return steps.features_and_logits(self.state, images)


# Per process, by workdir: a sweep's trials and an evaluation's reruns load it once.
_LOADED: dict[Path, FeatureNet] = {}


def _read(workdir: Path) -> tuple[dict | None, dict | None]:
    """(latest checkpoint record, summary.json) of a classifier workdir, each None if absent."""
    if not (workdir / "checkpoints").is_dir():
        return None, None
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
        record = checkpoints.newest_record()
    finally:
        checkpoints.close()
    summary_path = workdir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return record, summary


def _check_identity(workdir: Path, experiment: str | None, trained_on: str | None, wanted: str):
    if experiment != NAME or trained_on != wanted:
        raise ConfigError(
            f"--feature_net={workdir} holds a {experiment!r} run on {trained_on!r}, not a "
            f"feature network of {wanted!r}; point --feature_net at one (or at an empty "
            "folder, to train one there)"
        )


def load(config) -> FeatureNet:
    """The FID feature network of config.dataset, in --feature_net (default
    runs/feature_nets/<dataset>). Trained there first when missing, or finished when a
    training was interrupted; a finished one is used as it is, whatever its settings.
    """
    workdir = Path(config.feature_net or default_workdir(config.dataset)).resolve()
    if workdir in _LOADED:
        _check_identity(workdir, NAME, _LOADED[workdir].dataset, config.dataset)
        return _LOADED[workdir]
    record, summary = _read(workdir)
    if record is not None:
        trained_on = record.get("config", {}).get("dataset")
        _check_identity(workdir, record.get("experiment"), trained_on, config.dataset)
    # summary.json is written just before the final checkpoint: finished means both.
    if summary is None or record is None or record.get("step") != summary.get("step"):
        if record is not None:  # Interrupted: finish it with the settings it started with.
            known = {f.name for f in dataclasses.fields(Config)}
            saved = {k: v for k, v in record["config"].items() if k in known}
            net_config = Config(**{**saved, "workdir": str(workdir), "progress": config.progress})
        else:
            net_config = Config(
                dataset=config.dataset,
                data_dir=config.data_dir,
                data_source=config.data_source,
                workdir=str(workdir),
                wandb_mode=config.wandb_mode,
                wandb_project=config.wandb_project,
                wandb_entity=config.wandb_entity,
                wandb_init_timeout=config.wandb_init_timeout,
                progress=config.progress,
            )
        print(
            f"{workdir} holds no finished feature network for eval/fid: training it once "
            f"({net_config.epochs} epochs of experiments.classifier; later runs reuse it)",
            file=sys.stderr,
        )
        (summary,) = train([net_config])
        if "val/accuracy" not in summary:  # Finished, but its summary.json was removed.
            raise ConfigError(
                f"--feature_net={workdir} holds a finished network without its summary.json; "
                "delete that folder to train the feature network again"
            )
    _, net_config, _ = run.read_finished(workdir, {NAME: Config})
    info = data.dataset_info(net_config.dataset)
    state = run.restore_finished(workdir, create_state(net_config, info, jax.random.key(0)))
    net = FeatureNet(
        workdir,
        state,
        float(summary["val/accuracy"]),
        net_config.dataset,
        summary.get("state_sha256") or tree_digest(state),
    )
    print(
        f"eval/fid features: {workdir} (test accuracy {net.accuracy:.2%}, "
        f"sha256 {net.sha256[:12]})",
        file=sys.stderr,
    )
    _LOADED[workdir] = net
    return net


class Sampler(NamedTuple):
    """A trained generator, as evaluations and the leaderboard draw from it: draw(key, labels)
    gives one image per entry of labels [N] (the classes a conditional generator is asked
    for; the others take only their number), in pixel_range."""

    draw: Callable[[jax.Array, jax.Array], jax.Array]
    pixel_range: tuple[float, float]
    conditional: bool = False

    def images(self, key: jax.Array, num: int, num_classes: int) -> np.ndarray:
        """num uint8 images drawn with key, every class in turn (conditional generators)."""
        labels = sample_quality.requested_labels(0, num, num_classes)
        return images.to_uint8(jax.device_get(self.draw(key, labels)), self.pixel_range)


class SampleQuality:
    """eval/fid, eval/precision, eval/recall of a generator against the test split.

    The first call loads (or trains) the feature network and the features of the first
    eval_samples test images (unprocessed: a binarized dataset's raw_test), once per process;
    each call scores as many images drawn batch by batch from `sample(i)`. An eval_samples
    beyond the test split takes the whole split, on both sides (said on stderr).
    """

    # Per process, by feature network and test images: a sweep's trials share one.
    _references: dict[tuple, sample_quality.Reference] = {}

    def __init__(self, config, dataset: data.Dataset):
        self.config = config
        self.num = min(config.eval_samples, len(dataset.test))
        self.dataset = dataset
        self.net: FeatureNet | None = None
        self.reference: sample_quality.Reference | None = None

    def prepare(self) -> None:
        if self.reference is not None:
            return
        if self.num < self.config.eval_samples:  # Said here: a refused run says only why.
            print(
                f"--eval_samples={self.config.eval_samples}: the test split holds {self.num} "
                f"images; eval/fid, eval/precision and eval/recall compare {self.num} "
                "generated images with all of them",
                file=sys.stderr,
            )
        self.net = load(self.config)
        real = np.ascontiguousarray(self.dataset.unprocessed_test.images[: self.num])
        key = (self.net.workdir, hashlib.sha256(real.data).hexdigest())
        if key not in self._references:
            feats = sample_quality.features_of_uint8(self.net.features, real, EVAL_BATCH)
            self._references[key] = sample_quality.Reference.of(feats)
        self.reference = self._references[key]

    def __call__(
        self, sample: sample_quality.SampleFn, pixel_range: Sequence[float]
    ) -> dict[str, float]:
        self.prepare()
        generated = sample_quality.features_of_samples(
            self.net.features, sample, self.num, EVAL_BATCH, pixel_range
        )
        return self._figures(generated)

    def of(self, sampler: Sampler, key: jax.Array, batch: int = EVAL_BATCH) -> dict[str, float]:
        """The figures of sampler's images, batch i drawn with fold_in(key, i) (the same
        images at every evaluation point: the curve shows the model, not the draw)."""
        classes = self.dataset.info.num_classes

        def sample(i, labels=None):
            if labels is None:
                labels = sample_quality.requested_labels(i, batch, classes)
            return sampler.draw(jax.random.fold_in(key, i), labels)

        if sampler.conditional:
            return self.conditional(sample, classes, sampler.pixel_range)
        return self(sample, sampler.pixel_range)

    def conditional(
        self,
        sample: sample_quality.ConditionalSampleFn,
        num_classes: int,
        pixel_range: Sequence[float],
    ) -> dict[str, float]:
        """As calling it, for a class-conditional generator: sample(i, labels) draws batch i
        of the classes sample_quality.requested_labels gives (every class in turn), and
        eval/class_accuracy and eval/class_accuracy_worst are added."""
        self.prepare()
        generated, wanted, predicted = sample_quality.conditional_features(
            self.net.features_and_logits, sample, self.num, EVAL_BATCH, num_classes, pixel_range
        )
        accuracy = sample_quality.class_accuracy(wanted, predicted, num_classes)
        return self._figures(generated) | accuracy

    def _figures(self, generated: np.ndarray) -> dict[str, float | str]:
        """The scores, beside the feature network's test accuracy and its digest (a str: the
        loops put it in the run's summary, W&B history rows take numbers)."""
        return {
            **sample_quality.scores(self.reference, generated),
            "eval/samples": self.num,
            "eval/feature_net_accuracy": self.net.accuracy,
            "eval/feature_net_sha256": self.net.sha256,
        }
