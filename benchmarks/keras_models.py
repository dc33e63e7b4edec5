"""The benchmark's Keras side: the same three models as the report trains them, in Keras 3 on
TensorFlow (the report's framework), for `python -m benchmarks.run --compare=keras`.

Not a genjax dependency: TensorFlow comes with tensorflow-datasets here; elsewhere
`pip install tensorflow-cpu keras` (or `tensorflow` on a GPU machine). The models match
genjax's layer for layer (the report's autoencoder and VAE, Keras-GAN's DCGAN), and are
trained the way their Keras originals are: `model.fit` over in-memory arrays for the
autoencoder and the VAE (a custom train_step for the VAE, as keras.io's VAE example), and
Keras-GAN's loop of `train_on_batch` calls for the DCGAN. Each is timed with XLA
compilation off and on (`jit_compile`), and fit() with 1 and 100 steps per call
(`steps_per_execution`), and the fastest is reported, since that is what a user tuning Keras
would keep.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from benchmarks.timing import timed  # noqa: E402


def _autoencoder(latent_dim: int = 2) -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = layers.Flatten()(inputs)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.LeakyReLU(0.3)(layers.Dense(latent_dim)(x))
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dense(784, activation="sigmoid")(x)
    return keras.Model(inputs, layers.Reshape((28, 28, 1))(x))


class KerasVAE(keras.Model):
    """keras.io's VAE pattern: encoder, reparameterized sample, decoder, 784 * MSE + KL."""

    def __init__(self, latent_dim: int = 2):
        super().__init__()
        self.flatten = layers.Flatten()
        self.hidden = layers.Dense(512, activation="relu")
        self.z_mean = layers.Dense(latent_dim)
        self.z_log_var = layers.Dense(latent_dim)
        self.decoder_hidden = layers.Dense(512, activation="relu")
        self.decoder_out = layers.Dense(784, activation="sigmoid")
        self.latent_dim = latent_dim

    def call(self, x):
        h = self.hidden(self.flatten(x))
        mean, log_var = self.z_mean(h), self.z_log_var(h)
        eps = keras.random.normal(tf.shape(mean))
        z = mean + tf.exp(0.5 * log_var) * eps
        return self.decoder_out(self.decoder_hidden(z)), mean, log_var

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            x_hat, mean, log_var = self(x, training=True)
            flat = tf.reshape(x, (-1, 784))
            reconstruction = 784.0 * tf.reduce_mean(tf.square(flat - x_hat), axis=-1)
            kl = -0.5 * tf.reduce_sum(1 + log_var - tf.square(mean) - tf.exp(log_var), axis=-1)
            loss = tf.reduce_mean(reconstruction + kl)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        return {"loss": loss}


def _generator(latent_dim: int = 100) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((latent_dim,)),
            layers.Dense(128 * 7 * 7, activation="relu"),
            layers.Reshape((7, 7, 128)),
            layers.UpSampling2D(),
            layers.Conv2D(128, 3, padding="same"),
            layers.BatchNormalization(momentum=0.8),
            layers.Activation("relu"),
            layers.UpSampling2D(),
            layers.Conv2D(64, 3, padding="same"),
            layers.BatchNormalization(momentum=0.8),
            layers.Activation("relu"),
            layers.Conv2D(1, 3, padding="same"),
            layers.Activation("tanh"),
        ]
    )


def _discriminator() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, strides=2, padding="same"),
            layers.LeakyReLU(0.2),
            layers.Dropout(0.25),
            layers.Conv2D(64, 3, strides=2, padding="same"),
            layers.ZeroPadding2D(((0, 1), (0, 1))),
            layers.BatchNormalization(momentum=0.8),
            layers.LeakyReLU(0.2),
            layers.Dropout(0.25),
            layers.Conv2D(128, 3, strides=2, padding="same"),
            layers.BatchNormalization(momentum=0.8),
            layers.LeakyReLU(0.2),
            layers.Dropout(0.25),
            layers.Conv2D(256, 3, strides=1, padding="same"),
            layers.BatchNormalization(momentum=0.8),
            layers.LeakyReLU(0.2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(1, activation="sigmoid"),
        ]
    )


# Keras's steps_per_execution: 1 (its default) or this many training steps per call into
# TensorFlow; for small models the second is what a user tuning Keras would pick.
STEPS_PER_EXECUTION = 100


