"""Bad input, tried systematically: property-based tests with hypothesis.

Every public entry point either works, returning finite scores of the right
shape and dtype, or raises a ValueError or TypeError whose message names the
parameter (X, y, class_column...) and what was expected: never an error from
torch or numpy internals. Inputs are never modified, and a row's scores do not
depend on the other rows of its batch.

Tests marked ``xfail(strict=True)`` document bugs of the core modules found by
this fuzzing; their reasons name the bug. Remove a mark once its bug is fixed.
"""

import copy
import re
import subprocess
import sys

import captum.attr  # noqa: F401
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skadv import (
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    make_reconstructor,
)
from skadv.attacks import make_adversarial
from skadv.metrics import detection_accuracy, detection_roc_auc, tpr_at_fpr

# captum.attr is imported above, not lazily inside a test: it imports
# torch._dynamo, which raises the recursion limit, and hypothesis fails a test
# during which that happens.

# Hypothesis's failure report imports a module that warns on import: keep
# warnings-as-errors from hiding the report itself.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

# Deterministic (derandomize) and without a .hypothesis database in the repo.
FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

N_MAP = 8  # map values per row: detector rows have 1 + N_MAP columns
IMAGE = (1, 4, 4)  # input shape of the tiny CNN
N_CLASSES = 3

# scikit-learn's (and numpy's) own validation messages, which every
# scikit-learn estimator gives and which do not all name X.
SKLEARN_MESSAGES = (
    "Expected 2D array",  # X of ndim 0 or 1
    "Found array with dim",  # ndim > 2
    "Found array with 0 sample",
    "Found array with 0 feature",
    "Complex data not supported",
    "could not convert string to float",  # non-numeric strings
    "setting an array element with a sequence",  # ragged nested lists
    "Found input variables with inconsistent numbers of samples",
)


# --------------------------------------------------------------------------
# Helpers


def snapshot(X):
    return X.copy(deep=True) if isinstance(X, pd.DataFrame) else copy.deepcopy(X)


def assert_unchanged(X, before):
    if isinstance(X, pd.DataFrame):
        pd.testing.assert_frame_equal(X, before)
    elif isinstance(X, np.ndarray) and X.dtype != object:
        assert X.dtype == before.dtype and X.shape == before.shape
        np.testing.assert_array_equal(X, before)
    elif isinstance(X, np.ndarray):  # object arrays: NaN is not NaN in them
        assert X.shape == before.shape and repr(X.tolist()) == repr(before.tolist())
    else:  # nested lists: repr tells NaN from NaN, and 1 from 1.0
        assert repr(X) == repr(before)


def call(method, X, *args, **kwargs):
    """Return ``(result, error)`` of ``method(X)``, which must leave X alone.

    Only ValueError and TypeError are caught: anything else fails the test.
    """
    before = snapshot(X)
    try:
        result, error = method(X, *args, **kwargs), None
    except (ValueError, TypeError) as exc:
        result, error = None, exc
    assert_unchanged(X, before)
    return result, error


def assert_clear_error(error, names=("X",)):
    """The message names the parameter, or is one of scikit-learn's own."""
    message = str(error)
    named = any(re.search(rf"\b{re.escape(name)}\b", message) for name in names)
    assert named or message.startswith(SKLEARN_MESSAGES), message


def assert_scores(scores, n_rows):
    assert isinstance(scores, np.ndarray)
    assert scores.shape == (n_rows,) and scores.dtype == np.float64
    assert np.isfinite(scores).all()


def assert_detector_outputs(detector, X, n_rows):
    """Every score method works on X, consistently with the others."""
    errors = detector.reconstruction_error(X)
    assert_scores(errors, n_rows)
    assert (errors >= 0).all()
    np.testing.assert_array_equal(detector.score_samples(X), -errors)
    decision = detector.decision_function(X)
    assert_scores(decision, n_rows)
    np.testing.assert_array_equal(detector.predict(X), np.where(decision < 0, -1, 1))
    return decision


def tiny_cnn():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 3, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(3 * 16, N_CLASSES),
        )
    return model.eval()


def fast_detector(**params):
    params.setdefault("reconstructor", make_reconstructor(max_epochs=3))
    params.setdefault("random_state", 0)
    return ExplanationReconstructionDetector(**params)


# --------------------------------------------------------------------------
# Fitted once per module


