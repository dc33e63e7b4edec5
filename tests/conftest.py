"""Shared fixtures: real Fashion-MNIST IDX files, IDX writing, an isolated W&B home."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
from pathlib import Path

# One persistent XLA compilation cache for the whole test session, subprocesses included
# (they inherit the environment): the same programs (a DCGAN step, the fused autoencoder
# steps) are otherwise compiled again by every test and every resumed process. Set before
# jax is imported; only compiles over a second are stored.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="genjax-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
else:
    _OWN_CACHE = None  # A pytest-xdist worker: the controller made it and removes it.

# The suite compiles far more than it runs (a few steps per program), and XLA:CPU's LLVM
# passes are much of a compile: at optimization level 1 (not the default 3) the DCGAN's
# 3-iteration run takes 17.6 s instead of 21.9 (CPU 24 against 33 s; its training
# iteration compiles in 7.5 s instead of 10.9) and the test feature network's 13.0 -> 10.7
# s. (Level 0 halves the DCGAN's compile but runs the classifier's convolutions 3x
# slower.) The same XLA programs, the same library kernels for matmuls and convolutions;
# the LLVM-emitted rest is less optimized. Set before jax is imported; subprocesses
# inherit it. An XLA_FLAGS that names a level keeps its own.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    _FLAGS = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{_FLAGS} --xla_backend_optimization_level=1".strip()

import numpy as np
import pytest

from genjax import data

REAL_FASHION_MNIST = Path(data.DEBIAN_FASHION_MNIST)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Writes an array as an IDX file (ubyte), the format of the MNIST distribution."""
    array = np.ascontiguousarray(array, np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_idx_dataset(folder: Path, n_train: int = 64, n_test: int = 40, seed: int = 0) -> Path:
    """A small dataset in the standard four IDX files, cut from the real Fashion-MNIST."""
    folder.mkdir(parents=True, exist_ok=True)
    real = data.load_dataset("fashion_mnist", source="idx")
    for split, n in (("train", n_train), ("test", n_test)):
        part = getattr(real, split)
        image_stem, label_stem = data.IDX_FILES[split]
        write_idx(folder / f"{image_stem}.gz", part.images[:n, :, :, 0])
        write_idx(folder / f"{label_stem}.gz", part.labels[:n])
    return folder


@pytest.fixture(scope="session")
def real_fashion_mnist() -> data.Dataset:
    """The full Fashion-MNIST from Debian's package, installed by scripts/setup.sh."""
    if not (REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"{REAL_FASHION_MNIST} is missing: run scripts/setup.sh "
            "(apt-get install dataset-fashion-mnist)"
        )
    return data.load_dataset("fashion_mnist", source="idx")


@pytest.fixture(scope="session")
def feature_net(tmp_path_factory) -> Path:
    """A small trained FID feature network (experiments.classifier, 20 steps on 1,000 real
    images): enough for the evaluation's code paths, made once per test process."""
    from experiments import classifier

    folder = tmp_path_factory.mktemp("feature_net")
    small = write_idx_dataset(folder / "data", n_train=1000, n_test=200)
    flags = [
        f"--data_dir={small}",
        "--data_source=idx",
        f"--workdir={folder / 'net'}",
        "--epochs=1",
        "--batch_size=50",
        "--latent_points=100",
        "--wandb_mode=disabled",
        "--progress=false",
    ]
    assert classifier.main(flags) == 0
    return folder / "net"


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    """No W&B key and no ~/.netrc: W&B as a new user without `wandb login` has it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / ".cache" / "wandb"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / ".local" / "wandb"))
    return home


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_sessionfinish(session, exitstatus):
    """The compilation cache lives as long as the test session (the controller's, with xdist)."""
    if _OWN_CACHE is not None and not hasattr(session.config, "workerinput"):
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
