"""Named detector configurations: Ko & Lim's, and the best one we found.

``make_detector(model, preset=...)`` returns an unfitted pipeline of an
:class:`~skadv.ExplanationTransformer` and a detector. The presets and the
numbers behind them are in ``benchmarks/RESULTS.md`` (``skadv reproduce``).
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from skadv._autoencoder import make_reconstructor
from skadv._detector import ExplanationReconstructionDetector
from skadv._explain import ExplanationTransformer
from skadv._validation import check_detection_labels

PRESETS = {
    "ko-lim-2021": {
        "name": "ko-lim-2021",
        "description": "Ko & Lim (2021): saliency maps (percentile), one "
        "784-64-784 MLP autoencoder per predicted class, 10 epochs, top-half L1",
        "method": "saliency",
        "normalize": "percentile",
        "metric": "top_half_l1",
        "hidden": 64,
        "epochs": 10,
        "contrast": None,
    },
    "contrastive-h256": {
        "name": "contrastive-h256",
        "description": "saliency maps (percentile), one 784-256-784 MLP "
        "autoencoder per predicted class trained 30 epochs, class-contrastive "
        "top-half L1 score (weight 0.5)",
        "method": "saliency",
        "normalize": "percentile",
        "metric": "top_half_l1",
        "hidden": 256,
        "epochs": 30,
        "contrast": 0.5,
    },
}


class ClassContrastiveDetector(OutlierMixin, BaseEstimator):
    """Ko & Lim's detector with a score that compares the classes' reconstructors.

    An adversarial input is classified as class ``c`` but still looks like its
    original class: its explanation map is reconstructed badly by the
    autoencoder of ``c`` and comparatively well by another class's. With
    ``e_c`` the reconstruction error under class ``c``'s autoencoder, the
    score of a row predicted as ``c`` is::

        log(e_c) + weight * (log(e_c) - min over k != c of log(e_k))

    ``weight=0`` is the plain (log) reconstruction error of
    :class:`ExplanationReconstructionDetector`.

    Parameters
    ----------
    detector : ExplanationReconstructionDetector, default=None
        The per-class reconstruction detector, cloned and fitted (``None``:
        its defaults). It needs a class column and at least two classes.
    weight : float, default=0.5
        Weight of the contrast between the predicted class's error and the
        best other class's.
    contamination : float in (0, 0.5], default=0.05
        Target false-positive rate on the benign training rows: each class's
        threshold is the quantile of its benign training scores.

    Attributes
    ----------
    detector_ : ExplanationReconstructionDetector
        The fitted detector.
    offset_ : ndarray of shape (n_classes,)
        Threshold of each class of ``detector_.class_labels_`` on
        :meth:`score_samples`.
    global_offset_ : float
        Threshold of rows of other classes (the fallback autoencoder's).
    n_features_in_ : int
        Number of columns of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from skadv import ExplanationReconstructionDetector
    >>> from skadv._presets import ClassContrastiveDetector
    >>> rng = np.random.default_rng(0)
    >>> patterns = rng.random((2, 16))
    >>> classes = np.repeat([0, 1], 100)
    >>> maps = np.clip(patterns[classes] + 0.05 * rng.standard_normal((200, 16)), 0, 1)
    >>> X = np.column_stack([classes, maps]).astype(np.float32)
    >>> inner = ExplanationReconstructionDetector(random_state=0)
    >>> detector = ClassContrastiveDetector(inner).fit(X)
    >>> swapped = np.column_stack([[1, 0], patterns]).astype(np.float32)
    >>> detector.predict(swapped)  # class 1 routed a class-0 map, and vice versa
    array([-1, -1])
    """

    _parameter_constraints = {
        "detector": [HasMethods(["fit", "reconstruction_error"]), None],
        "weight": [Interval(numbers.Real, 0, None, closed="left")],
        "contamination": [Interval(numbers.Real, 0, 0.5, closed="right")],
    }

    def __init__(self, detector=None, *, weight=0.5, contamination=0.05):
        self.detector = detector
        self.weight = weight
        self.contamination = contamination

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the detector on the benign rows and set per-class thresholds.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of ``ExplanationTransformer`` output.
        y : array-like of shape (n_samples,), default=None
            Optional +1 benign / -1 adversarial labels; only benign rows train.

        Returns
        -------
        self : object
            The fitted detector.
        """
        X = validate_data(self, X, dtype=np.float32)
        if y is not None:
            X = X[check_detection_labels(y, X.shape[0])]
        detector = (
            ExplanationReconstructionDetector()
            if self.detector is None
            else clone(self.detector)
        )
        if getattr(detector, "class_column", 0) is None:
            raise ValueError(
                "ClassContrastiveDetector compares the classes' reconstructors: "
                "the detector needs a class column (class_column=None given)."
            )
        self.detector_ = detector.fit(X)
        if len(self.detector_.class_labels_) < 2:
            raise ValueError(
                "ClassContrastiveDetector needs at least two classes with an "
                f"autoencoder; got {len(self.detector_.class_labels_)}."
            )
        scores = self.score_samples(X)
        classes = X[:, self.detector_.class_column]
        q = 100 * self.contamination
        self.global_offset_ = float(np.percentile(scores, q))
        self.offset_ = np.array(
            [
                np.percentile(scores[classes == c], q)
                if np.any(classes == c)
                else self.global_offset_
                for c in self.detector_.class_labels_
            ]
        )
        return self

    def reconstruction_error(self, X):
        """The class-contrastive log error: higher means more adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows of ``ExplanationTransformer`` output.

        Returns
        -------
        score : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        column = self.detector_.class_column
        own = np.log(np.maximum(self.detector_.reconstruction_error(X), 1e-12))
        if self.weight == 0:
            return own
        predicted = X[:, column]
        best_other = np.full(X.shape[0], np.inf)
        rerouted = X.copy()
        for c in self.detector_.class_labels_:
            rerouted[:, column] = c
            error = np.log(
                np.maximum(self.detector_.reconstruction_error(rerouted), 1e-12)
            )
            best_other = np.where(
                predicted == c, best_other, np.minimum(best_other, error)
            )
        # Rows of a class without an autoencoder: compare with every class.
        best_other = np.where(np.isfinite(best_other), best_other, own)
        return own + self.weight * (own - best_other)

    def score_samples(self, X):
        """Benign-ness of each row: the negated contrastive error.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        return -self.reconstruction_error(X)

    def decision_function(self, X):
        """Score minus the row's class threshold: negative means adversarial.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        scores = self.score_samples(X)
        classes = np.asarray(X, dtype=np.float32)[:, self.detector_.class_column]
        labels = self.detector_.class_labels_
        index = np.clip(np.searchsorted(labels, classes), 0, len(labels) - 1)
        own = labels[index] == classes
        offset = np.where(own, self.offset_[index], self.global_offset_)
        return scores - offset

    def predict(self, X):
        """+1 for benign rows, -1 for adversarial ones.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return np.where(self.decision_function(X) < 0, -1, 1)


def make_detector(
    model,
    *,
    preset="ko-lim-2021",
    contamination=0.05,
    input_shape=None,
    memory=None,
    n_jobs=None,
    device=None,
    random_state=None,
):
    """An unfitted detector pipeline with a named, benchmarked configuration.

    Presets (numbers on MNIST, mean per-class ROC AUC, from ``skadv
    reproduce``; see ``benchmarks/RESULTS.md``):

    ``"ko-lim-2021"``
        The paper's detector: saliency maps with percentile normalisation,
        one 784-64-784 MLP autoencoder per predicted class (10 epochs, batch
        32, Adam 1e-3), top-half L1 score. FGSM at eps 0.05: 0.931.
    ``"contrastive-h256"``
        The best configuration we found: the same maps, 256-unit autoencoders
        trained for 30 epochs, and a class-contrastive score
        (:class:`ClassContrastiveDetector`, weight 0.5) that also asks whether
        another class's autoencoder rebuilds the map better. FGSM at eps 0.05:
        about 0.978; at least the paper's AUC for every attack and eps.
        Scoring runs every class's autoencoder on every map (cheap next to
        the classifier's backward pass).

    Parameters
    ----------
    model : torch.nn.Module or skorch.NeuralNetClassifier
        The trained classifier to guard (frozen).
    preset : {"ko-lim-2021", "contrastive-h256"}, default="ko-lim-2021"
        The configuration.
    contamination : float, default=0.05
        Target false-positive rate on benign training data.
    input_shape : tuple of int, default=None
        Shape of one input when ``X`` is passed flat.
    memory : str or joblib.Memory, default=None
        Caches the fitted autoencoders.
    n_jobs : int, default=None
        Autoencoders trained in parallel.
    device : str, default=None
        Device of the explanations and the autoencoders.
    random_state : int, default=None
        Seeds the autoencoders.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        ``ExplanationTransformer``, then the detector.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skadv._presets import make_detector
    >>> _ = torch.manual_seed(0)  # a reproducible toy classifier
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    >>> X = np.random.default_rng(0).random((60, 1, 8, 8), dtype=np.float32)
    >>> detector = make_detector(model, preset="contrastive-h256", random_state=0)
    >>> detector.fit(X).predict(X[:4]).shape
    (4,)
    """
    try:
        p = PRESETS[preset]
    except (KeyError, TypeError):
        raise ValueError(
            f"preset must be one of {sorted(PRESETS)}; got {preset!r}."
        ) from None
    detector = ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(
            module__hidden=p["hidden"], max_epochs=p["epochs"]
        ),
        contamination=contamination,
        metric=p["metric"],
        memory=memory,
        n_jobs=n_jobs,
        device=device,
        random_state=random_state,
    )
    if p["contrast"] is not None:
        detector = ClassContrastiveDetector(
            detector, weight=p["contrast"], contamination=contamination
        )
    return make_pipeline(
        ExplanationTransformer(
            model,
            method=p["method"],
            normalize=p["normalize"],
            input_shape=input_shape,
            device=device,
        ),
        detector,
    )
