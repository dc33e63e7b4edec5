"""The diffusion model in PyTorch, for `python -m benchmarks.run --models=diffusion
--compare=torch`: genjax's U-Net (genjax/models/unet.py) layer for layer, trained with
genjax's DDPM step (genjax/steps/diffusion.py, genjax/steps/ema.py) the way a PyTorch user
would write it: a batch drawn at random from the split held as one tensor, t ~ U{0..T-1},
the epsilon loss, backward, the gradients clipped to global norm 1, Adam, then the moving
average of the weights (torch._foreach_lerp_).

Not a genjax dependency: see benchmarks/torch_models.py for installing PyTorch. As there,
eager mode with PyTorch's default threads, timed with the default NCHW layout and with
channels_last, the faster kept. Before timing, the parameters are checked against the Flax
U-Net's (check_parity): a different count would compare different models.

The one liberty taken: the stride-2 convolutions pad one pixel on every side (PyTorch's
usual padding=1) where Flax's "SAME" pads only the bottom and right; the same shapes,
parameters and FLOPs. The upsampling is nn.Upsample then a 3x3 convolution, where genjax
computes the same function with fewer FLOPs (genjax.models.dcgan.upsample2_conv3x3).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.timing import timed
from experiments import registry
from genjax.models import unet as flax_unet
from genjax.steps import diffusion as flax_diffusion
from genjax.steps import ema as flax_ema

# Flax's nn.GroupNorm epsilon (PyTorch's default is 1e-5).
GROUP_NORM_EPS = 1e-6


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """genjax.models.unet.time_embedding: times t [B] in [0, 1] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1)
    )
    args = flax_unet.TIME_SCALE * t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return F.pad(emb, (0, dim - 2 * half))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels, eps=GROUP_NORM_EPS)


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, zero: bool = False):
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
    if zero:  # As genjax's zero-initialised kernels.
        nn.init.zeros_(conv.weight)
    return conv


class ResBlock(nn.Module):
    """GN, SiLU, conv, + time, GN, SiLU, conv; a 1x1 skip when the width changes."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = _conv(cin, cout)
        self.time = nn.Linear(emb_dim, cout)
        self.norm2 = _norm(cout)
        self.conv2 = _conv(cout, cout, zero=True)
        self.skip = _conv(cin, cout, kernel=1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of [B, C, H, W], residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)  # [B, HW, C]
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        out = self.out(F.scaled_dot_product_attention(q, k, v))  # Scale 1 / sqrt(C).
        return x + out.reshape(b, h, w, c).permute(0, 3, 1, 2)


class UNet(nn.Module):
    """x [B, C, 28, 28] and times t [B] (float in [0, 1]) -> [B, C, 28, 28]."""

    def __init__(self, width: int = 32, attention: bool = True, channels: int = 1):
        super().__init__()
        c1, c2, e = width, 2 * width, 4 * width
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(c1, e), nn.SiLU(), nn.Linear(e, e))
        self.stem = _conv(channels, c1)
        self.block28 = ResBlock(c1, c1, e)
        self.down14 = _conv(c1, c2, stride=2)
        self.block14 = ResBlock(c2, c2, e)
        self.down7 = _conv(c2, c2, stride=2)
        self.mid1 = ResBlock(c2, c2, e)
        self.attention = SelfAttention(c2) if attention else nn.Identity()
        self.mid2 = ResBlock(c2, c2, e)
        self.up14 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(c2, c2))
        self.dec14 = ResBlock(2 * c2, c2, e)
        self.up28 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(c2, c1))
        self.dec28 = ResBlock(2 * c1, c1, e)
        self.out_norm = _norm(c1)
        self.out = _conv(c1, channels, zero=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(time_embedding(t, self.width))
        h28 = self.block28(self.stem(x), emb)
        h14 = self.block14(self.down14(h28), emb)
        h = self.mid1(self.down7(h14), emb)
        h = self.mid2(self.attention(h), emb)
        h = self.dec14(torch.cat([self.up14(h), h14], dim=1), emb)
        h = self.dec28(torch.cat([self.up28(h), h28], dim=1), emb)
        return self.out(F.silu(self.out_norm(h)))


def parameter_count(width: int = 32, attention: bool = True, channels: int = 1) -> int:
    """The PyTorch U-Net's parameters."""
    return sum(p.numel() for p in UNet(width, attention, channels).parameters())


