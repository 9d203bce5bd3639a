import re

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, TunedThresholdClassifierCV
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback

from skadv import (
    ConvAutoencoder,
    DetectorClassifier,
    ExplanationReconstructionDetector,
    make_reconstructor,
)
from skadv._scoring import reconstruction_error
from skadv.metrics import detection_roc_auc, detection_scorers

FAST = {"max_epochs": 20, "batch_size": 16}


def detector(**params):
    params.setdefault("reconstructor", make_reconstructor(**FAST))
    params.setdefault("random_state", 0)
    return ExplanationReconstructionDetector(**params)


@pytest.fixture(scope="module")
def fitted(maps):
    benign, _ = maps
    return detector().fit(benign)


def test_flags_maps_it_cannot_reconstruct(maps, fitted):
    benign, odd = maps
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    auc = detection_roc_auc(y, fitted.reconstruction_error(X))
    assert auc > 0.95  # measured 1.0: noise maps are far from every pattern
    assert (fitted.predict(odd) == -1).mean() > 0.9


def test_score_signs_and_offsets_are_consistent(maps, fitted):
    benign, odd = maps
    X = np.vstack([benign, odd])
    errors = fitted.reconstruction_error(X)
    np.testing.assert_array_equal(fitted.score_samples(X), -errors)
    route = np.searchsorted(fitted.class_labels_, X[:, 0].astype(int))
    np.testing.assert_allclose(
        fitted.decision_function(X), -errors - fitted.offset_[route]
    )
    np.testing.assert_array_equal(
        fitted.predict(X), np.where(fitted.decision_function(X) < 0, -1, 1)
    )


@pytest.mark.parametrize("contamination", [0.05, 0.2])
def test_contamination_is_the_benign_training_false_positive_rate(maps, contamination):
    benign, _ = maps
    det = detector(contamination=contamination).fit(benign)
    for c in det.class_labels_:
        flagged = det.predict(benign[benign[:, 0] == c]) == -1
        assert flagged.mean() == pytest.approx(contamination, abs=1 / 60)


def test_top_half_l1_and_mse_match_their_definitions():
    rng = np.random.default_rng(0)
    X, R = rng.random((4, 10)), rng.random((4, 10))
    diff = np.abs(X - R)
    top_half = [np.sort(d)[5:].sum() / 10 for d in diff]  # 10 values: top 5
    X, R = torch.tensor(X), torch.tensor(R)
    np.testing.assert_allclose(reconstruction_error(X, R).numpy(), top_half)
    np.testing.assert_allclose(reconstruction_error(X, R, "mse"), (diff**2).mean(1))


def test_only_benign_rows_train(maps):
    benign, odd = maps
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    with_labels = detector().fit(X, y)
    benign_only = detector().fit(benign)
    np.testing.assert_array_equal(
        with_labels.decision_function(X), benign_only.decision_function(X)
    )


