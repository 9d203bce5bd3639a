import sys

import numpy as np
import pytest

from skadv import (
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    make_reconstructor,
)
from skadv.plotting import ReconstructionErrorDisplay, plot_explanations

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fitted(maps):
    """A detector on three classes, with class 2 too small for its own autoencoder."""
    benign, odd = maps
    keep = (benign[:, 0] != 2) | (np.arange(len(benign)) % 12 == 0)  # 5 rows of class 2
    benign = benign[keep]
    detector = ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(max_epochs=5),
        min_class_size=10,
        random_state=0,
    ).fit(benign)
    return detector, benign, odd


def images_and_maps(n=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 1, 8, 8))
    explanations = np.column_stack([np.arange(n) % 10, rng.random((n, 64))])
    return X, explanations


# plot_explanations ---------------------------------------------------------


def test_plot_explanations_grid_with_labels_and_reconstructions():
    X, explanations = images_and_maps(7)
    labels = np.array([1, -1, 1, -1, 1, -1, 1])  # 4 benign, 3 adversarial
    axes = plot_explanations(
        X, explanations, reconstructions=explanations[:, 1:], labels=labels, n=3
    )
    # (input, map, reconstruction) for each of the two blocks, 3 inputs each.
    assert axes.shape == (6, 3)
    assert all(len(ax.images) == 1 for ax in axes.ravel())
    # Benign block first: the inputs shown are rows 0, 2, 4 in that order.
    shown = [ax.images[0].get_array() for ax in axes[0]]
    for image, i in zip(shown, [0, 2, 4], strict=True):
        np.testing.assert_allclose(image, X[i, 0])
    adversarial_inputs = [ax.images[0].get_array() for ax in axes[3]]
    for image, i in zip(adversarial_inputs, [1, 3, 5], strict=True):
        np.testing.assert_allclose(image, X[i, 0])
    # The class column is read off and shown above each input.
    assert axes[0, 1].get_title() == "predicted 2"
    assert axes[0, 0].get_ylabel() == "benign\ninput"
    assert axes[4, 0].get_ylabel() == "adversarial\nexplanation"
    # Maps share one colour scale.
    assert {ax.images[0].get_clim() for ax in axes[[1, 2, 4, 5]].ravel()} == {
        (explanations[:, 1:].min(), explanations[:, 1:].max())
    }


def test_plot_explanations_without_labels_or_class_column():
    X, explanations = images_and_maps(4)
    axes = plot_explanations(X.reshape(4, 64), explanations[:, 1:], n=10)
    assert axes.shape == (2, 4)
    assert axes[0, 0].get_title() == ""
    assert axes[1, 0].get_ylabel() == "explanation"


def test_plot_explanations_shorter_block_switches_panels_off():
    X, explanations = images_and_maps(4)
    axes = plot_explanations(X, explanations, labels=[1, 1, 1, -1], n=3)
    assert axes.shape == (4, 3)
    assert [ax.axison for ax in axes[2]] == [True, False, False]
    assert len(axes[3, 1].images) == 0


def test_plot_explanations_shared_scale_across_figures():
    # Two figures of different maps on one given scale: colours compare.
    X, explanations = images_and_maps(4)
    axes_a = plot_explanations(
        X, explanations, input_range=(0, 1), map_range=(0, 2), labels=[1, 1, -1, -1]
    )
    axes_b = plot_explanations(X, 0.1 * explanations, map_range=(0, 2))
    assert axes_a[0, 0].images[0].get_clim() == (0.0, 1.0)
    assert axes_a[2, 1].images[0].get_clim() == (0.0, 1.0)
    maps_a = [ax.images[0].get_clim() for ax in axes_a[[1, 3]].ravel()]
    maps_b = [ax.images[0].get_clim() for ax in axes_b[1]]
    assert set(maps_a) == set(maps_b) == {(0.0, 2.0)}
    # Without a range, the maps shown set it.
    axes_c = plot_explanations(X, 0.1 * explanations)
    _, high = axes_c[1, 0].images[0].get_clim()
    assert high == pytest.approx(0.1 * explanations[:, 1:].max())


def test_plot_explanations_on_a_figure_without_pyplot():
    # A plain Figure (what a library saving pictures uses) is never registered
    # with pyplot, so the caller's pyplot state is left alone.
    from matplotlib.figure import Figure

    X, explanations = images_and_maps(2)
    fig = Figure()
    axes = plot_explanations(X, explanations, fig=fig)
    assert len(fig.axes) == axes.size == 4
    assert plt.get_fignums() == []