@pytest.fixture(scope="module")
def benign():
    """Each class a fixed pattern plus a little noise, as conftest.make_maps."""
    rng = np.random.default_rng(0)
    patterns = rng.random((N_CLASSES, N_MAP))
    classes = np.repeat(np.arange(N_CLASSES), 20)
    noise = 0.05 * rng.standard_normal((classes.size, N_MAP))
    maps = np.clip(patterns[classes] + noise, 0, 1)
    return np.column_stack([classes, maps]).astype(np.float32)


@pytest.fixture(scope="module")
def detectors(benign):
    """Per-class autoencoders; the same with a fallback; a single one."""
    return {
        "per_class": fast_detector().fit(benign),
        "fallback": fast_detector(unseen_class="fallback", min_class_size=25).fit(
            np.vstack([benign, benign[:5] + np.r_[5, np.zeros(N_MAP)]])
        ),
        "single": fast_detector(class_column=None).fit(benign[:, 1:]),
    }


@pytest.fixture(scope="module")
def model():
    return tiny_cnn()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((40, *IMAGE), dtype=np.float32)


@pytest.fixture(scope="module")
def transformer(model, images):
    return ExplanationTransformer(model).fit(images)


@pytest.fixture(scope="module")
def art():
    """ART, the optional backend of make_adversarial, imported before any test."""
    return pytest.importorskip("art")


@pytest.fixture(scope="module")
def pipeline(transformer, images):
    from sklearn.pipeline import make_pipeline

    detector = fast_detector(min_class_size=1, unseen_class="fallback")
    return make_pipeline(transformer, detector).fit(images)


# --------------------------------------------------------------------------
# Strategies


@st.composite
def any_arrays(draw, max_side=10):
    """Arrays of any ndim (0 to 4), size (0 included) and numeric dtype."""
    dtype = draw(
        st.sampled_from(
            [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, bool]
        )
    )
    if dtype is bool:
        elements = st.booleans()
    elif np.issubdtype(dtype, np.integer):
        elements = st.integers(0, 2)
    else:
        elements = st.floats(-2, 2, width=16)
    shape = draw(
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=max_side)
    )
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def detector_rows(draw, classes=range(N_CLASSES), low=0.0, high=1.0, max_rows=6):
    """Valid detector input: a class column, then N_MAP map values."""
    n = draw(st.integers(1, max_rows))
    labels = draw(hnp.arrays(np.int64, n, elements=st.sampled_from(list(classes))))
    values = st.floats(float(np.float32(low)), float(np.float32(high)), width=32)
    maps = draw(hnp.arrays(np.float32, (n, N_MAP), elements=values))
    return np.column_stack([labels, maps]).astype(np.float32)


@st.composite
def image_batches(draw, low=0.0, high=1.0, max_rows=5):
    n = draw(st.integers(1, max_rows))
    values = st.floats(float(np.float32(low)), float(np.float32(high)), width=32)
    return draw(hnp.arrays(np.float32, (n, *IMAGE), elements=values))


def read_only(X):
    X = X.copy()
    X.setflags(write=False)
    return X


# Representations of the same float32 values, as users pass them.
VARIANTS = {
    "float32": lambda X: X,
    "float64": lambda X: X.astype(np.float64),
    "float16": lambda X: X.astype(np.float16),
    "int64": lambda X: np.round(X).astype(np.int64),
    "bool": lambda X: X > 0.5,
    "object numbers": lambda X: X.astype(object),
    "object numeric strings": lambda X: X.astype(str).astype(object),
    "unicode numeric strings": lambda X: X.astype(str),
    "Fortran order": np.asfortranarray,
    "strided view": lambda X: np.repeat(np.repeat(X, 2, axis=0), 3, axis=-1)[
        ::2, ..., ::3
    ],
    "negative strides": lambda X: X[::-1].copy()[::-1],
    "read-only": read_only,
    "nested lists": lambda X: X.tolist(),
    "DataFrame": lambda X: pd.DataFrame(X.reshape(len(X), -1)),
}
# class_column=None passes X on to torch unchanged: see
# test_read_only_maps_without_class_column for the bug that these trigger.
WRITABLE_VARIANTS = sorted(set(VARIANTS) - {"read-only", "DataFrame"})


