"""make_detector and list_presets: the named, benchmarked configurations."""

import re

import numpy as np
import pytest
import torch
from benchmark_results import robustness_report
from sklearn.base import clone

import skadv
from skadv import (
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    FeatureSqueezingDetector,
    RawInputTransformer,
    list_presets,
    make_detector,
)
from skadv._presets import PRESETS


@pytest.fixture
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))


def test_the_papers_preset(model):
    pipeline = make_detector(model, preset="ko-lim-2021", random_state=0)
    transformer, detector = pipeline[0], pipeline[-1]
    assert isinstance(transformer, ExplanationTransformer)
    assert (transformer.method, transformer.normalize) == ("saliency", "percentile")
    assert isinstance(detector, ExplanationReconstructionDetector)
    assert detector.metric == "top_half_l1"
    assert (detector.contrast, detector.validation_fraction) == (0.0, None)
    params = detector.reconstructor.get_params()
    assert (params["module__hidden"], params["max_epochs"]) == (64, 10)
    assert (params["batch_size"], params["lr"]) == (32, 1e-3)


def test_the_best_preset(model):
    detector = make_detector(model, preset="contrastive-h256")[-1]
    assert (detector.contrast, detector.validation_fraction) == (0.5, 0.1)
    params = detector.reconstructor.get_params()
    assert (params["module__hidden"], params["max_epochs"]) == (256, 30)


def test_the_small_data_preset(model):
    # The demo's detector, from the digits study: input x gradient maps, 300
    # epochs of 128-unit autoencoders, thresholds on 20% held out.
    pipeline = make_detector(model, preset="small-data", random_state=0)
    transformer, detector = pipeline[0], pipeline[-1]
    assert (transformer.method, transformer.normalize) == (
        "input_x_gradient",
        "percentile",
    )
    assert (detector.metric, detector.contrast) == ("top_half_l1", 0.0)
    assert (detector.contamination, detector.validation_fraction) == (0.05, 0.2)
    params = detector.reconstructor.get_params()
    assert (params["module__hidden"], params["max_epochs"]) == (128, 300)
    assert (params["batch_size"], params["lr"]) == (32, 1e-3)


