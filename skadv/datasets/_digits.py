"""scikit-learn's 8x8 digits as single-channel images."""

import numpy as np
from sklearn import datasets
from sklearn.utils import Bunch

# The raw pixel values are counts of "on" pixels in 4x4 blocks of a 32x32 bitmap.
_DIGITS_MAX_VALUE = 16.0

_DESCR_HEADER = """\
.. _skadv_digits_dataset:

Digits as images (skadv)
------------------------

scikit-learn's bundled copy of the UCI optical recognition of handwritten
digits test set (1797 images of 8x8 pixels, 10 classes), reshaped to
``(n_samples, 1, 8, 8)`` and scaled from 0..16 to [0, 1] (float32). The
original description follows.

"""


def load_digits(*, return_X_y=False):
    """Load scikit-learn's 8x8 digits as single-channel float32 images.

    The data are bundled with scikit-learn, so nothing is downloaded. Pixel
    values (0..16 in the raw data) are divided by 16 to lie in [0, 1], the
    input range the attacks and explanations of ``skadv`` assume.

    =================   ==============
    Classes                         10
    Samples per class             ~180
    Samples total                 1797
    Dimensionality           (1, 8, 8)
    Features            float32, [0, 1]
    =================   ==============

    Parameters
    ----------
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        data : ndarray of shape (1797, 1, 8, 8), dtype float32
            The images, in [0, 1].
        target : ndarray of shape (1797,), dtype int64
            The digit shown in each image.
        target_names : ndarray of shape (10,)
            The class labels, 0 to 9.
        DESCR : str
            Description of the dataset.

    (data, target) : tuple if ``return_X_y`` is True
        The arrays described above.

    See Also
    --------
    load_mnist : The 28x28 MNIST digits, in the same layout.
    sklearn.datasets.load_digits : The flat, unscaled original.

    Examples
    --------
    >>> from skadv.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> X.shape, X.dtype, y.dtype
    ((1797, 1, 8, 8), dtype('float32'), dtype('int64'))
    >>> float(X.min()), float(X.max())
    (0.0, 1.0)
    """
    digits = datasets.load_digits()
    data = (digits.data / _DIGITS_MAX_VALUE).astype(np.float32)
    data = data.reshape(-1, 1, 8, 8)
    target = digits.target.astype(np.int64)
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        target_names=np.asarray(digits.target_names),
        DESCR=_DESCR_HEADER + digits.DESCR,
    )
