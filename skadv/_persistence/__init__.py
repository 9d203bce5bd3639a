"""Save and load fitted detectors without pickle: JSON and safetensors in a zip.

A skadv file describes the estimators (their parameters, their fitted
attributes, the *names* of the reconstructor module, loss and optimizer
classes) in ``skadv.json`` and holds the autoencoders' weights in
``weights.safetensors``. Loading rebuilds everything from skadv's own classes
and from the few classes the caller allows; nothing in the file is ever
executed or unpickled.
"""

import contextlib
import copy
import hashlib
import json
import math
import numbers
import os
import re
import secrets
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNetRegressor
from skorch.dataset import Dataset as _SkorchDataset
from skorch.dataset import ValidSplit
from torch.utils.data import DataLoader

from skadv._autoencoder import ConvAutoencoder, MLPAutoencoder, make_reconstructor
from skadv._detector import ExplanationReconstructionDetector
from skadv._explain import ExplanationTransformer
from skadv._torch_utils import module_device_dtype, resolve_device, unwrap_model

FORMAT_NAME = "skadv-detector"
FORMAT_VERSION = 1
_JSON_NAME = "skadv.json"
_WEIGHTS_NAME = "weights.safetensors"
_CHECKSUM_FIELD = "sha256"

_SKADV_MODULES = {"MLPAutoencoder": MLPAutoencoder, "ConvAutoencoder": ConvAutoencoder}

# Class-valued skorch parameters stored by name and resolved, on load, only by
# an attribute look-up on these namespaces, checked against a base class.
_NAMED_CLASSES = {
    "criterion": (torch.nn, torch.nn.modules.loss._Loss, "a loss class of torch.nn"),
    "optimizer": (torch.optim, torch.optim.Optimizer, "an optimizer of torch.optim"),
}
# Class-valued skorch parameters that can only be saved at their default.
_DEFAULT_CLASSES = {
    "iterator_train": DataLoader,
    "iterator_valid": DataLoader,
    "dataset": _SkorchDataset,
}
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ATTRIBUTE = re.compile(r"_?[A-Za-z][A-Za-z0-9_]*")
# Tags of the values that plain JSON has no type for.
_TUPLE, _FLOAT = "__tuple__", "__float__"
_ARRAY, _GENERATOR = "__ndarray__", "__torch_generator__"
_DEVICE = "__torch_device__"
_TAGS = (_TUPLE, _FLOAT, _ARRAY, _GENERATOR, _DEVICE)
_JSON_VALUES = (
    "JSON values (numbers, strings, booleans, None, lists, tuples, dicts), "
    "numeric or string arrays, torch devices and torch CPU generators"
)
# Fitted attributes rebuilt on load rather than read from the file.
_REBUILT = {
    ExplanationReconstructionDetector: {"reconstructors_"},
    ExplanationTransformer: {"module_", "device_"},
}

_SUPPORTED = (
    "save stores a fitted ExplanationReconstructionDetector, or a fitted Pipeline of "
    "an ExplanationTransformer then an ExplanationReconstructionDetector"
)


# --------------------------------------------------------------------------
# Values to JSON and back


def _not_storable(name, value, expected=_JSON_VALUES, kind="parameter"):
    text = " ".join(repr(value).split())
    if len(text) > 80:
        text = text[:77] + "..."
    return ValueError(
        f"Cannot save {kind} {name!r} = {text}: a skadv file stores only "
        f"{expected}, so that loading it never runs code. Set {name} to such a "
        "value, or save with joblib for files from trusted sources only "
        "(unpickling runs code)."
    )


class _NotJSON(Exception):
    """Raised deep inside a value; reported with the whole value by _to_json."""


def _to_json(value, name, kind="parameter"):
    """Encode a value as JSON, tagging what JSON has no type for."""
    try:
        return _encode(value)
    except _NotJSON:
        raise _not_storable(name, value, kind=kind) from None


