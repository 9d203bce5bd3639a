"""scikit-learn's common estimator checks on every skadv estimator."""

import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from skadv import (
    DetectorClassifier,
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    make_conditional_reconstructor,
    make_reconstructor,
)


class AnyWidthClassifier(torch.nn.Module):
    """A 3-class torch classifier of flat inputs of any width.

    The common checks feed tabular data of several widths to one estimator;
    pooled features let one fixed module take them all.
    """

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)

    def forward(self, x):
        x = x.flatten(1)
        pooled = torch.stack([x.mean(1), (x**2).mean(1), x.amax(1)], dim=1)
        return self.linear(torch.tanh(pooled))


class DetectorIgnoringY(ExplanationReconstructionDetector):
    """The detector with ``y`` dropped in fit, as scikit-learn's outlier
    detectors do, so that the checks which pass multi-class targets to ``fit``
    still exercise everything else (dtypes, pickling, idempotence...)."""

    def fit(self, X, y=None):
        return super().fit(X)

    def partial_fit(self, X, y=None, classes=None):
        return super().partial_fit(X, classes=classes)


def _make_model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return AnyWidthClassifier()


def _detector(cls, **params):
    # Two epochs keep each of the many fits of the checks in milliseconds; the
    # checks feed random floats, not a class column, so one autoencoder for all.
    return cls(
        reconstructor=make_reconstructor(max_epochs=2, batch_size=16),
        class_column=None,
        random_state=0,
        **params,
    )


ESTIMATORS = [
    ExplanationTransformer(_make_model()),
    ExplanationTransformer(
        _make_model(), method="integrated_gradients", normalize="max"
    ),
    _detector(ExplanationReconstructionDetector),
    _detector(DetectorIgnoringY),
    # Thresholds on held-out rows: a random split inside fit.
    _detector(DetectorIgnoringY, validation_fraction=0.25),
    # One class-conditional autoencoder (a single slot: no class column here).
    DetectorIgnoringY(
        reconstructor=make_conditional_reconstructor(max_epochs=2, batch_size=16),
        class_column=None,
        random_state=0,
    ),
    # The wrapper that threshold tuners take: run as a classifier, around the
    # detector itself and around the one that drops y.
    DetectorClassifier(_detector(ExplanationReconstructionDetector)),
    DetectorClassifier(_detector(DetectorIgnoringY)),
]

_TORCH_MODEL_HASH = (
    "joblib.hash of a deep-copied torch module differs from the original's even "
    "without any fit, so the check cannot compare models; test_explain checks "
    "that fit and transform leave the model's weights and modes untouched"
)
_FLOAT32_BATCHING = (
    "integrated gradients run the model on batches of interpolated inputs; a "
    "different batch composition changes float32 results by ~1e-7, above the "
    "check's rtol of 1e-7"
)
_Y_IS_DETECTION_LABELS = (
    "fit reads y as +1 benign / -1 adversarial labels and refuses any other label "
    "set (0/1 would be ambiguous); the check passes multi-class targets to fit. "
    "DetectorIgnoringY runs the same check without y"
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
    "check_requires_y_none",
    "check_dtype_object",
    "check_classifier_data_not_an_array",
]


_HELD_OUT_THRESHOLDS = (
    "with validation_fraction the thresholds are quantiles of held-out rows' "
    "scores, by design not of the training rows': the share of training rows "
    "flagged is not exactly contamination"
)


_WRAPPED_Y_IS_DETECTION_LABELS = (
    "DetectorClassifier passes y to the detector's fit, which reads it as +1 benign "
    "/ -1 adversarial labels and refuses any other label set; the check passes "
    "multi-class (or string) targets. The wrapper around DetectorIgnoringY runs the "
    "same check without y"
)
_FLAGS_BENIGN_TRAINING_ROWS = (
    "a detector's threshold flags about a contamination share of its benign "
    "training rows as adversarial (-1), so trained on one label it does not "
    "predict that label everywhere"
)
_LABEL_MESSAGE = (
    "a continuous y is refused by the detector's label check, whose message states "
    "the +1/-1 convention rather than scikit-learn's 'Unknown label type'"
)
_FIXED_CLASSES = (
    "classes_ is always [-1, 1] (adversarial, benign) and predictions come from the "
    "detector's threshold: the wrapper reads a detector as a classifier, it learns "
    "no classes from y, so multi-class labels are neither kept nor predicted"
)
_Y_DROPPED = (
    "DetectorIgnoringY drops y, so nothing refuses a y of the wrong length, with inf "
    "values or continuous, nor warns on a 2-D column; the real detector does (the "
    "wrapper passes y on unchecked)"
)


def _expected_failed_checks_detector_classifier(estimator):
    if type(estimator.detector) is ExplanationReconstructionDetector:
        y_checks = [c for c in _Y_CHECKS if c != "check_requires_y_none"] + [
            "check_classifiers_classes",
            "check_classifiers_train",
            "check_supervised_y_2d",
        ]
        failures = dict.fromkeys(y_checks, _WRAPPED_Y_IS_DETECTION_LABELS)
        failures["check_classifiers_regression_target"] = _LABEL_MESSAGE
    else:
        failures = {
            "check_classifiers_classes": _FIXED_CLASSES,
            "check_classifiers_train": f"{_Y_DROPPED}; and {_FIXED_CLASSES}",
            "check_classifiers_regression_target": _Y_DROPPED,
            "check_supervised_y_no_nan": _Y_DROPPED,
            "check_supervised_y_2d": _Y_DROPPED,
        }
    failures["check_classifiers_one_label"] = _FLAGS_BENIGN_TRAINING_ROWS
    return failures


def _expected_failed_checks(estimator):
    if isinstance(estimator, DetectorClassifier):
        return _expected_failed_checks_detector_classifier(estimator)
    if getattr(estimator, "validation_fraction", None) is not None:
        return dict.fromkeys(
            ["check_outliers_fit_predict", "check_outliers_train"],
            _HELD_OUT_THRESHOLDS,
        )
    if type(estimator) is ExplanationReconstructionDetector:
        return dict.fromkeys(_Y_CHECKS, _Y_IS_DETECTION_LABELS)
    if isinstance(estimator, ExplanationTransformer):
        # Integrated gradients' check_methods_sample_order_invariance passes or
        # fails with the random weights of the test's model: handled in the
        # test below, as a non-strict expected failure.
        return {"check_estimators_overwrite_params": _TORCH_MODEL_HASH}
    return {}


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=_expected_failed_checks, xfail_strict=True
)
def test_sklearn_compatible_estimator(estimator, check):
    name = getattr(check, "func", check).__name__
    if (
        name == "check_methods_sample_order_invariance"
        and isinstance(estimator, ExplanationTransformer)
        and estimator.method == "integrated_gradients"
    ):
        try:
            check(estimator)
        except AssertionError:
            pytest.xfail(_FLOAT32_BATCHING)
        return
    check(estimator)
