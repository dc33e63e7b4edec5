"""Host-side pictures: image grids, reconstruction panels and latent scatter plots (numpy)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Scatter:
    """Points for a native W&B scatter plot: one row per point, with its class name."""

    xy: np.ndarray  # [N, 2]
    labels: Sequence[str]
    title: str


def to_uint8(images: np.ndarray, pixel_range=(0.0, 1.0)) -> np.ndarray:
    """Float images in pixel_range -> uint8 [0, 255]."""
    lo, hi = pixel_range
    scaled = (np.asarray(images, np.float32) - lo) / (hi - lo)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """[N, H, W, C] uint8 -> one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] image, row-major."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    if n > rows * cols:
        raise ValueError(f"{n} images do not fit a {rows}x{cols} grid")
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y : y + h, x : x + w] = images[i]
    return out


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray, cols: int = 8):
    """Rows alternate originals and their reconstructions: row 2k is input, row 2k+1 output."""
    n = len(originals)
    rows = -(-n // cols)
    interleaved = []
    for r in range(rows):
        block = slice(r * cols, min((r + 1) * cols, n))
        for part in (originals[block], reconstructions[block]):
            padded = np.full((cols, *originals.shape[1:]), 255, np.uint8)
            padded[: len(part)] = part
            interleaved.append(padded)
    return grid(np.concatenate(interleaved), 2 * rows, cols)


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, float]:
    """Projects codes [N, D] onto their first two principal components; also the variance kept."""
    z = np.asarray(z, np.float64)
    centred = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    explained = float(np.sum(s[:2] ** 2) / max(np.sum(s**2), 1e-30))
    return (centred @ vt[:2].T).astype(np.float32), explained


def latent_xy(z: np.ndarray) -> tuple[np.ndarray, str]:
    """Two coordinates per code: the code itself in 2-D, else a PCA projection; and a title."""
    z = np.asarray(z)
    if z.shape[1] == 2:
        return z.astype(np.float32), "latent space"
    if z.shape[1] == 1:
        return np.stack([z[:, 0], np.zeros_like(z[:, 0])], 1).astype(np.float32), "latent space"
    xy, explained = pca_2d(z)
    return xy, f"latent space, PCA of {z.shape[1]}-D codes ({explained:.0%} of variance)"


def scatter_png(xy: np.ndarray, labels: np.ndarray, class_names, title: str) -> np.ndarray:
    """A scatter of xy coloured by class, rendered to an RGB uint8 array with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # No display; render to memory.
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    try:
        cmap = plt.get_cmap("tab10")
        for k, name in enumerate(class_names):
            sel = labels == k
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=cmap(k % 10), label=name, alpha=0.7)
        ax.set_title(title)
        ax.legend(markerscale=4, fontsize=8, loc="best")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def save_png(image: np.ndarray, path) -> None:
    from PIL import Image

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    Image.fromarray(image).save(path)


def latent_plots(z: np.ndarray, labels: np.ndarray, class_names) -> tuple[np.ndarray, Scatter]:
    """The latent-space picture twice: a PNG coloured by class, and native scatter points."""
    xy, title = latent_xy(z)
    labels = np.asarray(labels)
    png = scatter_png(xy, labels, class_names, title)
    return png, Scatter(xy, [class_names[k] for k in labels], title)