def test_plot_explanations_draws_into_given_figure():
    X, explanations = images_and_maps(2)
    fig = plt.figure()
    axes = plot_explanations(X, explanations, fig=fig)
    assert len(fig.axes) == axes.size == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be a positive integer; got 0."),
        (
            {"labels": [0, 1, 0, 1, 0, 1]},
            r"y must label each row \+1 \(benign\) or -1 \(adversarial\)",
        ),
        (
            {"reconstructions": np.zeros((6, 63))},
            "reconstructions has 63 values per row but the explanation maps have 64.",
        ),
        (
            {"map_range": (1, 0)},
            r"^map_range must be None or a pair \(vmin, vmax\) of finite numbers "
            r"with vmin < vmax; got \(1, 0\)\.$",
        ),
        (
            {"input_range": 1.0},
            r"^input_range must be None or a pair \(vmin, vmax\) of finite "
            r"numbers with vmin < vmax; got 1\.0\.$",
        ),
        ({"map_range": (0, np.nan)}, r"^map_range must be None or a pair"),
    ],
)
def test_plot_explanations_bad_arguments(kwargs, message):
    X, explanations = images_and_maps(6)
    with pytest.raises(ValueError, match=message):
        plot_explanations(X, explanations, **kwargs)
    assert plt.get_fignums() == []  # fails before drawing anything


def test_plot_explanations_bad_shapes():
    X, explanations = images_and_maps(6)
    with pytest.raises(ValueError, match=r"explanations has 30 values per row; "):
        plot_explanations(X, explanations[:, :30])
    with pytest.raises(
        ValueError, match="X is flat with 63 features, which is not a square image"
    ):
        plot_explanations(X.reshape(6, 64)[:, :63], explanations)
    with pytest.raises(ValueError, match=r"must have one row per input \(6 rows\)"):
        plot_explanations(X, explanations[:5])


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    X, explanations = images_and_maps(2)
    with pytest.raises(ImportError, match=r'pip install "skadv\[plot\]"'):
        plot_explanations(X, explanations)
    with pytest.raises(
        ImportError, match="ReconstructionErrorDisplay needs matplotlib"
    ):
        ReconstructionErrorDisplay.from_predictions([0.1], [0], [1])


# ReconstructionErrorDisplay -----------------------------------------------


def test_from_estimator_draws_each_class_threshold(fitted):
    detector, benign, odd = fitted
    X = np.vstack([benign, odd])
    y = np.r_[np.ones(len(benign)), -np.ones(len(odd))]
    display = ReconstructionErrorDisplay.from_estimator(detector, X, y)

    np.testing.assert_array_equal(display.class_labels_, [0, 1, 2])
    np.testing.assert_array_equal(detector.class_labels_, [0, 1])  # 2 falls back
    expected = [-detector.offset_[0], -detector.offset_[1], -detector.offset_[-1]]
    for i, (line, threshold) in enumerate(
        zip(display.threshold_lines_, expected, strict=True)
    ):
        np.testing.assert_allclose(line.get_ydata(), [threshold, threshold])
        np.testing.assert_allclose(line.get_xdata(), [i - 0.45, i + 0.45])
    # One box per class and group; every input drawn as a point.
    assert len(display.benign_boxes_["boxes"]) == 3
    assert len(display.adversarial_boxes_["boxes"]) == 3
    assert display.benign_points_.get_offsets().shape == (len(benign), 2)
    assert display.adversarial_points_.get_offsets().shape == (len(odd), 2)
    np.testing.assert_allclose(
        np.sort(display.adversarial_points_.get_offsets()[:, 1]),
        np.sort(detector.reconstruction_error(odd)),
    )
    assert display.figure_ is display.ax_.figure
    assert [t.get_text() for t in display.ax_.get_xticklabels()] == ["0", "1", "2"]
    legend = [t.get_text() for t in display.ax_.get_legend().get_texts()]
    assert legend == [f"benign (n={len(benign)})", "adversarial (n=30)", "threshold"]


