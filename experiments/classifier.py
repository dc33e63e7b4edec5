"""The feature network of genjax's FID: a small CNN classifier trained on the training split.

    python -m experiments.classifier --dataset=fashion_mnist

Its workdir defaults to runs/feature_nets/<dataset>, where the evaluations look for it; its
test accuracy (val/accuracy) and its digest (state_sha256) are in summary.json, and every
generator's figures carry both (eval/feature_net_accuracy, eval/feature_net_sha256). Running
it again resumes or, when complete, does nothing. Every experiment that reports eval/fid
trains it first when it is missing (genjax/evaluation/feature_net.py).
"""

from __future__ import annotations

import sys

from genjax import cli
from genjax.evaluation.feature_net import (  # noqa: F401 (this experiment's parts)
    IDENTITY,
    NAME,
    VECTOR_FIELDS,
    Config,
    create_state,
    evaluate,
    load_data,
    steps,
    train,
)

comparison = None  # Not swept: no comparison picture.


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda: train([cli.parse(Config, argv, prog=f"python -m experiments.{NAME}")]))


if __name__ == "__main__":
    cli.exit_with(main())