def _encode(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        value = value.item()
        if isinstance(value, bool):
            return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else {_FLOAT: repr(value)}
    if isinstance(value, torch.device):
        return {_DEVICE: str(value)}
    if isinstance(value, np.ndarray) and _storable_array(value):
        return {_ARRAY: _array_to_json(value)}
    if isinstance(value, torch.Generator) and value.device.type == "cpu":
        # A shuffling generator (skadv seeds one per reconstructor): its exact
        # state, so that further training draws what it would have drawn.
        return {_GENERATOR: value.get_state().numpy().tobytes().hex()}
    if type(value) is list:
        return [_encode(v) for v in value]
    if type(value) is tuple:
        return {_TUPLE: [_encode(v) for v in value]}
    if type(value) is dict and all(
        isinstance(k, str) and k not in _TAGS for k in value
    ):
        return {k: _encode(v) for k, v in value.items()}
    raise _NotJSON


def _from_json(value):
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    if list(value) == [_TUPLE]:
        return tuple(_from_json(v) for v in value[_TUPLE])
    if list(value) == [_FLOAT]:
        return float(value[_FLOAT])
    if list(value) == [_ARRAY]:
        return _array_from_json(value[_ARRAY])
    if list(value) == [_DEVICE]:
        try:
            return torch.device(value[_DEVICE])
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"invalid torch.device {value[_DEVICE]!r}") from exc
    if list(value) == [_GENERATOR]:
        state = bytearray.fromhex(value[_GENERATOR])
        generator = torch.Generator()
        try:
            generator.set_state(torch.frombuffer(state, dtype=torch.uint8))
        except RuntimeError as exc:
            raise ValueError(f"invalid torch.Generator state: {exc}") from exc
        return generator
    return {k: _from_json(v) for k, v in value.items()}


def _storable_array(array):
    if array.dtype.kind in "biufU":
        return True
    return array.dtype.kind == "O" and all(isinstance(x, str) for x in array.flat)


def _array_to_json(array):
    """A numeric or string array, exactly: floats as ``float.hex`` strings."""
    data = array.ravel()
    return {
        "dtype": array.dtype.str if array.dtype.kind == "U" else array.dtype.name,
        "shape": list(array.shape),
        "data": (
            [float(x).hex() for x in data] if array.dtype.kind == "f" else data.tolist()
        ),
    }


def _array_from_json(spec):
    dtype = np.dtype(spec["dtype"])
    data = spec["data"]
    if dtype.kind == "f":
        data = [float.fromhex(x) for x in data]
    elif dtype.kind == "O":
        if not all(isinstance(x, str) for x in data):
            raise ValueError("object arrays may hold strings only")
    elif dtype.kind not in "biuU":
        raise ValueError(f"unsupported array dtype {spec['dtype']!r}")
    array = np.empty(len(data), dtype=dtype)
    array[:] = data
    return array.reshape(spec["shape"])


def _describe_attributes(estimator, prefix):
    """The fitted state of an estimator: every attribute that is no parameter."""
    params = estimator.get_params(deep=False)
    return {
        name: _to_json(value, prefix + name, kind="fitted attribute")
        for name, value in sorted(vars(estimator).items())
        if name not in params and name not in _REBUILT[type(estimator)]
    }


def _set_attributes(estimator, attributes):
    params = estimator.get_params(deep=False)
    for name, value in attributes.items():
        # Only plain data attributes: never a parameter, a method, a property
        # or a dunder of the class.
        if (
            not _ATTRIBUTE.fullmatch(name)
            or name.endswith("__")
            or name in params
            or name in _REBUILT[type(estimator)]
            or hasattr(type(estimator), name)
        ):
            raise ValueError(f"refusing to set attribute {name!r}")
        setattr(estimator, name, _from_json(value))