@pytest.mark.parametrize("y", [[0, 1], [1.0, 2.0], ["benign", "adversarial"]])
def test_other_label_sets_are_refused(maps, y):
    benign, _ = maps
    labels = np.resize(np.asarray(y), len(benign))
    msg = (
        "y must label each row +1 (benign) or -1 (adversarial), scikit-learn's "
        "outlier convention; got labels"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        detector().fit(benign, labels)


def test_no_benign_row_is_an_error(maps):
    benign, _ = maps
    with pytest.raises(ValueError, match=r"y marks no row as benign \(\+1\)"):
        detector().fit(benign, -np.ones(len(benign)))


@pytest.mark.parametrize("contamination", [0.0, 0.6, -0.1])
def test_contamination_out_of_range(maps, contamination):
    benign, _ = maps
    msg = (
        "The 'contamination' parameter of ExplanationReconstructionDetector must be "
        "a float in the range (0.0, 0.5]"
    )
    with pytest.raises(InvalidParameterError, match=re.escape(msg)):
        detector(contamination=contamination).fit(benign)


def test_non_integer_class_column(maps):
    benign, _ = maps
    X = benign.copy()
    X[0, 0] = 0.5
    msg = "class_column=0 must hold integer class labels"
    with pytest.raises(ValueError, match=msg):
        detector().fit(X)
    with pytest.raises(ValueError, match="non-integer values such as 0.5"):
        detector().fit(X)


def test_class_column_out_of_range(maps):
    benign, _ = maps
    with pytest.raises(ValueError, match="class_column=17 is out of range"):
        detector(class_column=17).fit(benign)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_are_refused(maps, fitted, bad):
    benign, _ = maps
    X = benign.copy()
    X[3, 5] = bad
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        detector().fit(X)
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        fitted.predict(X)


def test_wrong_width_at_predict(maps, fitted):
    benign, _ = maps
    with pytest.raises(ValueError, match="X has 10 features, but"):
        fitted.predict(benign[:, :10])


def test_use_before_fit(maps):
    benign, _ = maps
    for method in ("predict", "decision_function", "score_samples"):
        with pytest.raises(NotFittedError, match="is not fitted yet"):
            getattr(detector(), method)(benign)


def test_small_classes_share_the_fallback(maps):
    benign, _ = maps
    X = np.vstack([benign, benign[benign[:, 0] == 0][:4] + np.r_[7, np.zeros(16)]])
    det = detector(min_class_size=5).fit(X)
    np.testing.assert_array_equal(det.class_labels_, [0, 1, 2])
    np.testing.assert_array_equal(det.fallback_classes_, [7])
    assert len(det.reconstructors_) == 4 and det.offset_.shape == (4,)
    assert np.isfinite(det.decision_function(X[X[:, 0] == 7])).all()


def test_unseen_class_rule(maps, fitted):
    benign, _ = maps
    X = benign[:5].copy()
    X[:, 0] = 9
    msg = "X has rows of classes [9] that had no benign row at fit time"
    with pytest.raises(ValueError, match=re.escape(msg)):
        fitted.predict(X)
    lenient = detector(unseen_class="fallback").fit(benign)
    assert len(lenient.reconstructors_) == 4
    assert np.isfinite(lenient.decision_function(X)).all()


def test_single_reconstructor_without_class_column(maps):
    benign, odd = maps
    det = detector(class_column=None).fit(benign[:, 1:])
    assert len(det.reconstructors_) == 1 and det.class_labels_.size == 0
    assert (det.predict(odd[:, 1:]) == -1).mean() > 0.9


def test_convolutional_reconstructor():
    rng = np.random.default_rng(0)
    blobs = np.zeros((80, 8, 8), dtype=np.float32)
    for i, (r, c) in enumerate(rng.integers(1, 6, size=(80, 2))):
        blobs[i, r : r + 2, c : c + 2] = 1.0
    X = np.column_stack([np.zeros(80), blobs.reshape(80, -1)]).astype(np.float32)
    net = make_reconstructor(ConvAutoencoder, module__input_shape=(8, 8), max_epochs=30)
    det = detector(reconstructor=net).fit(X)
    noise = np.column_stack([np.zeros(20), rng.random((20, 64))]).astype(np.float32)
    assert isinstance(det.reconstructors_[0].module_, ConvAutoencoder)
    y = np.r_[np.ones(80), -np.ones(20)]
    assert detection_roc_auc(y, det.reconstruction_error(np.vstack([X, noise]))) > 0.95


def test_random_state_gives_identical_scores_and_leaves_torch_alone(maps):
    benign, odd = maps
    state = torch.random.get_rng_state()
    a = detector(random_state=3).fit(benign).decision_function(odd)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = detector(random_state=3).fit(benign).decision_function(odd)
    c = detector(random_state=4).fit(benign).decision_function(odd)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_parallel_training_matches_sequential(maps):
    benign, odd = maps
    seq = detector(n_jobs=1).fit(benign).decision_function(odd)
    par = detector(n_jobs=2).fit(benign).decision_function(odd)
    # One torch thread per autoencoder everywhere: the same arithmetic.
    np.testing.assert_array_equal(seq, par)


class CountFits(Callback):
    """Counts autoencoder trainings (class attribute: clones share it)."""

    count = 0

    def on_train_begin(self, net, **kwargs):
        type(self).count += 1


def test_grid_search_over_contamination_does_not_retrain(maps, tmp_path):
    benign, odd = maps
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    order = np.random.default_rng(0).permutation(len(X))  # every class in every fold
    X, y = X[order], y[order]
    net = make_reconstructor(**FAST, callbacks=[CountFits()])
    search = GridSearchCV(
        detector(reconstructor=net, memory=str(tmp_path)),
        {"contamination": [0.01, 0.05, 0.1, 0.2, 0.3]},
        scoring=detection_scorers(),
        refit="detection_accuracy",
        cv=3,
    )
    CountFits.count = 0
    search.fit(X, y)
    # 3 folds + the refit on all rows, 3 classes each; not 5 thresholds x 3 folds.
    assert CountFits.count == (3 + 1) * 3
    assert search.cv_results_["mean_test_roc_auc"].min() > 0.95
    # Noise maps are all caught at any threshold: the fewest false positives win.
    assert search.best_params_["contamination"] == 0.01
    assert search.best_score_ > 0.95


def test_tuned_threshold_recipe_on_a_fitted_detector(maps, fitted):
    benign, odd = maps
    rng = np.random.default_rng(1)
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    tuned = TunedThresholdClassifierCV(
        DetectorClassifier(fitted),
        scoring="balanced_accuracy",
        cv="prefit",
        refit=False,
    ).fit(X, y)
    before = (fitted.predict(X) == y).mean()
    after = (tuned.predict(X) == y).mean()
    assert after >= before and after > 0.95
    np.testing.assert_array_equal(tuned.classes_, [-1, 1])
    np.testing.assert_array_equal(
        tuned.predict(X),
        np.where(fitted.decision_function(X) >= tuned.best_threshold_, 1, -1),
    )


def test_detector_classifier_needs_a_fitted_detector(maps):
    benign, _ = maps
    with pytest.raises(NotFittedError, match="wraps an unfitted detector"):
        DetectorClassifier(detector()).predict(benign)
    wrapped = DetectorClassifier(detector()).fit(benign, np.ones(len(benign)))
    assert wrapped.predict(benign).shape == (len(benign),)


def test_joblib_round_trip_gives_identical_scores(maps, fitted, tmp_path):
    benign, odd = maps
    path = tmp_path / "detector.joblib"
    joblib.dump(fitted, path)
    loaded = joblib.load(path)
    X = np.vstack([benign, odd])
    np.testing.assert_array_equal(
        loaded.decision_function(X), fitted.decision_function(X)
    )


def test_clone_is_unfitted(fitted):
    assert not hasattr(clone(fitted), "reconstructors_")


def test_diverged_autoencoder_is_an_error_not_a_benign_verdict(maps):
    benign, _ = maps
    net = make_reconstructor(optimizer=torch.optim.SGD, lr=float("inf"), max_epochs=1)
    with pytest.raises(ValueError, match="returned non-finite reconstructions"):
        detector(reconstructor=net).fit(benign)


def test_every_class_too_small_uses_the_fallback(maps):
    benign, _ = maps
    tiny = benign[[0, 1, 60, 61, 120]]
    det = detector(min_class_size=10).fit(tiny)
    assert det.class_labels_.size == 0 and det.fallback_index_ == 0
    np.testing.assert_array_equal(det.fallback_classes_, [0, 1, 2])
    assert np.isfinite(det.decision_function(tiny)).all()
    one_row = detector().fit(benign[:1])
    assert one_row.predict(benign[:1]).shape == (1,)


@pytest.mark.parametrize("position", [5, 16])
def test_class_column_anywhere(maps, position):
    benign, odd = maps
    move = lambda X: np.insert(X[:, 1:], position, X[:, 0], axis=1)  # noqa: E731
    first = detector().fit(benign).decision_function(odd)
    elsewhere = detector(class_column=position).fit(move(benign))
    np.testing.assert_array_equal(elsewhere.decision_function(move(odd)), first)


def test_negative_and_large_class_labels(maps):
    benign, odd = maps
    relabel = np.array([-3, 7, 1000], dtype=np.float32)
    X, Xo = benign.copy(), odd.copy()
    X[:, 0], Xo[:, 0] = (
        relabel[benign[:, 0].astype(int)],
        relabel[odd[:, 0].astype(int)],
    )
    det = detector().fit(X)
    np.testing.assert_array_equal(det.class_labels_, [-3, 7, 1000])
    np.testing.assert_array_equal(
        det.decision_function(Xo), detector().fit(benign).decision_function(odd)
    )


def test_parameters_that_shape_the_fit_cannot_change_silently(maps, fitted):
    benign, _ = maps
    changed = clone(fitted).set_params(metric="mse")
    changed.__dict__.update(
        {k: v for k, v in fitted.__dict__.items() if k.endswith("_") or k[0] == "_"}
    )
    with pytest.raises(
        ValueError, match="metric, class_column or contrast changed since fit"
    ):
        changed.predict(benign)
    lenient_now = detector().fit(benign).set_params(unseen_class="fallback")
    X = benign[:3].copy()
    X[:, 0] = 9
    with pytest.raises(ValueError, match="no fallback autoencoder was trained"):
        lenient_now.predict(X)


def test_memory_ignores_verbose(maps, tmp_path, capsys):
    benign, _ = maps
    net = make_reconstructor(**FAST, callbacks=[CountFits()])
    CountFits.count = 0
    detector(reconstructor=net, memory=str(tmp_path)).fit(benign)
    detector(reconstructor=net, memory=str(tmp_path), verbose=2).fit(benign)
    assert CountFits.count == 3


def test_thread_backend_is_reproducible_and_restores_torch_threads(maps):
    from joblib import parallel_config

    benign, odd = maps
    threads = torch.get_num_threads()
    reference = detector().fit(benign).decision_function(odd)
    with parallel_config(backend="threading", n_jobs=3):
        threaded = detector().fit(benign).decision_function(odd)
    np.testing.assert_array_equal(threaded, reference)
    assert torch.get_num_threads() == threads


def test_pandas_input(maps):
    pd = pytest.importorskip("pandas")
    benign, odd = maps
    columns = ["predicted_class"] + [f"explanation{i}" for i in range(16)]
    det = detector().fit(pd.DataFrame(benign, columns=columns))
    np.testing.assert_array_equal(det.feature_names_in_, columns)
    np.testing.assert_array_equal(
        det.decision_function(pd.DataFrame(odd, columns=columns)),
        detector().fit(benign).decision_function(odd),
    )


def test_object_labels_with_the_right_values_are_accepted(maps):
    benign, odd = maps
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))].astype(object)
    np.testing.assert_array_equal(
        detector().fit(X, y).decision_function(odd),
        detector().fit(benign).decision_function(odd),
    )


