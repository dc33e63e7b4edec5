"""The report's fully connected autoencoder."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# The report's author ran LeakyReLU(0.3) on the latent code (Keras's default slope); the
# article's listing shows relu. Both are one flag apart.
LATENT_ACTIVATIONS: dict[str, Callable[..., jax.Array] | None] = {
    "leaky_relu": None,  # Built from the module's slope below.
    "relu": nn.relu,
    "linear": lambda x: x,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
}


class Autoencoder(nn.Module):
    """Dense(hidden, relu) -> Dense(latent) -> act -> Dense(hidden, relu) -> Dense(784, sigmoid)."""

    latent_dim: int = 2
    hidden_dim: int = 512
    latent_activation: str = "leaky_relu"
    leaky_slope: float = 0.3
    image_shape: tuple[int, int, int] = (28, 28, 1)

    def setup(self):
        self.encoder_hidden = nn.Dense(self.hidden_dim, name="encoder_hidden")
        self.encoder_latent = nn.Dense(self.latent_dim, name="encoder_latent")
        self.decoder_hidden = nn.Dense(self.hidden_dim, name="decoder_hidden")
        self.decoder_output = nn.Dense(
            self.image_shape[0] * self.image_shape[1] * self.image_shape[2], name="decoder_output"
        )

    def _activate(self, z: jax.Array) -> jax.Array:
        if self.latent_activation == "leaky_relu":
            return nn.leaky_relu(z, negative_slope=self.leaky_slope)
        return LATENT_ACTIVATIONS[self.latent_activation](z)

    def encode(self, x: jax.Array) -> jax.Array:
        """[B, 28, 28, 1] in [0, 1] -> [B, latent_dim]."""
        h = nn.relu(self.encoder_hidden(x.reshape(x.shape[0], -1)))
        return self._activate(self.encoder_latent(h))

    def decode(self, z: jax.Array) -> jax.Array:
        """[B, latent_dim] -> [B, 28, 28, 1] in [0, 1]."""
        h = nn.relu(self.decoder_hidden(z))
        return nn.sigmoid(self.decoder_output(h)).reshape(z.shape[0], *self.image_shape)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Reconstruction of x: [B, 28, 28, 1] -> [B, 28, 28, 1]."""
        return self.decode(self.encode(x))
