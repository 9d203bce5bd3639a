"""Detector-aware (adaptive) attacks on a classifier and its detector together.

No attack library ships attacks on explanation-based detectors, so they are
written here, after Bryniarski, Hingun, Pachuca, Wang & Carlini, "Evading
Adversarial Example Detectors using Orthogonal Projected Gradient Descent"
(ICLR 2022). The detector's score is never re-implemented: every step calls the
fitted pipeline's own torch computation (``torch_transform`` of the view,
``torch_decision_function`` of the detector), so the attack's score is the
deployed detector's ``decision_function`` by construction. Success is always
judged on the real model and the real fitted detector.
"""

import copy
import math
import numbers
import time

import numpy as np
import torch
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_array, check_is_fitted

from skadv._torch_utils import eval_mode, seed_from_random_state, torch_seed

METHODS = ("orthogonal", "selective", "weighted", "pgd")
SURROGATES = ("straight_through", "softplus")


class _StraightThroughReLUFunction(torch.autograd.Function):
    """ReLU whose derivative has the step's values and a sigmoid's slope.

    Forward: ``relu(z)``. Backward: ``grad * mask`` where ``mask`` equals the
    real step function ``z > 0`` in value, so first-order gradients (and with
    them the saliency map and the detector's score) are exactly the deployed
    network's, but differentiates like ``sigmoid(beta * z)``, the derivative of
    ``softplus(beta * z) / beta``: second-order gradients, which an attack
    through a saliency map needs, are those of a smooth network.
    """

    @staticmethod
    def forward(ctx, z, beta):
        ctx.save_for_backward(z)
        ctx.beta = beta
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        smooth = torch.sigmoid(ctx.beta * z)
        mask = (z > 0).to(grad.dtype) + (smooth - smooth.detach())
        return grad * mask, None


class _StraightThroughReLU(torch.nn.Module):
    def __init__(self, beta):
        super().__init__()
        self.beta = float(beta)

    def forward(self, z):
        return _StraightThroughReLUFunction.apply(z, self.beta)


def make_surrogate(module, surrogate="straight_through", beta=10.0):
    """A copy of ``module`` whose ReLUs have useful second derivatives.

    The saliency map of a ReLU network is piecewise constant in the input, so
    its exact gradient is zero almost everywhere and an attack through the map
    needs a stand-in. Every ``torch.nn.ReLU`` module is replaced:

    - ``"straight_through"``: the forward pass and the first derivative are the
      real ReLU's (so the maps and scores the attack sees are the deployed
      ones); the second derivative is that of ``softplus(beta * z) / beta``;
    - ``"softplus"``: the ReLU becomes ``softplus(beta * z) / beta`` outright
      (Dombrowski et al., NeurIPS 2019); maps are then only close to the real
      ones.

    Smooth activations (GELU, SiLU, tanh...) have second derivatives and are
    kept. ReLUs called as functions (``torch.relu`` in ``forward``) cannot be
    replaced and keep a zero second derivative.

    Parameters
    ----------
    module : torch.nn.Module
        The classifier.
    surrogate : {"straight_through", "softplus"}, default="straight_through"
        How ReLUs are replaced.
    beta : float, default=10.0
        Steepness of the softplus.

    Returns
    -------
    surrogate : torch.nn.Module
        A frozen copy in eval mode; ``module`` is untouched.

    Examples
    --------
    >>> import torch
    >>> from skadv.attacks import make_surrogate
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
    ...                           torch.nn.Linear(8, 2))
    >>> copy = make_surrogate(net, beta=5.0)
    >>> x = torch.rand(3, 4)
    >>> bool(torch.equal(copy(x), net(x)))  # same forward values
    True
    """
    if surrogate not in SURROGATES:
        raise ValueError(
            f"surrogate must be one of {list(SURROGATES)}; got {surrogate!r}."
        )
    if not isinstance(beta, numbers.Real) or not beta > 0:
        raise ValueError(f"softplus_beta must be a positive float; got {beta!r}.")
    copied = copy.deepcopy(module)
    for parent in copied.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.ReLU):
                stand_in = (
                    _StraightThroughReLU(beta)
                    if surrogate == "straight_through"
                    else torch.nn.Softplus(beta=beta)
                )
                setattr(parent, name, stand_in)
    for p in copied.parameters():
        p.requires_grad_(False)
    return copied.eval()


