"""The feature network of genjax's FID: a small CNN classifier trained on the training split.

    python -m experiments.classifier --dataset=fashion_mnist

Its workdir defaults to runs/feature_nets/<dataset>, where the evaluations look for it; its
test accuracy is in summary.json (val/accuracy) and W&B. Running it again resumes or, when
complete, does nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

import jax

from genjax import cli, data, images, loop
from genjax.config import ClassifierConfig, parse_flags
from genjax.models.classifier import Classifier
from genjax.steps import classifier as steps
from genjax.trainers import EpochTrainer

FAMILY = loop.Family(
    "classifier",
    steps.train_step,
    steps.eval_step,
    pixel_range=steps.PIXEL_RANGE,
    vector_fields=("seed", "learning_rate"),
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
    shown, labels = dataset.fixed_test_examples(config.latent_points)
    shown_x = jax.device_put(data.scale(shown, steps.PIXEL_RANGE))

    def media(state, epoch):
        feats = jax.device_get(steps.features(state, shown_x))
        png, scatter = images.latent_plots(feats, labels, dataset.info.class_names)
        return {"images": {"feature_space": png}, "scatters": {"feature_space_scatter": scatter}}

    init_state = functools.partial(
        steps.create_state, model, config.learning_rate, dataset.info.image_shape
    )
    return loop.Trial(config, init_state, media, early_stop=early_stop)


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: run(parse_flags(ClassifierConfig, argv)))


if __name__ == "__main__":
    sys.exit(main())
