"""Values to JSON and back: what plain JSON has no type for is tagged.

Parameters and fitted attributes are written as JSON. Tuples, non-finite
floats, numpy arrays, torch devices, torch CPU generators and scikit-learn
Bunches become one-key objects whose key is a tag; decoding reads the tags
back, so a round trip gives equal values of the same types. Estimators nested
in a value (a pipeline's steps, a meta-estimator's fitted detector) are
handed to the caller's ``estimator`` hook, which describes them (or builds
them back); nested values are named the same way in both directions (as
``set_params`` names them where it can). Nothing else is storable: a value
that would need pickle is refused with a message that names it.

>>> from skadv._persistence._json_values import from_json, to_json
>>> to_json((1, float("inf")), "x")
{'__tuple__': [1, {'__float__': 'inf'}]}
>>> from_json(to_json((1, float("inf")), "x"))
(1, inf)
"""

import math
import numbers

import numpy as np
import torch
from sklearn.utils import Bunch

# Tags of the values that plain JSON has no type for.
_TUPLE, _FLOAT = "__tuple__", "__float__"
_ARRAY, _GENERATOR = "__ndarray__", "__torch_generator__"
_DEVICE, _BUNCH = "__torch_device__", "__bunch__"
# A nested estimator's description, or the name of one described before (the
# same object met again, e.g. a guard's fitted detector that is its detector).
ESTIMATOR, ESTIMATOR_REF = "__estimator__", "__estimator_ref__"
_TAGS = (_TUPLE, _FLOAT, _ARRAY, _GENERATOR, _DEVICE, _BUNCH, ESTIMATOR, ESTIMATOR_REF)
_JSON_VALUES = (
    "JSON values (numbers, strings, booleans, None, lists, tuples, dicts), "
    "numeric or string arrays, torch devices and torch CPU generators"
)


def not_storable(name, value, expected=_JSON_VALUES, kind="parameter"):
    """The error for a value a skadv file cannot hold without pickle."""
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
    """Raised deep inside a value; reported with the whole value by to_json."""


def _element_names(name, value, prefix, in_list):
    """The names of the elements of the tuple ``name``.

    The estimator of a ``(name, estimator)`` pair in a list (a pipeline's
    steps, an ensemble's members) is named as ``set_params`` names it,
    ``prefix + name``; any other element ``name[index]``.
    """
    if in_list and len(value) == 2 and isinstance(value[0], str):
        return [f"{name}[0]", f"{prefix}{value[0]}"]
    return [f"{name}[{i}]" for i in range(len(value))]


def to_json(value, name, kind="parameter", *, estimator=None, prefix=""):
    """Encode a value as JSON, tagging what JSON has no type for.

    ``estimator(value, name)`` returns the JSON of an estimator nested in the
    value (None: estimators are not storable); ``prefix`` is the name prefix of
    the estimator that holds the value, the start of the names of the
    estimators in its ``(name, estimator)`` pairs.
    """
    try:
        return _encode(value, name, estimator, prefix)
    except _NotJSON:
        raise not_storable(name, value, kind=kind) from None


def _encode(value, name, estimator, prefix, in_list=False):
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
        return [
            _encode(v, f"{name}[{i}]", estimator, prefix, in_list=True)
            for i, v in enumerate(value)
        ]
    if type(value) is tuple:
        names = _element_names(name, value, prefix, in_list)
        return {
            _TUPLE: [
                _encode(v, n, estimator, prefix)
                for v, n in zip(value, names, strict=True)
            ]
        }
    if type(value) is Bunch and all(isinstance(k, str) for k in value):
        # Key-value pairs: the JSON's keys are sorted, a Bunch's order is kept
        # (an ensemble's members by name).
        return {
            _BUNCH: [
                [k, _encode(v, f"{name}[{k!r}]", estimator, prefix)]
                for k, v in value.items()
            ]
        }
    if type(value) is dict and all(
        isinstance(k, str) and k not in _TAGS for k in value
    ):
        return {
            k: _encode(v, f"{name}[{k!r}]", estimator, prefix) for k, v in value.items()
        }
    if estimator is not None and hasattr(value, "get_params"):
        return estimator(value, name)
    raise _NotJSON


def from_json(value, *, estimator=None, name="", prefix=""):
    """Decode a value written by :func:`to_json`.

    ``estimator(tag, payload, name)`` builds a nested estimator from its
    description (tag ``ESTIMATOR``) or returns the one built before under a
    name (tag ``ESTIMATOR_REF``); None: a nested estimator is refused.
    """
    return _decode(value, estimator, name, prefix)


def _decode(value, estimator, name, prefix, in_list=False):
    if isinstance(value, list):
        return [
            _decode(v, estimator, f"{name}[{i}]", prefix, in_list=True)
            for i, v in enumerate(value)
        ]
    if not isinstance(value, dict):
        return value
    if list(value) == [_TUPLE]:
        items = value[_TUPLE]
        names = _element_names(name, items, prefix, in_list)
        return tuple(
            _decode(v, estimator, n, prefix) for v, n in zip(items, names, strict=True)
        )
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
    if list(value) in ([ESTIMATOR], [ESTIMATOR_REF]):
        if estimator is None:
            raise ValueError(f"{name} holds an estimator where none may be")
        tag = next(iter(value))
        return estimator(tag, value[tag], name)
    if list(value) == [_BUNCH]:
        return Bunch(**_decode_dict(dict(value[_BUNCH]), estimator, name, prefix))
    return _decode_dict(value, estimator, name, prefix)


def _decode_dict(value, estimator, name, prefix):
    if not all(isinstance(k, str) for k in value):
        raise ValueError(f"{name} has a key that is not a string")
    return {
        k: _decode(v, estimator, f"{name}[{k!r}]", prefix) for k, v in value.items()
    }


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