def canonical(X):
    """What any representation means: a C-ordered float32 array."""
    if isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    return np.ascontiguousarray(np.asarray(X, dtype=np.float32))


# --------------------------------------------------------------------------
# ExplanationReconstructionDetector


@pytest.mark.parametrize("kind", ["per_class", "fallback", "single"])
@settings(FUZZ, max_examples=60)
@given(X=any_arrays())
def test_detector_on_any_shape_and_dtype(detectors, kind, X):
    detector = detectors[kind]
    scores, error = call(detector.decision_function, X)
    if error is None:
        assert_scores(scores, X.shape[0])
        assert X.ndim == 2 and X.shape[1] == detector.n_features_in_
    else:
        assert_clear_error(error, ("X", "class_column"))


@pytest.mark.parametrize("kind", ["per_class", "fallback", "single"])
@settings(FUZZ, max_examples=40)
@given(X=detector_rows(), variant=st.sampled_from(sorted(VARIANTS)))
def test_detector_scores_do_not_depend_on_representation(detectors, kind, X, variant):
    detector = detectors[kind]
    if kind == "single":
        X = X[:, 1:]
        if variant not in WRITABLE_VARIANTS:
            return
    X_variant = VARIANTS[variant](X)
    decision, error = call(detector.decision_function, X_variant)
    assert error is None, error
    assert_scores(decision, len(X))
    np.testing.assert_array_equal(
        decision, detector.decision_function(canonical(X_variant))
    )


@settings(FUZZ, max_examples=40)
@given(
    X=detector_rows(),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    data=st.data(),
)
def test_detector_refuses_nan_and_inf_anywhere(detectors, X, bad, data):
    i = data.draw(st.integers(0, X.shape[0] - 1), label="row")
    j = data.draw(st.integers(0, X.shape[1] - 1), label="column")
    X[i, j] = bad
    for detector in detectors.values():
        X_in = X if detector.class_column is not None else X[:, 1:].copy()
        if detector.class_column is None and j == 0:
            continue
        _, error = call(detector.predict, X_in)
        assert isinstance(error, ValueError)
        assert re.match(r"Input X contains (NaN|infinity)", str(error)), error


@settings(FUZZ, max_examples=30)
@given(X=detector_rows(max_rows=12), data=st.data())
def test_detector_row_scores_do_not_depend_on_the_batch(detectors, X, data):
    detector = detectors["fallback"]
    decision = detector.decision_function(X)
    i = data.draw(st.integers(0, len(X) - 1), label="row")
    alone = detector.decision_function(X[i : i + 1])
    np.testing.assert_allclose(alone, decision[i : i + 1], rtol=0, atol=1e-6)
    order = data.draw(st.permutations(range(len(X))), label="order")
    np.testing.assert_allclose(
        detector.decision_function(X[order]), decision[order], rtol=0, atol=1e-6
    )


@settings(FUZZ, max_examples=40)
@given(X=detector_rows(low=-1e30, high=1e30))
def test_detector_scores_stay_finite_for_maps_out_of_range(detectors, X):
    for kind in ("per_class", "fallback"):
        assert_detector_outputs(detectors[kind], X, len(X))
    assert_detector_outputs(detectors["single"], X[:, 1:], len(X))


@settings(FUZZ, max_examples=60)
@given(
    X=detector_rows(max_rows=4),
    labels=st.lists(
        st.one_of(
            st.integers(-(2**62), 2**62).map(float),
            st.floats(-1e6, 1e6, allow_nan=False, width=32),
            st.sampled_from([0.0, 1.0, 2.0, 5.0, -1.0, 0.5, 1e-7]),
        ),
        min_size=4,
        max_size=4,
    ),
)
def test_class_column_values(detectors, X, labels):
    X[:, 0] = np.asarray(labels[: len(X)], dtype=np.float32)
    column = X[:, 0]
    for kind in ("per_class", "fallback"):
        detector = detectors[kind]
        scores, error = call(detector.decision_function, X)
        known = set(detector.class_labels_) | set(detector.fallback_classes_)
        if not np.array_equal(column, np.round(column)):
            assert error is not None
            assert str(error).startswith(
                "class_column=0 must hold integer class labels"
            ), error
        elif kind == "fallback" or set(column.astype(np.int64)) <= known:
            assert error is None, error
            assert_scores(scores, len(X))
        else:
            unseen = sorted(int(c) for c in set(column.astype(np.int64)) - known)
            assert str(error).startswith(
                f"X has rows of classes {unseen[:10]} that had no benign row at "
                "fit time."
            ), error


