"""The benchmark's PyTorch side: the same three models, trained the way a PyTorch user would,
for `python -m benchmarks.run --compare=torch`.

Not a genjax dependency (PyPI's default torch wheel brings the CUDA stack): for the CPU
benchmark, `pip install torch --index-url https://download.pytorch.org/whl/cpu`. The models
match genjax's layer for layer (the report's autoencoder and VAE, Keras-GAN's DCGAN with
Keras's BatchNorm momentum and epsilon), and train in the plain PyTorch loop: the split held
as one tensor, a shuffled batch indexed from it per step, forward, loss, backward, Adam.
Eager mode with PyTorch's default threads; the DCGAN is timed with the default NCHW layout
and with channels_last, and the faster is kept.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.timing import timed

# Keras's BatchNormalization(momentum=0.8, epsilon=1e-3): PyTorch's momentum is 1 - Keras's.
_BN = dict(momentum=0.2, eps=1e-3)


class _Autoencoder(nn.Module):
    def __init__(self, latent_dim: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 512),
            nn.ReLU(),
            nn.Linear(512, latent_dim),
            nn.LeakyReLU(0.3),
            nn.Linear(latent_dim, 512),
            nn.ReLU(),
            nn.Linear(512, 784),
            nn.Sigmoid(),
        )

    def loss(self, x):
        return F.mse_loss(self.net(x), x.flatten(1))


class _VAE(nn.Module):
    def __init__(self, latent_dim: int = 2):
        super().__init__()
        self.hidden = nn.Linear(784, 512)
        self.z_mean = nn.Linear(512, latent_dim)
        self.z_log_var = nn.Linear(512, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 512), nn.ReLU(), nn.Linear(512, 784), nn.Sigmoid()
        )

    def loss(self, x):
        flat = x.flatten(1)
        h = F.relu(self.hidden(flat))
        mean, log_var = self.z_mean(h), self.z_log_var(h)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        reconstruction = 784.0 * ((self.decoder(z) - flat) ** 2).mean(1)
        kl = -0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(1)
        return (reconstruction + kl).mean()


def _generator(latent_dim: int = 100) -> nn.Module:
    return nn.Sequential(
        nn.Linear(latent_dim, 128 * 7 * 7),
        nn.ReLU(),
        nn.Unflatten(1, (128, 7, 7)),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(128, 128, 3, padding=1),
        nn.BatchNorm2d(128, **_BN),
        nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(128, 64, 3, padding=1),
        nn.BatchNorm2d(64, **_BN),
        nn.ReLU(),
        nn.Conv2d(64, 1, 3, padding=1),
        nn.Tanh(),
    )


def _discriminator() -> nn.Module:
    def block(cin, cout, stride, bn=True, pad=False):
        layers = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1)]
        if pad:  # Keras's ZeroPadding2D(((0, 1), (0, 1))): bottom and right.
            layers.append(nn.ZeroPad2d((0, 1, 0, 1)))
        if bn:
            layers.append(nn.BatchNorm2d(cout, **_BN))
        return [*layers, nn.LeakyReLU(0.2), nn.Dropout(0.25)]

    return nn.Sequential(
        *block(1, 32, 2, bn=False),
        *block(32, 64, 2, pad=True),
        *block(64, 128, 2),
        *block(128, 256, 1),
        nn.Flatten(),
        nn.Linear(256 * 4 * 4, 1),
    )


def _time_epoch_model(name, batch, seconds, images) -> tuple[float, float]:
    model = _Autoencoder() if name == "autoencoder" else _VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # [N, 1, 28, 28]
    order = {"perm": torch.randperm(len(x)), "at": 0}

    def step():
        if order["at"] + batch > len(x):
            order["perm"], order["at"] = torch.randperm(len(x)), 0
        idx = order["perm"][order["at"] : order["at"] + batch]
        order["at"] += batch
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(x[idx])
        loss.backward()
        optimizer.step()

    return timed(step, seconds, warmup=5, min_calls=3)[:2]


def _time_gan(batch, seconds, images, channels_last: bool) -> tuple[float, float]:
    generator, discriminator = _generator(), _discriminator()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    generator.to(memory_format=layout)
    discriminator.to(memory_format=layout)
    g_opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x = torch.from_numpy(images * 2.0 - 1.0).permute(0, 3, 1, 2).contiguous(memory_format=layout)
    ones, zeros = torch.ones(batch), torch.zeros(batch)

    def d_update(images, target):
        d_opt.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(discriminator(images)[:, 0], target)
        loss.backward()
        d_opt.step()

    def iteration():
        real = x[torch.randint(0, len(x), (batch,))]
        z = torch.randn(batch, 100)
        generator.eval()  # Keras-GAN's generator.predict: inference-mode BatchNorm.
        with torch.no_grad():
            fake = generator(z)
        generator.train()
        discriminator.train()
        d_update(real, ones)
        d_update(fake, zeros)
        # The combined model: the generator through the discriminator (training-mode BN and
        # dropout, as genjax's), only the generator updated.
        g_opt.zero_grad(set_to_none=True)
        discriminator.requires_grad_(False)
        loss = F.binary_cross_entropy_with_logits(discriminator(generator(z))[:, 0], ones)
        loss.backward()
        discriminator.requires_grad_(True)
        g_opt.step()

    return timed(iteration, seconds, warmup=2, min_calls=3)[:2]


def time_model(name: str, batch: int, steps: int, seconds: float, images: np.ndarray) -> dict:
    """{steps_per_s, compile_s (0: eager), framework, variants}; `steps` is unused (PyTorch
    dispatches step by step)."""
    del steps
    torch.manual_seed(0)
    images = np.ascontiguousarray(images, np.float32)
    rows = []
    if name == "dcgan":
        for channels_last in (False, True):
            _, per = _time_gan(batch, seconds, images, channels_last)
            rows.append({"steps_per_s": 1 / per, "channels_last": channels_last})
    else:
        _, per = _time_epoch_model(name, batch, seconds, images)
        rows.append({"steps_per_s": 1 / per})
    best = dict(max(rows, key=lambda r: r["steps_per_s"]))
    best |= {
        "compile_s": 0.0,
        "variants": rows,
        "framework": f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
    }
    return best