def _pipeline_parts(detector):
    """The view that runs the model, and the detector's differentiable decision.

    A fitted pipeline of a view (``torch_transform``) and a detector
    (``torch_decision_function``), or an ensemble with its own
    ``torch_decision_function`` over raw inputs (its first member's view runs
    the model). Returns ``(view, decide)`` with ``decide(x, module)`` the
    decision of inputs ``x`` with ``module`` standing in for the model.
    """
    steps = getattr(detector, "steps", None)
    if (
        steps is not None
        and len(steps) == 2
        and hasattr(steps[0][1], "torch_transform")
        and hasattr(steps[1][1], "torch_decision_function")
    ):
        view, final = steps[0][1], steps[1][1]
        check_is_fitted(view)
        check_is_fitted(final)

        def decide(x, module):
            return final.torch_decision_function(view.torch_transform(x, module=module))

        return view, decide
    if hasattr(detector, "torch_decision_function") and hasattr(detector, "detectors_"):
        check_is_fitted(detector)
        # The model runs in every member: the first member's view (or the
        # member itself, when it reads raw inputs) tells its shape and device.
        first = detector.detectors_[0]
        view = first.steps[0][1] if hasattr(first, "steps") else first

        def decide(x, module):
            return detector.torch_decision_function(x, module=module)

        return view, decide
    if hasattr(detector, "torch_decision_function") and hasattr(
        detector, "input_shape_"
    ):
        # A detector that runs the model on raw inputs itself
        # (FeatureSqueezingDetector): it is its own view.
        check_is_fitted(detector)

        def decide(x, module):
            return detector.torch_decision_function(x, module=module)

        return detector, decide
    raise TypeError(
        "detector must be a fitted Pipeline of a view with torch_transform "
        "(e.g. ExplanationTransformer) and a detector with "
        "torch_decision_function (e.g. ExplanationReconstructionDetector), a "
        "FeatureSqueezingDetector, or an EnsembleDetector of such pipelines; got "
        f"{type(detector).__name__}."
    )


def _logits(model, X, batch_size, device):
    """The model's logits of each input, batch by batch, on the CPU."""
    with torch.no_grad(), eval_mode(model):
        return torch.cat(
            [
                model(torch.tensor(X[s : s + batch_size], device=device)).cpu()
                for s in range(0, len(X), batch_size)
            ]
        )


def _predicted_classes(model, X, batch_size, device):
    """The model's predicted class of each input."""
    return _logits(model, X, batch_size, device).argmax(1).numpy()


def _check_positive(name, value, integer=False):
    kind = numbers.Integral if integer else numbers.Real
    if not isinstance(value, kind) or isinstance(value, bool) or not value > 0:
        what = "a positive integer" if integer else "a positive float"
        raise ValueError(f"{name} must be {what}; got {value!r}.")


class _Grid:
    """Projection onto the eps-ball, the valid range and optionally a b-bit grid."""

    def __init__(self, x0, eps, low, high, bits):
        self.bits = bits
        lower = (x0 - eps).clamp(min=low)
        upper = (x0 + eps).clamp(max=high)
        if bits is None:
            self.low, self.high, self.spacing = lower, upper, 0.0
            return
        self.origin, levels = low, 2**bits - 1
        self.spacing = (high - low) / levels
        # The grid points inside the ball: round the bounds inwards.
        self.low = self._snap(lower, torch.ceil)
        self.high = self._snap(upper, torch.floor)
        if (self.low > self.high).any():
            raise ValueError(
                f"eps={eps} is smaller than the spacing of the {bits}-bit grid "
                f"({self.spacing:.4g}): no grid point lies in the ball of some inputs."
            )

    def _snap(self, x, rounding):
        # A hair of tolerance: bounds that are grid points must stay put.
        scaled = (x - self.origin) / self.spacing
        nudge = -1e-4 if rounding is torch.ceil else 1e-4
        return self.origin + rounding(scaled + nudge) * self.spacing

    def project(self, x, rows=slice(None)):
        if self.bits is not None:
            x = self._snap(x, torch.round)
        return torch.minimum(torch.maximum(x, self.low[rows]), self.high[rows])


def _orthogonal(a, b):
    """``a`` with its component along ``b`` removed, row by row."""
    a2, b2 = a.flatten(1), b.flatten(1)
    coef = (a2 * b2).sum(1, keepdim=True) / (b2 * b2).sum(1, keepdim=True).clamp_min(
        1e-30
    )
    return (a2 - coef * b2).reshape(a.shape)