def test_from_estimator_reads_through_a_pipeline(fitted):
    import torch
    from sklearn.pipeline import make_pipeline

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    X = np.random.default_rng(0).random((60, 1, 4, 4), dtype=np.float32)
    pipeline = make_pipeline(
        ExplanationTransformer(model),
        ExplanationReconstructionDetector(
            min_class_size=1, unseen_class="fallback", random_state=0
        ),
    ).fit(X)
    fig, ax = plt.subplots()
    display = ReconstructionErrorDisplay.from_estimator(
        pipeline, X, np.ones(60), ax=ax, show_points=False
    )
    assert display.ax_ is ax
    assert display.benign_points_ is None and display.adversarial_boxes_ is None
    final = pipeline[-1]
    for c, line in zip(display.class_labels_, display.threshold_lines_, strict=True):
        (own,) = np.flatnonzero(final.class_labels_ == c)
        assert line.get_ydata()[0] == pytest.approx(-final.offset_[own])


def test_from_estimator_without_class_column():
    rng = np.random.default_rng(0)
    X = rng.random((40, 8), dtype=np.float32) * 0.2
    detector = ExplanationReconstructionDetector(class_column=None, random_state=0)
    detector.fit(X)
    display = ReconstructionErrorDisplay.from_estimator(detector, X, np.ones(40))
    assert display.class_labels_.tolist() == ["all"]
    (line,) = display.threshold_lines_
    assert line.get_ydata()[0] == pytest.approx(-detector.offset_[0])


def test_from_estimator_rejects_other_estimators():
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(
        TypeError,
        match="detector must be a fitted ExplanationReconstructionDetector or a "
        "Pipeline ending in one; got LogisticRegression.",
    ):
        ReconstructionErrorDisplay.from_estimator(
            LogisticRegression(), np.zeros((2, 2)), [1, -1]
        )


def test_from_predictions_thresholds_forms():
    errors = [0.1, 0.2, 0.9, 0.15, 0.8, 0.3]
    classes = [0.0, 0.0, 0.0, 3.0, 3.0, 3.0]  # float columns of integer classes
    y = [1, 1, -1, 1, -1, 1]
    as_list = ReconstructionErrorDisplay.from_predictions(
        errors, classes, y, thresholds=[0.5, 0.6]
    )
    as_dict = ReconstructionErrorDisplay.from_predictions(
        errors, classes, y, thresholds={0: 0.5, 3: 0.6, 7: 1.0}
    )
    for display in (as_list, as_dict):
        assert display.class_labels_.tolist() == [0, 3]
        assert [line.get_ydata()[0] for line in display.threshold_lines_] == [0.5, 0.6]
    no_lines = ReconstructionErrorDisplay.from_predictions(errors, classes, y)
    assert no_lines.threshold_lines_ == [None, None]
    assert len(no_lines.ax_.get_legend().get_texts()) == 2


def test_plot_reuses_the_display_on_new_axes():
    display = ReconstructionErrorDisplay(
        errors=np.array([0.1, 0.5]), y=np.array([1, -1]), thresholds=0.3
    )
    fig, (left, right) = plt.subplots(1, 2)
    display.plot(ax=left)
    display.plot(ax=right, log_scale=True)
    assert display.ax_ is right and right.get_yscale() == "log"
    assert len(left.lines) >= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"thresholds": [0.5]},
            r"thresholds has 1 values but there are 2 classes \[0, 1\]; pass one "
            r"threshold per class in sorted class order, or a dict \{class: "
            r"threshold\}.",
        ),
        ({"thresholds": {0: 0.5}}, r"thresholds has no value for classes \[1\]."),
        (
            {"y": [1, 0, 1]},
            r"y must label each row \+1 \(benign\) or -1 \(adversarial\), "
            r"scikit-learn's outlier convention; got labels \[0, 1\].",
        ),
        (
            {"y": [1, 1]},
            r"y must hold one \+1/-1 label per error \(3\); got shape \(2,\).",
        ),
        (
            {"classes": [0, 1]},
            r"classes must hold one class per error \(3\); got shape \(2,\).",
        ),
        (
            {"errors": [0.1, np.nan, 0.3]},
            "errors must be finite; got NaN or infinite values.",
        ),
    ],
)
def test_from_predictions_bad_input(kwargs, message):
    arguments = {"errors": [0.1, 0.2, 0.3], "classes": [0, 1, 1], "y": [1, -1, 1]}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ReconstructionErrorDisplay.from_predictions(**arguments)
    assert plt.get_fignums() == []
