"""Small torch helpers shared by the estimators: seeding without global side
effects, and device resolution."""

import contextlib
import numbers

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


@contextlib.contextmanager
def torch_threads(n_threads):
    """Run the block with ``n_threads`` torch intra-op threads, then restore.

    Small networks gain nothing from intra-op threads, and when every core is
    busy (joblib workers, other processes) OpenMP's spinning threads make them
    many times slower: one thread per job, and parallelism across jobs.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
