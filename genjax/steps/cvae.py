"""The conditional VAE's state, its jitted train/eval steps, its likelihood bound log p(x | y)
and its pictures. The loss is the VAE's (steps/vae.py), given the label."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from genjax import losses
from genjax.evaluation import likelihood
from genjax.evaluation.sample_quality import requested_labels
from genjax.models.cvae import CVAE
from genjax.steps import vae
from genjax.steps.state import adam
from genjax.steps.state import create as create_train_state
from genjax.steps.vae import VAEState, interpolation_points, manifold_grid

PIXEL_RANGE = vae.PIXEL_RANGE  # The decoder's sigmoid, as the VAE's.
# The per-example output of the eval step that the latent-space pictures plot.
EVAL_OUTPUTS = ("z_mean",)


class CVAEState(VAEState):
    """The VAE's state plus the number of classes its one-hot labels have (static)."""

    num_classes: int = struct.field(pytree_node=False, default=10)


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_params(model: CVAE, num_classes: int, key: jax.Array):
    """The model's initial parameters; jitted once per model shape."""
    init_key, latent_key = jax.random.split(key)
    x = jnp.zeros((1, *model.image_shape), jnp.float32)
    y = jnp.zeros((1, num_classes), jnp.float32)
    return model.init({"params": init_key, "latent": latent_key}, x, y)["params"]


def create_state(
    model: CVAE,
    num_classes: int,
    learning_rate: float,
    beta: float,
    key: jax.Array,
    likelihood: str = "mse",
    dynamic_binarization: bool = False,
) -> CVAEState:
    """As steps.vae.create_state, for labels of num_classes classes."""
    static = {
        "likelihood": likelihood,
        "dynamic_binarization": dynamic_binarization,
        "num_classes": num_classes,
    }
    params = init_params(model, num_classes, key)
    return create_train_state(
        model.apply, params, adam(learning_rate), cls=CVAEState, static=static, beta=beta
    )


def one_hot(state: CVAEState, labels: jax.Array) -> jax.Array:
    """int labels [B] -> float one-hots [B, num_classes], the model's conditioning."""
    return jax.nn.one_hot(labels, state.num_classes, dtype=jnp.float32)


def _terms(params, state: CVAEState, batch, key):
    """The VAE's per-example loss terms and posterior means, given the batch's labels."""
    return vae.loss_terms(params, state, batch, key, one_hot(state, batch["label"]))


@functools.partial(jax.jit, donate_argnames="state")
def train_step(state: CVAEState, batch, key):
    """One Adam step on the batch mean of reconstruction + beta * KL, given the labels."""
    key = jax.random.fold_in(key, state.step)

    def loss_fn(params):
        terms, _ = _terms(params, state, batch, key)
        return jnp.mean(terms["loss"]), terms

    grads, terms = jax.grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), {k: jnp.mean(v) for k, v in terms.items()}


@jax.jit
def eval_step(state: CVAEState, batch, key):
    """Per-example loss, reconstruction and KL [B] (one z sample each), and z_mean
    [B, latent_dim] (EVAL_OUTPUTS)."""
    terms, z_mean = _terms(state.params, state, batch, key)
    return terms | {"z_mean": z_mean}


@jax.jit
def encode(state, images, labels):
    """(images, int labels) -> (z_mean, z_log_var)."""
    return state.apply_fn({"params": state.params}, images, one_hot(state, labels), method="encode")


@jax.jit
def decode(state, z, y):
    """z [N, latent_dim], y [N, num_classes] (one-hot, or soft) -> images in [0, 1]."""
    return state.apply_fn({"params": state.params}, z, y, method="decode")


@jax.jit
def reconstruct(state, images, labels):
    """Decodings of the posterior means, with the images' own labels."""
    z_mean, _ = encode(state, images, labels)
    return decode(state, z_mean, one_hot(state, labels))


@jax.jit
def generate(state, key, labels):
    """Images of the classes `labels` [N], decoded from z ~ N(0, I) drawn with `key`."""
    latent_dim = state.params["z_mean"]["bias"].shape[0]
    z = jax.random.normal(key, (labels.shape[0], latent_dim))
    return decode(state, z, one_hot(state, labels))