def test_reconstructor_must_be_a_skorch_net(maps):
    from sklearn.neural_network import MLPRegressor

    benign, _ = maps
    with pytest.raises(InvalidParameterError, match="The 'reconstructor' parameter"):
        detector(reconstructor=MLPRegressor()).fit(benign)


def test_nested_reconstructor_parameters(maps):
    benign, _ = maps
    det = detector().set_params(reconstructor__module__hidden=8).fit(benign)
    assert det.reconstructors_[0].module_.encoder[0].out_features == 8


def test_partial_fit_learns_from_a_stream(maps):
    benign, odd = maps
    order = np.random.default_rng(0).permutation(len(benign))
    det = detector()
    for batch in np.array_split(benign[order], 4):
        det.partial_fit(batch, classes=[0, 1, 2])
    np.testing.assert_array_equal(det.n_samples_seen_, [60, 60, 60])
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    assert detection_roc_auc(y, det.reconstruction_error(X)) > 0.95
    assert (det.predict(benign) == 1).mean() > 0.8


def test_partial_fit_pools_the_tail_of_classes_with_few_rows(maps):
    # The last batch holds 15 rows per class, too few for a 10% quantile (20
    # needed): as in fit, the rows over their class's median are pooled and
    # thresholded at their split-conformal order statistic.
    benign, _ = maps
    batches = [benign[i::4] for i in range(4)]  # 15 rows of each class
    det = detector(contamination=0.1)
    for batch in batches:
        det.partial_fit(batch, classes=[0, 1, 2])
    assert det.pooled_threshold_.all()
    last = batches[-1]
    errors = det.reconstruction_error(last)
    medians = np.array([np.median(errors[last[:, 0] == c]) for c in range(3)])
    ratios = np.sort(
        np.concatenate([errors[last[:, 0] == c] / medians[c] for c in range(3)])
    )
    assert ratios.size == 45
    # p-values j / 46 at most 0.1 for j <= 4: the 4th largest ratio.
    np.testing.assert_allclose(det.offset_, -ratios[-4] * medians, rtol=1e-6)
    # A large last batch calibrates each class on its own rows again.
    det.partial_fit(benign, classes=[0, 1, 2])
    assert not det.pooled_threshold_.any()


