"""The adversarial autoencoder's state and its Keras-GAN training iteration, jitted, with
explicit keys; the discriminator's update is the DCGAN's (steps/dcgan.py)."""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
from flax.training import train_state

from genjax import losses, sharding
from genjax.models.aae import AdversarialAutoencoder, LatentDiscriminator, sample_prior
from genjax.steps.dcgan import BNTrainState, _accuracy, _adam, _bce, _discriminator_update

PIXEL_RANGE = (-1.0, 1.0)  # The decoder ends in tanh.
EVAL_OUTPUTS = ()  # The latent pictures encode their own test images (pictures below).


@flax.struct.dataclass
class AAEState:
    step: jax.Array  # Iterations done: two discriminator updates and one autoencoder update each.
    # Encoder and decoder, one Adam: Keras-GAN's combined model trains both.
    autoencoder: train_state.TrainState
    discriminator: BNTrainState  # No BatchNorm: its batch_stats stay {}.
    prior: str = flax.struct.field(pytree_node=False, default="gaussian")
    recon_weight: float = flax.struct.field(pytree_node=False, default=0.999)
    adversarial_weight: float = flax.struct.field(pytree_node=False, default=0.001)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_params(autoencoder: AdversarialAutoencoder, discriminator: LatentDiscriminator, key):
    ae_key, latent_key, d_key = jax.random.split(key, 3)
    x = jnp.zeros((1, *autoencoder.image_shape), jnp.float32)
    z = jnp.zeros((1, autoencoder.latent_dim), jnp.float32)
    ae = autoencoder.init({"params": ae_key, "latent": latent_key}, x)["params"]
    return ae, discriminator.init(d_key, z)["params"]


def create_state(
    autoencoder: AdversarialAutoencoder,
    discriminator: LatentDiscriminator,
    learning_rate: float,
    beta1: float,
    key: jax.Array,
    *,
    prior: str = "gaussian",
    recon_weight: float = 0.999,
    adversarial_weight: float = 0.001,
) -> AAEState:
    """Both parts with Adam(learning_rate, beta1), as Keras-GAN (2e-4, 0.5); the prior and
    the loss weights bound as static settings."""
    ae_params, d_params = _init_params(autoencoder, discriminator, key)
    tx = _adam(learning_rate, beta1)
    ae = train_state.TrainState.create(apply_fn=autoencoder.apply, params=ae_params, tx=tx)
    d = BNTrainState.create(apply_fn=discriminator.apply, params=d_params, tx=tx, batch_stats={})

    def zero():  # A strong int32 step, or the second call compiles again; one buffer each, donated.
        return jnp.zeros((), jnp.int32)

    return AAEState(
        step=zero(),
        autoencoder=ae.replace(step=zero()),
        discriminator=d.replace(step=zero()),
        prior=prior,
        recon_weight=recon_weight,
        adversarial_weight=adversarial_weight,
    )


def latent_dim(state: AAEState) -> int:
    """The code's size (static: read from the encoder's last layer)."""
    return state.autoencoder.params["mu"]["kernel"].shape[1]


def prior_samples(state: AAEState, key: jax.Array, num: int) -> jax.Array:
    """[num, latent_dim] draws of the run's prior, split among devices as the batch."""
    return sharding.constrain_batch(sample_prior(key, state.prior, num, latent_dim(state)))


@jax.jit
def codes(state: AAEState, images: jax.Array, key: jax.Array) -> jax.Array:
    """The encoder's codes z = mu + eps * exp(log_var / 2), eps drawn with `key` (what
    Keras-GAN's encoder.predict returns, and the discriminator sees)."""
    ae = state.autoencoder
    return ae.apply_fn({"params": ae.params}, images, rngs={"latent": key}, method="code")


def discriminator_phase(state: AAEState, images, prior_key, code_key):
    """Keras-GAN's two discriminator updates: prior samples (label 1), then the encoder's
    codes of the batch (label 0), both drawn before either update."""
    z_prior = prior_samples(state, prior_key, images.shape[0])
    z_codes = codes(state, images, code_key)
    d = state.discriminator
    # No dropout in this discriminator: the update's dropout key is never read.
    d, loss_prior, logits_prior = _discriminator_update(d, z_prior, 1.0, prior_key)
    d, loss_codes, logits_codes = _discriminator_update(d, z_codes, 0.0, code_key)
    metrics = {
        "discriminator_loss": 0.5 * (loss_prior + loss_codes),
        "discriminator_accuracy": 50.0
        * (_accuracy(logits_prior, 1.0) + _accuracy(logits_codes, 0.0)),
        "d_prior": jnp.mean(jax.nn.sigmoid(logits_prior)),
        "d_codes": jnp.mean(jax.nn.sigmoid(logits_codes)),
    }
    return state.replace(discriminator=d), metrics


