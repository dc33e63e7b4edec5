"""The benchmark's Keras side trains what it times: Keras-GAN's iteration moves both networks."""

import numpy as np


def test_the_keras_dcgan_iteration_updates_the_discriminator_and_the_generator():
    """Keras 3 reads `trainable` when a model trains: a discriminator left frozen for the
    combined model would be timed without its own updates."""
    from benchmarks import keras_models

    images = np.random.default_rng(0).uniform(0, 1, (16, 28, 28, 1)).astype(np.float32)
    iteration, generator, discriminator = keras_models.gan_iteration(4, images, jit=False)

    def kernels(model):
        return [v.numpy().copy() for v in model.weights if "moving" not in v.path]

    d_before, g_before = kernels(discriminator), kernels(generator)
    iteration()
    for name, before, model in (("D", d_before, discriminator), ("G", g_before, generator)):
        moved = [not np.array_equal(a, b) for a, b in zip(before, kernels(model), strict=True)]
        assert all(moved), f"{name}: {moved}"
