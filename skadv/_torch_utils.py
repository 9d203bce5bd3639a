"""Small torch helpers shared by the estimators: seeding without global side
effects, and device resolution."""

import contextlib
import hashlib
import numbers
import threading

import numpy as np
import torch
from sklearn.utils import check_random_state


def resolve_device(device):
    """Return a :class:`torch.device` for ``device``.

    ``"auto"`` picks CUDA when it is available, else the CPU. ``None`` is
    returned unchanged (the caller decides what it means).
    """
    if device is None:
        return None
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device; "
            f"got {device!r}."
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine; use device='cpu' or device='auto'."
        )
    if resolved.type == "cuda" and resolved.index is None:
        # "cuda" means the current device: make it comparable with a module's
        # parameter device, which always carries an index.
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def seed_from_random_state(random_state):
    """Draw a torch seed (an int) from a scikit-learn ``random_state``.

    ``None`` gives ``None``: the caller then leaves torch's generator alone.
    """
    if random_state is None:
        return None
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@contextlib.contextmanager
def torch_seed(seed):
    """Seed torch inside the block and restore the global generator after it.

    Scikit-learn estimators must not reseed the global generator as a side
    effect; ``torch.random.fork_rng`` saves and restores it. Nothing is done
    when ``seed`` is None.
    """
    if seed is None:
        yield
        return
    devices = (
        list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


_THREADS_LOCK = threading.Lock()
_threads_state = {"depth": 0, "previous": None}


@contextlib.contextmanager
def torch_threads(n_threads):
    """Run the block with ``n_threads`` torch intra-op threads, then restore.

    Small networks gain nothing from intra-op threads, and when every core is
    busy (joblib workers, other processes) OpenMP's spinning threads make them
    many times slower: one thread per job, and parallelism across jobs. The
    setting is process-wide, so concurrent blocks (joblib's threading backend,
    dask worker threads) share it: the first one in saves the caller's value
    and the last one out restores it.
    """
    with _THREADS_LOCK:
        if _threads_state["depth"] == 0:
            _threads_state["previous"] = torch.get_num_threads()
            torch.set_num_threads(n_threads)
        _threads_state["depth"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_state["depth"] -= 1
            if _threads_state["depth"] == 0:
                torch.set_num_threads(_threads_state["previous"])


def array_digest(X):
    """A content hash of a numeric array (dtype, shape and values).

    Cache keys for ``joblib.Memory``: SHA-256 runs two to three times faster
    than the MD5 of ``joblib.hash`` on large arrays (hardware SHA extensions),
    which matters when a grid search looks up every fold's maps.
    """
    X = np.ascontiguousarray(X)
    digest = hashlib.sha256(repr((X.dtype.str, X.shape)).encode())
    digest.update(memoryview(X.reshape(-1)).cast("B"))
    return digest.hexdigest()


def needs_key(memory):
    """Whether ``memory`` (from ``check_memory``) caches: keys worth computing."""
    return getattr(memory, "location", True) is not None
