"""The benchmark's Keras side of the CGAN: Keras-GAN's cgan.py in Keras 3 on TensorFlow,
trained by its loop of `train_on_batch` calls, for `python -m benchmarks.run --compare=keras`.

Timed with XLA compilation off and on (`jit_compile`); the faster is reported, as for the
DCGAN (benchmarks/keras_models.py). Random labels: timing does not need the real ones.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections.abc import Callable  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from benchmarks.timing import timed  # noqa: E402

LATENT_DIM, NUM_CLASSES = 100, 10


def _generator() -> keras.Model:
    noise = keras.Input((LATENT_DIM,))
    label = keras.Input((1,), dtype="int32")
    x = layers.Multiply()(
        [noise, layers.Flatten()(layers.Embedding(NUM_CLASSES, LATENT_DIM)(label))]
    )
    for width in (256, 512, 1024):
        x = layers.BatchNormalization(momentum=0.8)(layers.LeakyReLU(0.2)(layers.Dense(width)(x)))
    x = layers.Dense(784, activation="tanh")(x)
    return keras.Model([noise, label], layers.Reshape((28, 28, 1))(x))


def _discriminator() -> keras.Model:
    image = keras.Input((28, 28, 1))
    label = keras.Input((1,), dtype="int32")
    embedded = layers.Flatten()(layers.Embedding(NUM_CLASSES, 784)(label))
    x = layers.Multiply()([layers.Flatten()(image), embedded])
    x = layers.LeakyReLU(0.2)(layers.Dense(512)(x))
    for _ in range(2):
        x = layers.Dropout(0.4)(layers.LeakyReLU(0.2)(layers.Dense(512)(x)))
    return keras.Model([image, label], layers.Dense(1, activation="sigmoid")(x))


def _time_cgan(batch: int, seconds: float, images, jit: bool) -> tuple[float, float]:
    """Keras-GAN's cgan.py iteration: (first two iterations' seconds, steady seconds per
    iteration)."""
    discriminator = _discriminator()
    discriminator.compile(
        loss="binary_crossentropy",
        optimizer=keras.optimizers.Adam(2e-4, 0.5),
        metrics=["accuracy"],
        jit_compile=jit,
    )
    generator = _generator()
    noise, label = keras.Input((LATENT_DIM,)), keras.Input((1,), dtype="int32")
    discriminator.trainable = False
    combined = keras.Model([noise, label], discriminator([generator([noise, label]), label]))
    combined.compile(
        loss="binary_crossentropy", optimizer=keras.optimizers.Adam(2e-4, 0.5), jit_compile=jit
    )
    half = batch // 2
    valid, fake = np.ones((half, 1), np.float32), np.zeros((half, 1), np.float32)
    valid_full = np.ones((batch, 1), np.float32)
    x = images * 2.0 - 1.0
    rng = np.random.default_rng(0)

    def iteration():
        real = x[rng.integers(0, len(x), half)]
        labels = rng.integers(0, NUM_CLASSES, (half, 1)).astype(np.int32)
        z = rng.normal(0, 1, (half, LATENT_DIM)).astype(np.float32)
        # Called directly, not generator.predict: the same images, faster (keras_models.py).
        generated = generator([z, labels], training=False)
        # Keras 3 reads `trainable` when a model trains, not when it is compiled as Keras 2
        # did: left False, the discriminator's own updates would change nothing.
        discriminator.trainable = True
        discriminator.train_on_batch([real, labels], valid)
        discriminator.train_on_batch([generated, labels], fake)
        discriminator.trainable = False
        z = rng.normal(0, 1, (batch, LATENT_DIM)).astype(np.float32)
        sampled = rng.integers(0, NUM_CLASSES, (batch, 1)).astype(np.int32)
        combined.train_on_batch([z, sampled], valid_full)

    # Two warm-up iterations: the first traces and compiles, the second the second label.
    first, per, _ = timed(iteration, seconds, warmup=2, min_calls=3)
    return first, per


def fastest_of_jit_settings(time_iteration: Callable[[bool], tuple[float, float]]) -> dict:
    """time_iteration(jit_compile) -> (first two iterations' seconds, steady seconds per
    iteration), with XLA off and on: the faster as time_model's row, both as its variants."""
    rows = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        first, per = time_iteration(jit)
        compile_s = max(first - 2 * per, 0.0)
        rows.append({"steps_per_s": 1 / per, "compile_s": compile_s, "jit_compile": jit,
                     "steps_per_execution": 1})  # fmt: skip
        keras.backend.clear_session()
    best = dict(max(rows, key=lambda r: r["steps_per_s"]))
    best["variants"] = rows
    best["framework"] = f"keras {keras.__version__} (tensorflow {tf.__version__})"
    return best


def time_model(name: str, batch: int, steps: int, seconds: float, images: np.ndarray) -> dict:
    """The faster of XLA off and on, each timed for `seconds`: {steps_per_s, compile_s,
    jit_compile, steps_per_execution, variants, framework}; a step is one iteration."""
    if name != "cgan":
        raise ValueError(f"benchmarks.keras_cgan times the CGAN, not {name!r}")
    return fastest_of_jit_settings(lambda jit: _time_cgan(batch, seconds, images, jit))
