"""Tests of ClassConditionalGaussianDetector."""

import pickle
import re

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.covariance import EmpiricalCovariance, LedoitWolf
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from skadv import ActivationTransformer, ClassConditionalGaussianDetector
from skadv.metrics import detection_roc_auc, tpr_at_fpr


class DetectorIgnoringY(ClassConditionalGaussianDetector):
    """The detector with ``y`` dropped in fit, as scikit-learn's outlier
    detectors do, so that the checks that pass multi-class targets to ``fit``
    still exercise everything else."""

    def fit(self, X, y=None):
        return super().fit(X)


_Y_IS_DETECTION_LABELS = (
    "fit reads y as +1 benign / -1 adversarial labels and refuses any other label "
    "set; the check passes multi-class targets to fit. DetectorIgnoringY runs the "
    "same check without y"
)
_Y_CHECKS = [
    "check_estimators_dtypes",
    "check_fit_score_takes_y",
    "check_estimators_fit_returns_self",
    "check_pipeline_consistency",
    "check_estimators_nan_inf",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_predict1d",
    "check_methods_subset_invariance",
    "check_methods_sample_order_invariance",
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_fit_idempotent",
    "check_fit_check_is_fitted",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
    "check_dtype_object",
    "check_classifier_data_not_an_array",
]
_NON_INTEGER_CLASS_COLUMN = (
    "the checks' data hold random floats in column 0, which class_column=0 "
    "refuses as class labels (test_errors checks the message)"
)


def _expected_failures(estimator):
    if type(estimator) is ClassConditionalGaussianDetector:
        return dict.fromkeys(_Y_CHECKS, _Y_IS_DETECTION_LABELS)
    if estimator.class_column is not None:
        return dict.fromkeys(
            [
                "check_estimators_dtypes",
                "check_fit_score_takes_y",
                "check_estimators_fit_returns_self",
                "check_pipeline_consistency",
                "check_estimators_overwrite_params",
                "check_estimators_pickle",
                "check_f_contiguous_array_estimator",
                "check_fit2d_predict1d",
                "check_methods_subset_invariance",
                "check_methods_sample_order_invariance",
                "check_dict_unchanged",
                "check_dont_overwrite_parameters",
                "check_fit_idempotent",
                "check_fit_check_is_fitted",
                "check_n_features_in",
                "check_n_features_in_after_fitting",
                "check_positive_only_tag_during_fit",
                "check_readonly_memmap_input",
                "check_outliers_fit_predict",
                "check_outliers_train",
                "check_dtype_object",
                "check_estimators_nan_inf",
                "check_fit2d_1feature",
            ],
            _NON_INTEGER_CLASS_COLUMN,
        )
    return {}


@parametrize_with_checks(
    [
        ClassConditionalGaussianDetector(class_column=None),
        DetectorIgnoringY(class_column=None),
        DetectorIgnoringY(
            class_column=None,
            covariance="per_class",
            covariance_estimator=EmpiricalCovariance(),
        ),
        DetectorIgnoringY(class_column=None, distance="closest"),
        DetectorIgnoringY(),
    ],
    expected_failed_checks=_expected_failures,
    xfail_strict=True,
)
def test_sklearn_compatible_detector(estimator, check):
    check(estimator)


def _classes_data(n_classes=4, n_per_class=50, n_features=3, seed=0):
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(n_classes), n_per_class)
    means = 6.0 * rng.standard_normal((n_classes, n_features))
    scales = rng.uniform(0.5, 2.0, (n_classes, n_features))
    features = means[classes] + scales[classes] * rng.standard_normal(
        (classes.size, n_features)
    )
    return np.column_stack([classes, features])


def _brute_force(X, means, precisions):
    """Squared distances of every row to every class mean, shape (n, n_classes)."""
    features = X[:, 1:]
    return np.stack(
        [
            np.einsum("ij,jk,ik->i", features - m, p, features - m)
            for m, p in zip(means, precisions, strict=True)
        ],
        axis=1,
    )


def test_tied_covariance_is_ledoit_wolf_of_class_centred_rows():
    X = _classes_data()
    detector = ClassConditionalGaussianDetector().fit(X)
    classes, features = X[:, 0].astype(int), X[:, 1:]
    means = np.stack([features[classes == k].mean(0) for k in range(4)])
    np.testing.assert_allclose(detector.means_, means)
    expected = LedoitWolf(assume_centered=True).fit(features - means[classes])
    np.testing.assert_allclose(detector.precision_, expected.get_precision())
    d = _brute_force(X, means, [detector.precision_] * 4)
    np.testing.assert_allclose(detector.mahalanobis(X), d[np.arange(len(X)), classes])
    closest = clone(detector).set_params(distance="closest").fit(X)
    np.testing.assert_allclose(closest.mahalanobis(X), d.min(1), atol=1e-9)


