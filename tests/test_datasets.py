import gzip
import os
import re

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from skadv.datasets import load_digits, load_mnist

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_bytes(array, magic=None):
    """Serialize a uint8 array in the IDX format."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 + array.ndim
    header = magic.to_bytes(4, "big") + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def _write(path, content, compress=True):
    if compress:
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def _fake_mnist(rng, n_samples):
    images = rng.randint(0, 256, size=(n_samples, 28, 28)).astype(np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # pin the extremes
    labels = np.arange(n_samples, dtype=np.uint8) % 10
    return images, labels


def _write_mnist(directory, subsets, compress=True):
    """Write small fake MNIST files into ``directory``; return their arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    arrays = {}
    suffix = ".gz" if compress else ""
    for subset, n_samples in subsets.items():
        images, labels = _fake_mnist(rng, n_samples)
        images_name, labels_name = MNIST_FILES[subset]
        _write(directory / f"{images_name}{suffix}", _idx_bytes(images), compress)
        _write(directory / f"{labels_name}{suffix}", _idx_bytes(labels), compress)
        arrays[subset] = images, labels
    return arrays


@pytest.fixture
def no_env(monkeypatch):
    # The real data may be configured in the environment running the tests.
    monkeypatch.delenv("SKADV_DATA_HOME", raising=False)
    monkeypatch.delenv("SKADV_MNIST_URL", raising=False)


def _assert_matches(X, y, images, labels):
    assert X.shape == (len(images), 1, 28, 28)
    assert X.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_allclose(X[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)
    assert X.min() == 0.0
    assert X.max() == 1.0


# load_digits -----------------------------------------------------------------


def test_load_digits_bunch():
    bunch = load_digits()
    sk_digits = sk_datasets.load_digits()

    assert bunch.data.shape == (1797, 1, 8, 8)
    assert bunch.data.dtype == np.float32
    assert bunch.target.shape == (1797,)
    assert bunch.target.dtype == np.int64
    assert bunch.data.min() == 0.0
    assert bunch.data.max() == 1.0
    np.testing.assert_array_equal(bunch.target_names, np.arange(10))
    np.testing.assert_array_equal(
        np.bincount(bunch.target), np.bincount(sk_digits.target)
    )
    # Same pixels as scikit-learn's copy, divided by 16 and reshaped.
    np.testing.assert_allclose(
        bunch.data.reshape(1797, 64), sk_digits.data / 16, rtol=1e-7
    )
    assert "[0, 1]" in bunch.DESCR
    assert sk_digits.DESCR in bunch.DESCR


def test_load_digits_return_X_y():
    X, y = load_digits(return_X_y=True)
    bunch = load_digits()
    np.testing.assert_array_equal(X, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)


# load_mnist, on small fake IDX files -------------------------------------------


@pytest.mark.parametrize("subfolder", ["mnist", ""])
@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_from_data_home(tmp_path, no_env, subfolder, compress):
    # Files are found in data_home/mnist/ and in data_home itself, with or
    # without the .gz suffix.
    arrays = _write_mnist(tmp_path / subfolder, {"train": 5, "test": 3}, compress)

    for subset, (images, labels) in arrays.items():
        bunch = load_mnist(subset=subset, data_home=tmp_path)
        _assert_matches(bunch.data, bunch.target, images, labels)
        np.testing.assert_array_equal(bunch.target_names, np.arange(10))
        assert "MNIST" in bunch.DESCR

    X, y = load_mnist(subset="test", data_home=str(tmp_path), return_X_y=True)
    _assert_matches(X, y, *arrays["test"])


def test_load_mnist_default_subset_is_train(tmp_path, no_env):
    arrays = _write_mnist(tmp_path, {"train": 5})
    X, y = load_mnist(data_home=tmp_path, return_X_y=True)
    _assert_matches(X, y, *arrays["train"])


def test_load_mnist_data_home_from_environment(tmp_path, no_env, monkeypatch):
    arrays = _write_mnist(tmp_path / "data" / "mnist", {"test": 3})
    monkeypatch.setenv("SKADV_DATA_HOME", str(tmp_path / "data"))
    X, y = load_mnist(subset="test", return_X_y=True)
    _assert_matches(X, y, *arrays["test"])

    # An explicit data_home wins over the environment.
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "other"))):
        load_mnist(subset="test", data_home=tmp_path / "other")