def _attack_batch(x0, y, target, decide, surrogate, options, generator):
    """Best iterate of each input of a batch and its level (2 evaded, 1 misled)."""
    eps, eps_step, max_iter = options["eps"], options["eps_step"], options["max_iter"]
    method, confidence = options["method"], options["confidence"]
    grid = _Grid(x0, eps, options["low"], options["high"], options["quantize"])
    n = len(x0)
    best = x0.clone()
    best_level = torch.zeros(n, dtype=torch.int64, device=x0.device)
    best_value = torch.full((n,), -math.inf, dtype=torch.float64, device=x0.device)
    targeted = target is not None
    goal = target if targeted else y
    min_step = max(eps_step / 10, grid.spacing)
    for restart in range(options["n_restarts"]):
        active = best_level < 2
        if not active.any():
            break
        x = x0.clone()
        if restart > 0 or options["random_start"]:
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype)
            x = x + (2 * noise.to(x.device) - 1) * eps
        x = grid.project(x)
        for it in range(max_iter):
            rows = torch.nonzero(active).squeeze(1)
            if rows.numel() == 0:
                break
            xa = x[rows].detach().requires_grad_()
            logits = surrogate(xa)
            goal_logit = logits.gather(1, goal[rows][:, None]).squeeze(1)
            others = logits.scatter(1, goal[rows][:, None], float("-inf")).amax(1)
            # Margin to descend: for untargeted runs, the true class's lead;
            # for targeted ones, how far the target is behind.
            margin = goal_logit - others if not targeted else others - goal_logit
            with torch.no_grad():
                true_logit = logits.gather(1, y[rows][:, None]).squeeze(1)
                rest = logits.scatter(1, y[rows][:, None], float("-inf")).amax(1)
                misclassified = rest > true_logit
            if method == "pgd":
                decision = None
                loss = margin.clamp_min(-confidence).sum()
                (direction,) = torch.autograd.grad(loss, xa)
            else:
                decision = decide(xa, surrogate)
                flagged_loss = -decision  # positive while flagged
                if method == "weighted":
                    loss = margin.clamp_min(-confidence).sum() + options[
                        "detector_weight"
                    ] * flagged_loss.sum().to(margin.dtype)
                    (direction,) = torch.autograd.grad(loss, xa)
                else:
                    g_class = torch.autograd.grad(margin.sum(), xa, retain_graph=True)
                    g_detect = torch.autograd.grad(flagged_loss.sum(), xa)
                    g_class, g_detect = g_class[0], g_detect[0]
                    need_class = (margin >= -confidence).reshape(
                        -1, *([1] * (xa.ndim - 1))
                    )
                    if method == "orthogonal":
                        toward_class = _orthogonal(g_class, g_detect)
                        toward_detect = _orthogonal(g_detect, g_class)
                    else:  # selective
                        toward_class, toward_detect = g_class, g_detect
                    direction = torch.where(need_class, toward_class, toward_detect)
            with torch.no_grad():
                if decision is None:
                    level = misclassified.to(torch.int64)
                    value = -margin.double()
                else:
                    evading = misclassified & (decision >= 0)
                    level = misclassified.to(torch.int64) + evading.to(torch.int64)
                    value = torch.where(misclassified, decision, -margin.double())
                better = (level > best_level[rows]) | (
                    (level == best_level[rows]) & (value > best_value[rows])
                )
                keep = rows[better]
                best[keep] = xa.detach()[better]
                best_level[keep] = level[better]
                best_value[keep] = value[better]
                if decision is not None:
                    active[rows[level == 2]] = False  # evaded: done
                fraction = it / max(max_iter - 1, 1)
                alpha = min_step + (eps_step - min_step) * 0.5 * (
                    1 + math.cos(math.pi * fraction)
                )
                stepped = xa.detach() - alpha * direction.sign()
                x[rows] = grid.project(stepped, rows)
    return best, best_level