def _time_fit(model, images, batch: int, steps: int, seconds: float) -> tuple[float, float]:
    """(first fit's seconds, steady seconds per `steps` steps) of model.fit over `steps`
    batches of the training images."""
    steps = min(steps, len(images) // batch)  # One epoch at most, as genjax's dispatch.
    x = images[: batch * steps]
    first, per, _ = timed(
        lambda: model.fit(x, x, batch_size=batch, epochs=1, verbose=0, shuffle=True), seconds
    )
    return first, per


def gan_iteration(batch: int, images, jit: bool):
    """(iteration, generator, discriminator): Keras-GAN's dcgan.py iteration as a call."""
    optimizer = keras.optimizers.Adam(2e-4, 0.5)
    discriminator = _discriminator()
    discriminator.compile(
        loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"], jit_compile=jit
    )
    generator = _generator()
    z = keras.Input((100,))
    discriminator.trainable = False
    combined = keras.Model(z, discriminator(generator(z)))
    combined.compile(
        loss="binary_crossentropy", optimizer=keras.optimizers.Adam(2e-4, 0.5), jit_compile=jit
    )
    valid, fake = np.ones((batch, 1), np.float32), np.zeros((batch, 1), np.float32)
    x = images * 2.0 - 1.0
    rng = np.random.default_rng(0)

    def iteration():
        real = x[rng.integers(0, len(x), batch)]
        noise = rng.normal(0, 1, (batch, 100)).astype(np.float32)
        # Keras-GAN calls generator.predict here; calling the model directly computes the
        # same images and was measured ~50 ms faster per iteration at batch 32 (predict
        # sets up a data pipeline per call), so the comparison keeps the faster Keras.
        generated = generator(noise, training=False)
        # Keras 3 reads `trainable` when a model trains, not when it is compiled as Keras 2
        # did: left False, the discriminator's own updates would change nothing.
        discriminator.trainable = True
        discriminator.train_on_batch(real, valid)
        discriminator.train_on_batch(generated, fake)
        discriminator.trainable = False
        combined.train_on_batch(noise, valid)

    return iteration, generator, discriminator


def _time_gan(batch: int, seconds: float, images, jit: bool) -> tuple[float, float]:
    """Keras-GAN's dcgan.py iteration: (first two iterations' seconds, steady seconds per
    iteration). Timed per iteration, not per `steps`, since one iteration with XLA on can
    take seconds here."""
    iteration, _, _ = gan_iteration(batch, images, jit)
    # Two warm-up iterations: the first traces and compiles, the second warms the second label.
    first, per, _ = timed(iteration, seconds, warmup=2, min_calls=3)
    return first, per


def _variants(name: str) -> list[dict]:
    """The Keras settings tried: XLA off and on, and for fit() 1 or 100 steps per call."""
    executions = [1] if name == "dcgan" else [1, STEPS_PER_EXECUTION]
    return [
        {"jit_compile": jit, "steps_per_execution": spe}
        for jit in (False, True)
        for spe in executions
    ]


def time_model(name: str, batch: int, steps: int, seconds: float, images: np.ndarray) -> dict:
    """The fastest of the Keras settings a user would try (_variants), each timed for
    `seconds`: {steps_per_s, compile_s, jit_compile, steps_per_execution, variants}."""
    rows = []
    for variant in _variants(name):
        keras.utils.set_random_seed(0)
        if name == "dcgan":
            first, per = _time_gan(batch, seconds, images, variant["jit_compile"])
            per_step, warmup_steps = per, 2
        else:
            model = _autoencoder() if name == "autoencoder" else KerasVAE()
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss="mse" if name == "autoencoder" else None,
                **variant,
            )
            steps = min(steps, len(images) // batch)
            first, per = _time_fit(model, images, batch, steps, seconds)
            per_step, warmup_steps = per / steps, steps
        compile_s = max(first - warmup_steps * per_step, 0.0)
        rows.append({"steps_per_s": 1 / per_step, "compile_s": compile_s, **variant})
        keras.backend.clear_session()
    best = dict(max(rows, key=lambda r: r["steps_per_s"]))
    best["variants"] = rows
    best["framework"] = f"keras {keras.__version__} (tensorflow {tf.__version__})"
    return best
