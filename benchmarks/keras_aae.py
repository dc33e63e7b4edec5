"""Keras-GAN's adversarial autoencoder (aae/aae.py) in Keras 3 on TensorFlow, for
`python -m benchmarks.run --models=aae --compare=keras`: its networks layer for layer and its
loop of train_on_batch calls (the discriminator on prior samples and on the encoder's
codes, then the encoder and decoder through the frozen discriminator)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from benchmarks.timing import timed  # noqa: E402

LATENT_DIM = 10  # Keras-GAN's.


class _Sample(layers.Layer):
    """Keras-GAN's merge: mu + N(0, 1) * exp(log_var / 2)."""

    def __init__(self):
        super().__init__()
        self.seed = keras.random.SeedGenerator(0)

    def call(self, mu, log_var):
        return mu + keras.random.normal(tf.shape(mu), seed=self.seed) * tf.exp(log_var / 2)


def _dense_lrelu(widths) -> list:
    return [layer for w in widths for layer in (layers.Dense(w), layers.LeakyReLU(0.2))]


def encoder(latent_dim: int = LATENT_DIM) -> keras.Model:
    img = keras.Input((28, 28, 1))
    h = keras.Sequential([layers.Flatten(), *_dense_lrelu((512, 512))])(img)
    z = _Sample()(layers.Dense(latent_dim)(h), layers.Dense(latent_dim)(h))
    return keras.Model(img, z)


def decoder(latent_dim: int = LATENT_DIM) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((latent_dim,)),
            *_dense_lrelu((512, 512)),
            layers.Dense(784, activation="tanh"),
            layers.Reshape((28, 28, 1)),
        ]
    )


def discriminator(latent_dim: int = LATENT_DIM) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((latent_dim,)),
            *_dense_lrelu((512, 256)),
            layers.Dense(1, activation="sigmoid"),
        ]
    )


def _time_aae(batch: int, seconds: float, images, jit: bool) -> tuple[float, float]:
    """Keras-GAN's aae.py iteration: (first two iterations' seconds, steady seconds per one)."""
    d = discriminator()
    d.compile(
        loss="binary_crossentropy",
        optimizer=keras.optimizers.Adam(2e-4, 0.5),
        metrics=["accuracy"],
        jit_compile=jit,
    )
    enc, dec = encoder(), decoder()
    img = keras.Input((28, 28, 1))
    z = enc(img)
    d.trainable = False
    combined = keras.Model(img, [dec(z), d(z)])
    # Keras 3 builds an optimizer for one set of variables: one Adam per model, not Keras-GAN's
    # shared one.
    combined.compile(
        loss=["mse", "binary_crossentropy"],
        loss_weights=[0.999, 0.001],
        optimizer=keras.optimizers.Adam(2e-4, 0.5),
        jit_compile=jit,
    )
    valid, fake = np.ones((batch, 1), np.float32), np.zeros((batch, 1), np.float32)
    x = images * 2.0 - 1.0
    rng = np.random.default_rng(0)

    def iteration():
        imgs = x[rng.integers(0, len(x), batch)]
        # Keras-GAN calls encoder.predict; a direct call computes the same codes, faster
        # (see keras_models._time_gan).
        codes = enc(imgs, training=False)
        prior = rng.normal(size=(batch, LATENT_DIM)).astype(np.float32)
        d.train_on_batch(prior, valid)
        d.train_on_batch(codes, fake)
        combined.train_on_batch(imgs, [imgs, valid])

    first, per, _ = timed(iteration, seconds, warmup=2, min_calls=3)
    return first, per


def time_model(name: str, batch: int, steps: int, seconds: float, images: np.ndarray) -> dict:
    """As benchmarks.keras_models.time_model: the faster of XLA off and on, per iteration."""
    rows = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        first, per = _time_aae(batch, seconds, images, jit)
        compile_s = max(first - 2 * per, 0.0)
        rows.append({"steps_per_s": 1 / per, "compile_s": compile_s, "jit_compile": jit})
        keras.backend.clear_session()
    best = dict(max(rows, key=lambda r: r["steps_per_s"]))
    best["variants"] = rows
    best["framework"] = f"keras {keras.__version__} (tensorflow {tf.__version__})"
    return best
