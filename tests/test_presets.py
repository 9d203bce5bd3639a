"""make_detector: the named, benchmarked configurations."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

from skadv import (
    ExplanationReconstructionDetector,
    ExplanationTransformer,
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


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_fit_and_clone(model, preset):
    X = np.random.default_rng(0).random((90, 1, 8, 8), dtype=np.float32)
    pipeline = make_detector(model, preset=preset, random_state=0)
    scores = pipeline.fit(X).decision_function(X)
    assert scores.shape == (90,) and np.isfinite(scores).all()
    np.testing.assert_array_equal(clone(pipeline).fit(X).decision_function(X), scores)


@pytest.mark.parametrize("preset", ["nope", None, 3])
def test_unknown_preset(model, preset):
    with pytest.raises(
        ValueError,
        match=r"preset must be one of \['contrastive-h256', 'ko-lim-2021'\]; got ",
    ):
        make_detector(model, preset=preset)
