"""Tests of FeatureSqueezingDetector."""

import pickle
import re

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks
from skorch import NeuralNetClassifier

from skadv import FeatureSqueezingDetector
from skadv._squeezing import reduce_bit_depth, torch_median_smooth
from skadv.metrics import detection_roc_auc, tpr_at_fpr


class AnyWidthClassifier(torch.nn.Module):
    """A 3-class classifier of flat inputs of any width, for the common checks
    (which feed tabular data of several widths to one estimator)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)

    def forward(self, x):
        x = x.flatten(1)
        pooled = torch.stack([x.mean(1), (x**2).mean(1), x.amax(1)], dim=1)
        return self.linear(torch.tanh(pooled))


def _model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return AnyWidthClassifier()


class DetectorIgnoringY(FeatureSqueezingDetector):
    """The detector with ``y`` dropped in fit, as scikit-learn's outlier
    detectors do, so that the checks that pass multi-class targets to ``fit``
    still exercise everything else."""

    def fit(self, X, y=None):
        return super().fit(X)


_TORCH_MODEL_HASH = (
    "joblib.hash of a deep-copied torch module differs from the original's even "
    "without any fit, so the check cannot compare models"
)
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
    "check_estimators_nan_inf",
    "check_classifier_data_not_an_array",
]


def _expected_failures(estimator):
    failures = {"check_estimators_overwrite_params": _TORCH_MODEL_HASH}
    if type(estimator) is FeatureSqueezingDetector:
        failures.update(dict.fromkeys(_Y_CHECKS, _Y_IS_DETECTION_LABELS))
    return failures


# The checks' data lie outside [0, 1], which the bit-depth squeezer refuses:
# the median squeezer alone (over the flat inputs' one axis).
@parametrize_with_checks(
    [
        FeatureSqueezingDetector(_model(), bit_depth=None),
        DetectorIgnoringY(_model(), bit_depth=None, batch_size=7),
    ],
    expected_failed_checks=_expected_failures,
    xfail_strict=True,
)
def test_sklearn_compatible_detector(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits(digits_fgsm):
    return digits_fgsm


@pytest.fixture(scope="module")
def bits(digits):
    # On 8x8 digits a 2x2 median filter changes benign predictions as much as
    # an attack: the bit-depth squeezer alone.
    return FeatureSqueezingDetector(digits.net, median_size=None).fit(digits.X_train)


def test_squeezers():
    X = np.array([[0.0, 0.2, 0.26, 0.5, 0.74, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(reduce_bit_depth(X, 1), [[0, 0, 0, 0, 1, 1]])
    np.testing.assert_allclose(
        reduce_bit_depth(X, 2), [[0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1]], rtol=1e-6
    )


@pytest.mark.parametrize(
    "shape, size",
    [((3, 5, 5), 2), ((1, 7, 9), 3), ((2, 5, 5), 4), ((10,), 2), ((6, 7), 3)],
)
def test_torch_median_filter_is_scipys(shape, size):
    X = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    footprint = (1, 1, size, size) if len(shape) == 3 else (1,) + (size,) * len(shape)
    np.testing.assert_array_equal(
        torch_median_smooth(torch.as_tensor(X), size, shape).numpy(),
        ndimage.median_filter(X, size=footprint, mode="reflect"),
    )


def test_2x2_median_filter_is_scipys_with_ties():
    # The preset's squeezer has a sort-free path; quarter steps make ties.
    X = np.round(np.random.default_rng(1).random((4, 3, 6, 9)) * 4) / 4
    X = X.astype(np.float32)
    np.testing.assert_array_equal(
        torch_median_smooth(torch.as_tensor(X), 2, (3, 6, 9)).numpy(),
        ndimage.median_filter(X, size=(1, 1, 2, 2), mode="reflect"),
    )


def test_torch_decision_function_is_the_decision_function(digits):
    detector = FeatureSqueezingDetector(digits.net).fit(digits.X_train)
    X = np.concatenate([digits.X_test[:20], digits.X_adv[:20]])
    x = torch.as_tensor(X).requires_grad_()
    decision = detector.torch_decision_function(x)
    np.testing.assert_array_equal(
        decision.detach().numpy(), detector.decision_function(X)
    )
    # Gradients reach the input through both squeezers (straight through the
    # rounding, to the selected values of the median) and the model.
    decision.sum().backward()
    assert x.grad.abs().sum(dim=(1, 2, 3)).gt(0).all()


def test_detects_fgsm_on_digits(digits, bits):
    # Measured: ROC AUC 0.865, TPR 0.39 at 5% FPR (bit depth 1 alone).
    benign = bits.squeezing_distance(digits.X_test)
    adversarial = bits.squeezing_distance(digits.X_adv)
    labels = np.r_[np.ones(len(benign)), -np.ones(len(adversarial))]
    scores = np.r_[benign, adversarial]
    assert detection_roc_auc(labels, scores) > 0.83
    assert tpr_at_fpr(labels, scores) > 0.3
    np.testing.assert_allclose(
        bits.decision_function(digits.X_test), -benign - bits.offset_
    )
    # The threshold flags the contamination share of the benign training rows.
    flagged = np.mean(bits.predict(digits.X_train) == -1)
    assert flagged == pytest.approx(0.05, abs=0.005)


def test_score_is_the_largest_softmax_distance(digits):
    X = digits.X_test[:30]
    detector = FeatureSqueezingDetector(digits.net, batch_size=8).fit(X)
    module = digits.net.module_
    with torch.no_grad():

        def proba(Z):
            return torch.softmax(module(torch.as_tensor(Z)).double(), dim=1).numpy()

        original = proba(X)
        squeezed = [
            proba(reduce_bit_depth(X, 1)),
            proba(ndimage.median_filter(X, size=(1, 1, 2, 2), mode="reflect")),
        ]
    expected = np.max([np.abs(p - original).sum(1) for p in squeezed], axis=0)
    np.testing.assert_allclose(detector.squeezing_distance(X), expected, atol=1e-6)


def test_skorch_probability_output_is_not_softmaxed_twice(digits, bits):
    # skorch's default NLLLoss expects its module to return probabilities.
    module = torch.nn.Sequential(digits.net.module_, torch.nn.Softmax(dim=1))
    net = NeuralNetClassifier(module, criterion=torch.nn.NLLLoss).initialize()
    detector = FeatureSqueezingDetector(net, median_size=None).fit(digits.X_train)
    np.testing.assert_allclose(
        detector.squeezing_distance(digits.X_test),
        bits.squeezing_distance(digits.X_test),
        atol=1e-5,
    )


def test_fit_on_benign_rows_only(digits, bits):
    X = np.concatenate([digits.X_train, digits.X_adv])
    y = np.r_[np.ones(len(digits.X_train)), -np.ones(len(digits.X_adv))]
    detector = clone(bits).fit(X, y)
    assert detector.offset_ == bits.offset_
    with pytest.raises(ValueError, match="must label each row"):
        clone(bits).fit(X, np.where(y == 1, 1, 0))


def test_errors(digits, bits):
    X = digits.X_test[:10]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "bit_depth and median_size are both None: FeatureSqueezingDetector "
            "needs at least one squeezer; set bit_depth (e.g. 1) or median_size "
            "(e.g. 2)."
        ),
    ):
        FeatureSqueezingDetector(digits.net, bit_depth=None, median_size=None).fit(X)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "bit_depth=1 squeezes inputs in [0, 1], but X holds values in "
            "[0, 16]. Scale X to [0, 1] or set bit_depth=None."
        ),
    ):
        bits.decision_function(X * 16)
    with pytest.raises(ValueError, match="The 'bit_depth' parameter"):
        FeatureSqueezingDetector(digits.net, bit_depth=0).fit(X)
    changed = clone(bits).fit(X).set_params(bit_depth=4)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "bit_depth or median_size changed since fit (fitted with bit_depth=1, "
            "median_size=None)"
        ),
    ):
        changed.predict(X)


def test_pickle_round_trip(digits, bits):
    loaded = pickle.loads(pickle.dumps(bits))
    np.testing.assert_array_equal(
        loaded.decision_function(digits.X_adv), bits.decision_function(digits.X_adv)
    )