def make_adaptive_adversarial(
    detector,
    X,
    y=None,
    *,
    eps=0.3,
    method="orthogonal",
    max_iter=200,
    eps_step=None,
    n_restarts=1,
    random_start=False,
    target=None,
    surrogate="straight_through",
    softplus_beta=10.0,
    quantize=None,
    confidence=0.0,
    detector_weight=10.0,
    clip_values=(0.0, 1.0),
    batch_size=128,
    random_state=None,
    verbose=0,
):
    """White-box L-infinity attack on a classifier and its detector together.

    Each input is pushed to be misclassified by the model *and* not flagged
    by the detector at its fixed threshold. The detector's score is the fitted
    pipeline's own ``decision_function``, differentiated through the
    explanation map with a surrogate of the model's ReLUs
    (:func:`make_surrogate`). Methods (Bryniarski et al., ICLR 2022):

    - ``"orthogonal"``: while the input is classified correctly, step along
      the classifier's gradient with its component along the detector's
      gradient projected out; once misclassified, step along the detector's
      gradient with its component along the classifier's projected out;
    - ``"selective"``: step on whichever of the two constraints is not met;
    - ``"weighted"``: the classifier's margin plus ``detector_weight`` times
      the detector's score (the sum fights itself; kept for comparison);
    - ``"pgd"``: the classifier's margin only (the non-adaptive baseline).

    Signed steps with a cosine-decaying size, projected onto the eps-ball,
    the valid range and optionally a ``quantize``-bit grid; the best iterate
    per input is kept (misclassified and unflagged first, then misclassified
    with the least flagged score). Inputs stop once they evade.

    Parameters
    ----------
    detector : sklearn.pipeline.Pipeline
        A fitted pipeline of a view with ``torch_transform``
        (:class:`~skadv.ExplanationTransformer` with method ``"saliency"`` or
        ``"input_x_gradient"``) and a detector with ``torch_decision_function``
        (:class:`~skadv.ExplanationReconstructionDetector`).
    X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
        Benign inputs within ``clip_values``.
    y : array-like of shape (n_samples,), default=None
        True labels; None uses the model's predictions on ``X``.
    eps : float, default=0.3
        L-infinity budget.
    method : {"orthogonal", "selective", "weighted", "pgd"}, default="orthogonal"
        How the two objectives are combined (see above).
    max_iter : int, default=200
        Steps per restart.
    eps_step : float, default=None
        First step size, decaying to a tenth of it (or one grid step) along a
        cosine; None: ``eps / 8``.
    n_restarts : int, default=1
        Runs per input; every run after the first starts from a uniform
        random point of the ball. Inputs that evaded are not run again.
    random_start : bool, default=False
        Start the first run from a random point too.
    target : array-like of shape (n_samples,), default=None
        Classes to push each input towards (targeted); None: untargeted.
        Success still means "misclassified".
    surrogate : {"straight_through", "softplus"}, default="straight_through"
        Stand-in for the ReLUs in the second-order gradients.
    softplus_beta : float, default=10.0
        Steepness of the surrogate's softplus.
    quantize : int, default=None
        Keep every iterate on the grid of ``quantize``-bit images (8: 256
        levels over ``clip_values``), as an attacker who must submit 8-bit
        images would.
    confidence : float, default=0.0
        Margin by which the classifier's objective must be met before the
        attack turns to the detector.
    detector_weight : float, default=10.0
        Weight of the detector's score for ``method="weighted"``.
    clip_values : tuple of two float, default=(0.0, 1.0)
        The model's input range.
    batch_size : int, default=128
        Inputs attacked at once.
    random_state : int, RandomState instance or None, default=None
        Seeds the random starts; torch's global generator is left untouched.
    verbose : int, default=0
        Progress bar over batches when positive.

    Returns
    -------
    X_adv : ndarray of the shape of X, float32
        The best iterate of each input.
    success : ndarray of shape (n_samples,), bool
        Misclassified by the real model.
    evaded : ndarray of shape (n_samples,), bool
        Misclassified and not flagged by the real fitted detector
        (``predict`` is +1).

    See Also
    --------
    adaptive_attack_suite : Best-of over methods, surrogates, targets.
    evaluate_robustness : Fixed-threshold report of plain and adaptive attacks.

    References
    ----------
    .. [1] O. Bryniarski, N. Hingun, P. Pachuca, V. Wang, N. Carlini,
       "Evading Adversarial Example Detectors using Orthogonal Projected
       Gradient Descent", ICLR 2022.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.pipeline import make_pipeline
    >>> from skadv import ExplanationReconstructionDetector, ExplanationTransformer
    >>> from skadv.attacks import make_adaptive_adversarial
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
    ...     torch.nn.Linear(16, 3))
    >>> X = np.random.default_rng(0).random((60, 1, 8, 8), dtype=np.float32)
    >>> detector = make_pipeline(ExplanationTransformer(model),
    ...     ExplanationReconstructionDetector(min_class_size=1, unseen_class="fallback",
    ...                                       random_state=0)).fit(X)
    >>> X_adv, success, evaded = make_adaptive_adversarial(
    ...     detector, X[:4], eps=0.1, max_iter=5)
    >>> X_adv.shape, success.dtype, bool(np.abs(X_adv - X[:4]).max() <= 0.1 + 1e-6)
    ((4, 1, 8, 8), dtype('bool'), True)
    """
    view, decide = _pipeline_parts(detector)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}.")
    _check_positive("eps", eps)
    if eps_step is None:
        eps_step = eps / 8
    _check_positive("eps_step", eps_step)
    _check_positive("max_iter", max_iter, integer=True)
    _check_positive("n_restarts", n_restarts, integer=True)
    _check_positive("batch_size", batch_size, integer=True)
    if quantize is not None:
        _check_positive("quantize", quantize, integer=True)
    if not isinstance(confidence, numbers.Real) or confidence < 0:
        raise ValueError(
            f"confidence must be a non-negative float; got {confidence!r}."
        )
    if not isinstance(detector_weight, numbers.Real) or detector_weight < 0:
        raise ValueError(
            f"detector_weight must be a non-negative float; got {detector_weight!r}."
        )
    low, high = (float(v) for v in clip_values)
    X = check_array(X, allow_nd=True, dtype=np.float32)
    if X.min() < low or X.max() > high:
        raise ValueError(
            f"X has values outside clip_values=({low}, {high}): min={X.min():.4g}, "
            f"max={X.max():.4g}. Scale the inputs to the model's input range or "
            "pass clip_values."
        )
    shape = X.shape
    X_model = X.reshape(len(X), *view.input_shape_)
    model, device = view.module_, view.device_
    if y is None:
        y = _predicted_classes(model, X_model, batch_size, device)
    y = np.asarray(y).astype(np.int64)
    if target is not None:
        target = np.asarray(target).astype(np.int64)
    options = {
        "eps": float(eps),
        "eps_step": float(eps_step),
        "max_iter": int(max_iter),
        "n_restarts": int(n_restarts),
        "random_start": bool(random_start),
        "method": method,
        "confidence": float(confidence),
        "detector_weight": float(detector_weight),
        "low": low,
        "high": high,
        "quantize": quantize,
    }
    stand_in = make_surrogate(model, surrogate, softplus_beta)
    seed = seed_from_random_state(random_state)
    generator = torch.Generator()
    generator.manual_seed(0 if seed is None else seed)
    if seed is None:
        generator.seed()
    out = np.empty_like(X_model)
    starts = range(0, len(X_model), batch_size)
    if verbose:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{method} attack", unit="batch")
    with eval_mode(model), torch_seed(seed):
        for start in starts:
            stop = start + batch_size
            x0 = torch.tensor(X_model[start:stop], device=device)
            y_batch = torch.tensor(y[start:stop], device=device)
            t_batch = (
                None
                if target is None
                else torch.tensor(target[start:stop], device=device)
            )
            best, _ = _attack_batch(
                x0, y_batch, t_batch, decide, stand_in, options, generator
            )
            out[start : start + len(x0)] = best.cpu().numpy()
    X_adv = out.reshape(shape)
    success, evaded = _judge(detector, model, out, X_adv, y, batch_size, device)
    return X_adv, success, evaded


