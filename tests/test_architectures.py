"""The views, the detector pipeline and the adaptive attack on the architectures
engineers bring: BatchNorm and Dropout (eval mode), GELU and SiLU, an input
normalisation module, a residual block, small vision transformers, colour and
grey inputs; and models whose forward pass returns more than logits.

The models are untrained (random weights from a fixed seed): these tests check
behaviour, not detection quality.
"""

import copy
import re
import warnings

import numpy as np
import pytest
import torch
from architectures import (
    ARCHITECTURES,
    SMOOTH,
    dict_output,
    tiny_vit_functional_gelu,
    tuple_output,
)
from sklearn.pipeline import make_pipeline
from sklearn.utils import Bunch

from skadv import (
    ActivationTransformer,
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    RawInputTransformer,
    make_reconstructor,
)
from skadv.attacks import make_adaptive_adversarial, make_surrogate

SHAPES = {"colour": (3, 16, 16), "grey": (1, 8, 8)}
CASES = [(name, shape) for name in ARCHITECTURES for shape in SHAPES]
METHODS = ["saliency", "input_x_gradient"]

# The ReLU modules of each architecture: what make_surrogate must replace.
RELU_MODULES = {
    "bn_dropout_cnn": {"2"},
    "normalized_cnn": {"2"},
    "residual_cnn": {"2", "3.relu"},
    **{name: set() for name in SMOOTH},
}
# Modules whose forward pass differs between train and eval mode.
TRAIN_MODE_LAYERS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout)
VISION_TRANSFORMERS = {"tiny_vit", "tiny_vit_mean_pool"}


def _inputs(shape, n, seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _flags(model):
    return [m.training for m in model.modules()]


def _eval_logits(model, X):
    """Logits of a copy of ``model`` in eval mode (the user's model untouched)."""
    with torch.no_grad():
        return copy.deepcopy(model).eval()(torch.tensor(X))


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{s}" for a, s in CASES])
def case(request):
    name, shape = request.param
    # Left in train mode, as torch builds modules: a user who forgot
    # model.eval() must still get the eval-mode maps.
    model = ARCHITECTURES[name](SHAPES[shape])
    return Bunch(
        name=name, shape=SHAPES[shape], model=model, X=_inputs(SHAPES[shape], 32)
    )


@pytest.fixture(scope="module")
def pipeline(case):
    return make_pipeline(
        ExplanationTransformer(case.model),
        ExplanationReconstructionDetector(
            reconstructor=make_reconstructor(max_epochs=2),
            # Untrained models put the inputs in only a few classes.
            min_class_size=1,
            unseen_class="fallback",
            random_state=0,
        ),
    ).fit(case.X)


def test_models_are_small():
    for name, build in ARCHITECTURES.items():
        for shape in SHAPES.values():
            n_parameters = sum(p.numel() for p in build(shape).parameters())
            assert 500 < n_parameters < 7000, (name, shape, n_parameters)


@pytest.mark.parametrize("method", METHODS)
def test_maps_are_finite_shaped_and_of_the_predicted_class(case, method):
    X = case.X[:16]
    Xt = ExplanationTransformer(case.model, method=method).fit(X).transform(X)
    height, width = case.shape[1:]
    assert Xt.shape == (16, 1 + height * width)
    assert Xt.dtype == np.float32
    assert np.isfinite(Xt).all()
    assert Xt[:, 1:].min() >= 0 and Xt[:, 1:].max() <= 1
    np.testing.assert_array_equal(Xt[:, 0], _eval_logits(case.model, X).argmax(1))


@pytest.mark.parametrize("method", METHODS)
def test_maps_are_those_of_the_model_in_eval_mode(case, method):
    X = case.X[:16]
    flags = _flags(case.model)
    transformer = ExplanationTransformer(case.model, method=method).fit(X)
    first, second = transformer.transform(X), transformer.transform(X)
    np.testing.assert_array_equal(first, second)
    in_eval = copy.deepcopy(case.model).eval()
    expected = ExplanationTransformer(in_eval, method=method).fit(X).transform(X)
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-6)
    assert _flags(case.model) == flags  # the user's modes are given back