def _autoencoder_terms(state: AAEState, params, images, latent_key):
    """Per-example [B]: Keras's mse of the reconstruction, the BCE of the frozen
    discriminator calling the code a prior sample, and their weighted sum; and its logits."""
    ae, d = state.autoencoder, state.discriminator
    reconstruction, z = ae.apply_fn({"params": params}, images, rngs={"latent": latent_key})
    # The discriminator's parameters are closed over, not differentiated: frozen.
    logits = d.apply_fn({"params": d.params}, z)
    adversarial = _bce(logits, 1.0)
    mse = losses.mean_squared_error(images, reconstruction)
    terms = {
        "autoencoder_loss": state.recon_weight * mse + state.adversarial_weight * adversarial,
        "reconstruction_loss": mse,
        "adversarial_loss": adversarial,
    }
    return terms, logits


def autoencoder_phase(state: AAEState, images, latent_key):
    """Keras-GAN's combined update: encoder and decoder on recon_weight * mse +
    adversarial_weight * BCE(D(z), 1), the discriminator frozen."""

    def loss_fn(params):
        terms, _ = _autoencoder_terms(state, params, images, latent_key)
        return jnp.mean(terms["autoencoder_loss"]), terms

    grads, terms = jax.grad(loss_fn, has_aux=True)(state.autoencoder.params)
    ae = state.autoencoder.apply_gradients(grads=grads)
    return state.replace(autoencoder=ae), {k: jnp.mean(v) for k, v in terms.items()}


@functools.partial(jax.jit, donate_argnames="state")
def train_step(state: AAEState, batch, key):
    """One Keras-GAN iteration on a batch of images: D on prior samples and on the batch's
    codes, then the autoencoder; (state, metrics)."""
    key = jax.random.fold_in(key, state.step)
    prior_key, code_key, latent_key = jax.random.split(key, 3)
    state, d_metrics = discriminator_phase(state, batch["image"], prior_key, code_key)
    state, ae_metrics = autoencoder_phase(state, batch["image"], latent_key)
    return state.replace(step=state.step + 1), {**d_metrics, **ae_metrics}


@jax.jit
def eval_step(state: AAEState, batch, key):
    """Per example [B], on held-out images: the autoencoder's loss terms, and the
    discriminator on their codes and on as many prior samples (P(prior), and whether it is
    right)."""
    prior_key, latent_key = jax.random.split(key)
    images = batch["image"]
    terms, logits_codes = _autoencoder_terms(state, state.autoencoder.params, images, latent_key)
    d = state.discriminator
    logits_prior = d.apply_fn({"params": d.params}, prior_samples(state, prior_key, len(images)))
    right = (logits_prior > 0).astype(jnp.float32) + (logits_codes <= 0).astype(jnp.float32)
    return terms | {
        "d_prior": jax.nn.sigmoid(logits_prior),
        "d_codes": jax.nn.sigmoid(logits_codes),
        "discriminator_accuracy": 50.0 * right,
    }


@jax.jit
def decode(state: AAEState, z: jax.Array) -> jax.Array:
    """Codes [N, latent_dim] -> images [N, 28, 28, 1] in [-1, 1]."""
    ae = state.autoencoder
    return ae.apply_fn({"params": ae.params}, z, method="decode")


@jax.jit
def reconstruct(state: AAEState, images: jax.Array) -> jax.Array:
    """Decodings of the encoder's mu: the reconstruction without sampling noise."""
    ae = state.autoencoder
    mu, _ = ae.apply_fn({"params": ae.params}, images, method="encode")
    return decode(state, mu)


@jax.jit
def pictures(state: AAEState, shown, prior_z, latent_images, code_key) -> dict[str, jax.Array]:
    """An image point's pictures in one program: the reconstructions of the shown images,
    the decodings of fixed prior samples (images in [-1, 1]), and the codes of the
    latent-plot images, eps drawn with `code_key` (the same every time)."""
    return {
        "reconstructions": reconstruct(state, shown),
        "generated": decode(state, prior_z),
        "codes": codes(state, latent_images, code_key),
    }