def test_list_presets_names_and_describes_every_preset():
    presets = list_presets()
    assert list(presets) == [
        "ko-lim-2021",
        "contrastive-h256",
        "small-data",
        "binarized-pixels",
        "raw-pixels",
        "feature-squeezing",
        "multiview",
        "squeezing-contrastive",
        "small-data-raw",
    ]
    assert presets == {name: p["description"] for name, p in PRESETS.items()}
    for description in presets.values():
        assert isinstance(description, str) and len(description) > 40
        assert "\n" not in description
    assert "input x gradient" in presets["small-data"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_make_detector_documents_every_preset(preset):
    assert f'``"{preset}"``' in make_detector.__doc__
    assert f'"{preset}"' in make_detector.__doc__.split("preset : {")[1].split("}")[0]


# The data set each preset's adaptive figures in make_detector's docstring
# were measured on (benchmarks/results/robustness-<data>-<preset>.json).
ADAPTIVE_FIGURES = {
    "ko-lim-2021": "mnist",
    "contrastive-h256": "mnist",
    "small-data": "digits",
    "binarized-pixels": "digits",
    "raw-pixels": "digits",
    "feature-squeezing": "mnist",
    "multiview": "mnist",
    "squeezing-contrastive": "mnist",
    "small-data-raw": "digits",
}
_PERCENT = r"(\d+(?:\.\d)?)%"


def _preset_entry(preset):
    """The preset's entry in ``make_detector``'s docstring, on one line."""
    block = make_detector.__doc__.split(f'``"{preset}"``\n')[1]
    return " ".join(re.split(r"\n    ``\"", block)[0].split())


@pytest.mark.parametrize("preset", sorted(ADAPTIVE_FIGURES))
def test_documented_adaptive_figures_are_the_benchmarks(preset):
    # "N% get through at eps 0.1 and M% at 0.3 (plain PGD: a%, b%)", each
    # figure the result file's, rounded as written.
    report = robustness_report(f"{ADAPTIVE_FIGURES[preset]}-{preset}")
    rates = {(r["eps"], r["attack"]): r["evasion_rate"] for r in report["results"]}
    found = re.search(
        rf"{_PERCENT} get through at eps 0\.1 and {_PERCENT} at 0\.3 "
        rf"\(plain PGD: {_PERCENT}, {_PERCENT}\)",
        _preset_entry(preset),
    )
    assert found, f"no adaptive figures in the {preset!r} entry"
    expected = [
        rates[(0.1, "adaptive")],
        rates[(0.3, "adaptive")],
        rates[(0.1, "pgd")],
        rates[(0.3, "pgd")],
    ]
    for written, rate in zip(found.groups(), expected, strict=True):
        decimals = len(written.split(".")[1]) if "." in written else 0
        assert float(written) == round(100 * rate, decimals), (preset, written)


def test_the_registry_is_the_only_source(model):
    # Every setting of a preset reaches the estimators, so PRESETS alone
    # defines what make_detector builds.
    for name, p in PRESETS.items():
        if "members" in p:
            ensemble = make_detector(model, preset=name)
            assert [n for n, _ in ensemble.detectors] == list(p["members"])
            assert (
                ensemble.combine,
                ensemble.weights,
                ensemble.calibration_size,
            ) == (p["combine"], p.get("weights"), p["calibration_size"])
            continue
        if p.get("detector") == "feature-squeezing":
            squeezing = make_detector(model, preset=name)
            assert isinstance(squeezing, FeatureSqueezingDetector)
            assert (squeezing.bit_depth, squeezing.median_size) == (
                p["bit_depth"],
                p["median_size"],
            )
            continue
        transformer, detector = make_detector(model, preset=name)
        net = detector.reconstructor.get_params()
        if p.get("view") == "raw":
            assert isinstance(transformer, RawInputTransformer)
            assert transformer.bit_depth == p.get("bit_depth")
        else:
            assert (transformer.method, transformer.normalize) == (
                p["method"],
                p["normalize"],
            )
        assert (detector.metric, detector.contrast, detector.validation_fraction) == (
            p["metric"],
            p["contrast"],
            p["validation_fraction"],
        )
        assert (
            net["module__hidden"],
            net["max_epochs"],
            net["batch_size"],
            net["lr"],
        ) == (p["hidden"], p["epochs"], p["batch_size"], p["lr"])


def test_arguments_reach_the_estimators(model, tmp_path):
    pipeline = make_detector(
        model,
        contamination=0.01,
        input_shape=(1, 8, 8),
        memory=str(tmp_path),
        n_jobs=2,
        device="cpu",
        random_state=3,
    )
    transformer, detector = pipeline[0], pipeline[-1]
    assert (transformer.input_shape, transformer.device) == ((1, 8, 8), "cpu")
    assert detector.get_params()["contamination"] == 0.01
    assert (detector.memory, detector.n_jobs, detector.random_state) == (
        str(tmp_path),
        2,
        3,
    )


@pytest.mark.parametrize(
    "preset",
    sorted(
        name
        for name, p in PRESETS.items()
        if "members" not in p and p.get("detector") != "feature-squeezing"
    ),
)
def test_presets_fit_and_clone(model, preset):
    X = np.random.default_rng(0).random((90, 1, 8, 8), dtype=np.float32)
    pipeline = make_detector(model, preset=preset, random_state=0)
    # Five epochs keep the test fast; everything else is the preset's.
    pipeline.set_params(explanationreconstructiondetector__reconstructor__max_epochs=5)
    scores = pipeline.fit(X).decision_function(X)
    assert scores.shape == (90,) and np.isfinite(scores).all()
    np.testing.assert_array_equal(clone(pipeline).fit(X).decision_function(X), scores)


def test_multiview_preset_is_an_ensemble_of_presets(model):
    X = np.random.default_rng(0).random((250, 1, 8, 8), dtype=np.float32)
    ensemble = make_detector(model, preset="multiview", random_state=0)
    for name in PRESETS["multiview"]["members"]:
        key = "explanationreconstructiondetector__reconstructor__max_epochs"
        ensemble.set_params(**{f"{name}__{key}": 3})
    with pytest.raises(ValueError, match="bit_depth=1 rounds inputs in"):
        ensemble.fit(X * 2)
    scores = ensemble.fit(X).decision_function(X[:20])
    assert scores.shape == (20,) and np.isfinite(scores).all()
    assert [type(d[0]).__name__ for d in ensemble.detectors_] == [
        "ExplanationTransformer",
        "RawInputTransformer",
    ]


@pytest.mark.parametrize("preset", ["nope", None, 3])
def test_unknown_preset(model, preset):
    with pytest.raises(
        ValueError,
        match=r"^preset must be one of \['binarized-pixels', 'contrastive-h256', "
        r"'feature-squeezing', 'ko-lim-2021', 'multiview', 'raw-pixels', "
        r"'small-data', 'small-data-raw', 'squeezing-contrastive'\]; got "
        + re.escape(repr(preset))
        + r"\.$",
    ):
        make_detector(model, preset=preset)


@pytest.mark.parametrize(
    "name", ["attacks", "datasets", "metrics", "models", "plotting"]
)
def test_subpackages_are_attributes(name):
    import importlib

    assert getattr(skadv, name) is importlib.import_module(f"skadv.{name}")
    assert name in dir(skadv)


def test_import_skadv_stays_light():
    # A fresh interpreter: the subpackages load on first access only.
    import subprocess
    import sys

    code = (
        "import sys, skadv; "
        "print(sorted(m for m in sys.modules if m.startswith('skadv.') "
        "and m.count('.') == 1 and not m.split('.')[1].startswith('_'))); "
        "skadv.plotting; print('skadv.plotting' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[1] == "True"
    assert "plotting" not in out[0] and "attacks" not in out[0]


def test_unknown_attribute():
    with pytest.raises(
        AttributeError, match=r"^module 'skadv' has no attribute 'nope'$"
    ):
        skadv.nope  # noqa: B018


def test_documented_square_search_figures_are_the_benchmarks():
    # The square search alone (bench_robustness.py --suite square) against
    # feature squeezing: "got A% and B% through", the result file's rates.
    report = robustness_report("mnist-feature-squeezing-square")
    rates = [r["evasion_rate"] for r in report["results"] if r["attack"] == "adaptive"]
    found = re.search(
        rf"got {_PERCENT} and {_PERCENT} through", _preset_entry("feature-squeezing")
    )
    assert found
    for written, rate in zip(found.groups(), rates, strict=True):
        assert float(written) == round(100 * rate, 1)