@settings(FUZZ, max_examples=30)
@given(X=detector_rows(), unseen=st.sampled_from([-1, 3, 7, 10**6]))
def test_every_class_unseen_at_predict_time(detectors, X, unseen):
    X[:, 0] = unseen
    msg = (
        f"X has rows of classes [{unseen}] that had no benign row at fit time. "
        "Refit with these classes in the benign data, or with "
        "unseen_class='fallback' to score them with the shared fallback autoencoder."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        detectors["per_class"].predict(X)
    decision = assert_detector_outputs(detectors["fallback"], X, len(X))
    # Unseen rows are scored by the fallback (the last autoencoder), against
    # its own threshold.
    fallback = detectors["fallback"]
    np.testing.assert_allclose(
        decision,
        -fallback.reconstruction_error(X) - fallback.offset_[-1],
        rtol=0,
        atol=0,
    )


@settings(FUZZ, max_examples=25)
@given(
    labels=st.lists(st.integers(-2, 3), min_size=1, max_size=10),
    min_class_size=st.sampled_from([1, 2, 4]),
    unseen_class=st.sampled_from(["error", "fallback"]),
    class_column=st.sampled_from([0, None]),
)
def test_cheap_fits_on_tiny_data(labels, min_class_size, unseen_class, class_column):
    rng = np.random.default_rng(len(labels))
    maps = rng.random((len(labels), 4), dtype=np.float32)
    X = np.column_stack([labels, maps]).astype(np.float32)
    if class_column is None:
        X = X[:, 1:]
    detector = ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(max_epochs=1, batch_size=4),
        min_class_size=min_class_size,
        unseen_class=unseen_class,
        class_column=class_column,
        random_state=0,
    )
    before = X.copy()
    detector.fit(X)
    np.testing.assert_array_equal(X, before)
    assert_detector_outputs(detector, X, len(X))
    if class_column is None:
        return
    counts = {c: labels.count(c) for c in set(labels)}
    own = sorted(c for c, n in counts.items() if n >= min_class_size)
    np.testing.assert_array_equal(detector.class_labels_, own)
    np.testing.assert_array_equal(
        detector.fallback_classes_, sorted(set(counts) - set(own))
    )
    X_unseen = X.copy()
    X_unseen[:, 0] = 9
    scores, error = call(detector.decision_function, X_unseen)
    if unseen_class == "fallback":
        assert_scores(scores, len(X))
    else:
        assert str(error).startswith("X has rows of classes [9]"), error


@settings(FUZZ, max_examples=30)
@given(
    y=st.lists(
        st.sampled_from([1, -1, 1.0, -1.0, 0, 2, np.nan, "benign", True]),
        min_size=5,
        max_size=5,
    )
)
def test_fit_labels(benign, y):
    X = benign[::12][:5]
    # An object array, as numpy would turn True into 1 in a list of ints.
    y_in = np.asarray(y, dtype=object)
    detector = ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(max_epochs=1),
        min_class_size=1,
        random_state=0,
    )
    _, error = call(detector.fit, X, y_in)
    valid = all(not isinstance(v, (str, bool)) and v in (1, -1) for v in y) and any(
        v == 1 for v in y
    )
    if valid:
        assert error is None, error
        benign_rows = X[np.asarray(y, dtype=float) == 1]
        assert_detector_outputs(detector, benign_rows, len(benign_rows))
    else:
        assert isinstance(error, ValueError), error
        assert str(error).startswith(
            ("y must label each row +1 (benign) or -1 (adversarial)", "y marks no row")
        ), error


# --------------------------------------------------------------------------
# Core bugs found by this fuzzing, fixed: these keep them fixed


@pytest.mark.parametrize("value", [1e19, -1e30, 2.0**63])
def test_class_values_beyond_int64_are_refused(detectors, benign, value):
    X = benign[:3].copy()
    X[:, 0] = value
    with pytest.raises(ValueError, match="class_column=0"):
        detectors["fallback"].predict(X)


