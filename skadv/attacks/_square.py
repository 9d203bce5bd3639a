"""A score-based (gradient-free) attack on a classifier and its detector together.

The Square Attack of Andriushchenko, Croce, Flammarion & Hein (ECCV 2020)
needs no gradient: it proposes random square patches at the corners of the
L-infinity ball and keeps those that improve the objective. Against a detector
that is attacked through a surrogate gradient (the binarising squeezer of
feature squeezing, a saliency map's ReLU masks), it tests whether the
surrogate misled the gradient attacks.

ART ships a Square Attack, but it cannot serve here: its success criterion
sees only the classifier's outputs (not whether the detector flags the
input), it compares one scalar loss where this attack ranks "misclassified"
above "less flagged", it draws from numpy's global generator, and it cannot
keep iterates on an 8-bit grid. The search below is written for this reason;
its proposal schedule follows the authors' reference code. The detector is
scored by its own torch computation (as the gradient attacks do, without
gradients), and success is judged on the real model and the real detector.
"""

import math

import numpy as np
import torch
from sklearn.utils.validation import check_array

from skadv._torch_utils import eval_mode, seed_from_random_state
from skadv.attacks._adaptive import (
    _check_positive,
    _Grid,
    _judge,
    _pipeline_parts,
    _predicted_classes,
)


