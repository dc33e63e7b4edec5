"""The VAE's state, its jitted train/eval steps and its samplers and pictures."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from genjax import losses
from genjax.models.autoencoder import VAE
from genjax.steps.state import TrainState, adam
from genjax.steps.state import create as create_train_state

PIXEL_RANGE = (0.0, 1.0)  # The decoder's sigmoid (or Bernoulli mean) lives in [0, 1].
# The per-example output of the eval step that the latent-space pictures plot.
EVAL_OUTPUTS = ("z_mean",)


@functools.partial(jax.jit, static_argnums=0)
def init_params(model: VAE, key: jax.Array):
    """The model's initial parameters; jitted once per model shape."""
    init_key, latent_key = jax.random.split(key)
    dummy = jnp.zeros((1, *model.image_shape), jnp.float32)
    return model.init({"params": init_key, "latent": latent_key}, dummy)["params"]


class VAEState(TrainState):
    """A TrainState plus the loss settings its steps are compiled for: static fields, part of
    the state's structure (so jit compiles once per setting) and never saved as arrays."""

    likelihood: str = struct.field(pytree_node=False, default="mse")  # "mse" or "bernoulli".
    dynamic_binarization: bool = struct.field(pytree_node=False, default=False)


def create_state(
    model: VAE,
    learning_rate: float,
    beta: float,
    key: jax.Array,
    likelihood: str = "mse",
    dynamic_binarization: bool = False,
) -> VAEState:
    """Initial parameters, Adam state, the KL weight (an array, so trials that differ in it
    train together under vmap) and the loss settings; module and optimizer bound once."""
    params = init_params(model, key)
    static = {"likelihood": likelihood, "dynamic_binarization": dynamic_binarization}
    return create_train_state(
        model.apply, params, adam(learning_rate), cls=VAEState, static=static, beta=beta
    )


def reconstruction_loss(likelihood: str, x: jax.Array, logits: jax.Array) -> jax.Array:
    """Per-example reconstruction term: the report's 784 * MSE, or a Bernoulli NLL in nats."""
    if likelihood == "bernoulli":
        return losses.bernoulli_nll(x, logits)
    return losses.sum_squared_error(x, jax.nn.sigmoid(logits))


def binarize(key: jax.Array, x: jax.Array) -> jax.Array:
    """Dynamic binarization: each pixel ~ Bernoulli(its intensity), fresh for every batch."""
    return jax.random.bernoulli(key, x).astype(x.dtype)


def loss_terms(params, state: VAEState, batch, key, *conditioning):
    """Per-example loss terms [B] (one z sample each) and the posterior means; conditioning:
    the model's inputs after the images (the CVAE's one-hot labels)."""
    bin_key, latent_key = jax.random.split(key)
    x = batch["image"]
    if state.dynamic_binarization:
        x = binarize(bin_key, x)
    logits, z_mean, z_log_var = state.apply_fn(
        {"params": params}, x, *conditioning, rngs={"latent": latent_key}
    )
    recon = reconstruction_loss(state.likelihood, x, logits)
    kl = losses.gaussian_kl(z_mean, z_log_var)
    loss = recon + state.hparams["beta"] * kl
    return {"loss": loss, "reconstruction_loss": recon, "kl_loss": kl}, z_mean


@functools.partial(jax.jit, donate_argnames="state")
def train_step(state: VAEState, batch, key):
    """One Adam step on the batch mean of reconstruction + beta * KL."""
    key = jax.random.fold_in(key, state.step)

    def loss_fn(params):
        terms, _ = loss_terms(params, state, batch, key)
        return jnp.mean(terms["loss"]), terms

    grads, terms = jax.grad(loss_fn, has_aux=True)(state.params)
    metrics = {k: jnp.mean(v) for k, v in terms.items()}
    return state.apply_gradients(grads=grads), metrics


@jax.jit
def eval_step(state: VAEState, batch, key):
    """Per-example loss, reconstruction and KL, [B] each (one z sample each), and the
    posterior mean z_mean [B, latent_dim] (EVAL_OUTPUTS)."""
    terms, z_mean = loss_terms(state.params, state, batch, key)
    return terms | {"z_mean": z_mean}


@jax.jit
def encode(state, images):
    """images -> (z_mean, z_log_var)."""
    return state.apply_fn({"params": state.params}, images, method="encode")


@jax.jit
def decode(state, z):
    """z [N, latent_dim] -> images [N, 28, 28, 1] in [0, 1]."""
    return state.apply_fn({"params": state.params}, z, method="decode")


@jax.jit
def reconstruct(state, images):
    """Decodings of the posterior means: the reconstruction without sampling noise."""
    z_mean, _ = encode(state, images)
    return decode(state, z_mean)


@functools.partial(jax.jit, static_argnames="num")
def generate(state, key, num: int):
    """`num` images decoded from z ~ N(0, I) drawn with `key`: the same key, the same images."""
    latent_dim = state.params["z_mean"]["bias"].shape[0]
    return decode(state, jax.random.normal(key, (num, latent_dim)))


def manifold_grid(size: int = 20) -> jax.Array:
    """[size*size, 2] latent points on the prior's quantiles (5% .. 95%), row-major, y down."""
    q = jax.scipy.special.ndtri(jnp.linspace(0.05, 0.95, size))
    ys, xs = jnp.meshgrid(q[::-1], q, indexing="ij")
    return jnp.stack([xs.ravel(), ys.ravel()], axis=-1)


def interpolation_points(z_start: jax.Array, z_end: jax.Array, steps: int) -> jax.Array:
    """[pairs, steps, latent_dim]: straight lines from z_start to z_end, ends included."""
    t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
    return z_start[:, None, :] * (1.0 - t) + z_end[:, None, :] * t


@functools.partial(
    jax.jit, static_argnames=("num_generated", "manifold_size", "pairs", "interpolation_steps")
)
def pictures(
    state,
    shown: jax.Array,
    sample_key: jax.Array,
    *,
    num_generated: int,
    manifold_size: int,
    pairs: int,
    interpolation_steps: int,
) -> dict[str, jax.Array]:
    """An epoch's pictures as images in [0, 1], in one program: the decodings of the shown
    images' z_mean, `num_generated` decodings of z ~ N(0, I) drawn with `sample_key`, the
    decodings over a manifold_size^2 grid of the prior's quantiles (0: none; 2-D latents),
    and `pairs` lines of `interpolation_steps` decodings between consecutive shown images.

    One jitted function rather than one per picture: the first picture point compiles one
    program (~1.1 s against 2.3-2.8 s for the five functions, first calls in a fresh
    process on a 2-core CPU).
    """
    out = {
        "reconstructions": reconstruct(state, shown),
        "generated": generate(state, sample_key, num_generated),
    }
    if manifold_size:
        out["manifold"] = decode(state, manifold_grid(manifold_size))
    if pairs:
        ends, _ = encode(state, shown[: 2 * pairs])
        line = interpolation_points(ends[0::2], ends[1::2], interpolation_steps)
        out["interpolations"] = decode(state, line.reshape(-1, line.shape[-1]))
    return out