@pytest.mark.parametrize("method", METHODS)
def test_torch_transform_equals_transform(case, method):
    # The attack's scoring path; the attack puts the model in eval mode.
    X = case.X[:16]
    in_eval = copy.deepcopy(case.model).eval()
    transformer = ExplanationTransformer(in_eval, method=method).fit(X)
    Xt = transformer.torch_transform(torch.tensor(X)).detach().numpy()
    np.testing.assert_allclose(Xt, transformer.transform(X), rtol=0, atol=1e-5)


@pytest.mark.parametrize("view", [ExplanationTransformer, ActivationTransformer])
def test_torch_transform_of_a_model_in_train_mode(case, view):
    # torch_transform runs the model in eval mode, as transform does.
    X = case.X[:16]
    transformer = view(case.model).fit(X)
    Xt = transformer.torch_transform(torch.tensor(X)).detach().numpy()
    np.testing.assert_allclose(Xt, transformer.transform(X), rtol=0, atol=1e-5)


def test_detector_pipeline_scores_as_its_torch_path(case, pipeline):
    X = case.X[:16]
    score = pipeline.decision_function(X)
    assert score.shape == (16,) and np.isfinite(score).all()
    np.testing.assert_array_equal(pipeline.predict(X), np.where(score < 0, -1, 1))
    view, detector = pipeline[0], pipeline[-1]
    in_eval = copy.deepcopy(view.module_).eval()
    torch_score = detector.torch_decision_function(
        view.torch_transform(torch.tensor(X), module=in_eval)
    )
    np.testing.assert_allclose(
        torch_score.detach().numpy(), score, rtol=1e-4, atol=1e-4
    )


def test_adaptive_attack_stays_within_eps(case, pipeline):
    # Vision transformers included: the second derivative goes through
    # attention, which torch_transform computes with the math kernel.
    X = case.X[:4]
    flags = _flags(case.model)
    X_adv, success, evaded = make_adaptive_adversarial(
        pipeline, X, eps=0.05, max_iter=3, random_state=0
    )
    _check_attack(case, pipeline, X, X_adv, success, evaded)
    assert _flags(case.model) == flags


def _check_attack(case, pipeline, X, X_adv, success, evaded):
    assert X_adv.shape == X.shape and X_adv.dtype == np.float32
    assert np.abs(X_adv - X).max() <= 0.05 + 1e-6
    assert X_adv.min() >= 0 and X_adv.max() <= 1
    assert not np.array_equal(X_adv, X)  # it moved
    y = _eval_logits(case.model, X).argmax(1).numpy()
    predicted = _eval_logits(case.model, X_adv).argmax(1).numpy()
    np.testing.assert_array_equal(success, predicted != y)
    np.testing.assert_array_equal(evaded, success & (pipeline.predict(X_adv) == 1))


def test_surrogate_replaces_only_relu_modules(case):
    flags = _flags(case.model)
    surrogate = make_surrogate(case.model)
    before = dict(case.model.named_modules())
    replaced = {
        name
        for name, module in surrogate.named_modules()
        if type(module) is not type(before[name])
    }
    assert replaced == RELU_MODULES[case.name]
    assert all(isinstance(before[name], torch.nn.ReLU) for name in replaced)
    assert _flags(case.model) == flags  # the user's model is untouched
    assert not surrogate.training
    X = torch.tensor(case.X[:16])
    with torch.no_grad():
        # The straight-through ReLU's forward is the ReLU's: equal values for
        # smooth and ReLU models alike.
        assert torch.equal(surrogate(X), _eval_logits(case.model, case.X[:16]))


