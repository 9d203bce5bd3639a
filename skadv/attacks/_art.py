"""Adversarial example generation backed by the Adversarial Robustness Toolbox.

ART is an optional dependency (``pip install "skadv[attacks]"``); it is imported
lazily so that the rest of skadv works without it.
"""

import contextlib
import copy
import inspect
import numbers

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_array, check_consistent_length, column_or_1d

from skadv._torch_utils import resolve_device, seed_from_random_state, torch_seed

#: The names accepted by ``make_adversarial(attack=...)``, in the order of Ko & Lim's
#: tables: four L-infinity gradient attacks, then two L2 attacks.
ATTACKS = ("fgsm", "bim", "mim", "pgd", "cw", "deepfool")


def _default_params(attack, eps):
    """ART constructor arguments for ``attack`` when the user passes nothing.

    The gradient attacks follow Ko & Lim (2021); ``verbose=False`` keeps ART's tqdm
    progress bars out of the caller's output (FastGradientMethod has none) unless
    ``make_adversarial(verbose=True)`` asks for them.
    """
    if attack == "fgsm":
        return dict(norm=np.inf, eps=eps, eps_step=eps)
    if attack == "bim":
        return dict(eps=eps, eps_step=0.01, max_iter=40, verbose=False)
    if attack == "mim":
        return dict(
            norm=np.inf, eps=eps, eps_step=0.06, max_iter=10, decay=1.0, verbose=False
        )
    if attack == "pgd":
        # Same step and iteration count as "bim" (Madry et al.'s MNIST setting) so
        # that the only difference between the two is the random start.
        return dict(
            norm=np.inf,
            eps=eps,
            eps_step=0.01,
            max_iter=40,
            num_random_init=1,
            verbose=False,
        )
    if attack == "cw":
        # ART's defaults (learning rate 0.01, initial constant 0.01, 10
        # binary-search steps) run in numpy and are slow: 7 s for 200 8x8 digits
        # on one CPU thread against 1.5 s with these values, for the same 100%
        # success and a median L2 perturbation of 0.88 instead of 0.72. Pass
        # ART's values through **params when smaller perturbations are worth the
        # time.
        return dict(
            confidence=0.0,
            learning_rate=0.1,
            binary_search_steps=3,
            max_iter=10,
            initial_const=1.0,
            verbose=False,
        )
    # deepfool
    return dict(max_iter=50, epsilon=0.02, verbose=False)


def _attack_class(attack):
    """Return the ART attack class for ``attack`` (ART must be importable)."""
    from art.attacks.evasion import (
        BasicIterativeMethod,
        CarliniL2Method,
        DeepFool,
        FastGradientMethod,
        MomentumIterativeMethod,
        ProjectedGradientDescent,
    )

    return {
        "fgsm": FastGradientMethod,
        "bim": BasicIterativeMethod,
        # ART's MomentumIterativeMethod is ProjectedGradientDescent with
        # ``decay`` set and no random start: its PyTorch implementation
        # accumulates L1-normalised gradients (g <- decay * g + grad / ||grad||_1)
        # and steps along sign(g), which is Dong et al.'s MI-FGSM update.
        "mim": MomentumIterativeMethod,
        "pgd": ProjectedGradientDescent,
        "cw": CarliniL2Method,
        "deepfool": DeepFool,
    }[attack]


class _LogProba(torch.nn.Module):
    """Turn a module that outputs probabilities into one that outputs logits.

    skorch's ``NeuralNetClassifier`` with its default ``NLLLoss`` criterion expects
    the module to return probabilities; the log of them are valid logits (their
    softmax gives back the probabilities), which is what ART's cross-entropy loss
    needs. The small constant mirrors skorch's own ``get_loss``.
    """

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        proba = self.module(x)
        return torch.log(proba + torch.finfo(proba.dtype).eps)


def _unwrap_model(model):
    """Return ``(module, proba_output)`` for a torch module or a skorch net."""
    from skorch import NeuralNet, NeuralNetClassifier

    if isinstance(model, NeuralNet):
        if not getattr(model, "initialized_", False) or not hasattr(model, "module_"):
            raise NotFittedError(
                f"This {type(model).__name__} instance is not initialized yet. Call "
                "'fit' (or 'initialize' with a trained module) before "
                "make_adversarial."
            )
        proba_output = isinstance(model, NeuralNetClassifier) and isinstance(
            getattr(model, "criterion_", None), torch.nn.NLLLoss
        )
        return model.module_, proba_output
    if isinstance(model, torch.nn.Module):
        return model, False
    raise TypeError(
        "model must be a torch.nn.Module returning logits or a fitted skorch "
        f"NeuralNetClassifier; got {type(model).__name__}."
    )


