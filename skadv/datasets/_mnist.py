"""MNIST, read from the original IDX files."""

import gzip
import os
import shutil
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

#: Where ``load_mnist(download=True)`` fetches the files from; the environment
#: variable ``SKADV_MNIST_URL`` overrides it (a mirror, or a ``file://`` folder).
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

_DATA_HOME_ENV = "SKADV_DATA_HOME"
_URL_ENV = "SKADV_MNIST_URL"
_DEFAULT_DATA_HOME = "~/skadv_data"
_SUBDIR = "mnist"

# subset -> (images file, labels file), without the ".gz" suffix.
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX magic numbers: two zero bytes, the type code 0x08 (unsigned byte) and the
# number of dimensions.
_LABELS_MAGIC = 2049
_IMAGES_MAGIC = 2051

_GZIP_MAGIC = b"\x1f\x8b"

_DOWNLOAD_TIMEOUT = 60

_DESCR = """\
.. _skadv_mnist_dataset:

MNIST handwritten digits
------------------------

70,000 grayscale images of handwritten digits, 28x28 pixels, 10 classes:
60,000 for training and 10,000 for testing (LeCun, Cortes and Burges), read
from the original IDX files. Images are returned as float32 arrays of shape
``(n_samples, 1, 28, 28)`` scaled from 0..255 to [0, 1]; targets are int64.
"""


def _get_data_home(data_home):
    """Resolve ``data_home``: the argument, else $SKADV_DATA_HOME, else ~."""
    if data_home is None:
        data_home = os.environ.get(_DATA_HOME_ENV) or _DEFAULT_DATA_HOME
    return Path(os.fspath(data_home)).expanduser()


def _find_file(name, directories):
    """Return the first existing ``name.gz`` or ``name`` in ``directories``."""
    for directory in directories:
        for candidate in (f"{name}.gz", name):
            path = directory / candidate
            if path.is_file():
                return path
    return None


def _read_idx(path, expected_magic):
    """Parse an IDX file of unsigned bytes (optionally gzipped) with numpy."""
    # Sniff the gzip magic bytes rather than trusting the suffix: downloads are
    # checked under a temporary name, and an IDX file starts with two zero bytes.
    with open(path, "rb") as f:
        is_gzip = f.read(2) == _GZIP_MAGIC
    opener = gzip.open if is_gzip else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        # gzip raises BadGzipFile (an OSError) on a bad header and EOFError on a
        # truncated stream.
        raise ValueError(
            f"Could not read the MNIST file {str(path)!r} ({exc}); it is corrupt "
            "or truncated. Delete it and download it again."
        ) from exc

    header_error = (
        f"The MNIST file {str(path)!r} is corrupt or truncated: expected an IDX "
        f"file with magic number {expected_magic}"
    )
    if len(raw) < 4:
        raise ValueError(f"{header_error}, got only {len(raw)} bytes.")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{header_error}, got magic number {magic}.")
    n_dims = raw[3]
    header_size = 4 + 4 * n_dims
    if len(raw) < header_size:
        raise ValueError(f"{header_error}, but its header is cut short.")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", n_dims, offset=4))
    expected_size = header_size + int(np.prod(shape))
    if len(raw) != expected_size:
        raise ValueError(
            f"The MNIST file {str(path)!r} is corrupt or truncated: its header "
            f"announces an array of shape {shape} ({expected_size} bytes in "
            f"all), but the file holds {len(raw)} bytes."
        )
    return np.frombuffer(raw, np.uint8, offset=header_size).reshape(shape)


def _download(name, directory, base_url, expected_magic):
    """Fetch ``name`` from ``base_url`` into ``directory`` and parse it.

    The file is written under a temporary name and only renamed once it has
    been downloaded completely and parsed, so an interrupted or bad download
    never passes for a good file on the next call.
    """
    directory.mkdir(parents=True, exist_ok=True)
    url = base_url.rstrip("/") + "/" + name
    destination = directory / name
    # Write next to the destination so the final rename cannot cross file
    # systems, and never leave a partial file under the real name. The pid keeps
    # concurrent downloads apart; plain open() (unlike mkstemp) honours the
    # umask, so the data can be shared.
    tmp_path = directory / f".{name}.{os.getpid()}.part"
    try:
        with open(tmp_path, "wb") as out:
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as response:
                shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as exc:
        tmp_path.unlink(missing_ok=True)
        raise OSError(
            f"Could not download the MNIST file {url!r}: {exc}. Set the "
            f"{_URL_ENV} environment variable to use a mirror, or download the "
            f"files by hand into {str(directory)!r}."
        ) from exc
    try:
        array = _read_idx(tmp_path, expected_magic)
    except ValueError as exc:
        tmp_path.unlink(missing_ok=True)
        raise ValueError(
            f"The file downloaded from {url!r} is unusable: {exc}"
        ) from exc
    os.replace(tmp_path, destination)
    return array


