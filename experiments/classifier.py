"""The feature network of genjax's FID: a small CNN classifier trained on the training split.

    python -m experiments.classifier --dataset=fashion_mnist

Its workdir defaults to runs/feature_nets/<dataset>, where the evaluations look for it; its
test accuracy is in summary.json (val/accuracy) and W&B. Running it again resumes or, when
complete, does nothing. The VAE and the DCGAN train it here themselves when it is missing
(`SampleQuality`), so their eval/fid, eval/precision and eval/recall always use it.
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
from typing import Any

import jax
import numpy as np

from genjax import cli, data, images, loop
from genjax.checkpoint import Checkpoints
from genjax.config import ClassifierConfig, ConfigError, parse_flags
from genjax.evaluation import sample_quality
from genjax.models.classifier import Classifier
from genjax.steps import classifier as steps
from genjax.trainers import EpochTrainer

# Images per feature-network (and generator) call: a fixed size, so that every evaluation
# compiles once and is computed the same way.
EVAL_BATCH = 500

FAMILY = loop.Family(
    "classifier",
    steps.train_step,
    steps.eval_step,
    pixel_range=steps.PIXEL_RANGE,
    vector_fields=("seed", "learning_rate"),
    eval_outputs=steps.EVAL_OUTPUTS,
)


def default_workdir(dataset: str) -> str:
    """Where the feature network of `dataset` is trained and looked for."""
    return os.path.join("runs", "feature_nets", dataset)


def with_workdir(config: ClassifierConfig) -> ClassifierConfig:
    if config.workdir:
        return config
    return dataclasses.replace(config, workdir=default_workdir(config.dataset))


def load_data(config: ClassifierConfig) -> data.Dataset:
    return data.load_dataset(config.dataset, config.data_dir, config.data_source)


def trial(config: ClassifierConfig, dataset: data.Dataset, early_stop=None) -> loop.Trial:
    model = Classifier(num_classes=len(dataset.info.class_names))
    _, labels = dataset.fixed_test_examples(config.latent_points)

    def media(state, epoch, outputs):
        # Features of the first latent_points test images, from the validation pass.
        png, scatter = images.latent_plots(
            outputs["features"],
            labels,
            dataset.info.class_names,
            config.scatter_table_points,
            space="feature space",
            vectors="features",
        )
        return {"images": {"feature_space": png}, "scatters": {"feature_space_scatter": scatter}}

    def evaluate(state):
        """The floor of eval/fid in this feature space: real training images against the
        test images (as many of each, up to 10,000), as a generator would be scored."""
        n = min(len(dataset.test), len(dataset.train), 10000)
        features = functools.partial(steps.features, state)
        test = sample_quality.features_of_uint8(features, dataset.test.images[:n], EVAL_BATCH)
        train = sample_quality.features_of_uint8(features, dataset.train.images[:n], EVAL_BATCH)
        scores = sample_quality.scores(sample_quality.Reference.of(test), train)
        return {f"{k}_train_test": v for k, v in scores.items()}

    init_state = functools.partial(
        steps.create_state, model, config.learning_rate, dataset.info.image_shape
    )
    return loop.Trial(
        config,
        init_state,
        media,
        evaluate,
        early_stop,
        plots=True,
        media_examples=len(labels),
    )


EXPERIMENT = loop.Experiment(
    "classifier",
    ClassifierConfig,
    load_data,
    lambda config: FAMILY,
    trial,
    EpochTrainer,
)


def run(config: ClassifierConfig) -> dict:
    return EXPERIMENT.run(with_workdir(config))


# --- the feature network as the evaluations use it ---------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureNet:
    """A trained classifier; its penultimate layer is the FID feature space."""

    workdir: Path
    state: Any
    accuracy: float  # Its test accuracy: val/accuracy of its summary.json.

    def features(self, images: jax.Array) -> jax.Array:
        """Float images [B, 28, 28, C] in [0, 1] -> features [B, 128]."""
        return steps.features(self.state, images)


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


def feature_net(config, dataset: data.Dataset | None = None) -> FeatureNet:
    """The FID feature network of config.dataset, in --feature_net (default
    runs/feature_nets/<dataset>). Trained there first when missing, or finished when a
    training was interrupted; a finished one is used as it is, whatever its settings.
    """
    workdir = Path(config.feature_net or default_workdir(config.dataset)).resolve()
    if workdir in _LOADED:
        return _LOADED[workdir]
    record, summary = _read(workdir)
    if record is not None:
        trained_on = record.get("config", {}).get("dataset")
        if record.get("experiment") != "classifier" or trained_on != config.dataset:
            raise ConfigError(
                f"--feature_net={workdir} holds a {record.get('experiment')!r} run on "
                f"{trained_on!r}, not a feature network of {config.dataset!r}; point "
                "--feature_net at one (or at an empty folder, to train one there)"
            )
    # summary.json is written just before the final checkpoint: finished means both.
    if summary is None or record is None or record.get("step") != summary.get("step"):
        if record is not None:  # Interrupted: finish it with the settings it started with.
            known = {f.name for f in dataclasses.fields(ClassifierConfig)}
            saved = {k: v for k, v in record["config"].items() if k in known}
            train_config = ClassifierConfig(
                **{**saved, "workdir": str(workdir), "progress": config.progress}
            )
        else:
            train_config = ClassifierConfig(
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
            f"({train_config.epochs} epochs of experiments.classifier; later runs reuse it)",
            file=sys.stderr,
        )
        summary = EXPERIMENT.run(train_config)
        if "val/accuracy" not in summary:  # Finished, but its summary.json was removed.
            raise ConfigError(
                f"--feature_net={workdir} holds a finished network without its summary.json; "
                "delete that folder to train the feature network again"
            )
    _, state, _ = EXPERIMENT.restore(workdir, dataset)
    net = FeatureNet(workdir, state, float(summary["val/accuracy"]))
    print(f"eval/fid features: {workdir} (test accuracy {net.accuracy:.2%})", file=sys.stderr)
    _LOADED[workdir] = net
    return net


class SampleQuality:
    """eval/fid, eval/precision, eval/recall of a generator against the test split.

    prepare() loads (or trains) the feature network and the features of the first
    eval_samples test images, once per process; calling it then scores eval_samples images
    drawn batch by batch from `sample(i)`. `real_test` gives the unprocessed test images
    when the run's own dataset is not them (the VAE's binarized data).
    """

    # Per process, by feature network and test images: a sweep's trials share one.
    _references: dict[tuple, sample_quality.Reference] = {}

    def __init__(
        self,
        config,
        dataset: data.Dataset,
        real_test: Callable[[], np.ndarray] | None = None,
    ):
        self.config = config
        self.num = config.eval_samples
        if self.num > len(dataset.test):
            raise ConfigError(
                f"--eval_samples={self.num} is more than the {len(dataset.test)} test images "
                f"it compares with; use --eval_samples={len(dataset.test)} or fewer"
            )
        self.dataset = dataset
        self.real_test = real_test or (lambda: dataset.test.images)
        self.net: FeatureNet | None = None
        self.reference: sample_quality.Reference | None = None

    def prepare(self) -> None:
        if self.reference is not None:
            return
        self.net = feature_net(self.config, self.dataset)
        real = np.ascontiguousarray(self.real_test()[: self.num])
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
        return {
            **sample_quality.scores(self.reference, generated),
            "eval/samples": self.num,
            "eval/feature_net_accuracy": self.net.accuracy,
        }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: run(parse_flags(ClassifierConfig, argv)))


if __name__ == "__main__":
    sys.exit(main())