def flax_parameter_sizes(width: int, attention: bool, channels: int = 1) -> list[int]:
    """The sizes of genjax's Flax U-Net's parameter arrays (shapes only: nothing computed)."""
    import jax
    import jax.numpy as jnp

    model = flax_unet.UNet(width, attention)
    x = jnp.zeros((1, 28, 28, channels), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros((1,), jnp.float32))
    return [math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes["params"])]


def check_parity(width: int, attention: bool, channels: int = 1) -> int:
    """The parameter count, after checking that the PyTorch U-Net's parameter tensors have
    the sizes of the Flax U-Net's; raises RuntimeError where they differ."""
    mine = sorted(p.numel() for p in UNet(width, attention, channels).parameters())
    theirs = sorted(flax_parameter_sizes(width, attention, channels))
    if mine != theirs:
        raise RuntimeError(
            f"the PyTorch U-Net (width {width}, attention {attention}) has {sum(mine)} "
            f"parameters in {len(mine)} tensors, genjax's Flax U-Net {sum(theirs)} in "
            f"{len(theirs)}: they are different models, so their timings do not compare"
        )
    return sum(mine)


class Trainer:
    """The U-Net, Adam after global-norm clipping, and the weights' moving average: genjax's
    EMAState and ema.train_step. `loss(model, x)` is the family's scalar loss of a batch."""

    def __init__(self, config, loss: Callable, channels_last: bool = False, channels: int = 1):
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.model = UNet(config.width, config.attention, channels).to(memory_format=layout)
        self.params = list(self.model.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate)
        self.ema = [p.detach().clone() for p in self.params]
        self.ema_decay = config.ema_decay
        self.loss = loss
        self.updates = 0

    def step(self, x: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model, x)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, flax_ema.CLIP_NORM)
        self.optimizer.step()
        self.updates += 1
        n = self.updates  # genjax's effective_decay after n updates.
        decay = min(self.ema_decay, (1.0 + n) / (flax_ema.WARMUP + n))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self.params, 1.0 - decay)
        return loss.detach()


def epsilon_loss(config) -> Callable:
    """DDPM's loss of images x0 in [-1, 1]: t ~ U{0..T-1}, x_t from the forward process, the
    network fed t / T, the mean squared error of its epsilon."""
    abar = torch.from_numpy(flax_diffusion.alpha_bars(config.schedule, config.timesteps)).float()
    timesteps = config.timesteps

    def loss(model, x0):
        t = torch.randint(0, timesteps, (x0.shape[0],))
        eps = torch.randn_like(x0)
        a = abar[t][:, None, None, None]
        x_t = a.sqrt() * x0 + (1.0 - a).sqrt() * eps
        return F.mse_loss(model(x_t, t / timesteps), eps)

    return loss


def data_tensor(images: np.ndarray, channels_last: bool) -> torch.Tensor:
    """Images [N, 28, 28, C] in [0, 1] -> [N, C, 28, 28] in [-1, 1], in the layout."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32) * 2.0 - 1.0)
    return x.permute(0, 3, 1, 2).contiguous(memory_format=layout)


def time_family(
    name: str, batch: int, seconds: float, images: np.ndarray, make_loss: Callable
) -> dict:
    """As benchmarks.torch_models.time_model, for a U-Net family: the parity check, then
    each layout timed for `seconds` (a batch drawn with replacement per step, as genjax's
    --sampling=random), the fastest kept."""
    config = registry.EXPERIMENTS[name].Config()
    channels = images.shape[-1]
    parameters = check_parity(config.width, config.attention, channels)
    rows = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        trainer = Trainer(config, make_loss(config), channels_last, channels)
        x = data_tensor(images, channels_last)

        def step(trainer=trainer, x=x):
            trainer.step(x[torch.randint(0, len(x), (batch,))])

        _, per, _ = timed(step, seconds, warmup=5, min_calls=3)
        rows.append(
            {"steps_per_s": 1 / per, "images_per_s": batch / per, "channels_last": channels_last}
        )
    best = dict(max(rows, key=lambda r: r["steps_per_s"]))
    best |= {
        "compile_s": 0.0,
        "variants": rows,
        "framework": f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "width": config.width,
        "attention": config.attention,
        "parameters": parameters,
    }
    return best


def time_model(name: str, batch: int, steps: int, seconds: float, images: np.ndarray) -> dict:
    """{steps_per_s, images_per_s, compile_s (0: eager), framework, variants, ...}; `steps`
    is unused (PyTorch dispatches step by step)."""
    del steps
    return time_family(name, batch, seconds, images, epsilon_loss)
