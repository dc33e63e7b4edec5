"""The benchmark's Keras side of WGAN-GP: Keras-GAN's wgan_gp.py models in Keras 3 on
TensorFlow, for `python -m benchmarks.run --compare=keras`.

Keras 3 has no K.gradients, so the gradient-penalty loss of the Keras 2 original cannot be
compiled into a model: the critic and generator updates are tf.functions with nested
GradientTapes (keras.io's WGAN-GP example), called as Keras-GAN's loop calls
train_on_batch: n_critic critic updates, each on its own random real batch, then one
generator update. Timed with XLA off and on; the faster is reported.
"""

from __future__ import annotations

from benchmarks.keras_cgan import fastest_of_jit_settings  # Sets Keras's backend first.

import keras  # noqa: E402  isort: skip
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from benchmarks.timing import timed  # noqa: E402

LATENT_DIM, N_CRITIC, GP_WEIGHT = 100, 5, 10.0


def _generator() -> keras.Model:
    def up(features):
        return [layers.UpSampling2D(), layers.Conv2D(features, 4, padding="same"),
                layers.BatchNormalization(momentum=0.8), layers.Activation("relu")]  # fmt: skip

    return keras.Sequential(
        [
            keras.Input((LATENT_DIM,)),
            layers.Dense(128 * 7 * 7, activation="relu"),
            layers.Reshape((7, 7, 128)),
            *up(128),
            *up(64),
            layers.Conv2D(1, 4, padding="same"),
            layers.Activation("tanh"),
        ]  # fmt: skip
    )


def _critic() -> keras.Model:
    stack = [keras.Input((28, 28, 1))]
    for features, strides, bn, pad in ((16, 2, False, False), (32, 2, True, True),
                                       (64, 2, True, False), (128, 1, True, False)):  # fmt: skip
        stack.append(layers.Conv2D(features, 3, strides=strides, padding="same"))
        stack += [layers.ZeroPadding2D(((0, 1), (0, 1)))] if pad else []
        stack += [layers.BatchNormalization(momentum=0.8)] if bn else []
        stack += [layers.LeakyReLU(0.2), layers.Dropout(0.25)]
    return keras.Sequential([*stack, layers.Flatten(), layers.Dense(1)])


def _time_wgan_gp(batch: int, seconds: float, images, jit: bool) -> tuple[float, float]:
    """Keras-GAN's wgan_gp.py iteration: (first two iterations' seconds, steady seconds per
    iteration)."""
    generator, critic = _generator(), _critic()
    c_opt, g_opt = keras.optimizers.RMSprop(5e-5), keras.optimizers.RMSprop(5e-5)
    c_opt.build(critic.trainable_variables)
    g_opt.build(generator.trainable_variables)

    @tf.function(jit_compile=jit)
    def critic_update(real, z):
        with tf.GradientTape() as tape:
            fake = generator(z, training=True)
            alpha = tf.random.uniform((batch, 1, 1, 1))
            mixed = alpha * real + (1.0 - alpha) * fake
            with tf.GradientTape() as penalty_tape:
                penalty_tape.watch(mixed)
                scores = critic(mixed, training=True)
            grads = penalty_tape.gradient(scores, mixed)
            norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))
            penalty = tf.reduce_mean(tf.square(1.0 - norms))
            wasserstein = tf.reduce_mean(critic(real, training=True)) - tf.reduce_mean(
                critic(fake, training=True)
            )
            loss = -wasserstein + GP_WEIGHT * penalty
        weights = critic.trainable_variables
        c_opt.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    @tf.function(jit_compile=jit)
    def generator_update(z):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(critic(generator(z, training=True), training=True))
        weights = generator.trainable_variables
        g_opt.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    x = images * 2.0 - 1.0
    rng = np.random.default_rng(0)

    def noise():
        return rng.normal(0, 1, (batch, LATENT_DIM)).astype(np.float32)

    def iteration():
        for _ in range(N_CRITIC):
            critic_update(x[rng.integers(0, len(x), batch)], noise())
        generator_update(noise()).numpy()  # Waits for the iteration, as train_on_batch.

    first, per, _ = timed(iteration, seconds, warmup=2, min_calls=3)
    return first, per


def time_model(name: str, batch: int, steps: int, seconds: float, images: np.ndarray) -> dict:
    """The faster of XLA off and on, each timed for `seconds`: {steps_per_s, compile_s,
    jit_compile, steps_per_execution, variants, framework}; a step is one iteration."""
    if name != "wgan_gp":
        raise ValueError(f"benchmarks.keras_wgan_gp times WGAN-GP, not {name!r}")
    return fastest_of_jit_settings(lambda jit: _time_wgan_gp(batch, seconds, images, jit))
