"""genjax: deep generative models (AE, VAE, DCGAN) in JAX/Flax, logged to Weights & Biases."""

__version__ = "0.1.0"