def _judge(detector, model, X_model, X_adv, y, batch_size, device):
    """Misclassified by the real model; and not flagged by the real detector."""
    success = _predicted_classes(model, X_model, batch_size, device) != y
    evaded = success.copy()
    if success.any():
        evaded[success] = detector.predict(X_adv[success]) == 1
    return success, evaded


def _easiest_targets(model, X_model, y, k, batch_size, device):
    """The ``k`` most likely wrong classes of each input, most likely first."""
    logits = _logits(model, X_model, batch_size, device)
    logits[torch.arange(len(y)), torch.as_tensor(y)] = -math.inf
    k = min(k, logits.shape[1] - 1)  # the true class ranks last
    return logits.argsort(dim=1, descending=True)[:, :k].numpy()


def adaptive_attack_suite(
    detector,
    X,
    y=None,
    *,
    eps=0.3,
    methods=("orthogonal", "selective"),
    surrogates=(("straight_through", 10.0), ("straight_through", 20.0)),
    n_targets=8,
    target_methods=("orthogonal",),
    plain_pgd=True,
    n_restarts=1,
    random_starts=1,
    max_iter=200,
    square_queries=1000,
    eps_step=None,
    quantize=None,
    clip_values=(0.0, 1.0),
    batch_size=128,
    n_jobs=None,
    random_state=None,
    verbose=0,
):
    """The strongest adaptive attack in skadv: best-of over many strategies.

    Runs :func:`make_adaptive_adversarial` in this order: plain PGD on the
    classifier alone (``plain_pgd``: a detector that misses confident
    adversarial examples is not attacked better by aiming at it); every method of
    ``methods`` under the first surrogate of ``surrogates`` (untargeted);
    then, with the first surrogate and every method of ``target_methods``,
    targeted runs towards each input's 2nd, 3rd, ... most likely wrong class,
    ``n_targets`` of them (thresholds are per class, so some classes are
    easier to hide in; the untargeted runs already head for the most likely
    one); then ``random_starts`` runs of the first method from random points
    of the ball; then every method under each further surrogate (untargeted); last,
    the gradient-free square search on the exact scores
    (:func:`~skadv.attacks.make_square_adversarial`, ``square_queries``
    proposals per input), which needs no surrogate, twice: from the authors'
    random start, then from each remaining input's best misclassified
    iterate so far, which it refines patch by patch. Each
    strategy attacks only the inputs that no earlier one got past the
    detector, and keeps, per input, the best result judged on the real model
    and the real fitted detector: misclassified and unflagged first, then
    misclassified with the highest ``decision_function``.

    The order and the defaults come from the strategies' yield on MNIST: the
    first untargeted orthogonal run gets most inputs through; targeting the
    most likely wrong class again never found a new one, targeting the next
    ones did; a softer surrogate (softplus beta 5) added almost nothing.

    Parameters
    ----------
    detector : sklearn.pipeline.Pipeline
        A fitted view + detector pipeline (see
        :func:`make_adaptive_adversarial`).
    X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
        Benign inputs within ``clip_values``.
    y : array-like of shape (n_samples,), default=None
        True labels; None uses the model's predictions.
    eps : float, default=0.3
        L-infinity budget.
    methods : sequence of str, default=("orthogonal", "selective")
        Methods of :func:`make_adaptive_adversarial` for the untargeted runs
        (empty: none).
    surrogates : sequence of (str, float), default=(("straight_through", 10.0), \
            ("straight_through", 20.0))
        ``(surrogate, softplus_beta)`` pairs to run; the first also serves
        the targeted runs.
    n_targets : int, default=8
        Targeted runs towards this many of each input's wrong classes, from
        the 2nd most likely on (8: every wrong class but the most likely of
        a 10-class model; fewer when the model has fewer classes; 0: none).
    target_methods : sequence of str, default=("orthogonal",)
        Methods of :func:`make_adaptive_adversarial` for the targeted runs
        (empty: none).
    plain_pgd : bool, default=True
        Start with plain PGD (``method="pgd"``), so the suite gets through
        at least what an attacker who ignores the detector gets through.
    n_restarts : int, default=1
        Restarts of each strategy (see :func:`make_adaptive_adversarial`).
    random_starts : int, default=1
        Further runs of the first method under the first surrogate, each from
        a uniform random point of the ball (after the targeted runs; 0: none).
    max_iter : int, default=200
        Steps per run.
    square_queries : int, default=1000
        Proposals per input of each of the two final square searches
        (:func:`~skadv.attacks.make_square_adversarial`); 0: none.
    eps_step : float, default=None
        First step size; None: ``eps / 8``.
    quantize : int, default=None
        Keep iterates on a ``quantize``-bit grid (8 for 8-bit images).
    clip_values : tuple of two float, default=(0.0, 1.0)
        The model's input range.
    batch_size : int, default=128
        Inputs attacked at once. The suite runs on chunks of this many inputs,
        each with its own seed drawn from ``random_state``.
    n_jobs : int, default=None
        Chunks attacked in parallel through joblib (None: one at a time,
        unless a :func:`joblib.parallel_config` context says otherwise; -1:
        all cores). Inputs are attacked independently, so the results do not
        depend on ``n_jobs``; on CPU, two processes of one torch thread each
        are about twice as fast as one.
    random_state : int, RandomState instance or None, default=None
        Seeds the random restarts and the square search.
    verbose : int, default=0
        A progress bar over chunks and one line per strategy when positive.

    Returns
    -------
    result : sklearn.utils.Bunch
        ``X_adv`` (the best input found for each row), ``success``
        (misclassified by the model), ``evaded`` (misclassified and not
        flagged by the detector), and ``strategies``: one dict per strategy
        with its name, the inputs it attacked (0 when none was left to it),
        how many it newly got past the detector and its compute time in
        seconds (summed over chunks run in parallel).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.pipeline import make_pipeline
    >>> from skadv import ExplanationReconstructionDetector, ExplanationTransformer
    >>> from skadv.attacks import adaptive_attack_suite
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
    ...     torch.nn.Linear(16, 3))
    >>> X = np.random.default_rng(0).random((60, 1, 8, 8), dtype=np.float32)
    >>> detector = make_pipeline(ExplanationTransformer(model),
    ...     ExplanationReconstructionDetector(min_class_size=1, unseen_class="fallback",
    ...                                       random_state=0)).fit(X)
    >>> result = adaptive_attack_suite(detector, X[:4], eps=0.1, max_iter=5,
    ...                                square_queries=10)
    >>> [s["strategy"] for s in result.strategies]  # doctest: +NORMALIZE_WHITESPACE
    ['plain PGD', 'orthogonal, straight_through beta 10',
     'selective, straight_through beta 10',
     'orthogonal, straight_through beta 10, target 2',
     'orthogonal, straight_through beta 10, random start 1',
     'orthogonal, straight_through beta 20', 'selective, straight_through beta 20',
     'square search, 10 queries', 'square search from the best iterates, 10 queries']
    >>> result.evaded.shape
    (4,)
    """
    view, _ = _pipeline_parts(detector)
    for name, value in (("methods", methods), ("target_methods", target_methods)):
        if isinstance(value, str) or any(m not in METHODS for m in value):
            raise ValueError(
                f"{name} must be a sequence of {list(METHODS)} (empty: none); "
                f"got {value!r}."
            )
    if not surrogates:
        raise ValueError("surrogates must hold at least one (surrogate, beta) pair.")
    for name, value in (
        ("n_targets", n_targets),
        ("random_starts", random_starts),
        ("square_queries", square_queries),
    ):
        if (
            not isinstance(value, numbers.Integral)
            or isinstance(value, bool)
            or value < 0
        ):
            raise ValueError(f"{name} must be a non-negative integer; got {value!r}.")
    if not (plain_pgd or methods or (n_targets and target_methods) or square_queries):
        raise ValueError(
            "The suite has no strategy: give methods, n_targets with "
            "target_methods, plain_pgd=True or square_queries > 0."
        )
    X = check_array(X, allow_nd=True, dtype=np.float32)
    X_model = X.reshape(len(X), *view.input_shape_)
    model, device = view.module_, view.device_
    if y is None:
        y = _predicted_classes(model, X_model, batch_size, device)
    y = np.asarray(y).astype(np.int64)

    def untargeted(kind, beta):
        return [
            (
                f"{method}, {kind} beta {beta:g}",
                {"method": method, "surrogate": kind, "softplus_beta": beta},
            )
            for method in methods
        ]

    strategies = [("plain PGD", {"method": "pgd"})] if plain_pgd else []
    strategies += untargeted(*surrogates[0])
    targets = None
    if n_targets and target_methods:
        # Wrong classes by likelihood; the first is what untargeted runs seek.
        targets = _easiest_targets(model, X_model, y, n_targets + 1, batch_size, device)
        kind, beta = surrogates[0]
        strategies += [
            (
                f"{method}, {kind} beta {beta:g}, target {k + 1}",
                {
                    "method": method,
                    "surrogate": kind,
                    "softplus_beta": beta,
                    "target": k,
                },
            )
            for k in range(1, targets.shape[1])
            for method in target_methods
        ]
    if methods and random_starts:
        kind, beta = surrogates[0]
        strategies += [
            (
                f"{methods[0]}, {kind} beta {beta:g}, random start {r + 1}",
                {
                    "method": methods[0],
                    "surrogate": kind,
                    "softplus_beta": beta,
                    "random_start": True,
                    "start": r,  # another seed for each start
                },
            )
            for r in range(random_starts)
        ]
    for kind, beta in surrogates[1:]:
        strategies += untargeted(kind, beta)
    if square_queries:
        strategies.append(
            (f"square search, {square_queries} queries", {"square": square_queries})
        )
        strategies.append(
            (
                f"square search from the best iterates, {square_queries} queries",
                {"square": square_queries, "from_best": True},
            )
        )
    # Inputs are attacked independently of each other, so the suite runs on
    # chunks of ``batch_size`` inputs, each with its own seed drawn from
    # ``random_state``: results do not depend on ``n_jobs``.
    chunks = [
        np.arange(i, min(i + batch_size, len(X))) for i in range(0, len(X), batch_size)
    ]
    rng = check_random_state(random_state)
    seeds = rng.randint(np.iinfo(np.int32).max, size=len(chunks))
    options = {
        "eps": eps,
        "max_iter": max_iter,
        "eps_step": eps_step,
        "n_restarts": n_restarts,
        "quantize": quantize,
        "clip_values": clip_values,
        "batch_size": batch_size,
    }
    jobs = (
        delayed(_suite_chunk)(
            detector,
            X[rows],
            y[rows],
            None if targets is None else targets[rows],
            strategies,
            options,
            int(seed),
        )
        for rows, seed in zip(chunks, seeds, strict=True)
    )
    parts = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
    if verbose:
        from tqdm.auto import tqdm

        parts = tqdm(parts, total=len(chunks), desc="adaptive suite", unit="chunk")
    parts = list(parts)
    X_best = np.concatenate([part[0] for part in parts])
    success = np.concatenate([part[1] for part in parts])
    evaded = np.concatenate([part[2] for part in parts])
    log = []
    for name, _ in strategies:
        runs = [run for part in parts for run in part[3] if run["strategy"] == name]
        log.append(
            {
                "strategy": name,
                "n_attacked": sum(run["n_attacked"] for run in runs),
                "newly_evaded": sum(run["newly_evaded"] for run in runs),
                # Summed over chunks: compute time, not wall time.
                "seconds": sum(run["seconds"] for run in runs),
            }
        )
        if verbose:
            print(
                f"  {name:<50} attacked {log[-1]['n_attacked']:>5}  newly evaded "
                f"{log[-1]['newly_evaded']:>5}  ({log[-1]['seconds']:.1f} s)",
                flush=True,
            )
    return Bunch(X_adv=X_best, success=success, evaded=evaded, strategies=log)


