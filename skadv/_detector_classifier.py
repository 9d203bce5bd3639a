"""DetectorClassifier: a detector seen as a binary classifier."""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted


class DetectorClassifier(ClassifierMixin, MetaEstimatorMixin, BaseEstimator):
    """Wrap an adversarial-input detector as a binary classifier of +1/-1 labels.

    scikit-learn's threshold tuners
    (:class:`~sklearn.model_selection.TunedThresholdClassifierCV`,
    :class:`~sklearn.model_selection.FixedThresholdClassifier`) accept binary
    classifiers only. This wrapper gives a detector (or a pipeline ending in
    one) ``classes_ = [-1, 1]``, so its ``decision_function`` (positive means
    benign, +1) reads as a classifier's score for ``classes_[1]``.

    An already fitted detector is used as it is (no refit), so the threshold
    of a deployed detector can be tuned on a labelled calibration set with
    ``TunedThresholdClassifierCV(..., cv="prefit", refit=False)``, or set with
    ``FixedThresholdClassifier(FrozenEstimator(DetectorClassifier(detector)))``
    (``FixedThresholdClassifier.fit`` would otherwise refit a clone); ``fit``
    fits a clone of the detector.

    Parameters
    ----------
    detector : estimator
        A detector with ``decision_function`` and ``predict`` following the
        +1 benign / -1 adversarial convention, e.g. a pipeline of
        :class:`ExplanationTransformer` and
        :class:`ExplanationReconstructionDetector`.

    Attributes
    ----------
    detector_ : estimator
        The fitted clone of ``detector``, only after :meth:`fit`.

    classes_ : ndarray of shape (2,)
        ``array([-1, 1])``: adversarial, benign.

    n_features_in_ : int
        The fitted detector's ``n_features_in_``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn.model_selection import FixedThresholdClassifier
    >>> from skadv import DetectorClassifier, ExplanationReconstructionDetector
    >>> rng = np.random.default_rng(0)
    >>> X = np.column_stack([np.zeros(100), rng.random((100, 8)) * 0.2])
    >>> detector = ExplanationReconstructionDetector(random_state=0).fit(X)
    >>> wrapped = FrozenEstimator(DetectorClassifier(detector))
    >>> lenient = FixedThresholdClassifier(wrapped, threshold=-1.0).fit(X, np.ones(100))
    >>> lenient.predict(X[:3])  # a lower threshold flags nothing here
    array([1, 1, 1])
    """

    _parameter_constraints = {
        "detector": [HasMethods(["decision_function", "predict"])]
    }

    def __init__(self, detector):
        self.detector = detector

    @property
    def classes_(self):
        """The labels: -1 adversarial, +1 benign."""
        return np.array([-1, 1])

    @property
    def n_features_in_(self):
        """The fitted detector's number of input features."""
        # NotFittedError is an AttributeError: hasattr is False before fit.
        return self._fitted_detector().n_features_in_

    def fit(self, X, y=None, **fit_params):
        """Fit a clone of the detector (benign rows only when ``y`` is given).

        Parameters
        ----------
        X : array-like
            Training inputs.

        y : array-like of shape (n_samples,), default=None
            +1 benign, -1 adversarial labels.

        **fit_params : dict
            Passed to the detector's ``fit``.

        Returns
        -------
        self : object
            The fitted wrapper.
        """
        self._validate_params()
        self.detector_ = clone(self.detector).fit(X, y, **fit_params)
        return self

    def _fitted_detector(self):
        detector = getattr(self, "detector_", self.detector)
        try:
            check_is_fitted(detector)
        except NotFittedError as exc:
            raise NotFittedError(
                "This DetectorClassifier wraps an unfitted detector: call fit, or "
                "wrap a fitted detector."
            ) from exc
        return detector

    def __sklearn_is_fitted__(self):
        try:
            self._fitted_detector()
        except NotFittedError:
            return False
        return True

    def decision_function(self, X):
        """The detector's decision function: positive means benign (+1).

        Parameters
        ----------
        X : array-like
            Inputs.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            Negative for inputs flagged as adversarial.
        """
        return self._fitted_detector().decision_function(X)

    def predict(self, X):
        """The detector's prediction: +1 benign, -1 adversarial.

        Parameters
        ----------
        X : array-like
            Inputs.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            +1 benign, -1 adversarial.
        """
        return self._fitted_detector().predict(X)