@pytest.mark.parametrize("target", ["detector", "transformer"])
def test_float64_beyond_float32_is_refused_cleanly(detectors, transformer, target):
    X = np.full((2, 1 + N_MAP), 1e300) if target == "detector" else None
    if target == "transformer":
        X = np.full((2, *IMAGE), 1e300)
    estimator = detectors["per_class"] if target == "detector" else transformer
    method = estimator.predict if target == "detector" else estimator.transform
    with pytest.raises(ValueError, match=r"Input X contains infinity"):
        method(X)


def test_maps_that_overflow_the_autoencoder_are_named(detectors, benign):
    X = benign[:3].copy()
    X[:, 1:] = -3e38
    scores, error = call(detectors["per_class"].decision_function, X)
    if error is None:
        assert_scores(scores, 3)
    else:
        assert "X" in str(error) and "diverged" not in str(error), error


READ_ONLY_MAPS = """
import warnings
import numpy as np
import torch
from skadv import ExplanationReconstructionDetector, make_reconstructor

torch.set_num_threads(1)
warnings.simplefilter("error")
X = np.random.default_rng(0).random((20, 4), dtype=np.float32)
X.setflags(write=False)
ExplanationReconstructionDetector(
    class_column=None, reconstructor=make_reconstructor(max_epochs=1)
).fit(X)
"""


def test_read_only_maps_without_class_column():
    child = subprocess.run(
        [sys.executable, "-c", READ_ONLY_MAPS], capture_output=True, text=True
    )
    assert child.returncode == 0, child.stderr[-2000:]


@pytest.mark.parametrize("method", ["fit", "transform"])
def test_zero_images(model, transformer, method):
    X = np.zeros((0, *IMAGE), dtype=np.float32)
    estimator = ExplanationTransformer(model) if method == "fit" else transformer
    _, error = call(getattr(estimator, method), X)
    assert_clear_error(error)


@pytest.mark.parametrize("normalize", ["percentile", "max", None])
def test_overflowing_attributions(images, normalize):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.fill_(2.0)
    transformer = ExplanationTransformer(
        model, method="input_x_gradient", normalize=normalize
    ).fit(images)
    maps, error = call(transformer.transform, images[:4] * np.float32(3e38))
    if error is None:
        assert np.isfinite(maps).all()
        assert (maps[:, 1:] != 0).any(axis=1).all()  # no row silently zeroed
    else:
        assert_clear_error(error)


@pytest.mark.parametrize("input_shape", [("a", 16), (-1, -16), (1.5, 4)])
def test_input_shape_elements(model, images, input_shape):
    transformer = ExplanationTransformer(model, input_shape=input_shape)
    with pytest.raises(ValueError, match="input_shape must"):
        transformer.fit(images.reshape(len(images), -1))


