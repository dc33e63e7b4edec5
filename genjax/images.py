"""Host-side pictures: image grids, reconstruction panels and latent scatter plots (numpy)."""

from __future__ import annotations

import dataclasses
import functools
import io
import threading
from collections.abc import Callable, Sequence

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


def latent_xy(
    z: np.ndarray, space: str = "latent space", vectors: str = "codes"
) -> tuple[np.ndarray, str]:
    """Two coordinates per code: the code itself in 2-D, else a PCA projection; and a title
    naming the space (and, projected, its vectors: a classifier's are features)."""
    z = np.asarray(z)
    if z.shape[1] == 2:
        return z.astype(np.float32), space
    if z.shape[1] == 1:
        return np.stack([z[:, 0], np.zeros_like(z[:, 0])], 1).astype(np.float32), space
    xy, explained = pca_2d(z)
    return xy, f"{space}, PCA of {z.shape[1]}-D {vectors} ({explained:.0%} of variance)"


# matplotlib is not thread-safe: several runs' W&B threads (a vectorized sweep) draw one
# figure at a time. (The GIL would serialize most of the drawing anyway.)
_DRAWING = threading.Lock()


def _one_figure_at_a_time(draw):
    @functools.wraps(draw)
    def locked(*args, **kwargs):
        with _DRAWING:
            return draw(*args, **kwargs)

    return locked


def _figure(**kwargs):
    """A matplotlib figure on its own Agg canvas: no pyplot, whose global figure registry is
    not thread-safe, since pictures are rendered on W&B's logging thread (Deferred)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _render(fig, **savefig) -> np.ndarray:
    """A matplotlib figure as an RGB uint8 array, through a PNG (savefig can grow the canvas
    to fit, bbox_inches="tight")."""
    from PIL import Image

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


@_one_figure_at_a_time
def scatter_png(xy: np.ndarray, labels: np.ndarray, class_names, title: str) -> np.ndarray:
    """A scatter of xy coloured by class, rendered to an RGB uint8 array with matplotlib.

    One figure per set of class names is kept and redrawn with each call's points and
    title: the axes, ticks and legend are built once instead of every epoch, ~40% of the
    rendering's CPU time (10,000 points: 0.12-0.15 -> 0.07 s), for the same pixels. The
    legend, the same every epoch, is drawn once and its pixels pasted back after each
    redraw (matplotlib's blitting: copy_from_bbox / restore_region): ~16 of the ~43 ms a
    redraw of 10,000 points took.
    """
    fig, ax, lines, legend_pixels = _scatter_figure(tuple(class_names))
    ax.set_title(title)  # Per call: a PCA title names its variance share, epoch by epoch.
    for k, line in enumerate(lines):
        sel = labels == k
        line.set_data(xy[sel, 0], xy[sel, 1])
    ax.relim()  # The limits of these points, with the margins a fresh plot would get.
    ax.autoscale_view()
    # The canvas's own pixels: no PNG encoded here only to be decoded again (the logging
    # thread encodes the workdir copy once, and W&B takes that file).
    fig.canvas.draw()
    fig.canvas.restore_region(legend_pixels)
    return np.array(fig.canvas.buffer_rgba())[..., :3]


@functools.lru_cache(maxsize=4)
def _scatter_figure(class_names: tuple[str, ...]):
    """The scatter's figure, axes, one line of markers per class (without points) and the
    legend's pixels, the legend itself hidden (used only under _DRAWING, by scatter_png)."""
    import matplotlib
    from matplotlib.transforms import Bbox

    fig = _figure(figsize=(7, 6), dpi=100)
    # Fixed margins, room for the legend at the right: tight_layout would measure every
    # label's text each epoch for the same layout.
    fig.subplots_adjust(left=0.09, right=0.77, bottom=0.07, top=0.94)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10"]
    # Markers of a line, not a scatter's collection: one marker stamped at every point
    # (Agg's draw_markers) is faster, and the same picture.
    lines = [
        ax.plot([], [], "o", ms=1.7, mew=0, color=cmap(k % 10), label=name, alpha=0.7)[0]
        for k, name in enumerate(class_names)
    ]
    # Beside the axes: covers no point, and loc="best" would search 5,000 points for a spot.
    legend = ax.legend(markerscale=4, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    # Its pixels, with a margin for the frame's antialiased edge (2 pixels on the left,
    # where the axes end 5 pixels away: borderaxespad; 4 elsewhere, figure background).
    fig.canvas.draw()
    x0, y0, x1, y1 = legend.get_window_extent().extents
    legend_pixels = fig.canvas.copy_from_bbox(Bbox.from_extents(x0 - 2, y0 - 4, x1 + 4, y1 + 4))
    legend.set_visible(False)
    return fig, ax, lines, legend_pixels


@_one_figure_at_a_time
def labelled_rows(rows: Sequence[np.ndarray], labels: Sequence[str], title: str) -> np.ndarray:
    """Rows of images ([K, H, W, C] uint8 each), one label per row, as one RGB picture."""
    cols = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    padded = []
    for r in rows:
        block = np.full((cols, *rows[0].shape[1:]), 255, np.uint8)
        block[: len(r)] = r
        padded.append(block)
    picture = grid(np.concatenate(padded), len(rows), cols)
    scale = 0.04  # Inches per pixel: 28-pixel images come out about 1.1 inch tall.
    fig = _figure(figsize=(picture.shape[1] * scale, 0.6 + picture.shape[0] * scale), dpi=100)
    ax = fig.subplots()
    ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=255)
    ax.set_yticks([2 + i * (h + 2) + h / 2 for i in range(len(rows))], labels=list(labels))
    ax.set_xticks([])
    ax.set_title(title)
    return _render(fig, bbox_inches="tight")  # Grows the canvas to fit long row labels.


def save_png(image: np.ndarray, path) -> None:
    from PIL import Image

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    # zlib level 1, not PIL's 6: about half the encoding time for files ~10% larger, on the
    # logging thread that competes with training for the cores.
    Image.fromarray(image).save(path, compress_level=1)


@dataclasses.dataclass(frozen=True)
class Deferred:
    """A picture rendered where it is logged (W&B's worker thread), not in the training loop:
    its inputs are already on the host, its matplotlib work (~0.3 s) overlaps training."""

    render: Callable[[], np.ndarray]


def resolve(picture):
    """An image as logged: an array or (array, caption), Deferred ones rendered now."""
    if isinstance(picture, tuple):
        return (resolve(picture[0]), *picture[1:])
    return picture.render() if isinstance(picture, Deferred) else picture


def latent_plots(
    z: np.ndarray,
    labels: np.ndarray,
    class_names,
    table_points: int,
    space: str = "latent space",
    vectors: str = "codes",
) -> tuple[Deferred, Scatter]:
    """The latent-space picture twice: a PNG of every point coloured by class (rendered when
    logged), and the first `table_points` as native scatter points (space and vectors name
    them in the title, see latent_xy)."""
    xy, title = latent_xy(z, space, vectors)
    labels = np.asarray(labels)
    png = Deferred(functools.partial(scatter_png, xy, labels, tuple(class_names), title))
    shown = slice(table_points)
    return png, Scatter(xy[shown], [class_names[k] for k in labels[shown]], title)
