"""ClassConditionalGaussianDetector: Mahalanobis distances to class means."""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.covariance import LedoitWolf
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from skadv._validation import check_detection_labels, split_class_column

# Entries of the (rows x classes) distance matrix computed at once by
# distance="closest": bounds its memory whatever the number of classes.
_CHUNK_ENTRIES = 2**22


class ClassConditionalGaussianDetector(OutlierMixin, BaseEstimator):
    """Flag rows far, in Mahalanobis distance, from the mean of their class.

    Lee et al.'s class-conditional Gaussian detector [1]_, fitted on benign
    rows only: the features of each class (the penultimate activations of
    :class:`ActivationTransformer`, by default) are modelled as a Gaussian
    with its own mean and a covariance shared by every class (``"tied"``, as
    in the paper) or one per class. A row's score is its squared Mahalanobis
    distance to the mean of its predicted class (``distance="predicted"``)
    or, as in the paper, to the closest class mean (``"closest"``). Input
    rows are what the views write: the predicted class in ``class_column``,
    then the features.

    Scores follow scikit-learn's outlier detectors: :meth:`predict` returns +1
    for benign and -1 for adversarial rows, :meth:`score_samples` is higher
    for more benign rows and :meth:`decision_function` is negative for the
    rows flagged as adversarial. :meth:`mahalanobis` is the plain "higher
    means more adversarial" score.

    Parameters
    ----------
    covariance : {"tied", "per_class"}, default="tied"
        ``"tied"``: one covariance, estimated from the class-centred features
        of every row (one precision matrix, whatever the number of classes).
        ``"per_class"``: one covariance per class, from that class's rows;
        every class needs at least 2 benign rows, and memory and scoring time
        grow with the number of classes.

    covariance_estimator : estimator, default=None
        A scikit-learn covariance estimator (anything with ``fit`` and
        ``get_precision``, e.g. ``EmpiricalCovariance()``, ``OAS()``,
        ``MinCovDet()``), cloned and fitted on the class-centred features
        (with ``assume_centered=True`` when it has that parameter). ``None``:
        ``LedoitWolf()``, whose shrinkage keeps the precision well defined
        when features are many or never active (dead ReLUs), where the
        empirical covariance of Lee et al. is singular.

    distance : {"predicted", "closest"}, default="predicted"
        ``"predicted"``: the distance to the mean of the row's class in
        ``class_column``. ``"closest"``: the smallest distance to any class
        mean (Lee et al.'s confidence score), which ignores the class column
        when scoring.

    contamination : float in (0, 0.5], default=0.05
        Target false-positive rate on benign rows: ``offset_`` is the
        ``contamination`` quantile of the benign training scores.

    class_column : int or None, default=0
        Column of ``X`` holding the predicted class (integer values).
        ``None``: no class column, a single Gaussian for all rows.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Classes seen at fit time (``[0]`` when ``class_column`` is None).

    means_ : ndarray of shape (n_classes, n_features)
        Mean of the benign features of each class.

    precision_ : ndarray of shape (n_features, n_features) or \
            (n_classes, n_features, n_features)
        The tied precision matrix, or one per class.

    offset_ : float
        Threshold on :meth:`score_samples`: ``decision_function =
        score_samples - offset_``.

    n_features_in_ : int
        Number of columns of ``X`` seen during fit.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    ActivationTransformer : Writes the rows this detector is meant for.
    ExplanationReconstructionDetector : Per-class autoencoders instead.

    Notes
    -----
    One global threshold, not one per class: squared Mahalanobis distances
    are on the same scale for every class (for Gaussian features, about
    chi-squared with ``n_features`` degrees of freedom), and with many
    classes and few rows each, per-class quantiles would be noisy.

    Rows of a class without benign training rows cannot be scored with
    ``distance="predicted"``: they raise a ValueError naming the classes.

    References
    ----------
    .. [1] K. Lee, K. Lee, H. Lee and J. Shin, "A Simple Unified Framework for
       Detecting Out-of-Distribution Samples and Adversarial Attacks",
       NeurIPS 2018, arXiv:1807.03888.

    Examples
    --------
    >>> import numpy as np
    >>> from skadv import ClassConditionalGaussianDetector
    >>> rng = np.random.default_rng(0)
    >>> classes = rng.integers(0, 3, 300)
    >>> features = 5.0 * classes[:, None] + rng.standard_normal((300, 4))
    >>> X = np.column_stack([classes, features])
    >>> detector = ClassConditionalGaussianDetector().fit(X)
    >>> odd = np.array([[0, 5.0, 5.0, 5.0, 5.0],   # class 0 with class 1's features
    ...                 [1, 5.0, 5.0, 5.0, 5.0]])  # class 1 as it should be
    >>> detector.predict(odd)
    array([-1,  1])
    """

    _parameter_constraints = {
        "covariance": [StrOptions({"tied", "per_class"})],
        "covariance_estimator": [HasMethods(["fit", "get_precision"]), None],
        "distance": [StrOptions({"predicted", "closest"})],
        "contamination": [Interval(numbers.Real, 0, 0.5, closed="right")],
        "class_column": [Interval(numbers.Integral, 0, None, closed="left"), None],
    }

    def __init__(
        self,
        *,
        covariance="tied",
        covariance_estimator=None,
        distance="predicted",
        contamination=0.05,
        class_column=0,
    ):
        self.covariance = covariance
        self.covariance_estimator = covariance_estimator
        self.distance = distance
        self.contamination = contamination
        self.class_column = class_column

    def _split(self, X):
        return split_class_column(
            X, self.class_column, part="feature", single="model all rows as one class"
        )

    def _fit_precision(self, centered):
        """The precision matrix of class-centred rows, from the estimator."""
        estimator = clone(
            LedoitWolf()
            if self.covariance_estimator is None
            else self.covariance_estimator
        )
        if "assume_centered" in estimator.get_params():
            estimator.set_params(assume_centered=True)
        estimator.fit(centered)
        return np.asarray(estimator.get_precision(), dtype=np.float64)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Estimate each class's mean and the covariance(s); set the threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of a view's output: class column, then features.

        y : array-like of shape (n_samples,), default=None
            Optional labels, +1 benign and -1 adversarial: only benign rows are
            used. ``None``: all rows are benign.

        Returns
        -------
        self : object
            The fitted detector.
        """
        X = validate_data(self, X, dtype=np.float64)
        if y is not None:
            X = X[check_detection_labels(y, X.shape[0])]
        if X.shape[0] == 0:
            raise ValueError("y marks no row as benign (+1): nothing to learn from.")
        classes, features = self._split(X)
        if classes is None:
            classes = np.zeros(X.shape[0], dtype=np.int64)
        self.classes_, inverse, counts = np.unique(
            classes, return_inverse=True, return_counts=True
        )
        # Class sums in one pass over rows sorted by class.
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.add.reduceat(features[order], starts, axis=0)
        self.means_ = sums / counts[:, None]
        centered = features - self.means_[inverse]
        if self.covariance == "tied":
            if X.shape[0] - self.classes_.size < 1:
                raise ValueError(
                    "covariance='tied' estimates the spread of rows around their "
                    "class mean and needs a class with at least 2 benign rows; got "
                    f"n_samples = {X.shape[0]} in {self.classes_.size} classes."
                )
            self.precision_ = self._fit_precision(centered)
        else:
            small = self.classes_[counts < 2]
            if small.size:
                raise ValueError(
                    "covariance='per_class' needs at least 2 benign rows per class; "
                    f"classes {small.tolist()[:10]} have 1 sample. Use "
                    "covariance='tied'."
                )
            self.precision_ = np.stack(
                [
                    self._fit_precision(centered[inverse == k])
                    for k in range(counts.size)
                ]
            )
        self._fitted_with = (self.covariance, self.distance, self.class_column)
        distances = self._mahalanobis(features, classes)
        self.offset_ = float(np.percentile(-distances, 100 * self.contamination))
        return self

    def _route(self, classes):
        """Index into ``classes_`` of each row's class; unseen classes are refused."""
        index = np.searchsorted(self.classes_, classes)
        inside = index < self.classes_.size
        seen = np.zeros(classes.shape, dtype=bool)
        seen[inside] = self.classes_[index[inside]] == classes[inside]
        if not seen.all():
            unseen = np.unique(classes[~seen])
            raise ValueError(
                f"X has rows of classes {unseen.tolist()[:10]} that had no benign row "
                "at fit time, so they have no mean to be compared with. Refit with "
                "these classes in the benign data, or use distance='closest'."
            )
        return index

    def _mahalanobis(self, features, classes):
        if self.distance == "predicted":
            index = self._route(classes)
            out = np.empty(features.shape[0], dtype=np.float64)
            for k in np.unique(index):
                rows = index == k
                diff = features[rows] - self.means_[k]
                precision = (
                    self.precision_ if self.covariance == "tied" else self.precision_[k]
                )
                out[rows] = np.einsum("ij,jk,ik->i", diff, precision, diff)
            return out
        if self.covariance == "per_class":
            out = np.full(features.shape[0], np.inf)
            for k, mean in enumerate(self.means_):
                diff = features - mean
                d = np.einsum("ij,jk,ik->i", diff, self.precision_[k], diff)
                np.minimum(out, d, out=out)
            return out
        # Tied: (x - m)' P (x - m) = x'Px - 2 x'Pm + m'Pm for every class mean m
        # at once, in chunks of rows.
        projected_means = self.means_ @ self.precision_
        mean_terms = np.einsum("kj,kj->k", projected_means, self.means_)
        out = np.empty(features.shape[0], dtype=np.float64)
        step = max(1, _CHUNK_ENTRIES // max(1, self.classes_.size))
        for start in range(0, features.shape[0], step):
            chunk = features[start : start + step]
            own = np.einsum("ij,jk,ik->i", chunk, self.precision_, chunk)
            cross = chunk @ projected_means.T
            d = own[:, None] - 2 * cross + mean_terms[None, :]
            # The expansion can round a zero distance slightly below zero.
            out[start : start + step] = np.maximum(d.min(axis=1), 0.0)
        return out

    def mahalanobis(self, X):
        """Squared Mahalanobis distance of each row: higher means more adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of a view's output: class column, then features.

        Returns
        -------
        distances : ndarray of shape (n_samples,)
            To the mean of the row's class (``distance="predicted"``) or to
            the closest class mean (``"closest"``).
        """
        check_is_fitted(self)
        if (self.covariance, self.distance, self.class_column) != self._fitted_with:
            covariance, distance, class_column = self._fitted_with
            raise ValueError(
                "covariance, distance or class_column changed since fit (fitted "
                f"with covariance={covariance!r}, distance={distance!r}, "
                f"class_column={class_column!r}); the threshold belongs to the "
                "fitted values: refit the detector."
            )
        X = validate_data(self, X, dtype=np.float64, reset=False)
        classes, features = self._split(X)
        if classes is None:
            classes = np.zeros(X.shape[0], dtype=np.int64)
        return self._mahalanobis(features, classes)

    def score_samples(self, X):
        """Benign-ness of each row: the negated squared Mahalanobis distance.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of a view's output: class column, then features.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Higher for more benign rows.
        """
        return -self.mahalanobis(X)

    def decision_function(self, X):
        """Score shifted by the threshold: negative means adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of a view's output: class column, then features.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            ``score_samples(X) - offset_``.
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Predict +1 for benign and -1 for adversarial rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of a view's output: class column, then features.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            +1 benign, -1 adversarial.
        """
        return np.where(self.decision_function(X) < 0, -1, 1)