def test_smoothgrad_rows_do_not_depend_on_the_batch(model, images):
    transformer = ExplanationTransformer(
        model, method="smoothgrad", method_params={"nt_samples": 3}
    ).fit(images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        whole = transformer.transform(images[:10])
        torch.manual_seed(0)
        alone = transformer.transform(images[3:4])
    np.testing.assert_allclose(alone, whole[3:4], rtol=0, atol=1e-6)


def test_make_adversarial_on_a_shape_the_model_does_not_take(art, model, images):
    _, error = call(make_adversarial, model, images[:4, :, :2])
    assert isinstance(error, ValueError)
    assert_clear_error(error)


@pytest.mark.parametrize("shape", [(1, 0, 0), (2, 0, 4, 4)])
def test_make_adversarial_on_empty_inputs(art, model, shape):
    _, error = call(make_adversarial, model, np.zeros(shape, dtype=np.float32))
    assert isinstance(error, ValueError)
    assert_clear_error(error)


@pytest.mark.parametrize("metric", [detection_accuracy, detection_roc_auc, tpr_at_fpr])
def test_empty_labels_are_refused_as_empty(metric):
    with pytest.raises(ValueError, match=r"\by_true\b") as error:
        metric([], [])
    assert "only benign" not in str(error.value)


@pytest.mark.parametrize("metric", [detection_roc_auc, tpr_at_fpr])
@pytest.mark.parametrize("score", [np.nan, np.inf, "high"], ids=["nan", "inf", "str"])
def test_bad_scores_are_refused_naming_y_score(metric, score):
    _, error = call(metric, [1, -1, 1], y_score=[0.1, score, 0.3])
    assert isinstance(error, (ValueError, TypeError))
    assert_clear_error(error, ("y_score",))


@pytest.mark.parametrize("method", ["fit", "transform"])
def test_reversed_images(model, images, transformer, method):
    estimator = ExplanationTransformer(model) if method == "fit" else transformer
    _, error = call(getattr(estimator, method), images[::-1])
    assert error is None, error


@pytest.mark.parametrize("labels", [["1", "-1"], [1, "-1"]], ids=["strings", "mixed"])
def test_numeric_strings_are_not_labels(labels):
    y_true = np.asarray(labels * 2, dtype=object)
    with pytest.raises(ValueError, match="y_true must label each row"):
        detection_roc_auc(y_true, [0.1, 0.2, 0.3, 0.4])


# --------------------------------------------------------------------------
# ExplanationTransformer


def assert_transform_output(maps, n_rows, normalized=True):
    assert isinstance(maps, np.ndarray) and maps.dtype == np.float32
    assert maps.shape == (n_rows, 1 + int(np.prod(IMAGE[1:])))
    assert np.isfinite(maps).all()
    assert set(np.unique(maps[:, 0])) <= set(range(N_CLASSES))
    if normalized:
        assert maps[:, 1:].min() >= 0 and maps[:, 1:].max() <= 1


@settings(FUZZ, max_examples=60)
# Zero images (ndim > 2, no rows): see test_zero_images.
@given(X=any_arrays(max_side=6).filter(lambda X: X.ndim <= 2 or X.shape[0] > 0))
def test_transformer_on_any_shape_and_dtype(transformer, X):
    maps, error = call(transformer.transform, X)
    if error is None:
        assert_transform_output(maps, X.shape[0], normalized=False)
    else:
        assert_clear_error(error)


@settings(FUZZ, max_examples=40)
@given(X=image_batches(), variant=st.sampled_from(sorted(VARIANTS)))
def test_transformer_output_does_not_depend_on_representation(transformer, X, variant):
    if variant == "negative strides":
        return  # see test_reversed_images
    X_variant = VARIANTS[variant](X)  # DataFrame: flat images
    reference = canonical(X_variant).reshape(len(X), *IMAGE)
    maps, error = call(transformer.transform, X_variant)
    assert error is None, error
    assert_transform_output(maps, len(X))
    np.testing.assert_array_equal(maps, transformer.transform(reference))


@settings(FUZZ, max_examples=30)
@given(
    X=image_batches(),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    data=st.data(),
)
def test_transformer_refuses_nan_and_inf_anywhere(transformer, X, bad, data):
    index = data.draw(
        st.tuples(*(st.integers(0, side - 1) for side in X.shape)), label="index"
    )
    X[index] = bad
    _, error = call(transformer.transform, X)
    assert isinstance(error, ValueError)
    assert re.match(r"Input X contains (NaN|infinity)", str(error)), error


METHODS = ["saliency", "input_x_gradient", "integrated_gradients"]
METHODS += ["guided_backprop", "deeplift"]


@settings(FUZZ, max_examples=30)
@given(
    X=image_batches(low=-1e20, high=1e20),
    method=st.sampled_from(METHODS),
    normalize=st.sampled_from(["percentile", "max", None]),
)
def test_transformer_maps_stay_finite_for_inputs_out_of_range(
    model, images, X, method, normalize
):
    params = {"n_steps": 4} if method == "integrated_gradients" else None
    transformer = ExplanationTransformer(
        model, method=method, normalize=normalize, method_params=params
    ).fit(images)
    maps, error = call(transformer.transform, X)
    assert error is None, error
    assert_transform_output(maps, len(X), normalized=normalize is not None)


@settings(FUZZ, max_examples=20)
@given(
    X=image_batches(max_rows=8),
    method=st.sampled_from(METHODS),
    batch_size=st.integers(1, 5),
    data=st.data(),
)
def test_transformer_rows_do_not_depend_on_the_batch(
    model, images, X, method, batch_size, data
):
    params = {"n_steps": 4} if method == "integrated_gradients" else None
    transformer = ExplanationTransformer(model, method=method, method_params=params)
    transformer.fit(images)
    whole = transformer.transform(X)
    transformer.set_params(batch_size=batch_size)
    np.testing.assert_allclose(transformer.transform(X), whole, rtol=0, atol=1e-6)
    i = data.draw(st.integers(0, len(X) - 1), label="row")
    np.testing.assert_allclose(
        transformer.transform(X[i : i + 1]), whole[i : i + 1], rtol=0, atol=1e-6
    )


@settings(FUZZ, max_examples=30)
@given(X=image_batches(low=-1e6, high=1e6, max_rows=6))
def test_pipeline_scores_stay_finite_for_inputs_out_of_range(pipeline, X):
    decision, error = call(pipeline.decision_function, X)
    assert error is None, error
    assert_scores(decision, len(X))
    np.testing.assert_array_equal(pipeline.predict(X), np.where(decision < 0, -1, 1))


# --------------------------------------------------------------------------
# skadv.attacks.make_adversarial


@settings(FUZZ, max_examples=20)
@given(
    X=image_batches(max_rows=4),
    bad=st.sampled_from([np.nan, np.inf, -0.5, 1.5, None]),
    data=st.data(),
)
def test_make_adversarial_on_bad_X(art, model, X, bad, data):
    if bad is not None:
        index = data.draw(
            st.tuples(*(st.integers(0, side - 1) for side in X.shape)), label="index"
        )
        X[index] = bad
    result, error = call(make_adversarial, model, X, eps=0.1, random_state=0)
    if bad is None:
        assert error is None, error
        X_adv, success = result
        assert X_adv.shape == X.shape and X_adv.dtype == np.float32
        assert np.isfinite(X_adv).all()
        assert X_adv.min() >= 0 and X_adv.max() <= 1
        assert np.abs(X_adv - X).max() <= 0.1 + 1e-6
        assert success.shape == (len(X),) and success.dtype == bool
    elif np.isfinite(bad):
        assert str(error).startswith("X has values outside clip_values=(0.0, 1.0)")
    else:
        assert re.match(r"Input X contains (NaN|infinity)", str(error)), error


@settings(FUZZ, max_examples=30)
@given(X=any_arrays(max_side=4))
def test_make_adversarial_on_any_shape(art, model, X):
    if X.ndim > 2 and X.shape[0] > 0 and X.size == 0:
        return  # see test_make_adversarial_on_empty_inputs
    if X.size > 0 and X.ndim >= 2 and X.shape[1:] != IMAGE:
        return  # see test_make_adversarial_on_a_shape_the_model_does_not_take
    X = np.abs(X.astype(np.float32)) / 2  # within clip_values
    result, error = call(make_adversarial, model, X, eps=0.1)
    if error is None:
        assert result[0].shape == X.shape and result[1].shape == (X.shape[0],)
    else:
        assert_clear_error(error)


# --------------------------------------------------------------------------
# skadv.metrics


LABELS = st.lists(
    # Numeric strings: see test_numeric_strings_are_not_labels.
    st.sampled_from([1, -1, 1.0, -1.0, 0, 2, np.nan, "benign", True]),
    min_size=1,
    max_size=8,
)


def valid_labels(y):
    return all(not isinstance(v, (str, bool)) and v in (1, -1) for v in y)


@settings(FUZZ, max_examples=100)
@given(y_true=LABELS, metric=st.sampled_from([detection_roc_auc, tpr_at_fpr]))
def test_ranking_metrics_on_bad_labels(y_true, metric):
    y_score = np.linspace(0, 1, len(y_true))
    y_in = np.asarray(y_true, dtype=object)
    value, error = call(metric, y_in, y_score)
    if valid_labels(y_true) and {1, -1} <= set(y_true):
        assert error is None, error
        assert isinstance(value, float) and 0 <= value <= 1
    else:
        assert isinstance(error, ValueError), error
        assert_clear_error(error, ("y_true",))


@settings(FUZZ, max_examples=100)
@given(y_true=LABELS, y_pred=LABELS)
def test_detection_accuracy_on_bad_labels(y_true, y_pred):
    n = min(len(y_true), len(y_pred))
    y_true, y_pred = y_true[:n], y_pred[:n]
    value, error = call(
        detection_accuracy,
        np.asarray(y_true, dtype=object),
        np.asarray(y_pred, dtype=object),
    )
    if valid_labels(y_true) and valid_labels(y_pred):
        assert error is None, error
        assert value == np.mean(np.asarray(y_true, float) == np.asarray(y_pred, float))
    else:
        assert isinstance(error, ValueError), error
        assert_clear_error(error, ("y_true", "y_pred"))
