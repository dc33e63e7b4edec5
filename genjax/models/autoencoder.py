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


class VAE(nn.Module):
    """The report's VAE: Dense(hidden, relu) -> (z_mean, z_log_var) -> z -> Dense(hidden, relu)
    -> Dense(784) logits. z = z_mean + exp(z_log_var / 2) * eps draws eps from the "latent"
    rng stream, so its randomness is named for what it draws."""

    latent_dim: int = 2
    hidden_dim: int = 512
    image_shape: tuple[int, int, int] = (28, 28, 1)

    def setup(self):
        self.encoder_hidden = nn.Dense(self.hidden_dim, name="encoder_hidden")
        self.z_mean = nn.Dense(self.latent_dim, name="z_mean")
        self.z_log_var = nn.Dense(self.latent_dim, name="z_log_var")
        self.decoder_hidden = nn.Dense(self.hidden_dim, name="decoder_hidden")
        self.decoder_output = nn.Dense(
            self.image_shape[0] * self.image_shape[1] * self.image_shape[2], name="decoder_output"
        )

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, 28, 28, 1] in [0, 1] -> (z_mean, z_log_var), each [B, latent_dim]."""
        h = nn.relu(self.encoder_hidden(x.reshape(x.shape[0], -1)))
        return self.z_mean(h), self.z_log_var(h)

    def decode_logits(self, z: jax.Array) -> jax.Array:
        """[B, latent_dim] -> Bernoulli logits [B, 28, 28, 1]."""
        h = nn.relu(self.decoder_hidden(z))
        return self.decoder_output(h).reshape(z.shape[0], *self.image_shape)

    def decode(self, z: jax.Array) -> jax.Array:
        """[B, latent_dim] -> images in [0, 1] (the sigmoid of the logits)."""
        return nn.sigmoid(self.decode_logits(z))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x -> (logits [B, 28, 28, 1], z_mean, z_log_var), sampling z on the "latent" stream."""
        z_mean, z_log_var = self.encode(x)
        eps = jax.random.normal(self.make_rng("latent"), z_mean.shape, z_mean.dtype)
        z = z_mean + jnp.exp(0.5 * z_log_var) * eps
        return self.decode_logits(z), z_mean, z_log_var
