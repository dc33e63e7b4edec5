"""Sample quality in a feature network's space: FID and improved precision/recall.

Every image set, real or generated, takes the same path: pixels quantized to uint8 (as a
saved PNG would be; the real data already is), scaled to [0, 1], then through the feature
network in fixed-size batches. So the FID of a set against itself is 0 whatever produced it,
and N = 10,000 costs N x feature_dim floats on the host and one batch on the device.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genjax import data
from genjax.evaluation import fid as fid_lib
from genjax.evaluation import precision_recall as pr_lib

# Float images [B, H, W, C] in [0, 1] -> features [B, D]; jitted by its owner.
FeatureFn = Callable[[jax.Array], jax.Array]
# Batch index -> float images [B, H, W, C] in the model's pixel range (a generator's output).
SampleFn = Callable[[int], jax.Array]
# (batch index, labels [B]) -> images of those classes, as SampleFn (a conditional generator).
ConditionalSampleFn = Callable[[int, jax.Array], jax.Array]

NEIGHBOURS = 3  # k of Kynkaanniemi et al. (2019): their recommended value.


@functools.partial(jax.jit, static_argnames="pixel_range")
def quantize(images: jax.Array, pixel_range: tuple[float, float]) -> jax.Array:
    """Float images in pixel_range -> uint8, rounded as images.to_uint8 rounds on the host."""
    lo, hi = pixel_range
    scaled = jnp.clip(jnp.round((images - lo) / (hi - lo) * 255.0), 0, 255)
    return scaled.astype(jnp.uint8)


def _pad_to(x: np.ndarray | jax.Array, size: int):
    """Pads the batch axis to `size` (repeating the first row), so one shape is compiled."""
    missing = size - x.shape[0]
    if not missing:
        return x
    return jnp.concatenate([x, jnp.repeat(x[:1], missing, axis=0)])


def features_of_uint8(
    feature_fn: FeatureFn, images: np.ndarray | jax.Array, batch_size: int
) -> np.ndarray:
    """uint8 images [N, H, W, C] -> features [N, D] (float32, host), in batches."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = jnp.asarray(images[start : start + batch_size])
        n = batch.shape[0]
        feats = feature_fn(data.scale(_pad_to(batch, batch_size), (0.0, 1.0)))
        out.append(np.asarray(jax.device_get(feats))[:n])
    return np.concatenate(out).astype(np.float32)


def features_of_samples(
    feature_fn: FeatureFn,
    sample: SampleFn,
    num: int,
    batch_size: int,
    pixel_range: Sequence[float],
) -> np.ndarray:
    """Features [num, D] of generated images, drawn batch by batch with sample(i)."""
    out, done, i = [], 0, 0
    while done < num:
        pixels = quantize(sample(i), tuple(pixel_range))
        take = min(num - done, pixels.shape[0])
        out.append(features_of_uint8(feature_fn, pixels[:take], batch_size))
        done, i = done + take, i + 1
    return np.concatenate(out)


def requested_labels(i: int, batch_size: int, num_classes: int) -> jax.Array:
    """The classes asked of a conditional generator in batch i: every class in turn, so
    N samples hold each class N / num_classes times (the test split's balance)."""
    return (jnp.arange(batch_size, dtype=jnp.int32) + i * batch_size) % num_classes


def conditional_features(
    features_and_logits: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    sample: ConditionalSampleFn,
    num: int,
    batch_size: int,
    num_classes: int,
    pixel_range: Sequence[float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features [num, D], requested labels [num], predicted labels [num]) of num images
    from a conditional generator, through the same quantization as features_of_samples."""
    feats, wanted, predicted, done, i = [], [], [], 0, 0
    while done < num:
        labels = requested_labels(i, batch_size, num_classes)
        pixels = quantize(sample(i, labels), tuple(pixel_range))
        f, logits = features_and_logits(data.scale(pixels, (0.0, 1.0)))
        take = min(num - done, pixels.shape[0])
        f, logits, labels = jax.device_get((f, logits, labels))
        feats.append(np.asarray(f)[:take])
        wanted.append(np.asarray(labels)[:take])
        predicted.append(np.argmax(logits, -1)[:take])
        done, i = done + take, i + 1
    return (
        np.concatenate(feats).astype(np.float32),
        np.concatenate(wanted),
        np.concatenate(predicted),
    )


def class_accuracy(wanted: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict[str, float]:
    """eval/class_accuracy: the share of generated images the feature network assigns to the
    class they were asked for; eval/class_accuracy_worst: that share for the worst class."""
    per_class = [
        np.mean(predicted[wanted == c] == c) for c in range(num_classes) if (wanted == c).any()
    ]
    return {
        "eval/class_accuracy": float(np.mean(predicted == wanted)),
        "eval/class_accuracy_worst": float(min(per_class)),
    }


@dataclasses.dataclass(frozen=True)
class Reference:
    """The real side, computed once per run: features, their Gaussian fit, k-NN radii."""

    features: np.ndarray  # [N, D]
    mean: np.ndarray
    cov: np.ndarray
    radii: np.ndarray  # Squared distance of each point to its k-th nearest neighbour.

    @classmethod
    def of(cls, features: np.ndarray, k: int = NEIGHBOURS) -> Reference:
        mean, cov = fid_lib.gaussian_fit(features)
        return cls(features, mean, cov, pr_lib.kth_neighbour_radii(features, k))


def scores(reference: Reference, generated: np.ndarray, k: int = NEIGHBOURS) -> dict[str, float]:
    """eval/fid, eval/precision, eval/recall of generated features against the reference."""
    fid = fid_lib.frechet_distance(reference.mean, reference.cov, *fid_lib.gaussian_fit(generated))
    precision, recall = pr_lib.precision_recall(
        reference.features, generated, k, real_radii=reference.radii
    )
    return {"eval/fid": fid, "eval/precision": precision, "eval/recall": recall}
