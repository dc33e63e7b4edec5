"""The flow-matching model in PyTorch, for `python -m benchmarks.run --models=flow_matching
--compare=torch`: benchmarks/torch_diffusion.py's U-Net, optimizer and moving average with
genjax's velocity loss (genjax/steps/flow_matching.py): t ~ U[0, 1], noise x0 ~ N(0, I), the
image x1 in [-1, 1], x_t = (1 - t) x0 + t x1, the network fed t itself, and the mean squared
error of its velocity against x1 - x0."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from benchmarks.torch_diffusion import check_parity, parameter_count, time_family

__all__ = ["check_parity", "parameter_count", "time_model", "velocity_loss"]


def velocity_loss(config) -> Callable:
    """The straight path's velocity loss of images x1 in [-1, 1]."""
    del config

    def loss(model, x1):
        t = torch.rand(x1.shape[0])
        x0 = torch.randn_like(x1)
        s = t[:, None, None, None]
        x_t = (1.0 - s) * x0 + s * x1
        return F.mse_loss(model(x_t, t), x1 - x0)

    return loss


def time_model(name: str, batch: int, steps: int, seconds: float, images: np.ndarray) -> dict:
    """As benchmarks.torch_diffusion.time_model, with the velocity loss."""
    del steps
    return time_family(name, batch, seconds, images, velocity_loss)