def load_mnist(*, subset="train", data_home=None, download=False, return_X_y=False):
    """Load MNIST as single-channel float32 images.

    The four files of the original release are read with numpy:
    ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (the same
    names without ``.gz`` are accepted too). They are looked for in
    ``data_home/mnist/`` first, then in ``data_home`` itself.

    =================   ================
    Classes                           10
    Samples total                  70000
    Samples (train)                60000
    Samples (test)                 10000
    Dimensionality           (1, 28, 28)
    Features              float32, [0, 1]
    =================   ================

    Parameters
    ----------
    subset : {"train", "test"}, default="train"
        Which split to load: the 60,000 training images or the 10,000 test
        images.

    data_home : str or path-like, default=None
        Folder holding the files (directly or in a ``mnist`` subfolder). If
        None, the ``SKADV_DATA_HOME`` environment variable is used, and
        ``~/skadv_data`` when it is not set.

    download : bool, default=False
        If True, fetch the missing files into ``data_home/mnist/`` from
        ``MNIST_URL``, or from the URL in the ``SKADV_MNIST_URL`` environment
        variable when it is set. If False, missing files raise
        :class:`FileNotFoundError`.

    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        data : ndarray of shape (n_samples, 1, 28, 28), dtype float32
            The images, in [0, 1].
        target : ndarray of shape (n_samples,), dtype int64
            The digit shown in each image.
        target_names : ndarray of shape (10,)
            The class labels, 0 to 9.
        DESCR : str
            Description of the dataset.

    (data, target) : tuple if ``return_X_y`` is True
        The arrays described above.

    Raises
    ------
    FileNotFoundError
        If a file is missing and ``download`` is False.
    ValueError
        If a file is corrupt or truncated.

    See Also
    --------
    load_digits : The 8x8 digits bundled with scikit-learn, in the same layout.

    Examples
    --------
    >>> from skadv.datasets import load_mnist
    >>> X, y = load_mnist(subset="test", return_X_y=True)  # doctest: +SKIP
    >>> X.shape, X.dtype, y.dtype  # doctest: +SKIP
    ((10000, 1, 28, 28), dtype('float32'), dtype('int64'))
    """
    if not isinstance(subset, str) or subset not in _FILES:
        raise ValueError(
            f"The 'subset' parameter of load_mnist must be 'train' or 'test'; "
            f"got {subset!r}."
        )
    data_home = _get_data_home(data_home)
    directories = [data_home / _SUBDIR, data_home]

    images_name, labels_name = _FILES[subset]
    magics = {images_name: _IMAGES_MAGIC, labels_name: _LABELS_MAGIC}
    paths = {name: _find_file(name, directories) for name in magics}
    missing = [name for name, path in paths.items() if path is None]
    if missing and not download:
        searched = ", ".join(repr(str(d)) for d in directories)
        missing_names = ", ".join(f"{name}.gz" for name in missing)
        raise FileNotFoundError(
            f"MNIST file(s) {missing_names} not found (with or without '.gz') in "
            f"{searched}. Set the {_DATA_HOME_ENV} environment variable to the "
            "folder holding them, pass data_home=, or pass download=True to "
            "fetch them."
        )
    base_url = os.environ.get(_URL_ENV) or MNIST_URL
    arrays = {}
    for name, magic in magics.items():
        if paths[name] is None:
            arrays[name] = _download(f"{name}.gz", directories[0], base_url, magic)
            paths[name] = directories[0] / f"{name}.gz"
        else:
            arrays[name] = _read_idx(paths[name], magic)

    images, labels = arrays[images_name], arrays[labels_name]
    if len(images) != len(labels):
        raise ValueError(
            f"The MNIST files {str(paths[images_name])!r} and "
            f"{str(paths[labels_name])!r} do not match: images of shape "
            f"{images.shape}, labels of shape {labels.shape}."
        )

    # One float32 copy, scaled in place, keeps the peak memory at one array.
    data = images.astype(np.float32)
    data /= 255
    data = data.reshape(-1, 1, *images.shape[1:])
    target = labels.astype(np.int64)
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        target_names=np.arange(10),
        DESCR=_DESCR,
    )
