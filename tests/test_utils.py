"""Private helpers with behaviour of their own: cache keys."""

import numpy as np

from skadv._torch_utils import array_digest


def test_array_digest_keys_on_dtype_shape_and_values():
    X = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert array_digest(X) == array_digest(X.copy())
    assert array_digest(np.asfortranarray(X)) == array_digest(X)  # layout: no
    assert array_digest(X[:, ::2]) == array_digest(np.ascontiguousarray(X[:, ::2]))
    changed = X.copy()
    changed[2, 3] = np.nextafter(changed[2, 3], np.inf)
    others = [changed, X.reshape(4, 3), X.astype(np.float64), X[:2]]
    digests = {array_digest(X), *map(array_digest, others)}
    assert len(digests) == 1 + len(others)
