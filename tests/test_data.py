import gzip
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from genjax import data
from tests.conftest import write_idx, write_idx_dataset


def test_real_fashion_mnist_from_debian_idx_files(real_fashion_mnist):
    ds = real_fashion_mnist
    assert ds.train.images.shape == (60000, 28, 28, 1) and ds.train.images.dtype == np.uint8
    assert ds.test.images.shape == (10000, 28, 28, 1)
    assert ds.train.labels.shape == (60000,) and ds.train.labels.dtype == np.int32
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert np.bincount(ds.train.labels).tolist() == [6000] * 10
    assert np.bincount(ds.test.labels).tolist() == [1000] * 10
    # The published first labels of the training split: ankle boot, T-shirt, T-shirt, dress.
    assert ds.train.labels[:4].tolist() == [9, 0, 0, 3]
    assert ds.train.images.max() == 255 and ds.train.images.min() == 0
    assert "fashion-mnist" in ds.source


def test_auto_prefers_idx_in_data_dir(tmp_path):
    folder = write_idx_dataset(tmp_path / "fm", n_train=64, n_test=40)
    ds = data.load_dataset("fashion_mnist", data_dir=str(folder))
    assert len(ds.train) == 64 and len(ds.test) == 40
    assert str(folder) in ds.source


def test_uncompressed_idx_files_are_read(tmp_path):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = write_idx(tmp_path / "x-idx3-ubyte", array, compress=False)
    np.testing.assert_array_equal(data.read_idx(path), array)


@pytest.fixture
def idx_folder(tmp_path):
    return write_idx_dataset(tmp_path / "fm", n_train=20, n_test=10)


def _load(folder):
    return data.load_dataset("fashion_mnist", data_dir=str(folder), source="idx")


def test_missing_file_is_named(idx_folder):
    (idx_folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz: file not found"):
        _load(idx_folder)


def test_truncated_gzip_is_named(idx_folder):
    path = idx_folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz: corrupt or truncated"):
        _load(idx_folder)


def test_truncated_idx_data_is_named(idx_folder):
    path = idx_folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz: IDX file truncated"):
        _load(idx_folder)


def test_wrong_magic_number_is_named(idx_folder):
    path = idx_folder / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[0:4] = b"\x12\x34\x08\x01"
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte.gz: wrong magic number"):
        _load(idx_folder)


def test_image_and_label_counts_must_agree(idx_folder):
    write_idx(idx_folder / "train-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(data.DataError, match="holds 20 images but .* holds 19 labels"):
        _load(idx_folder)


@pytest.mark.parametrize("source", ["auto", "idx"])
def test_a_missing_data_dir_is_an_error_not_a_fallback(tmp_path, source):
    with pytest.raises(data.DataError, match="no such folder"):
        data.load_dataset("fashion_mnist", data_dir=str(tmp_path / "typo"), source=source)


def test_unknown_dataset_name():
    with pytest.raises(data.DataError, match="unknown dataset 'cifar11'.*fashion_mnist, mnist"):
        data.load_dataset("cifar11")


def test_tfds_path_under_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=50):
        ds = data.load_dataset("mnist", data_dir=str(tmp_path), source="tfds")
    assert ds.train.images.shape == (50, 28, 28, 1) and ds.train.images.dtype == np.uint8
    assert ds.test.labels.shape == (50,) and ds.test.labels.max() < 10
    assert "tfds mnist" in ds.source


def test_auto_falls_through_to_tfds(tmp_path):
    # No prepared dataset and no IDX files in data_dir: auto ends at a tfds download, which
    # mock_data turns into a no-op followed by generated examples.
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load_dataset("mnist", data_dir=str(tmp_path))
    assert len(ds.train) == 12 and "tfds mnist" in ds.source


def test_no_network_fails_fast_and_says_what_was_tried(tmp_path, monkeypatch):
    # No network, even where CI could reach the internet: a proxy on a closed local port.
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    start = time.monotonic()
    with pytest.raises(data.DataError) as excinfo:
        data.load_dataset("mnist", data_dir=str(tmp_path))
    elapsed = time.monotonic() - start
    message = str(excinfo.value)
    assert "Tried, in order" in message
    assert "a prepared tfds dataset" in message and "a tfds download: failed" in message
    assert "--data_dir=FOLDER" in message
    # A hang guard, not a speed test: tfds's own retries would take minutes.
    assert elapsed < 60, elapsed


def test_epoch_permutation_is_a_function_of_key_and_epoch():
    key = jax.random.key(0)
    p0 = np.asarray(data.epoch_permutation(key, 0, 100))
    assert sorted(p0.tolist()) == list(range(100))
    np.testing.assert_array_equal(p0, data.epoch_permutation(key, 0, 100))
    assert not np.array_equal(p0, data.epoch_permutation(key, 1, 100))
    assert not np.array_equal(p0, data.epoch_permutation(jax.random.key(1), 0, 100))


@pytest.mark.parametrize("pixel_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_scale_maps_uint8_onto_the_pixel_range(pixel_range):
    x = data.scale(np.array([0, 128, 255], np.uint8), pixel_range)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[[0, 2]], pixel_range, atol=1e-6)


@pytest.mark.parametrize("source", ["auto", "idx"])
def test_an_empty_data_dir_is_an_error_not_the_system_copy(tmp_path, monkeypatch, source):
    # No network, even where CI could reach it: auto's last resort, a download, fails fast.
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(data.DataError) as excinfo:
        data.load_dataset("fashion_mnist", data_dir=str(tmp_path), source=source)
    message = str(excinfo.value)
    assert "IDX files" in message and str(tmp_path) in message
    assert f"in {data.DEBIAN_FASHION_MNIST}" not in message.split("To provide")[0]
