"""Datasets by name, from tfds or the standard IDX files, held whole on the device.

Sources, in the order `--data_source=auto` tries them:
  1. a prepared tfds dataset in `data_dir` (or tfds's default folder);
  2. the four IDX `.gz` files in `data_dir`, or, with no `data_dir`, where Debian's
     `dataset-fashion-mnist` puts them;
  3. a tfds download (into `data_dir`), with tfds's retries off so that no network fails in
     seconds.
A `data_dir` that exists but holds none of these is an error, never a fallback to another copy.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from genjax import sharding

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(RuntimeError):
    """Data that cannot be loaded; the message names the file or source and the fix."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    # Folders where a system package installs this dataset's IDX files.
    system_dirs: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASETS = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), tuple(str(d) for d in range(10))),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        (28, 28, 1),
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        system_dirs=(DEBIAN_FASHION_MNIST,),
    ),
}


@dataclasses.dataclass(frozen=True)
class Split:
    """One split on the host: uint8 images [N, H, W, C] and int32 labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    info: DatasetInfo
    train: Split
    test: Split
    source: str  # Where the data came from, for the log and summary.json.
    # The test split before processing (the VAE's binarization), when it was processed.
    raw_test: Split | None = None

    @property
    def unprocessed_test(self) -> Split:
        """The test split as the dataset gives it (before the VAE's binarization)."""
        return self.test if self.raw_test is None else self.raw_test

    def fixed_test_examples(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `count` test images and labels: the same for every run and epoch, so
        that pictures can be compared."""
        count = min(count, len(self.test))
        return self.test.images[:count], self.test.labels[:count]


def dataset_info(name: str) -> DatasetInfo:
    """The dataset's static description, or a DataError listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}"
        ) from None


# --- IDX files ---------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (gzip-compressed or not) into a numpy array, checking every byte."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(
                f"{path}: corrupt or truncated gzip data ({e}); download the file again"
            ) from None
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file: {len(raw)} bytes, not even a header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: wrong magic number 0x{raw[:4].hex()}; not an IDX file "
            "(expected 0x0000 then a type byte and the number of dimensions, e.g. 0x00000803)"
        )
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {what}: header says shape {shape} ({expected} bytes of data), "
            f"found {got}; download the file again"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def load_idx_split(folder: str | os.PathLike, split: str, info: DatasetInfo) -> Split:
    """Loads one split from the standard IDX files in a folder, with checks on their contents."""
    folder = Path(folder)
    image_stem, label_stem = IDX_FILES[split]
    paths = {}
    for stem in (image_stem, label_stem):
        path = _find_idx(folder, stem)
        if path is None:
            raise DataError(f"{folder / (stem + '.gz')}: file not found")
        paths[stem] = path
    images = read_idx(paths[image_stem])
    labels = read_idx(paths[label_stem])
    h, w, c = info.image_shape
    if images.ndim != 3 or images.shape[1:] != (h, w) or images.dtype != np.uint8:
        raise DataError(
            f"{paths[image_stem]}: expected uint8 images of shape [N, {h}, {w}], "
            f"found {images.dtype} {list(images.shape)}"
        )
    if labels.ndim != 1:
        raise DataError(f"{paths[label_stem]}: expected a 1-D label file, found {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{paths[image_stem]} holds {len(images)} images but {paths[label_stem]} holds "
            f"{len(labels)} labels; the two files must come from the same release"
        )
    if len(labels) and int(labels.max()) >= info.num_classes:
        raise DataError(
            f"{paths[label_stem]}: label {int(labels.max())} is out of range for "
            f"{info.name}'s {info.num_classes} classes"
        )
    return Split(images.reshape(-1, h, w, c), labels.astype(np.int32))


def idx_folders(info: DatasetInfo, data_dir: str) -> list[Path]:
    """Folders searched for IDX files: data_dir (and data_dir/<name>) when given, else the
    system folders: a given folder is where the data must come from, never a fallback."""
    if data_dir:
        return [Path(data_dir), Path(data_dir) / info.name]
    return [Path(d) for d in info.system_dirs]


def _idx_present(folder: Path) -> bool:
    return any(_find_idx(folder, stem) for stem in IDX_FILES["train"])


# --- tfds ----------------------------------------------------------------------------------


def _tfds_split(builder, split: str) -> Split:
    """Reads a whole tfds split to numpy by iterating (batch_size=-1 crashes under mock_data)."""
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(split=split, shuffle_files=False).batch(10_000)
    images, labels = [], []
    for batch in tfds.as_numpy(ds):
        images.append(batch["image"])
        labels.append(batch["label"])
    return Split(np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int32))


def _tfds_builder(info: DatasetInfo, data_dir: str):
    """The tfds builder and whether its dataset is already prepared."""
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    # Looking for a prepared dataset that is not there makes tfds warn about its folder;
    # not finding it is an expected step of --data_source=auto, so keep the terminal clean.
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        builder = tfds.builder(info.name, data_dir=data_dir or None)
        prepared = builder.is_prepared()
    finally:
        absl_logging.set_verbosity(verbosity)
    return builder, prepared