def _canonical_json(document):
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode("ascii")


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _model_fingerprint(module):
    """SHA-256 of a module's state_dict: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Describing estimators


def _describe_module(module, name):
    if not (isinstance(module, type) and issubclass(module, torch.nn.Module)):
        raise _not_storable(name, module, "a torch.nn.Module class")
    return {
        "name": module.__name__,
        "skadv": _SKADV_MODULES.get(module.__name__) is module,
        "python": f"{module.__module__}.{module.__qualname__}",
    }


def _class_name(value, key, name):
    namespace, base, what = _NAMED_CLASSES[key]
    class_name = getattr(value, "__name__", None)
    if not (
        isinstance(value, type)
        and issubclass(value, base)
        and getattr(namespace, str(class_name), None) is value
    ):
        raise _not_storable(name, value, f"{what} (by name) for {key}")
    return class_name


def _describe_net(net, name):
    """Parameters of a skorch reconstructor, without its weights."""
    if type(net) is not NeuralNetRegressor:
        raise _not_storable(
            name, net, "skorch.NeuralNetRegressor reconstructors (make_reconstructor)"
        )
    params = net.get_params(deep=False)
    module = _describe_module(params.pop("module"), f"{name}__module")
    stored = {}
    for key, value in sorted(params.items()):
        full_name = f"{name}__{key}"
        if key.startswith("_"):  # skorch's bookkeeping, not a parameter
            continue
        if key in _NAMED_CLASSES:
            stored[key] = _class_name(value, key, full_name)
        elif key in _DEFAULT_CLASSES:
            if value is not _DEFAULT_CLASSES[key]:
                default = _DEFAULT_CLASSES[key]
                raise _not_storable(
                    full_name, value, f"the default {key} ({default.__qualname__})"
                )
        elif key == "train_split" and type(value) is ValidSplit:
            stored[key] = {
                "ValidSplit": {
                    k: _to_json(getattr(value, k), full_name)
                    for k in ("cv", "stratified", "random_state")
                }
            }
        else:
            stored[key] = _to_json(value, full_name)
    return {"module": module, "params": stored}


def _describe_params(estimator, prefix, skip=()):
    return {
        key: _to_json(value, prefix + key)
        for key, value in sorted(estimator.get_params(deep=False).items())
        if key not in skip
    }


def _describe_detector(detector, prefix):
    """Return (description, tensors) of a fitted detector."""
    check_is_fitted(detector)
    params = _describe_params(detector, prefix, skip=("reconstructor",))
    template = detector.reconstructor
    params["reconstructor"] = (
        None if template is None else _describe_net(template, f"{prefix}reconstructor")
    )
    nets, tensors = [], {}
    for i, net in enumerate(detector.reconstructors_):
        nets.append(_describe_net(net, f"{prefix}reconstructors_[{i}]"))
        for key, tensor in net.module_.state_dict().items():
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(
                    f"Cannot save reconstructors_[{i}]: its state_dict holds a "
                    f"non-tensor entry {key!r}, which safetensors cannot store."
                )
            # A copy on the CPU: safetensors refuses tensors that share memory.
            tensors[f"reconstructor.{i}.{key}"] = (
                tensor.detach().to("cpu", copy=True).contiguous()
            )
    description = {
        "type": "ExplanationReconstructionDetector",
        "params": params,
        "fitted": _describe_attributes(detector, prefix),
        "reconstructors": nets,
    }
    return description, tensors


def _describe_transformer(transformer, prefix):
    check_is_fitted(transformer)
    return {
        "type": "ExplanationTransformer",
        "params": _describe_params(transformer, prefix, skip=("model",)),
        "fitted": _describe_attributes(transformer, prefix),
        "model_sha256": _model_fingerprint(unwrap_model(transformer.model)),
    }


def _is_supported_pipeline(estimator):
    return (
        type(estimator) is Pipeline
        and len(estimator.steps) == 2
        and type(estimator.steps[0][1]) is ExplanationTransformer
        and type(estimator.steps[1][1]) is ExplanationReconstructionDetector
    )


def _describe(estimator):
    """Return (description, tensors) of a supported fitted estimator."""
    if type(estimator) is ExplanationReconstructionDetector:
        return _describe_detector(estimator, "")
    if not _is_supported_pipeline(estimator):
        raise ValueError(f"{_SUPPORTED}; got {type(estimator).__name__}.")
    (t_name, transformer), (d_name, detector) = estimator.steps
    check_is_fitted(transformer)
    check_is_fitted(detector)
    t_description = _describe_transformer(transformer, f"{t_name}__")
    d_description, tensors = _describe_detector(detector, f"{d_name}__")
    description = {
        "type": "Pipeline",
        "params": _describe_params(estimator, "", skip=("steps",)),
        "steps": [
            {"name": t_name, "estimator": t_description},
            {"name": d_name, "estimator": d_description},
        ],
    }
    return description, tensors


# --------------------------------------------------------------------------
# Writing


def _write_atomically(path, members):
    """Write a zip of ``members`` to a temporary file, then rename it to ``path``.

    Entries carry a fixed timestamp, so saving the same estimator twice gives
    identical bytes.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # os.open applies the umask, as a plain open() would; mkstemp would not.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            with zipfile.ZipFile(file, "w") as archive:
                for name, data, compression in members:
                    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = 0o644 << 16
                    archive.writestr(info, data, compress_type=compression)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def save(estimator, path):
    """Save a fitted detector to a file that loads without unpickling anything.

    The file is a zip archive: ``skadv.json`` describes the estimator (its
    parameters, fitted attributes, and the names of the reconstructor module,
    loss and optimizer classes) and ``weights.safetensors`` holds the
    autoencoders' weights. SHA-256 checksums of both are recorded in the JSON.
    The file is written to a temporary file first, then renamed into place.

    The classifier inside an :class:`ExplanationTransformer` is not stored
    (only a fingerprint of its weights): pass it back to :func:`load`.

    Parameters
    ----------
    estimator : ExplanationReconstructionDetector or Pipeline
        A fitted detector, or a fitted pipeline of an
        :class:`ExplanationTransformer` then an
        :class:`ExplanationReconstructionDetector`. Every parameter must be a
        JSON value (number, string, boolean, None, list, tuple, dict), except
        the reconstructors' module (one of skadv's autoencoders or a class
        registered at load time), loss (a ``torch.nn`` loss class) and
        optimizer (a ``torch.optim`` optimizer).

    path : str or path-like
        Where to write the file (by convention ``*.skadv``); replaced if it
        exists.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.

    ValueError
        If the estimator is of another type, or a parameter cannot be stored
        without pickle (callbacks, a random_state instance, a custom dataset):
        the message names the parameter. Use joblib for such estimators, and
        load those files only from sources you trust.

    See Also
    --------
    load : Load a detector saved with this function.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from skadv import ExplanationReconstructionDetector, make_reconstructor
    >>> from skadv import load, save
    >>> rng = np.random.default_rng(0)
    >>> X = np.column_stack([rng.integers(0, 2, 40), rng.random((40, 8))])
    >>> detector = ExplanationReconstructionDetector(
    ...     reconstructor=make_reconstructor(max_epochs=1), random_state=0
    ... ).fit(X)
    >>> directory = tempfile.TemporaryDirectory()
    >>> save(detector, Path(directory.name) / "detector.skadv")
    >>> loaded = load(Path(directory.name) / "detector.skadv")
    >>> bool((loaded.decision_function(X) == detector.decision_function(X)).all())
    True
    >>> directory.cleanup()
    """
    from skadv import __version__

    description, tensors = _describe(estimator)
    weights = _safetensors_save(tensors, metadata={"format": "pt"})
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "skadv_version": __version__,
        "torch_version": torch.__version__,
        "estimator": description,
    }
    document[_CHECKSUM_FIELD] = {
        _JSON_NAME: _sha256(_canonical_json(document)),
        _WEIGHTS_NAME: _sha256(weights),
    }
    text = json.dumps(document, indent=1, sort_keys=True, allow_nan=False)
    _write_atomically(
        path,
        [
            (_JSON_NAME, text.encode("ascii"), zipfile.ZIP_DEFLATED),
            (_WEIGHTS_NAME, weights, zipfile.ZIP_STORED),
        ],
    )