def test_load_mnist_default_data_home(tmp_path, no_env, monkeypatch):
    # Without argument or environment variable: ~/skadv_data.
    monkeypatch.setenv("HOME", str(tmp_path))
    arrays = _write_mnist(tmp_path / "skadv_data" / "mnist", {"test": 3})
    X, y = load_mnist(subset="test", return_X_y=True)
    _assert_matches(X, y, *arrays["test"])


@pytest.mark.parametrize("subset", ["valid", "TRAIN", None, ["train"]])
def test_load_mnist_invalid_subset(tmp_path, subset):
    msg = (
        "The 'subset' parameter of load_mnist must be 'train' or 'test'; "
        f"got {subset!r}."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load_mnist(subset=subset, data_home=tmp_path)


def test_load_mnist_missing_files(tmp_path, no_env):
    # Only the labels are there: the message names the missing images file.
    _write_mnist(tmp_path, {"test": 3})
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    msg = (
        "MNIST file(s) t10k-images-idx3-ubyte.gz not found (with or without "
        f"'.gz') in '{tmp_path / 'mnist'}', '{tmp_path}'. Set the "
        "SKADV_DATA_HOME environment variable to the folder holding them, pass "
        "data_home=, or pass download=True to fetch them."
    )
    with pytest.raises(FileNotFoundError, match=re.escape(msg)):
        load_mnist(subset="test", data_home=tmp_path)

    with pytest.raises(
        FileNotFoundError,
        match=re.escape(
            "MNIST file(s) train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz "
            "not found"
        ),
    ):
        load_mnist(subset="train", data_home=tmp_path)


def test_load_mnist_wrong_magic_number(tmp_path, no_env):
    _write_mnist(tmp_path, {"test": 3})
    labels_path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _write(labels_path, _idx_bytes(np.zeros((3, 1, 1)), magic=2051))
    msg = (
        f"The MNIST file '{labels_path}' is corrupt or truncated: expected an IDX "
        "file with magic number 2049, got magic number 2051."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load_mnist(subset="test", data_home=tmp_path)


def test_load_mnist_truncated_array(tmp_path, no_env):
    _write_mnist(tmp_path, {"test": 3})
    images_path = tmp_path / "t10k-images-idx3-ubyte.gz"
    content = gzip.decompress(images_path.read_bytes())
    _write(images_path, content[:-10])
    msg = (
        f"The MNIST file '{images_path}' is corrupt or truncated: its header "
        "announces an array of shape (3, 28, 28) (2368 bytes in all), but the "
        "file holds 2358 bytes."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load_mnist(subset="test", data_home=tmp_path)


def test_load_mnist_truncated_header(tmp_path, no_env):
    _write_mnist(tmp_path, {"test": 3}, compress=False)
    labels_path = tmp_path / "t10k-labels-idx1-ubyte"
    labels_path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="expected an IDX file with magic number"):
        load_mnist(subset="test", data_home=tmp_path)
    labels_path.write_bytes((2049).to_bytes(4, "big") + b"\x00\x00")
    with pytest.raises(ValueError, match="but its header is cut short"):
        load_mnist(subset="test", data_home=tmp_path)


def test_load_mnist_truncated_gzip_stream(tmp_path, no_env):
    _write_mnist(tmp_path, {"test": 3})
    images_path = tmp_path / "t10k-images-idx3-ubyte.gz"
    images_path.write_bytes(images_path.read_bytes()[:-20])
    msg = f"Could not read the MNIST file '{images_path}'"
    with pytest.raises(ValueError, match=re.escape(msg) + ".*corrupt or truncated"):
        load_mnist(subset="test", data_home=tmp_path)


def test_load_mnist_mismatched_files(tmp_path, no_env):
    _write_mnist(tmp_path, {"test": 3})
    _write(tmp_path / "t10k-labels-idx1-ubyte.gz", _idx_bytes(np.zeros(4)))
    with pytest.raises(
        ValueError, match=r"do not match: images of shape \(3, 28, 28\)"
    ):
        load_mnist(subset="test", data_home=tmp_path)


# load_mnist(download=True), from a file:// "server" ----------------------------


@pytest.fixture
def mnist_server(tmp_path, monkeypatch):
    """A folder of fake .gz files, served through SKADV_MNIST_URL."""
    served = tmp_path / "served"
    arrays = _write_mnist(served, {"train": 5, "test": 3})
    monkeypatch.delenv("SKADV_DATA_HOME", raising=False)
    monkeypatch.setenv("SKADV_MNIST_URL", served.as_uri() + "/")
    return served, arrays


def test_load_mnist_download(tmp_path, mnist_server):
    _, arrays = mnist_server
    data_home = tmp_path / "home"

    X, y = load_mnist(
        subset="test", data_home=data_home, download=True, return_X_y=True
    )

    _assert_matches(X, y, *arrays["test"])
    # Saved under data_home/mnist/ with their final names only: no temporary
    # file left behind, and the train files were not fetched.
    assert sorted(os.listdir(data_home / "mnist")) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    # The next call reads them without downloading.
    X_again, _ = load_mnist(subset="test", data_home=data_home, return_X_y=True)
    np.testing.assert_array_equal(X_again, X)


def test_load_mnist_download_fetches_only_missing_files(tmp_path, mnist_server):
    served, arrays = mnist_server
    data_home = tmp_path / "home"
    # The labels are present locally (uncompressed, in data_home itself) and
    # differ from the served ones: they must be used, not replaced.
    images, labels = arrays["train"]
    local_labels = (labels + 1) % 10
    data_home.mkdir()
    _write(
        data_home / "train-labels-idx1-ubyte", _idx_bytes(local_labels), compress=False
    )

    X, y = load_mnist(data_home=data_home, download=True, return_X_y=True)

    _assert_matches(X, y, images, local_labels)
    assert os.listdir(data_home / "mnist") == ["train-images-idx3-ubyte.gz"]


def test_load_mnist_download_url_without_trailing_slash(
    tmp_path, mnist_server, monkeypatch
):
    served, arrays = mnist_server
    monkeypatch.setenv("SKADV_MNIST_URL", served.as_uri())
    X, y = load_mnist(
        subset="test", data_home=tmp_path / "home", download=True, return_X_y=True
    )
    _assert_matches(X, y, *arrays["test"])


def test_load_mnist_download_failure(tmp_path, mnist_server):
    served, _ = mnist_server
    (served / "t10k-images-idx3-ubyte.gz").unlink()
    data_home = tmp_path / "home"
    url = served.as_uri() + "/t10k-images-idx3-ubyte.gz"
    msg = f"Could not download the MNIST file '{url}'"
    with pytest.raises(OSError, match=re.escape(msg)):
        load_mnist(subset="test", data_home=data_home, download=True)
    assert os.listdir(data_home / "mnist") == []


def test_load_mnist_download_corrupt_file(tmp_path, mnist_server):
    # A file that downloads fine but does not parse is not kept.
    served, _ = mnist_server
    served_images = served / "t10k-images-idx3-ubyte.gz"
    served_images.write_bytes(served_images.read_bytes()[:-20])
    data_home = tmp_path / "home"
    url = served_images.as_uri()
    msg = f"The file downloaded from '{url}' is unusable: Could not read"
    with pytest.raises(ValueError, match=re.escape(msg)):
        load_mnist(subset="test", data_home=data_home, download=True)
    assert os.listdir(data_home / "mnist") == []


def test_load_mnist_default_url():
    from skadv.datasets._mnist import MNIST_URL

    assert MNIST_URL == "https://ossci-datasets.s3.amazonaws.com/mnist/"


# load_mnist, on the real files (SKADV_DATA_HOME) ------------------------------

# Images per digit in the original release.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module", params=["train", "test"])
def real_mnist(request):
    if not os.environ.get("SKADV_DATA_HOME"):
        pytest.skip("SKADV_DATA_HOME is not set: no real MNIST files to read.")
    try:
        return request.param, load_mnist(subset=request.param)
    except FileNotFoundError as exc:
        pytest.skip(f"MNIST files not found: {exc}")


@pytest.mark.mnist
def test_load_mnist_real(real_mnist):
    subset, bunch = real_mnist
    # The well-known sizes, digit counts and mean pixel intensities of MNIST.
    n_samples, counts, mean = {
        "train": (60000, MNIST_TRAIN_COUNTS, 0.1307),
        "test": (10000, MNIST_TEST_COUNTS, 0.1325),
    }[subset]
    X, y = bunch.data, bunch.target

    assert X.shape == (n_samples, 1, 28, 28)
    assert X.dtype == np.float32
    assert y.shape == (n_samples,)
    assert y.dtype == np.int64
    assert X.min() == 0.0
    assert X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), counts)
    assert X.mean() == pytest.approx(mean, abs=1e-4)
    if subset == "test":
        # The test set is in the original order (the train set of the shared
        # copy is reordered within each class).
        np.testing.assert_array_equal(y[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