def _square_fraction(p_init, it, max_iter):
    """Share of the pixels a square covers at step ``it`` (the authors' schedule).

    The reference code halves ``p`` at fixed points of a 10,000-query run;
    runs of other lengths are rescaled to it.
    """
    it = int(it / max_iter * 10000)
    halvings = sum(it > s for s in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2**halvings


def _decision_margin(detector, decide):
    """The detector's decision as a continuous function of the inputs."""
    margin = getattr(detector, "torch_decision_margin", None)
    if margin is not None:
        return lambda x, module: margin(x, module=module)
    return decide


def _levels(model, decision, x, y):
    """Each row's level (0 correct, 1 misclassified, 2 evaded) and its value."""
    with torch.no_grad():
        logits = model(x)
    true = logits.gather(1, y[:, None]).squeeze(1)
    rest = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    misclassified = rest > true
    value = (rest - true).double()
    if misclassified.any():
        # Explanation views differentiate the model: no torch.no_grad here.
        d = decision(x[misclassified], model).detach().double()
        value[misclassified] = d
        level = misclassified.to(torch.int64)
        level[misclassified] += (d >= 0).to(torch.int64)
    else:
        level = misclassified.to(torch.int64)
    return level, value


def _square_batch(x0, y, model, decision, options, generator, x_init=None):
    """The best input found for each row of a batch, and its level."""
    eps, max_iter = options["eps"], options["max_iter"]
    grid = _Grid(x0, eps, options["low"], options["high"], options["quantize"])
    n = len(x0)
    image = x0.reshape(n, *options["image_shape"])
    c, h, w = image.shape[1:]
    dev = x0.device
    best = x0.clone()
    best_level = torch.full((n,), -1, dtype=torch.int64, device=dev)
    best_value = torch.full((n,), -math.inf, dtype=torch.float64, device=dev)
    rows_h = torch.arange(h, device=dev)[None, :, None]
    rows_w = torch.arange(w, device=dev)[None, None, :]

    def draw(high, size):
        return torch.randint(0, high, size, generator=generator).to(dev)

    for restart in range(options["n_restarts"]):
        skip = best_level >= 2  # evaded in an earlier run
        if skip.all():
            break
        # Start: the given points, or (the authors' start) vertical stripes of
        # +-eps, one sign per column and channel.
        signs = draw(2, (n, c, 1, w)) * 2 - 1
        delta = (signs * eps).to(x0.dtype).expand(n, c, h, w).clone()
        if restart == 0 and x_init is not None:
            delta = (x_init - x0).reshape(n, c, h, w)
        x = grid.project(x0 + delta.reshape(x0.shape))
        level, value = _levels(model, decision, x, y)
        delta = (x - x0).reshape(n, c, h, w)
        for it in range(max_iter):
            pending = torch.nonzero((level < 2) & ~skip).squeeze(1)
            if pending.numel() == 0:
                break
            fraction = _square_fraction(options["p_init"], it, max_iter)
            side = round(math.sqrt(fraction * h * w))
            side_h, side_w = min(max(side, 1), h), min(max(side, 1), w)
            top = draw(h - side_h + 1, (n,))[:, None, None]
            left = draw(w - side_w + 1, (n,))[:, None, None]
            inside = (
                (rows_h >= top)
                & (rows_h < top + side_h)
                & (rows_w >= left)
                & (rows_w < left + side_w)
            )[:, None]
            patch = ((draw(2, (n, c, 1, 1)) * 2 - 1) * eps).to(x0.dtype)
            proposal = torch.where(inside, patch, delta)
            candidate = grid.project(x0 + proposal.reshape(x0.shape))
            new_level, new_value = _levels(
                model, decision, candidate[pending], y[pending]
            )
            old_level, old_value = level[pending], value[pending]
            better = (new_level > old_level) | (
                (new_level == old_level) & (new_value > old_value)
            )
            take = pending[better]
            x[take] = candidate[take]
            delta[take] = (candidate[take] - x0[take]).reshape(-1, c, h, w)
            level[take], value[take] = new_level[better], new_value[better]
        improved = ~skip & (
            (level > best_level) | ((level == best_level) & (value > best_value))
        )
        best[improved] = x[improved]
        best_level[improved] = level[improved]
        best_value[improved] = value[improved]
    return best, best_level


def make_square_adversarial(
    detector,
    X,
    y=None,
    *,
    eps=0.3,
    max_iter=1000,
    p_init=0.05,
    n_restarts=1,
    X_init=None,
    quantize=None,
    clip_values=(0.0, 1.0),
    batch_size=128,
    random_state=None,
    verbose=0,
):
    """Gradient-free L-infinity attack on a classifier and its detector together.

    The Square Attack (Andriushchenko et al., ECCV 2020) made detector-aware:
    each step proposes, for every input, a random square patch set to ``+eps``
    or ``-eps`` per channel and keeps it when the input gets further: from
    correctly classified (ranked by the model's margin) to misclassified
    (ranked by the detector's decision) to misclassified and not flagged,
    where the input stops. It reads only the model's logits and the
    detector's decision, never a gradient, so a detector whose score a
    gradient attack must cross through a surrogate (a binarising squeezer,
    the ReLU masks of a saliency map) is attacked on its exact forward
    values. An :class:`~skadv.EnsembleDetector` is ranked by its
    :meth:`~skadv.EnsembleDetector.torch_decision_margin`, which keeps
    moving where its conformal p-values are flat.

    Parameters
    ----------
    detector : Pipeline, FeatureSqueezingDetector or EnsembleDetector
        A fitted detector that :func:`make_adaptive_adversarial` attacks.
    X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
        Benign inputs within ``clip_values``. Flat inputs are searched with
        squares over the model's input shape when it is an image, else with
        runs of consecutive features.
    y : array-like of shape (n_samples,), default=None
        True labels; None uses the model's predictions on ``X``.
    eps : float, default=0.3
        L-infinity budget.
    max_iter : int, default=1000
        Proposals per input and restart (one model and detector evaluation
        each).
    p_init : float in (0, 1], default=0.05
        Share of the pixels the first squares cover, halved along the
        authors' schedule (0.05: their choice for MNIST).
    n_restarts : int, default=1
        Runs per input from fresh random starts; inputs that evaded are not
        run again.
    X_init : array-like of the shape of X, default=None
        Where the first run starts (projected onto the ball around ``X``),
        e.g. a gradient attack's best iterates, which the search then
        refines patch by patch; None: the authors' start, vertical stripes
        of ``+-eps``. Later restarts start from stripes.
    quantize : int, default=None
        Keep every proposal on the grid of ``quantize``-bit images.
    clip_values : tuple of two float, default=(0.0, 1.0)
        The model's input range.
    batch_size : int, default=128
        Inputs attacked at once.
    random_state : int, RandomState instance or None, default=None
        Seeds the proposals; torch's global generator is left untouched.
    verbose : int, default=0
        Progress bar over batches when positive.

    Returns
    -------
    X_adv : ndarray of the shape of X, float32
        The best input found for each row.
    success : ndarray of shape (n_samples,), bool
        Misclassified by the real model.
    evaded : ndarray of shape (n_samples,), bool
        Misclassified and not flagged by the real fitted detector.

    See Also
    --------
    make_adaptive_adversarial : Gradient attacks through the same scores.
    adaptive_attack_suite : Best-of over every strategy, this one included.

    References
    ----------
    .. [1] M. Andriushchenko, F. Croce, N. Flammarion, M. Hein, "Square Attack:
       a query-efficient black-box adversarial attack via random search",
       ECCV 2020.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skadv import FeatureSqueezingDetector
    >>> from skadv.attacks import make_square_adversarial
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
    ...     torch.nn.Linear(16, 3))
    >>> X = np.random.default_rng(0).random((60, 1, 8, 8), dtype=np.float32)
    >>> detector = FeatureSqueezingDetector(model, median_size=None).fit(X)
    >>> X_adv, success, evaded = make_square_adversarial(
    ...     detector, X[:4], eps=0.1, max_iter=20, random_state=0)
    >>> X_adv.shape, bool(np.abs(X_adv - X[:4]).max() <= 0.1 + 1e-6)
    ((4, 1, 8, 8), True)
    """
    view, decide = _pipeline_parts(detector)
    _check_positive("eps", eps)
    _check_positive("max_iter", max_iter, integer=True)
    _check_positive("n_restarts", n_restarts, integer=True)
    _check_positive("batch_size", batch_size, integer=True)
    _check_positive("p_init", p_init)
    if p_init > 1:
        raise ValueError(f"p_init must be in (0, 1]; got {p_init!r}.")
    if quantize is not None:
        _check_positive("quantize", quantize, integer=True)
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
    if X_init is not None:
        X_init = check_array(X_init, allow_nd=True, dtype=np.float32)
        if X_init.shape != shape:
            raise ValueError(
                f"X_init must have the shape of X, {shape}; got {X_init.shape}."
            )
        X_init = X_init.reshape(X_model.shape)
    model, device = view.module_, view.device_
    if y is None:
        y = _predicted_classes(model, X_model, batch_size, device)
    y = np.asarray(y).astype(np.int64)
    input_shape = tuple(view.input_shape_)
    image_shape = (
        input_shape
        if len(input_shape) == 3
        else (1, *input_shape)
        if len(input_shape) == 2
        else (1, 1, math.prod(input_shape))
    )
    options = {
        "eps": float(eps),
        "max_iter": int(max_iter),
        "p_init": float(p_init),
        "n_restarts": int(n_restarts),
        "low": low,
        "high": high,
        "quantize": quantize,
        "image_shape": image_shape,
    }
    decision = _decision_margin(detector, decide)
    seed = seed_from_random_state(random_state)
    generator = torch.Generator()
    generator.manual_seed(0 if seed is None else seed)
    if seed is None:
        generator.seed()
    out = np.empty_like(X_model)
    starts = range(0, len(X_model), batch_size)
    if verbose:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="square attack", unit="batch")
    with eval_mode(model):
        for start in starts:
            stop = start + batch_size
            x0 = torch.tensor(X_model[start:stop], device=device)
            y_batch = torch.tensor(y[start:stop], device=device)
            init = (
                None
                if X_init is None
                else torch.tensor(X_init[start:stop], device=device)
            )
            best, _ = _square_batch(
                x0, y_batch, model, decision, options, generator, init
            )
            out[start : start + len(x0)] = best.cpu().numpy()
    X_adv = out.reshape(shape)
    success, evaded = _judge(detector, model, out, X_adv, y, batch_size, device)
    return X_adv, success, evaded