# --------------------------------------------------------------------------
# Reading


def _not_skadv(path, reason):
    return ValueError(f"{path} is not a skadv file: {reason}.")


def _corrupted(path, member):
    return ValueError(
        f"{path} has been modified or corrupted: checksum mismatch in {member}."
    )


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _read_archive(path):
    """Return (JSON document, weights bytes), with format, version and checksums
    checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if not {_JSON_NAME, _WEIGHTS_NAME} <= names:
                raise _not_skadv(
                    path, f"the archive holds no {_JSON_NAME} and {_WEIGHTS_NAME}"
                )
            members = {}
            for name in (_JSON_NAME, _WEIGHTS_NAME):
                try:
                    members[name] = archive.read(name)
                except (
                    zipfile.BadZipFile,
                    zlib.error,
                    EOFError,
                    OSError,
                    NotImplementedError,  # an unknown compression method
                    RuntimeError,  # an encrypted entry
                ) as exc:
                    # The zip's own CRC-32 catches most damage before SHA-256 does.
                    raise _corrupted(path, name) from exc
    except zipfile.BadZipFile as exc:
        raise _not_skadv(path, "not a zip archive") from exc
    try:
        document = json.loads(
            members[_JSON_NAME].decode("utf-8"), parse_constant=_reject_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _not_skadv(path, f"{_JSON_NAME} is not valid JSON") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise _not_skadv(path, f"{_JSON_NAME} does not describe a {FORMAT_NAME}")
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _not_skadv(path, f"invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by skadv {document.get('skadv_version')} with "
            f"format version {version}; this skadv reads format version "
            f"{FORMAT_VERSION}: upgrade skadv."
        )
    checksums = document.pop(_CHECKSUM_FIELD, None)
    if not isinstance(checksums, dict):
        checksums = {}
    if checksums.get(_JSON_NAME) != _sha256(_canonical_json(document)):
        raise _corrupted(path, _JSON_NAME)
    if checksums.get(_WEIGHTS_NAME) != _sha256(members[_WEIGHTS_NAME]):
        raise _corrupted(path, _WEIGHTS_NAME)
    return document, members[_WEIGHTS_NAME]


def _class_from_name(name, key):
    namespace, base, what = _NAMED_CLASSES[key]
    value = (
        getattr(namespace, name, None)
        if isinstance(name, str) and _IDENTIFIER.fullmatch(name)
        else None
    )
    if not (isinstance(value, type) and issubclass(value, base)):
        raise ValueError(f"{key} {name!r} is not {what}")
    return value


def _check_module_allowed(module, modules, path):
    name, in_skadv, python_name = module
    if (in_skadv and name in _SKADV_MODULES) or (not in_skadv and name in modules):
        return
    raise ValueError(
        f"{path} uses the reconstructor module {name!r} (saved from "
        f"{python_name}), which is not one of skadv's: pass the class to load if "
        f"you trust it, e.g. load(path, modules={{{name!r}: {name}}})."
    )


def _cpu_if_no_cuda(device, moved, name):
    """Replace a CUDA device by the CPU on a machine without CUDA."""
    if device is None or device == "auto" or torch.cuda.is_available():
        return device
    try:
        on_cuda = torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        return device  # left to the estimators' own validation
    if on_cuda:
        moved.append(f"{name}={str(device)!r}")
        return "cpu"
    return device


@contextlib.contextmanager
def _reading(path):
    """Turn what a malformed description breaks into one clear ValueError.

    The checksums passed, so the file was written like this on purpose (or by
    a broken writer): it is refused, but never trusted further.
    """
    try:
        yield
    except (
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        ValueError,
        RuntimeError,  # torch refusing a module's description
    ) as exc:
        raise ValueError(
            f"{path} is not a valid skadv file: {type(exc).__name__}: {exc}"
        ) from exc


def _net_descriptions(description):
    """The descriptions of a detector's template and fitted reconstructors."""
    template = description["params"]["reconstructor"]
    nets = list(description["reconstructors"])
    return nets if template is None else [template, *nets]