def _module_device(module):
    """The device of the first parameter (or buffer) of ``module``; CPU if none."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _normalize_device(device):
    # ``torch.device("cuda") != torch.device("cuda:0")``: give CUDA devices an
    # explicit index so that "same device" comparisons mean what they say.
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@contextlib.contextmanager
def _frozen(module):
    """Restore what ART changes on ``module`` while it runs.

    ART's ``PyTorchClassifier`` flips the module between train and eval mode and
    back-propagates through it, which zeroes and refills the parameters'
    ``.grad``. Parameters are frozen inside the block (only input gradients are
    needed, so this also saves work), and every submodule's ``training`` flag,
    every parameter's ``requires_grad`` and its ``.grad`` are put back after it.
    """
    training = [(m, m.training) for m in module.modules()]
    params = [(p, p.requires_grad, p.grad) for p in module.parameters()]
    try:
        for p, _, _ in params:
            p.requires_grad_(False)
        yield
    finally:
        for m, flag in training:
            m.training = flag
        for p, requires_grad, grad in params:
            p.requires_grad_(requires_grad)
            p.grad = grad


@contextlib.contextmanager
def _numpy_seed(seed):
    """Seed numpy's global generator inside the block and restore it after.

    ART draws its random starts (PGD's ``num_random_init``, FGSM's random init,
    ``random_eps``) from ``np.random`` directly, so the only way to make them
    reproducible is to seed the global generator; its state is saved and
    restored so that callers see no side effect. Nothing is done when ``seed``
    is None (ART then uses the global generator as is, like scikit-learn's
    ``random_state=None``).
    """
    if seed is None:
        yield
        return
    # The legacy global API is the point here: it is what ART reads.
    state = np.random.get_state()  # noqa: NPY002
    try:
        np.random.seed(seed)  # noqa: NPY002
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _check_clip_values(clip_values):
    try:
        clip_min, clip_max = clip_values
        ok = all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
            for v in (clip_min, clip_max)
        )
    except (TypeError, ValueError):
        ok = False
    if not ok or not clip_min < clip_max:
        raise ValueError(
            "clip_values must be a pair of finite real numbers (min, max) with "
            f"min < max; got {clip_values!r}."
        )
    return float(clip_min), float(clip_max)


def make_adversarial(
    model,
    X,
    y=None,
    *,
    attack="fgsm",
    eps=0.3,
    clip_values=(0.0, 1.0),
    batch_size=128,
    device=None,
    random_state=None,
    verbose=False,
    **params,
):
    """Craft untargeted adversarial examples against a trained torch classifier.

    The attacks come from the Adversarial Robustness Toolbox (ART), through
    :class:`art.estimators.classification.PyTorchClassifier`. The model is treated
    as frozen: it is never trained, and its train/eval flags, parameters,
    gradients and device are as they were when the function returns.

    ART is an optional dependency: ``pip install "skadv[attacks]"``.

    Parameters
    ----------
    model : torch.nn.Module or skorch.NeuralNetClassifier
        The trained classifier. A torch module must return logits. A fitted
        (or initialized) skorch net is used through its ``module_``; with
        skorch's default ``NLLLoss`` criterion the module returns probabilities,
        and their log is used as logits.

    X : array-like of shape (n_samples, n_channels, height, width) or \
            (n_samples, n_features)
        Clean inputs, in the model's input range (within ``clip_values``). Not
        modified.

    y : array-like of shape (n_samples,), default=None
        True integer labels. If None, the model's predictions on ``X`` are used
        as labels (ART's default for untargeted attacks, which avoids label
        leaking).

    attack : {"fgsm", "bim", "mim", "pgd", "cw", "deepfool"}, default="fgsm"
        The attack; all are untargeted. The L-infinity attacks default to
        Ko & Lim's (2021) settings.

        - ``"fgsm"``: :class:`~art.attacks.evasion.FastGradientMethod`, one
          L-infinity step of size ``eps``.
        - ``"bim"``: :class:`~art.attacks.evasion.BasicIterativeMethod`, 40
          L-infinity steps of 0.01 projected on the ``eps`` ball, no random start
          (the paper's "PGD").
        - ``"mim"``: :class:`~art.attacks.evasion.MomentumIterativeMethod`
          (MI-FGSM), 10 L-infinity steps of 0.06 with momentum decay 1.0.
        - ``"pgd"``: :class:`~art.attacks.evasion.ProjectedGradientDescent`, 40
          L-infinity steps of 0.01 (as for "bim", not ``eps / 4``) from one
          random start in the ``eps`` ball (Madry et al.), reproducible through
          ``random_state``.
        - ``"cw"``: :class:`~art.attacks.evasion.CarliniL2Method`, an L2 attack;
          ``eps`` is ignored. Defaults: 3 binary-search steps of 10 iterations,
          learning rate 0.1, initial constant 1.0, confidence 0.
        - ``"deepfool"``: :class:`~art.attacks.evasion.DeepFool`, an L2 attack;
          ``eps`` is ignored. Defaults: 50 iterations, overshoot
          ``epsilon=0.02``.

    eps : float, default=0.3
        Maximum L-infinity perturbation for "fgsm", "bim", "mim" and "pgd".
        Ignored by "cw" and "deepfool".

    clip_values : tuple of (float, float), default=(0.0, 1.0)
        The model's input range. ``X`` must lie within it, and so does the
        output.

    batch_size : int, default=128
        Batch size used by ART.

    device : {None, "auto", "cpu", "cuda"} or torch.device, default=None
        Where to run the attack. None uses the model's own device. When another
        device is requested the attack runs on a copy of the model, which is
        never moved.

    random_state : int, RandomState instance or None, default=None
        Seeds the attacks' randomness (PGD's random start). ART draws it from
        numpy's global generator (and draws DataLoader seeds from torch's);
        with a random_state both are seeded inside the call and restored after
        it. None lets ART use the global generators as they are.

    verbose : bool, default=False
        Show ART's progress bars (tqdm, on stderr) while the attack runs:
        over batches for "bim", "mim" and "pgd", and over batches or
        iterations for "cw" and "deepfool". "fgsm", a single gradient step
        per input, has none.

    **params
        Passed to the ART attack's constructor, overriding the defaults above
        (for instance ``max_iter=100`` or ``norm=2``).

    Returns
    -------
    X_adv : ndarray of shape X.shape, dtype float32
        The adversarial examples.

    success : ndarray of shape (n_samples,), dtype bool
        True where the model's prediction on ``X_adv`` differs from ``y`` (from
        its prediction on ``X`` when ``y`` is None).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skadv.attacks import make_adversarial
    >>> model = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    ...     _ = model.bias.zero_()
    >>> X = np.array([[0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    >>> X_adv, success = make_adversarial(model, X, np.array([0, 1]), eps=0.3)
    >>> X_adv.round(2)
    array([[0.3, 0.7],
           [0.6, 0.4]], dtype=float32)
    >>> success
    array([ True,  True])
    """
    # Cheap parameter checks first, before ART is imported or the model touched.
    if not isinstance(attack, str) or attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}; got {attack!r}.")
    if (
        not isinstance(eps, numbers.Real)
        or isinstance(eps, bool)
        or not np.isfinite(eps)
        or eps <= 0
    ):
        raise ValueError(f"eps must be a positive real number; got {eps!r}.")
    # ART requires eps and eps_step of the same Python type (int or float), and
    # rejects numpy scalars such as np.float32.
    eps = float(eps)
    if (
        not isinstance(batch_size, numbers.Integral)
        or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    batch_size = int(batch_size)
    if not isinstance(verbose, numbers.Integral):
        raise ValueError(f"verbose must be a bool; got {verbose!r}.")
    clip_min, clip_max = _check_clip_values(clip_values)

    try:
        import art  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "make_adversarial needs the Adversarial Robustness Toolbox; install it "
            'with: pip install "skadv[attacks]"'
        ) from exc
    attack_cls = _attack_class(attack)
    # Check **params against the ART constructor here, so that a typo fails with
    # the list of valid names and before any model work.
    valid_params = set(inspect.signature(attack_cls.__init__).parameters) - {
        "self",
        "estimator",
        "classifier",
        "batch_size",
    }
    unknown = sorted(set(params) - valid_params)
    if unknown:
        raise TypeError(
            f"Unknown parameter(s) {unknown} for attack={attack!r} (ART's "
            f"{attack_cls.__name__}); valid parameters: {sorted(valid_params)}."
        )

    module, proba_output = _unwrap_model(model)

    X = check_array(X, allow_nd=True, dtype=np.float32, input_name="X")
    if X.size == 0:
        raise ValueError(f"X holds no values (shape {X.shape}): nothing to attack.")
    x_min, x_max = float(X.min()), float(X.max())
    if x_min < clip_min or x_max > clip_max:
        raise ValueError(
            f"X has values outside clip_values={(clip_min, clip_max)}: "
            f"min={x_min:.6g}, max={x_max:.6g}. Scale the inputs to the model's "
            "input range or pass clip_values."
        )
    # ART casts its inputs to new arrays, but a private copy guarantees that the
    # caller's X is never written to whatever ART does internally.
    X = X.copy()
    if y is not None:
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        if y.dtype.kind not in "iu" and (
            y.dtype.kind != "f" or not np.all(np.isfinite(y)) or np.any(y % 1 != 0)
        ):
            raise ValueError(
                f"y must hold integer class labels; got values of dtype {y.dtype}."
            )
        y = y.astype(np.int64)

    model_device = _normalize_device(_module_device(module))
    target = resolve_device(device)
    target = model_device if target is None else _normalize_device(target)
    if target != model_device:
        # ART moves the module it wraps to its device; work on a copy so that the
        # user's model stays where it is.
        module = copy.deepcopy(module).to(target)
    net = _LogProba(module) if proba_output else module

    seed = seed_from_random_state(random_state)
    # ART picks ``cuda:<current device>`` for device_type="gpu"; make the current
    # device the requested one so that ART never moves the module.
    cuda_ctx = (
        torch.cuda.device(target) if target.type == "cuda" else contextlib.nullcontext()
    )
    # When the module was copied the user's model is never touched at all. The
    # seeds cover every ART call: besides the attacks' random starts (numpy),
    # ART's predict and PGD iterate torch DataLoaders, which draw a base seed
    # from torch's global generator; with a random_state, both global generators
    # are left as they were.
    with _frozen(module), cuda_ctx, torch_seed(seed), _numpy_seed(seed):
        from art.estimators.classification import PyTorchClassifier

        # nb_classes from one forward pass, in eval mode so that batch-norm
        # statistics are not updated; flags are restored by ``_frozen``.
        net.eval()
        try:
            with torch.no_grad():
                out = net(torch.from_numpy(X[:1]).to(target))
        except Exception as exc:
            raise ValueError(
                f"model failed on X of shape {X.shape[1:]} per input "
                f"({type(exc).__name__}: {exc}); pass X in the shape the model "
                "takes."
            ) from exc
        if out.ndim != 2 or out.shape[1] < 2:
            raise ValueError(
                "model must return logits of shape (n_samples, n_classes) with "
                f"n_classes >= 2; got an output of shape {tuple(out.shape)}."
            )
        nb_classes = int(out.shape[1])
        if y is not None and (y.min() < 0 or y.max() >= nb_classes):
            raise ValueError(
                f"y must hold class labels in [0, {nb_classes - 1}] for a model "
                f"with {nb_classes} outputs; got min={y.min()}, max={y.max()}."
            )

        classifier = PyTorchClassifier(
            model=net,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=X.shape[1:],
            nb_classes=nb_classes,
            clip_values=(clip_min, clip_max),
            device_type="cpu" if target.type == "cpu" else "gpu",
        )
        if y is None:
            y = classifier.predict(X, batch_size=batch_size).argmax(axis=1)

        defaults = _default_params(attack, eps)
        if "verbose" in valid_params:
            defaults["verbose"] = bool(verbose)
        attack_obj = attack_cls(
            classifier, batch_size=batch_size, **{**defaults, **params}
        )
        X_adv = attack_obj.generate(x=X, y=y)
        X_adv = np.asarray(X_adv, dtype=np.float32).reshape(X.shape)
        pred_adv = classifier.predict(X_adv, batch_size=batch_size).argmax(axis=1)

    success = pred_adv != y
    return X_adv, success
