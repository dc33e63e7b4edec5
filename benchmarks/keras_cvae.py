"""The conditional VAE in Keras 3 on TensorFlow, for `python -m benchmarks.run --models=cvae
--compare=keras`: benchmarks/keras_models.py's KerasVAE with the one-hot label joined to the
encoder's input and to the code, trained the same way (model.fit, a custom train_step).
Random labels: the timing does not depend on them."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.keras_models import KerasVAE, _variants  # noqa: E402
from benchmarks.timing import timed  # noqa: E402

NUM_CLASSES = 10


class KerasCVAE(KerasVAE):
    """KerasVAE's layers and loss (784 * MSE + KL); call takes [images, one-hot labels]."""

    def call(self, inputs):
        x, y = inputs
        h = self.hidden(tf.concat([self.flatten(x), y], -1))
        mean, log_var = self.z_mean(h), self.z_log_var(h)
        z = mean + tf.exp(0.5 * log_var) * keras.random.normal(tf.shape(mean))
        return self.decoder_out(self.decoder_hidden(tf.concat([z, y], -1))), mean, log_var

    def train_step(self, data):
        (x, y), _ = data
        with tf.GradientTape() as tape:
            x_hat, mean, log_var = self([x, y], training=True)
            squared = tf.square(tf.reshape(x, (-1, 784)) - x_hat)
            kl = -0.5 * tf.reduce_sum(1 + log_var - tf.square(mean) - tf.exp(log_var), axis=-1)
            loss = tf.reduce_mean(tf.reduce_sum(squared, axis=-1) + kl)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        return {"loss": loss}


def build(latent_dim: int = 2) -> KerasCVAE:
    """The model, built for 28x28x1 images and NUM_CLASSES classes."""
    model = KerasCVAE(latent_dim)
    model([np.zeros((1, 28, 28, 1), np.float32), np.zeros((1, NUM_CLASSES), np.float32)])
    return model


def time_model(name: str, batch: int, steps: int, seconds: float, images: np.ndarray) -> dict:
    """As benchmarks.keras_models.time_model: the fastest of the Keras settings, each timed
    for `seconds` of model.fit over `steps` batches."""
    steps = min(steps, len(images) // batch)  # One epoch at most, as genjax's dispatch.
    x = images[: batch * steps]
    labels = np.random.default_rng(0).integers(0, NUM_CLASSES, len(x))
    y = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    rows = []
    for variant in _variants(name):
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), **variant)
        first, per, _ = timed(
            lambda model=model: model.fit(
                [x, y], x, batch_size=batch, epochs=1, verbose=0, shuffle=True
            ),
            seconds,
        )
        per_step = per / steps
        compile_s = max(first - steps * per_step, 0.0)
        rows.append({"steps_per_s": 1 / per_step, "compile_s": compile_s, **variant})
        keras.backend.clear_session()
    best = dict(max(rows, key=lambda r: r["steps_per_s"]))
    best["variants"] = rows
    best["framework"] = f"keras {keras.__version__} (tensorflow {tf.__version__})"
    return best