def _build_net(description, modules, moved, name):
    module_name = description["module"]["name"]
    in_skadv = description["module"]["skadv"]
    module = _SKADV_MODULES[module_name] if in_skadv else modules[module_name]
    params = {}
    for key, value in description["params"].items():
        if key in _NAMED_CLASSES:
            params[key] = _class_from_name(value, key)
        elif key == "train_split" and isinstance(value, dict):
            params[key] = ValidSplit(**_from_json(value["ValidSplit"]))
        elif key in _DEFAULT_CLASSES or key.startswith("_"):
            raise ValueError(f"unexpected reconstructor parameter {key!r}")
        else:
            params[key] = _from_json(value)
    if "device" in params:
        params["device"] = _cpu_if_no_cuda(params["device"], moved, f"{name}device")
    return make_reconstructor(module, **params)


def _build_detector(description, tensors, modules, moved, prefix):
    """Rebuild a fitted detector; the caller checked its modules are allowed."""
    params = dict(description["params"])
    template = params.pop("reconstructor")
    if template is not None:
        template = _build_net(template, modules, moved, f"{prefix}reconstructor__")
    params = {k: _from_json(v) for k, v in params.items()}
    params["device"] = _cpu_if_no_cuda(params.get("device"), moved, f"{prefix}device")
    detector = ExplanationReconstructionDetector(reconstructor=template, **params)
    detector._validate_params()

    nets = []
    for i, net_description in enumerate(description["reconstructors"]):
        net = _build_net(
            net_description, modules, moved, f"{prefix}reconstructors_[{i}]."
        )
        # Initialising draws random weights, overwritten at once: leave the
        # caller's torch generator where it was.
        with torch.random.fork_rng(devices=[]):
            net.initialize()
        head = f"reconstructor.{i}."
        state = {
            k[len(head) :]: tensors.pop(k)
            for k in sorted(tensors)
            if k.startswith(head)
        }
        try:
            net.module_.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"the weights of reconstructor {i} do not fit its module: {exc}"
            ) from exc
        nets.append(net)

    _set_attributes(detector, description["fitted"])
    detector.reconstructors_ = nets
    check_is_fitted(detector)
    return detector