def test_partial_fit_needs_the_classes_up_front(maps):
    benign, _ = maps
    with pytest.raises(ValueError, match="classes must be passed to the first call"):
        detector().partial_fit(benign)
    det = detector().partial_fit(benign[benign[:, 0] == 0], classes=[0, 1])
    msg = "X has rows for the autoencoders of classes [1], which have not been trained"
    with pytest.raises(ValueError, match=re.escape(msg)):
        det.predict(benign[benign[:, 0] == 1][:3])
    shared = detector(class_column=None).partial_fit(benign[:, 1:])
    assert shared.fallback_index_ == 0 and shared.n_samples_seen_[0] == len(benign)


def test_verbose_shows_progress(maps, capsys):
    benign, _ = maps
    detector(verbose=1).fit(benign)
    assert "autoencoders: 100%" in capsys.readouterr().err
    detector(verbose=2).fit(benign[benign[:, 0] == 0])
    assert "train_loss" in capsys.readouterr().out  # skorch's epoch log


def test_reconstruct_gives_the_maps_behind_the_errors(maps, fitted):
    benign, odd = maps
    X = np.vstack([benign, odd])
    reconstructed = fitted.reconstruct(X)
    assert reconstructed.shape == (len(X), 16) and reconstructed.dtype == np.float32
    np.testing.assert_allclose(
        reconstruction_error(torch.tensor(X[:, 1:]), torch.tensor(reconstructed)),
        fitted.reconstruction_error(X),
        rtol=1e-6,
    )


