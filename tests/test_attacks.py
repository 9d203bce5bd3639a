"""Tests for skadv.attacks (ART-backed adversarial example generation)."""

import copy
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split
from skorch import NeuralNetClassifier

from skadv._torch_utils import torch_seed
from skadv.attacks import ATTACKS, make_adversarial

pytest.importorskip("art")

LINF_ATTACKS = ("fgsm", "bim", "mim", "pgd")
EPS = 0.3


def _make_module():
    # Batch-norm and dropout make the train/eval flag matter, so the tests can
    # tell whether ART's mode switches leak out of make_adversarial.
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(16 * 16, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Run this module's torch work on one thread, restoring the count after.

    The models and batches are tiny, so intra-op threads buy nothing; on a busy
    2-core machine they spin against other processes and made this file 5x
    slower (41 s against 8 s). One thread also makes the trained weights, hence
    the measured success rates, independent of the machine's core count.
    """
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


@pytest.fixture(scope="module")
def digits():
    """A small CNN trained on sklearn's digits, and 200 test digits it gets right.

    Training takes about 2 s on 2 cores; test accuracy is 0.98.
    """
    data = load_digits()
    X = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, random_state=0, stratify=y
    )
    with torch_seed(0):
        model = _make_module()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        X_t, y_t = torch.from_numpy(X_train), torch.from_numpy(y_train)
        for _ in range(10):
            perm = torch.randperm(len(X_t))
            for start in range(0, len(X_t), 64):
                idx = perm[start : start + 64]
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(X_t[idx]), y_t[idx])
                loss.backward()
                optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(X_test)).argmax(dim=1).numpy()
    correct = np.flatnonzero(pred == y_test)[:200]
    assert len(correct) == 200
    return model, X_test[correct], y_test[correct]


def test_attacks_names():
    assert ATTACKS == ("fgsm", "bim", "mim", "pgd", "cw", "deepfool")


# Success rates measured on the 200 digits at eps=0.3: fgsm 0.97, bim 1.00,
# mim 1.00, pgd 1.00 (at eps=0.1: 0.38, 0.55, 0.54, 0.53).
@pytest.mark.parametrize(
    "attack, min_success",
    [("fgsm", 0.5), ("bim", 0.9), ("mim", 0.9), ("pgd", 0.9)],
)
def test_linf_attacks(digits, attack, min_success):
    model, X, y = digits
    X_orig = X.copy()
    X_adv, success = make_adversarial(
        model, X, y, attack=attack, eps=EPS, random_state=0
    )

    assert X_adv.shape == X.shape
    assert X_adv.dtype == np.float32
    assert success.shape == (len(X),)
    assert success.dtype == bool
    assert success.mean() >= min_success
    # Within clip_values and within the eps ball.
    assert X_adv.min() >= 0.0
    assert X_adv.max() <= 1.0
    assert np.abs(X_adv - X).max() <= EPS + 1e-6
    # X is float32 and C-contiguous, so check_array hands back the very same
    # array: it must not be written to.
    np.testing.assert_array_equal(X, X_orig)
    # success is recomputed from the model, not taken from ART.
    with torch.no_grad():
        pred_adv = model(torch.from_numpy(X_adv)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(success, pred_adv != y)


# Success rates measured on the 200 digits: cw 1.00 (median L2 0.88, 1.5 s),
# deepfool 1.00 (median L2 0.57); 60 digits keep the test fast.
@pytest.mark.parametrize("attack", ["cw", "deepfool"])
def test_l2_attacks(digits, attack):
    model, X, y = digits
    X, y = X[:60], y[:60]
    X_orig = X.copy()
    X_adv, success = make_adversarial(model, X, y, attack=attack)

    assert X_adv.shape == X.shape
    assert X_adv.dtype == np.float32
    assert success.mean() >= 0.9
    assert X_adv.min() >= 0.0
    assert X_adv.max() <= 1.0
    np.testing.assert_array_equal(X, X_orig)


def test_deepfool_ignores_eps(digits):
    model, X, y = digits
    X_a, _ = make_adversarial(model, X[:20], y[:20], attack="deepfool", eps=0.3)
    X_b, _ = make_adversarial(model, X[:20], y[:20], attack="deepfool", eps=0.01)
    np.testing.assert_array_equal(X_a, X_b)


def test_params_override_defaults(digits):
    model, X, y = digits
    # One BIM step of 0.01 cannot move any pixel further than 0.01.
    X_adv, _ = make_adversarial(model, X[:20], y[:20], attack="bim", max_iter=1)
    assert np.abs(X_adv - X[:20]).max() <= 0.01 + 1e-6


@pytest.mark.parametrize(
    "attack, bar", [("pgd", "PGD - Batches"), ("deepfool", "DeepFool")]
)
def test_verbose_shows_arts_progress_bars(digits, capsys, attack, bar):
    model, X, y = digits
    X, y = X[:20], y[:20]
    quiet, _ = make_adversarial(model, X, y, attack=attack, random_state=0)
    assert capsys.readouterr().err == ""
    loud, _ = make_adversarial(model, X, y, attack=attack, random_state=0, verbose=True)
    assert bar in capsys.readouterr().err
    # The bars change nothing else.
    np.testing.assert_array_equal(loud, quiet)


def test_verbose_must_be_a_bool(digits):
    model, X, y = digits
    with pytest.raises(ValueError, match=r"^verbose must be a bool; got 'yes'\.$"):
        make_adversarial(model, X[:5], y[:5], verbose="yes")


def test_y_none_uses_predictions(digits):
    model, X, y = digits
    # The digits are all correctly classified, so the model's predictions are
    # the true labels and FGSM (deterministic) gives the same result.
    X_true, success_true = make_adversarial(model, X, y)
    X_pred, success_pred = make_adversarial(model, X)
    np.testing.assert_array_equal(X_true, X_pred)
    np.testing.assert_array_equal(success_true, success_pred)


def test_flat_inputs(digits):
    model, X, y = digits
    flat_model = torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)), model)
    X_adv_flat, success_flat = make_adversarial(flat_model, X.reshape(len(X), -1), y)
    X_adv, success = make_adversarial(model, X, y)
    assert X_adv_flat.shape == (len(X), 64)
    np.testing.assert_allclose(X_adv_flat.reshape(X.shape), X_adv)
    np.testing.assert_array_equal(success_flat, success)


def test_model_left_untouched(digits):
    model, X, y = digits
    model = copy.deepcopy(model)
    # A mix of modes, a frozen parameter and a stale gradient: all must survive
    # ART's eval()/train() switches and its zero_grad()/backward().
    model.train()
    model[5].eval()
    model[0].bias.requires_grad_(False)
    stale_grad = torch.ones_like(model[-1].weight)
    model[-1].weight.grad = stale_grad
    flags = [m.training for m in model.modules()]
    requires_grad = [p.requires_grad for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}

    for attack in ("bim", "deepfool"):
        make_adversarial(model, X[:20], y[:20], attack=attack, device="cpu")

    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=True))
    torch.testing.assert_close(model[-1].weight.grad, torch.ones_like(stale_grad))
    # Batch-norm running statistics included: the model was never trained.
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_pgd_reproducible_without_global_side_effects(digits):
    model, X, y = digits
    X, y = X[:50], y[:50]
    np_state = np.random.get_state()  # noqa: NPY002 (the global state is tested)
    torch_state = torch.get_rng_state()

    X_a, s_a = make_adversarial(model, X, y, attack="pgd", random_state=42)
    X_b, s_b = make_adversarial(model, X, y, attack="pgd", random_state=42)
    X_c, _ = make_adversarial(
        model, X, y, attack="pgd", random_state=np.random.RandomState(42)
    )
    X_d, _ = make_adversarial(model, X, y, attack="pgd", random_state=7)

    np.testing.assert_array_equal(X_a, X_b)
    np.testing.assert_array_equal(s_a, s_b)
    assert X_c.shape == X.shape
    assert not np.array_equal(X_a, X_d)
    # Neither numpy's nor torch's global generator was reseeded or advanced.
    new_state = np.random.get_state()  # noqa: NPY002
    np.testing.assert_array_equal(new_state[1], np_state[1])
    assert new_state[2] == np_state[2]
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_skorch_net(digits):
    model, X, y = digits
    # A net initialized around the trained logits module gives what the module
    # gives.
    net = NeuralNetClassifier(
        copy.deepcopy(model), criterion=torch.nn.CrossEntropyLoss
    ).initialize()
    X_net, success_net = make_adversarial(net, X, y)
    X_mod, success_mod = make_adversarial(model, X, y)
    np.testing.assert_allclose(X_net, X_mod)
    np.testing.assert_array_equal(success_net, success_mod)

    # skorch's default NLLLoss criterion wants probabilities out of the module;
    # make_adversarial attacks their log. Measured success: 0.985.
    proba_module = torch.nn.Sequential(copy.deepcopy(model), torch.nn.Softmax(dim=1))
    proba_net = NeuralNetClassifier(proba_module).initialize()
    X_adv, success = make_adversarial(proba_net, X, y)
    assert success.mean() >= 0.5
    assert np.abs(X_adv - X).max() <= EPS + 1e-6


def test_skorch_fitted_net(digits):
    _, X, y = digits
    # A quick fit on the 200 digits (training accuracy 0.80); BIM then flips
    # all of its predictions (measured success 1.00).
    with torch_seed(0):
        net = NeuralNetClassifier(
            _make_module,
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=torch.optim.Adam,
            lr=1e-2,
            max_epochs=3,
            train_split=None,
            verbose=0,
        ).fit(X, y)
    X_adv, success = make_adversarial(net, X, attack="bim")
    assert X_adv.shape == X.shape
    assert success.mean() >= 0.9


def test_unfitted_skorch_net(digits):
    _, X, _ = digits
    net = NeuralNetClassifier(_make_module)
    with pytest.raises(
        NotFittedError,
        match=r"^This NeuralNetClassifier instance is not initialized yet\. Call "
        r"'fit' \(or 'initialize' with a trained module\) before make_adversarial\.$",
    ):
        make_adversarial(net, X)


@pytest.mark.parametrize(
    "X_change, kwargs, error, match",
    [
        (
            lambda X: X - 0.2,
            {},
            ValueError,
            r"^X has values outside clip_values=\(0\.0, 1\.0\): min=-0\.2, max=0\.8\. "
            r"Scale the inputs to the model's input range or pass clip_values\.$",
        ),
        (
            lambda X: X * 255,
            {"clip_values": (0, 1)},
            ValueError,
            r"^X has values outside clip_values=\(0\.0, 1\.0\): min=0, max=255\. ",
        ),
        (
            lambda X: np.where(X == X.max(), np.nan, X),
            {},
            ValueError,
            r"^Input X contains NaN\.$",
        ),
        (
            lambda X: np.where(X == X.max(), np.inf, X),
            {},
            ValueError,
            r"^Input X contains infinity",
        ),
        (
            None,
            {"attack": "FGSM"},
            ValueError,
            r"^attack must be one of \('fgsm', 'bim', 'mim', 'pgd', 'cw', "
            r"'deepfool'\); got 'FGSM'\.$",
        ),
        (
            None,
            {"attack": None},
            ValueError,
            r"^attack must be one of .*; got None\.$",
        ),
        (
            None,
            {"eps": 0},
            ValueError,
            r"^eps must be a positive real number; got 0\.$",
        ),
        (None, {"eps": -0.1}, ValueError, r"^eps must be a positive real number"),
        (None, {"eps": np.nan}, ValueError, r"^eps must be a positive real number"),
        (None, {"eps": "0.3"}, ValueError, r"^eps must be a positive real number"),
        (None, {"eps": True}, ValueError, r"^eps must be a positive real number"),
        (
            None,
            {"batch_size": 0},
            ValueError,
            r"^batch_size must be a positive integer; got 0\.$",
        ),
        (
            None,
            {"batch_size": 1.5},
            ValueError,
            r"^batch_size must be a positive integer; got 1\.5\.$",
        ),
        (
            None,
            {"clip_values": (1.0, 0.0)},
            ValueError,
            r"^clip_values must be a pair of finite real numbers \(min, max\) with "
            r"min < max; got \(1\.0, 0\.0\)\.$",
        ),
        (
            None,
            {"attack": "pgd", "max_iters": 3},
            TypeError,
            r"^Unknown parameter\(s\) \['max_iters'\] for attack='pgd' \(ART's "
            r"ProjectedGradientDescent\); valid parameters: \[.*'max_iter'.*\]\.$",
        ),
        (
            None,
            {"y": np.arange(3)},
            ValueError,
            r"Found input variables with inconsistent numbers of samples",
        ),
        (
            None,
            {"y": np.full(10, 0.5)},
            ValueError,
            r"^y must hold integer class labels; got values of dtype float64\.$",
        ),
        (
            None,
            {"y": np.full(10, 10)},
            ValueError,
            r"^y must hold class labels in \[0, 9\] for a model with 10 outputs; "
            r"got min=10, max=10\.$",
        ),
    ],
)
def test_invalid_inputs(digits, X_change, kwargs, error, match):
    model, X, _ = digits
    X = X[:10] if X_change is None else X_change(X[:10])
    with pytest.raises(error, match=match):
        make_adversarial(model, X, **kwargs)


def test_bad_model(digits):
    _, X, _ = digits
    with pytest.raises(TypeError, match=r"^model must be a torch\.nn\.Module"):
        make_adversarial("not a model", X)
    with pytest.raises(ValueError, match=r"^model must return logits of shape"):
        make_adversarial(torch.nn.Flatten(0), X[:5])


def test_missing_art(digits, monkeypatch):
    model, X, _ = digits
    # A None entry in sys.modules makes ``import art`` raise ImportError.
    monkeypatch.setitem(sys.modules, "art", None)
    with pytest.raises(ImportError, match=r'pip install "skadv\[attacks\]"'):
        make_adversarial(model, X)