def by_class(state, z: jax.Array) -> jax.Array:
    """[num_classes * len(z)] images, row-major: row c decodes every z as class c."""
    labels = jnp.repeat(jnp.arange(state.num_classes), z.shape[0])
    return decode(state, jnp.tile(z, (state.num_classes, 1)), one_hot(state, labels))


@functools.partial(
    jax.jit,
    static_argnames=(
        "num_generated",
        "class_columns",
        "manifold_size",
        "pairs",
        "interpolation_steps",
    ),
)
def pictures(
    state,
    shown: jax.Array,
    shown_labels: jax.Array,
    sample_key: jax.Array,
    *,
    num_generated: int,
    class_columns: int,
    manifold_size: int,
    pairs: int,
    interpolation_steps: int,
) -> dict[str, jax.Array]:
    """An epoch's pictures as images in [0, 1], in one program: the decodings of the shown
    images' z_mean (with their labels); `num_generated` decodings of z ~ N(0, I) drawn with
    `sample_key`, the classes in turn; `class_columns` z's (also from `sample_key`) decoded
    as every class (by_class); per class, the decodings over a manifold_size^2 grid of the
    prior's quantiles (0: none; 2-D latents); and `pairs` lines of `interpolation_steps`
    decodings between consecutive shown images, the code and the one-hot label both moving.
    """
    latent_dim = state.params["z_mean"]["bias"].shape[0]
    labels = requested_labels(0, num_generated, state.num_classes)
    column_z = jax.random.normal(jax.random.fold_in(sample_key, 1), (class_columns, latent_dim))
    out = {
        "reconstructions": reconstruct(state, shown, shown_labels),
        "generated": generate(state, sample_key, labels),
        "by_class": by_class(state, column_z),
    }
    if manifold_size:
        out["manifold"] = by_class(state, manifold_grid(manifold_size))
    if pairs:
        ends, _ = encode(state, shown[: 2 * pairs], shown_labels[: 2 * pairs])
        y = one_hot(state, shown_labels[: 2 * pairs])
        line = interpolation_points(ends[0::2], ends[1::2], interpolation_steps)
        line_y = interpolation_points(y[0::2], y[1::2], interpolation_steps)
        out["interpolations"] = decode(
            state, line.reshape(-1, latent_dim), line_y.reshape(-1, state.num_classes)
        )
    return out


@functools.partial(jax.jit, static_argnames=("num_samples", "chunk_size"))
def _bounds(state, x, labels, key, *, num_samples: int, chunk_size: int):
    y = one_hot(state, labels)

    def encode_x(x):
        return state.apply_fn({"params": state.params}, x, y, method="encode")

    def log_likelihood(x, z):
        logits = state.apply_fn({"params": state.params}, z, y, method="decode_logits")
        return -losses.bernoulli_nll(x, logits)

    return likelihood.iwae_bound(key, x, encode_x, log_likelihood, num_samples, chunk_size)


def likelihood_bounds(
    state, images, labels, key, *, num_samples: int, chunk_size: int, batch_size: int
) -> dict[str, float]:
    """Mean IWAE_k bound on log p(x | y) and the k-sample ELBO (nats) of a Bernoulli CVAE
    over binary images in [0, 1] and their labels; z ~ N(0, I) a priori, whatever the class.
    One jitted call per batch of batch_size (the last one padded)."""
    n = images.shape[0]
    totals = {"iwae": 0.0, "elbo": 0.0}
    for i, start in enumerate(range(0, n, batch_size)):
        idx = jnp.minimum(start + jnp.arange(batch_size), n - 1)
        bounds = _bounds(
            state,
            images[idx],
            labels[idx],
            jax.random.fold_in(key, i),
            num_samples=num_samples,
            chunk_size=chunk_size,
        )
        for k, v in jax.device_get(bounds).items():
            totals[k] += float(np.sum(v[: n - start], dtype=np.float64))
    return {k: v / n for k, v in totals.items()}