def _build_transformer(description, model, moved, path, prefix):
    """Rebuild a fitted transformer around the caller's model, without data."""
    with _reading(path):
        params = {k: _from_json(v) for k, v in description["params"].items()}
        params["device"] = _cpu_if_no_cuda(
            params.get("device"), moved, f"{prefix}device"
        )
        transformer = ExplanationTransformer(model, **params)
        transformer._validate_params()
        _set_attributes(transformer, description["fitted"])
        saved_fingerprint = description["model_sha256"]
        n_features = int(transformer.n_features_in_)

    module = unwrap_model(model)
    if _model_fingerprint(module) != saved_fingerprint:
        warnings.warn(
            f"The model passed to load differs from the one {path} was saved with "
            "(the SHA-256 of its state_dict differs): the detector was calibrated "
            "on the saved model's explanations and may not suit this model's.",
            UserWarning,
            stacklevel=3,
        )
    # What fit does, without data: use the model where it is, or a copy on the
    # requested device.
    model_device, _ = module_device_dtype(module)
    device = resolve_device(transformer.device)
    if device is None or device == model_device:
        transformer.module_, transformer.device_ = module, model_device
    else:
        transformer.module_ = copy.deepcopy(module).to(device)
        transformer.device_ = device
    # One forward pass, so that a model that does not take the saved input
    # shape fails now, with fit's message, rather than at predict time.
    transformer._check_model_output(np.zeros((1, n_features), dtype=np.float32))
    return transformer


def _check_modules(modules):
    if modules is None:
        return {}
    if not isinstance(modules, dict) or not all(
        isinstance(name, str)
        and isinstance(cls, type)
        and issubclass(cls, torch.nn.Module)
        for name, cls in modules.items()
    ):
        raise TypeError(
            "modules must map class names (str) to torch.nn.Module classes, e.g. "
            f"{{'MyAutoencoder': MyAutoencoder}}; got {modules!r}."
        )
    return modules


