"""Values to JSON and back: what plain JSON has no type for is tagged.

Parameters and fitted attributes are written as JSON. Tuples, non-finite
floats, numpy arrays, torch devices and torch CPU generators become one-key
objects whose key is a tag; decoding reads the tags back, so a round trip
gives equal values of the same types. Nothing else is storable: a value that
would need pickle is refused with a message that names it.

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

# Tags of the values that plain JSON has no type for.
_TUPLE, _FLOAT = "__tuple__", "__float__"
_ARRAY, _GENERATOR = "__ndarray__", "__torch_generator__"
_DEVICE = "__torch_device__"
_TAGS = (_TUPLE, _FLOAT, _ARRAY, _GENERATOR, _DEVICE)
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


def to_json(value, name, kind="parameter"):
    """Encode a value as JSON, tagging what JSON has no type for."""
    try:
        return _encode(value)
    except _NotJSON:
        raise not_storable(name, value, kind=kind) from None


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


def from_json(value):
    """Decode a value written by :func:`to_json`."""
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    if list(value) == [_TUPLE]:
        return tuple(from_json(v) for v in value[_TUPLE])
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
    return {k: from_json(v) for k, v in value.items()}


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