def test_per_class_covariance_matches_scikit_learn():
    X = _classes_data()
    detector = ClassConditionalGaussianDetector(
        covariance="per_class", covariance_estimator=EmpiricalCovariance()
    ).fit(X)
    classes = X[:, 0].astype(int)
    for k in range(4):
        rows = X[classes == k]
        expected = EmpiricalCovariance().fit(rows[:, 1:]).mahalanobis(rows[:, 1:])
        np.testing.assert_allclose(detector.mahalanobis(rows), expected, rtol=1e-9)
    closest = clone(detector).set_params(distance="closest").fit(X)
    d = _brute_force(X, detector.means_, detector.precision_)
    np.testing.assert_allclose(closest.mahalanobis(X), d.min(1), rtol=1e-9)


def test_thousand_classes_tied():
    # One precision matrix, distances to all class means by matrix products.
    X = _classes_data(n_classes=1000, n_per_class=3, n_features=8)
    detector = ClassConditionalGaussianDetector(distance="closest").fit(X)
    assert detector.precision_.shape == (8, 8) and detector.means_.shape == (1000, 8)
    d = _brute_force(X[:200], detector.means_, [detector.precision_] * 1000)
    np.testing.assert_allclose(
        detector.mahalanobis(X[:200]), d.min(1), rtol=1e-7, atol=1e-7
    )
    assert np.mean(detector.predict(X) == -1) == pytest.approx(0.05, abs=0.001)


def test_contamination_and_benign_rows_only():
    X = _classes_data()
    detector = ClassConditionalGaussianDetector(contamination=0.1).fit(X)
    assert np.mean(detector.predict(X) == -1) == pytest.approx(0.1, abs=0.005)
    np.testing.assert_allclose(
        detector.decision_function(X), -detector.mahalanobis(X) - detector.offset_
    )
    odd = X[:20].copy()
    odd[:, 1:] += 100.0
    y = np.r_[np.ones(len(X)), -np.ones(len(odd))]
    mixed = clone(detector).fit(np.concatenate([X, odd]), y)
    np.testing.assert_allclose(mixed.precision_, detector.precision_)
    assert mixed.offset_ == detector.offset_


def test_errors():
    X = _classes_data()
    fitted = ClassConditionalGaussianDetector().fit(X)
    non_integer = X.copy()
    non_integer[0, 0] = 0.5
    with pytest.raises(
        ValueError,
        match=re.escape(
            "class_column=0 must hold integer class labels (the predicted class "
            "that the views write in column 0); found non-integer values such as "
            "0.5. Pass class_column=None to model all rows as one class without a "
            "class column."
        ),
    ):
        ClassConditionalGaussianDetector().fit(non_integer)
    unseen = X[:2].copy()
    unseen[:, 0] = [7, 9]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "X has rows of classes [7, 9] that had no benign row at fit time, so "
            "they have no mean to be compared with."
        ),
    ):
        fitted.predict(unseen)
    # distance="closest" ignores the class column when scoring.
    closest = ClassConditionalGaussianDetector(distance="closest").fit(X)
    assert closest.predict(unseen).shape == (2,)
    single = np.vstack([X, [[9, 0.0, 0.0, 0.0]]])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "covariance='per_class' needs at least 2 benign rows per class; "
            "classes [9] have 1 sample. Use covariance='tied'."
        ),
    ):
        ClassConditionalGaussianDetector(covariance="per_class").fit(single)
    with pytest.raises(ValueError, match="The 'distance' parameter"):
        ClassConditionalGaussianDetector(distance="nearest").fit(X)
    with pytest.raises(ValueError, match=re.escape("distance or class_column changed")):
        fitted.set_params(distance="closest").predict(X)


def test_pickle_round_trip():
    X = _classes_data()
    detector = ClassConditionalGaussianDetector(covariance="per_class").fit(X)
    loaded = pickle.loads(pickle.dumps(detector))
    np.testing.assert_array_equal(
        loaded.decision_function(X), detector.decision_function(X)
    )


@pytest.mark.parametrize(
    "covariance, auc_bound, tpr_bound",
    # Measured on FGSM eps 0.2: tied AUC 0.757, TPR at 5% FPR 0.17; per class
    # AUC 0.912, TPR 0.53.
    [("tied", 0.72, 0.12), ("per_class", 0.88, 0.45)],
)
def test_detects_fgsm_on_digit_activations(
    digits_fgsm, covariance, auc_bound, tpr_bound
):
    detector = make_pipeline(
        ActivationTransformer(digits_fgsm.net),
        ClassConditionalGaussianDetector(covariance=covariance),
    ).fit(digits_fgsm.X_train)
    benign = detector.decision_function(digits_fgsm.X_test)
    adversarial = detector.decision_function(digits_fgsm.X_adv)
    labels = np.r_[np.ones(len(benign)), -np.ones(len(adversarial))]
    scores = -np.r_[benign, adversarial]
    assert detection_roc_auc(labels, scores) > auc_bound
    assert tpr_at_fpr(labels, scores) > tpr_bound