def load(path, *, model=None, modules=None):
    """Load a detector saved with :func:`save`, without unpickling anything.

    The file's format, version and SHA-256 checksums are checked first. The
    estimators are then rebuilt from skadv's classes: each reconstructor with
    :func:`make_reconstructor` from its stored parameters, its loss and
    optimizer looked up by name in ``torch.nn`` and ``torch.optim`` only, its
    module among skadv's autoencoders or the classes passed in ``modules``,
    then ``initialize()`` and the stored weights (strictly). Weights are read
    onto the CPU first, so a file saved on a GPU loads on a CPU-only machine;
    a CUDA ``device`` is then replaced by ``"cpu"`` with a ``UserWarning``.

    The loaded estimator is fitted: it scores exactly as the saved one did.
    The reconstructors' training history and optimizer state (Adam's moments)
    are not stored: ``partial_fit`` on a loaded detector goes on with fresh
    optimizer state.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.

    model : torch.nn.Module or skorch.NeuralNetClassifier, default=None
        The trained classifier of a saved pipeline's
        :class:`ExplanationTransformer` (its weights are not in the file).
        Required for pipeline files, refused for detector files. A
        ``UserWarning`` says when its weights differ from those of the model
        the pipeline was saved with.

    modules : dict of str to type, default=None
        Reconstructor module classes other than skadv's own
        (:class:`MLPAutoencoder`, :class:`ConvAutoencoder`), by class name,
        e.g. ``{"MyAutoencoder": MyAutoencoder}``. Only classes listed here
        are instantiated: pass only code you trust.

    Returns
    -------
    estimator : ExplanationReconstructionDetector or Pipeline
        The fitted detector or pipeline.

    Raises
    ------
    ValueError
        If the file is not a skadv file, was written in a newer format
        version, fails its checksums (modified or corrupted), names a module
        not in ``modules``, or if ``model`` is missing for a pipeline file.

    See Also
    --------
    save : Save a fitted detector or pipeline.

    Notes
    -----
    The checksums catch corrupted files and edits made without recomputing
    them; they are not a signature. What makes a file from an unknown source
    safe to load is that nothing in it is executed: its values are plain data,
    and its classes come only from skadv, ``torch.nn`` losses, ``torch.optim``
    optimizers and ``modules``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> import torch
    >>> from sklearn.pipeline import make_pipeline
    >>> from skadv import (
    ...     ExplanationReconstructionDetector, ExplanationTransformer,
    ...     make_reconstructor,
    ... )
    >>> from skadv import load, save
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> X = np.random.default_rng(0).random((30, 1, 4, 4), dtype=np.float32)
    >>> pipe = make_pipeline(
    ...     ExplanationTransformer(model),
    ...     ExplanationReconstructionDetector(
    ...         reconstructor=make_reconstructor(max_epochs=1), min_class_size=1,
    ...         random_state=0,
    ...     ),
    ... ).fit(X)
    >>> directory = tempfile.TemporaryDirectory()
    >>> path = Path(directory.name) / "pipeline.skadv"
    >>> save(pipe, path)
    >>> load(path)
    Traceback (most recent call last):
    ...
    ValueError: ... pass the trained classifier: load(path, model=model).
    >>> loaded = load(path, model=model)
    >>> bool((loaded.decision_function(X) == pipe.decision_function(X)).all())
    True
    >>> directory.cleanup()
    """
    modules = _check_modules(modules)
    document, weights = _read_archive(path)
    try:
        tensors = _safetensors_load(weights)
    except SafetensorError as exc:
        raise _not_skadv(path, f"{_WEIGHTS_NAME} is not a safetensors file") from exc
    with _reading(path):
        description = document["estimator"]
        kind = description["type"]
        if kind == "ExplanationReconstructionDetector":
            step_names, d_description = None, description
        elif kind == "Pipeline":
            (t_step, d_step) = description["steps"]
            step_names = (t_step["name"], d_step["name"])
            t_description, d_description = t_step["estimator"], d_step["estimator"]
            if t_description["type"] != "ExplanationTransformer":
                raise ValueError("the first step is not an ExplanationTransformer")
            if d_description["type"] != "ExplanationReconstructionDetector":
                raise ValueError("the last step is not a detector")
        else:
            raise ValueError(f"unknown estimator type {kind!r}")
        module_descriptions = [
            (str(m["name"]), bool(m["skadv"]), str(m["python"]))
            for m in (n["module"] for n in _net_descriptions(d_description))
        ]
    for module_description in module_descriptions:
        _check_module_allowed(module_description, modules, path)
    if step_names is None and model is not None:
        raise ValueError(
            f"{path} holds an ExplanationReconstructionDetector, which needs no "
            "model: model= is for pipeline files only."
        )
    if step_names is not None and model is None:
        raise ValueError(
            f"{path} holds a Pipeline whose ExplanationTransformer explains the "
            "predictions of your torch classifier, whose weights a skadv file "
            "does not store: pass the trained classifier: load(path, model=model)."
        )

    moved = []
    prefix = "" if step_names is None else f"{step_names[1]}__"
    with _reading(path):
        detector = _build_detector(d_description, tensors, modules, moved, prefix)
        if tensors:
            raise ValueError(
                f"{_WEIGHTS_NAME} holds tensors that no reconstructor uses, such as "
                f"{sorted(tensors)[0]!r}"
            )
        pipeline_params = (
            None
            if step_names is None
            else {k: _from_json(v) for k, v in description["params"].items()}
        )
    if step_names is None:
        estimator = detector
    else:
        transformer = _build_transformer(
            t_description, model, moved, path, f"{step_names[0]}__"
        )
        with _reading(path):
            estimator = Pipeline(
                [(step_names[0], transformer), (step_names[1], detector)],
                **pipeline_params,
            )
    if moved:
        warnings.warn(
            f"{path} was saved for CUDA ({', '.join(moved)}) but CUDA is not "
            "available on this machine: loaded onto the CPU instead.",
            UserWarning,
            stacklevel=2,
        )
    return estimator