def _errors_under_every_class(det, X):
    """Plain error of every row under every class's autoencoder (n, n_classes)."""
    columns = []
    for c in det.class_labels_:
        rerouted = X.copy()
        rerouted[:, 0] = c
        columns.append(det.reconstruction_error(rerouted))
    return np.column_stack(columns)


def test_contrast_matches_its_definition(maps):
    benign, odd = maps
    X = np.vstack([benign, odd])
    plain = detector().fit(benign)
    contrastive = detector(contrast=0.5).fit(benign)
    # The contrast changes the score, not the training: same autoencoders.
    for a, b in zip(plain.reconstructors_, contrastive.reconstructors_, strict=True):
        for pa, pb in zip(a.module_.parameters(), b.module_.parameters(), strict=True):
            assert torch.equal(pa, pb)
    every = _errors_under_every_class(plain, X)
    own = X[:, 0].astype(int)
    e_own = every[np.arange(len(X)), own]
    masked = every.copy()
    masked[np.arange(len(X)), own] = np.inf
    expected = e_own * (e_own / masked.min(axis=1)) ** 0.5
    np.testing.assert_allclose(contrastive.reconstruction_error(X), expected, rtol=1e-6)
    # Thresholds are quantiles of the contrastive score on the training rows.
    train_scores = -contrastive.score_samples(benign)
    for i, c in enumerate(contrastive.class_labels_):
        assert contrastive.offset_[i] == pytest.approx(
            np.percentile(-train_scores[benign[:, 0] == c], 5)
        )