def _tfds_download(builder) -> None:
    """Downloads and prepares a tfds dataset with tfds's retries off, so failing is fast."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import downloader

    # tfds retries a refused connection for ~3.5 minutes by default; one try is enough to
    # learn there is no network, and the error message then says how to provide the data.
    downloader.MAX_RETRIES = 0
    tfds.disable_progress_bar()
    builder.download_and_prepare()


def _check_split(split: Split, info: DatasetInfo, where: str) -> Split:
    if split.images.shape[1:] != info.image_shape:
        raise DataError(
            f"{where}: expected images of shape {list(info.image_shape)}, "
            f"found {list(split.images.shape[1:])}"
        )
    return split


def _load_tfds(info: DatasetInfo, data_dir: str, download: bool) -> Dataset:
    builder, _ = _tfds_builder(info, data_dir)
    if download:
        _tfds_download(builder)
    where = f"tfds {info.name} in {builder.data_dir}"
    return Dataset(
        info,
        _check_split(_tfds_split(builder, "train"), info, where),
        _check_split(_tfds_split(builder, "test"), info, where),
        source=where,
    )


def _how_to_provide(info: DatasetInfo) -> str:
    lines = [
        "To provide the data, do one of:",
        f"  - put the four IDX files ({', '.join(s + '.gz' for s in sum(IDX_FILES.values(), ()))})"
        " in a folder and pass --data_dir=FOLDER;",
        f"  - prepare it with tfds where there is network (`tfds build {info.name}`) and pass "
        "--data_dir to its data folder;",
    ]
    if info.name == "fashion_mnist":
        lines.append(
            "  - on Debian/Ubuntu: apt-get install dataset-fashion-mnist "
            f"(installs the IDX files in {DEBIAN_FASHION_MNIST})."
        )
    return "\n".join(lines)


def load_dataset(name: str, data_dir: str = "", source: str = "auto") -> Dataset:
    """Loads both splits of a dataset by name; `source` is auto, tfds or idx."""
    info = dataset_info(name)
    if source not in ("auto", "tfds", "idx"):
        raise DataError(f"unknown data source {source!r}; use auto, tfds or idx")
    if data_dir and source != "tfds" and not Path(data_dir).is_dir():
        # Otherwise a mistyped folder would silently fall back to the system's copy.
        raise DataError(
            f"--data_dir={data_dir}: no such folder; fix the path or leave --data_dir out "
            "(a folder for a tfds download is created with --data_source=tfds)"
        )
    if source == "idx":
        folders = idx_folders(info, data_dir)
        for folder in folders:
            if _idx_present(folder):
                return _load_idx(info, folder)
        raise DataError(
            f"no IDX files for {name} in {', '.join(map(str, folders)) or 'any folder'}.\n"
            + _how_to_provide(info)
        )
    if source == "tfds":
        try:
            return _load_tfds(info, data_dir, download=True)
        except DataError:
            raise
        except Exception as e:  # tfds raises many types; all mean "not available".
            raise DataError(
                f"tfds could not load {name}: {type(e).__name__}: {_first_line(e)}\n"
                + _how_to_provide(info)
            ) from None

    tried = []
    builder, prepared = _tfds_builder(info, data_dir)
    if prepared:
        return _load_tfds(info, data_dir, download=False)
    tried.append(f"a prepared tfds dataset in {builder.data_dir}: not there")
    folders = idx_folders(info, data_dir)
    for folder in folders:
        if _idx_present(folder):
            return _load_idx(info, folder)
        tried.append(f"IDX files in {folder}: not there")
    if not folders:
        tried.append("IDX files: no --data_dir given and no system package provides them")
    try:
        return _load_tfds(info, data_dir, download=True)
    except Exception as e:
        tried.append(f"a tfds download: failed ({type(e).__name__}: {_first_line(e)})")
    raise DataError(
        f"could not load {name}. Tried, in order:\n"
        + "\n".join(f"  {i + 1}. {t}" for i, t in enumerate(tried))
        + "\n"
        + _how_to_provide(info)
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def _load_idx(info: DatasetInfo, folder: Path) -> Dataset:
    return Dataset(
        info,
        load_idx_split(folder, "train", info),
        load_idx_split(folder, "test", info),
        source=f"IDX files in {folder}",
    )


# --- on the device -------------------------------------------------------------------------


def scale(images: jax.Array, pixel_range: Sequence[float]) -> jax.Array:
    """uint8 pixels -> float32 in [lo, hi]; done on the device, inside the jitted step."""
    lo, hi = pixel_range
    return images.astype(jnp.float32) * ((hi - lo) / 255.0) + lo


@dataclasses.dataclass(frozen=True)
class DeviceSplit:
    """A split resident on the device: images stay uint8 (4x smaller) until a step scales them."""

    images: jax.Array  # [N, H, W, C] uint8
    labels: jax.Array  # [N] int32

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def to_device(split: Split) -> DeviceSplit:
    """The split on every device (replicated over a data-parallel mesh)."""
    on_device = (jax.device_put(split.images), jax.device_put(split.labels))
    return DeviceSplit(*sharding.replicate(on_device))


def epoch_permutation(data_key: jax.Array, epoch: jax.Array | int, n: int) -> jax.Array:
    """The order of epoch `epoch`: a function of the run's data key and the epoch alone."""
    return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)


def binarize_split(split: Split, seed: int) -> Split:
    """A fixed stochastic binarization: each pixel is 255 with probability intensity / 255.

    Callers pass a fixed seed per split, so that every run sees the same binarized dataset,
    as with the standard binarized MNIST of the likelihood literature.
    """
    rng = np.random.default_rng(seed)
    on = rng.random(split.images.shape, dtype=np.float32) < split.images / np.float32(255.0)
    return Split(on.astype(np.uint8) * np.uint8(255), split.labels)