def test_guided_backprop_says_which_activations_it_has_no_rule_for(case):
    X = case.X[:8]
    transformer = ExplanationTransformer(case.model, method="guided_backprop")
    if case.name in SMOOTH:
        activation = "SiLU" if case.name == "silu_mlp" else "GELU"
        with pytest.warns(UserWarning) as record:
            transformer.fit(X)
        assert [str(w.message) for w in record] == [
            f"method='guided_backprop' has no rule for the model's {activation} "
            "activations: captum passes plain gradients through them, so the maps "
            "are partly plain saliency. Use method='saliency' or "
            "'integrated_gradients' for such models."
        ]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            transformer.fit(X)
    Xt = transformer.transform(X)
    assert Xt.shape == (8, 1 + case.shape[1] * case.shape[2])
    assert np.isfinite(Xt).all()


def test_guided_backprop_on_functional_gelu_names_functional_activations():
    # torch's TransformerEncoderLayer(activation="gelu") calls GELU as a
    # function: there is no module to name.
    model = tiny_vit_functional_gelu(SHAPES["grey"])
    transformer = ExplanationTransformer(model, method="guided_backprop")
    with pytest.warns(UserWarning) as record:
        transformer.fit(_inputs(SHAPES["grey"], 4))
    assert [str(w.message) for w in record] == [
        "method='guided_backprop' rewrites the backward pass of ReLU modules, and "
        "the model has none: activations called as functions (torch.relu, F.gelu, "
        "TransformerEncoderLayer(activation='gelu')) get plain gradients. Write "
        "the activations as torch.nn modules."
    ]


def test_raw_input_view(case):
    X = case.X[:16]
    view = RawInputTransformer(case.model).fit(X)
    Xt = view.transform(X)
    np.testing.assert_array_equal(Xt[:, 0], _eval_logits(case.model, X).argmax(1))
    np.testing.assert_array_equal(Xt[:, 1:], X.reshape(16, -1))
    in_eval = copy.deepcopy(case.model).eval()
    torch_Xt = view.torch_transform(torch.tensor(X), module=in_eval)
    np.testing.assert_array_equal(torch_Xt.numpy(), Xt)


def test_activation_view_is_the_input_of_the_last_linear(case):
    X = case.X[:16]
    flags = _flags(case.model)
    view = ActivationTransformer(case.model).fit(X)
    Xt = view.transform(X)
    assert _flags(case.model) == flags
    in_eval = copy.deepcopy(case.model).eval()
    head = in_eval.get_submodule(view.layer_)
    assert isinstance(head, torch.nn.Linear)
    captured = []
    handle = head.register_forward_hook(
        lambda m, inputs, out: captured.append(inputs[0])
    )
    with torch.no_grad():
        logits = in_eval(torch.tensor(X))
    handle.remove()
    assert Xt.shape == (16, 1 + head.in_features)
    np.testing.assert_array_equal(Xt[:, 0], logits.argmax(1))
    np.testing.assert_allclose(Xt[:, 1:], captured[0].numpy(), rtol=0, atol=1e-5)
    torch_Xt = view.torch_transform(torch.tensor(X), module=in_eval).detach()
    np.testing.assert_allclose(torch_Xt.numpy(), Xt, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "build, returned", [(tuple_output, "tuple"), (dict_output, "dict")]
)
@pytest.mark.parametrize(
    "view", [ExplanationTransformer, RawInputTransformer, ActivationTransformer]
)
def test_models_returning_more_than_logits_are_refused(build, returned, view):
    model = build(SHAPES["grey"])
    X = _inputs(SHAPES["grey"], 4)
    index = "[0]" if returned == "tuple" else "['logits']"
    message = (
        "model must return a tensor of logits of shape (n_samples, n_classes); it "
        f"returned a {returned} of 2 items. Wrap it in a module whose forward "
        f"returns the logits only, e.g. `return model(x){index}`."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        view(model).fit(X)