def test_contrast_forgives_maps_that_every_class_rebuilds_badly():
    # Benign rows include hard ones (noisy maps that no autoencoder rebuilds
    # well); the anomalies are maps mostly of another class (70/30 blends)
    # routed to the wrong one. The plain error confuses the two, the contrast
    # does not.
    rng = np.random.default_rng(0)
    patterns = rng.random((3, 16))
    classes = np.repeat(np.arange(3), 100)
    noise = np.where(np.arange(300) % 4 == 0, 0.4, 0.03)[:, None]
    maps = np.clip(patterns[classes] + noise * rng.standard_normal((300, 16)), 0, 1)
    benign = np.column_stack([classes, maps]).astype(np.float32)
    hard = benign[::4]
    routed = np.tile([1, 2, 0], 20)
    blends = 0.7 * patterns[(routed + 2) % 3] + 0.3 * patterns[routed]
    blends = np.clip(blends + 0.03 * rng.standard_normal((60, 16)), 0, 1)
    swapped = np.column_stack([routed, blends]).astype(np.float32)
    X = np.vstack([hard, swapped])
    y = np.r_[np.ones(len(hard)), -np.ones(len(swapped))]
    auc = {
        contrast: detection_roc_auc(
            y, detector(contrast=contrast).fit(benign).reconstruction_error(X)
        )
        for contrast in (0.0, 1.0)
    }
    # Measured: plain 0.49 (chance), contrastive 1.0.
    assert auc[1.0] > 0.95
    assert auc[0.0] < 0.7


def test_contrast_needs_a_class_column(maps):
    benign, _ = maps
    with pytest.raises(
        ValueError,
        match=re.escape(
            "contrast=0.5 compares the classes' autoencoders and needs a class "
            "column; got class_column=None. Use contrast=0."
        ),
    ):
        detector(contrast=0.5, class_column=None).fit(benign[:, 1:])


def test_contrast_with_the_fallback_and_a_single_class(maps):
    benign, _ = maps
    det = detector(contrast=0.5, unseen_class="fallback").fit(benign)
    X = benign[:6].copy()
    X[:, 0] = 7  # unseen: the fallback, compared with every class
    every = _errors_under_every_class(detector(unseen_class="fallback").fit(benign), X)
    plain_fallback = (
        detector(unseen_class="fallback").fit(benign).reconstruction_error(X)
    )
    expected = plain_fallback * (plain_fallback / every.min(axis=1)) ** 0.5
    np.testing.assert_allclose(det.reconstruction_error(X), expected, rtol=1e-6)
    # One class: no other class to compare with, the plain error.
    one = benign[benign[:, 0] == 0]
    np.testing.assert_array_equal(
        detector(contrast=0.5).fit(one).reconstruction_error(one),
        detector().fit(one).reconstruction_error(one),
    )


def _held_out(benign, det, fraction):
    """The rows ``det`` held out (the seeds are drawn first, then the split)."""
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state

    rng = check_random_state(0)
    rng.randint(np.iinfo(np.int32).max, size=len(det.class_labels_) + 1)
    _, held = train_test_split(
        np.arange(len(benign)),
        test_size=fraction,
        stratify=benign[:, 0],
        random_state=rng,
    )
    return held


def test_validation_fraction_sets_thresholds_on_held_out_rows(maps):
    benign, _ = maps
    # 30 held-out rows per class: enough for a 10% quantile of its own.
    det = detector(validation_fraction=0.5, contamination=0.1).fit(benign)
    held = _held_out(benign, det, 0.5)
    assert det.n_samples_seen_.sum() == len(benign) - len(held)
    assert not det.pooled_threshold_.any()
    scores = det.score_samples(benign[held])
    for i, c in enumerate(det.class_labels_):
        assert det.offset_[i] == pytest.approx(
            np.percentile(scores[benign[held, 0] == c], 10)
        )
    with pytest.raises(ValueError, match="needs at least 2 of them; got n_samples = 1"):
        detector(validation_fraction=0.2).fit(benign[:1])