def _suite_chunk(detector, X, y, targets, strategies, options, seed):
    """The suite's strategies in turn on one chunk of inputs (see the caller)."""
    X_best = X.copy()
    success = np.zeros(len(X), dtype=bool)
    evaded = np.zeros(len(X), dtype=bool)
    decision = np.full(len(X), -np.inf)
    log = []
    for name, params in strategies:
        params = dict(params)
        k = params.pop("target", None)
        from_best = params.pop("from_best", False)
        offset = params.pop("start", 0)
        # The refining search starts from the misclassified best iterates.
        rows = np.flatnonzero(~evaded & success if from_best else ~evaded)
        if rows.size == 0:
            log.append(
                {"strategy": name, "n_attacked": 0, "newly_evaded": 0, "seconds": 0.0}
            )
            continue
        start = time.perf_counter()
        if "square" in params:
            from skadv.attacks._square import make_square_adversarial

            X_adv, hit, slipped = make_square_adversarial(
                detector,
                X[rows],
                y[rows],
                eps=options["eps"],
                max_iter=params["square"],
                n_restarts=options["n_restarts"],
                X_init=X_best[rows] if from_best else None,
                quantize=options["quantize"],
                clip_values=options["clip_values"],
                batch_size=options["batch_size"],
                random_state=seed,
            )
        else:
            X_adv, hit, slipped = make_adaptive_adversarial(
                detector,
                X[rows],
                y[rows],
                target=None if k is None else targets[rows, k],
                random_state=seed + offset,
                **options,
                **params,
            )
        new_decision = np.full(rows.size, -np.inf)
        if hit.any():
            new_decision[hit] = detector.decision_function(X_adv[hit])
        better = slipped | (
            hit & ~success[rows] | (hit & (new_decision > decision[rows]))
        )
        take = rows[better]
        X_best[take] = X_adv[better]
        success[take] = hit[better]
        evaded[take] = slipped[better]
        decision[take] = new_decision[better]
        log.append(
            {
                "strategy": name,
                "n_attacked": int(rows.size),
                "newly_evaded": int(slipped.sum()),
                "seconds": time.perf_counter() - start,
            }
        )
    return X_best, success, evaded, log
