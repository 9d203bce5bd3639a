"""Torch helpers shared by the estimators and the attacks: the model behind an
estimator, eval mode under a lock, devices, fingerprints, seeding without
global side effects, thread counts and cache keys."""

import contextlib
import hashlib
import numbers
import threading
import weakref

import joblib
import numpy as np
import torch
from sklearn.exceptions import NotFittedError
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


# The model is shared (clones, threads serving requests): explaining flips its
# modes and, for some methods, hooks its ReLUs, so one explanation at a time.
_MODULE_LOCKS = weakref.WeakKeyDictionary()
_MODULE_LOCKS_GUARD = threading.Lock()


def module_lock(module):
    with _MODULE_LOCKS_GUARD:
        lock = _MODULE_LOCKS.get(module)
        if lock is None:
            lock = _MODULE_LOCKS[module] = threading.RLock()
        return lock


@contextlib.contextmanager
def eval_mode(module):
    """Hold ``module``'s lock in eval mode; restore every submodule's flag after."""
    with module_lock(module):
        flags = [(m, m.training) for m in module.modules()]
        module.eval()
        try:
            yield
        finally:
            for m, training in flags:
                m.training = training


def on_cuda(module):
    return any(t.is_cuda for t in module.state_dict().values())


_FINGERPRINTS = weakref.WeakKeyDictionary()


def model_fingerprint(module):
    """A content hash of a module: its class, its structure and its weights.

    Remembered per module while no tensor changes (torch bumps a tensor's
    version on every in-place change, load_state_dict included), so repeated
    cache look-ups do not hash the weights again.
    """
    tensors = module.state_dict(keep_vars=True)  # the tensors themselves
    versions = tuple((k, id(v), v._version) for k, v in tensors.items())
    known = _FINGERPRINTS.get(module)
    if known is not None and known[0] == versions:
        return known[1]
    state = {k: v.detach().cpu().numpy() for k, v in tensors.items()}
    fingerprint = joblib.hash((type(module).__qualname__, repr(module), state))
    _FINGERPRINTS[module] = (versions, fingerprint)
    return fingerprint


def module_device_dtype(module):
    param = next(module.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def unwrap_model(model):
    """Return the torch module behind ``model`` (a module or a fitted skorch net)."""
    if isinstance(model, torch.nn.Module):
        return model
    estimator = getattr(model, "estimator", None)  # sklearn's FrozenEstimator
    if estimator is not None and not hasattr(model, "module_"):
        return unwrap_model(estimator)
    if hasattr(model, "initialize") and hasattr(model, "module"):  # skorch net
        if not getattr(model, "initialized_", False):
            raise NotFittedError(
                f"The skorch net passed as model is not initialized: fit "
                f"{type(model).__name__} before explaining with it."
            )
        return model.module_
    raise TypeError(
        "model must be a torch.nn.Module returning logits or a fitted skorch "
        f"NeuralNetClassifier; got {type(model).__name__}."
    )


def differentiable_attention():
    """Context in which attention layers have second derivatives.

    Attacks through an explanation differentiate the model twice; torch's
    fused attention kernels (``scaled_dot_product_attention`` inside
    ``MultiheadAttention``) have no double backward on the CPU, its math
    implementation has.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


class _StraightThroughRound(torch.autograd.Function):
    """Round to ``levels`` steps in [0, 1]; the gradient passes straight through.

    The forward value is the exact rounded input (what the detector scores);
    the backward pass is the identity, as an attacker told about the
    rounding would differentiate it (BPDA, Athalye et al., ICML 2018).
    """

    @staticmethod
    def forward(ctx, x, levels):
        return torch.round(x * levels) / levels

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def reduce_bit_depth_straight_through(x, bit_depth):
    """Round values in [0, 1] to ``2 ** bit_depth`` levels; gradients pass through.

    The forward values are the exact rounded inputs (``torch.round`` rounds
    half to even, as ``np.rint`` does); the backward pass is the identity.
    The raw-input view and feature squeezing both round this way, so the
    attacks differentiate what they score.
    """
    return _StraightThroughRound.apply(x, 2**bit_depth - 1)