def test_classes_with_few_calibration_rows_share_the_tail(maps):
    # 12 held-out rows per class are too few for a 10% quantile (20 needed):
    # the held-out errors over each class's median training error are pooled
    # across classes and thresholded at their split-conformal order statistic.
    benign, _ = maps
    det = detector(validation_fraction=0.2, contamination=0.1).fit(benign)
    held = _held_out(benign, det, 0.2)
    trained = np.setdiff1d(np.arange(len(benign)), held)
    assert det.pooled_threshold_.all()
    errors = det.reconstruction_error(benign)
    classes = benign[:, 0]
    medians = np.array(
        [np.median(errors[trained][classes[trained] == c]) for c in det.class_labels_]
    )
    ratios = np.sort(
        np.concatenate(
            [
                errors[held][classes[held] == c] / m
                for c, m in zip(det.class_labels_, medians, strict=True)
            ]
        )
    )
    # 36 ratios: p-values j / 37 below 0.1 for j <= 3, so the 3rd largest.
    assert ratios.size == 36
    np.testing.assert_allclose(det.offset_, -ratios[-3] * medians, rtol=1e-6)
    flagged = det.predict(benign[held]) == -1
    assert flagged.sum() == 2  # the ratios above the 3rd largest


def test_validation_fraction_brings_new_benign_rows_near_the_target():
    # A wide autoencoder trained long on few rows fits its own training maps
    # closely: in-sample thresholds flag far more than 5% of new benign maps.
    from conftest import make_maps

    rows, _ = make_maps(n_per_class=530, n_features=32, seed=1)
    first = np.concatenate([np.flatnonzero(rows[:, 0] == c)[:30] for c in range(3)])
    benign, new = rows[first], np.delete(rows, first, axis=0)
    wide = make_reconstructor(module__hidden=128, max_epochs=300, batch_size=16)
    fpr = {
        fraction: (
            detector(reconstructor=wide, validation_fraction=fraction)
            .fit(benign)
            .predict(new)
            == -1
        ).mean()
        for fraction in (None, 0.5)
    }
    # Measured on 1,500 new benign rows: 0.097 in-sample, 0.053 held out (15
    # rows per class, too few for a 5% quantile: the pooled conformal tail).
    assert fpr[None] > 0.08
    assert fpr[0.5] < min(fpr[None] - 0.03, 0.07)


def test_partial_fit_contrast_ignores_untrained_autoencoders(maps):
    # Classes 0-2 announced, only 0 and 1 fed: class 2's untrained autoencoder
    # must not enter the contrast (its errors are noise, not a comparison).
    benign, _ = maps
    rows = benign[benign[:, 0] < 2]
    det = detector(contrast=0.5).partial_fit(rows, classes=[0, 1, 2])
    assert det.n_samples_seen_.tolist() == [60, 60, 0]
    errors = [
        reconstruction_error(
            torch.tensor(rows[:, 1:]),
            torch.tensor(det._modules()[k](torch.tensor(rows[:, 1:])).detach().numpy()),
        ).numpy()
        for k in range(2)
    ]
    plain = np.where(rows[:, 0] == 0, errors[0], errors[1])
    other = np.where(rows[:, 0] == 0, errors[1], errors[0])
    np.testing.assert_allclose(
        det.reconstruction_error(rows), plain * (plain / other) ** 0.5, rtol=1e-5
    )
    # With a single trained class there is nothing to compare: the plain error.
    one = detector(contrast=0.5).partial_fit(rows[rows[:, 0] == 0], classes=[0, 1])
    np.testing.assert_allclose(
        one.reconstruction_error(rows[rows[:, 0] == 0]),
        detector()
        .partial_fit(rows[rows[:, 0] == 0], classes=[0, 1])
        .reconstruction_error(rows[rows[:, 0] == 0]),
    )
