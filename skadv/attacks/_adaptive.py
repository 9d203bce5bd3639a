"""Detector-aware (adaptive) attacks: PGD through the saliency map.

No attack library ships an attack on explanation-based detectors, so this one
is written here: projected gradient ascent on the classifier's loss minus a
weighted detector score, where the score is differentiated through the
saliency map (second-order gradients of the classifier), its normalisation,
and the autoencoder of the class the input is currently classified as.
"""

import copy
import numbers

import numpy as np
import torch
from sklearn.utils.validation import check_array, check_is_fitted

from skadv._detector import ExplanationReconstructionDetector
from skadv._explain import ExplanationTransformer
from skadv._torch_utils import eval_mode, seed_from_random_state, torch_seed


def _softplus_surrogate(module, beta):
    """A copy of ``module`` with every ``nn.ReLU`` replaced by a steep softplus.

    The saliency map of a ReLU network is piecewise constant in the input, so
    its gradient is zero almost everywhere; a softplus of large ``beta`` is
    close to the ReLU but has useful second derivatives (Dombrowski et al.,
    "Explanations can be manipulated and geometry is to blame", 2019).
    """
    surrogate = copy.deepcopy(module)
    for parent in surrogate.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.ReLU):
                setattr(parent, name, torch.nn.Softplus(beta=beta))
    for p in surrogate.parameters():
        p.requires_grad_(False)
    return surrogate.eval()


def _split_pipeline(detector):
    steps = getattr(detector, "steps", None)
    if (
        steps is None
        or len(steps) != 2
        or not isinstance(steps[0][1], ExplanationTransformer)
        or not isinstance(steps[1][1], ExplanationReconstructionDetector)
    ):
        raise TypeError(
            "detector must be a fitted Pipeline of an ExplanationTransformer and an "
            f"ExplanationReconstructionDetector; got {type(detector).__name__}."
        )
    transformer, reconstruction = steps[0][1], steps[1][1]
    check_is_fitted(transformer)
    check_is_fitted(reconstruction)
    if transformer.method not in ("saliency", "input_x_gradient"):
        raise ValueError(
            "the adaptive attack differentiates through 'saliency' and "
            f"'input_x_gradient' maps; the detector uses method={transformer.method!r}."
        )
    if reconstruction.class_column not in (0, None):
        raise ValueError(
            "the adaptive attack expects the class in column 0 (as "
            "ExplanationTransformer writes it) or class_column=None."
        )
    return transformer, reconstruction


def _differentiable_score(x, surrogate, transformer, reconstruction, nets):
    """``-decision_function`` of ``x`` (higher = more adversarial), differentiable."""
    logits = surrogate(x)
    predicted = logits.argmax(dim=1)
    chosen = logits.gather(1, predicted[:, None]).sum()
    (grad,) = torch.autograd.grad(chosen, x, create_graph=True)
    attr = grad * x if transformer.method == "input_x_gradient" else grad
    if transformer.normalize is None:
        maps = attr.flatten(1)
    else:
        magnitude = attr.abs()
        if len(transformer.input_shape_) == 3:
            magnitude = magnitude.sum(dim=1)
        magnitude = magnitude.flatten(1)
        if transformer.normalize == "percentile":
            vmin = magnitude.amin(dim=1, keepdim=True)
            vmax = torch.quantile(magnitude, 0.99, dim=1, keepdim=True)
        else:
            vmin = torch.zeros_like(magnitude[:, :1])
            vmax = magnitude.amax(dim=1, keepdim=True)
        span = (vmax - vmin).clamp_min(1e-12)
        maps = ((magnitude - vmin) / span).clamp(0.0, 1.0)

    if reconstruction.class_column is None:
        route = torch.zeros_like(predicted)
    else:
        labels = torch.as_tensor(reconstruction.class_labels_, device=x.device)
        own = predicted[:, None] == labels[None, :]
        fallback = reconstruction.fallback_index_
        route = torch.where(
            own.any(dim=1),
            own.float().argmax(dim=1),
            torch.full_like(predicted, -1 if fallback is None else fallback),
        )
    offsets = torch.as_tensor(
        reconstruction.offset_, dtype=torch.float32, device=x.device
    )
    n_class = len(reconstruction.class_labels_)
    contrastive = reconstruction.contrast > 0 and n_class >= 2
    if contrastive:
        # Every class's error on every map, as the detector's contrast needs.
        every = torch.stack(
            [_error(maps, nets[k], reconstruction.metric) for k in range(n_class)],
            dim=1,
        )
    error = torch.zeros(len(x), device=x.device)
    for i in route.unique().tolist():
        if i < 0:  # a class the detector refuses to score: no gradient to follow
            continue
        rows = route == i
        if contrastive and i < n_class:
            error[rows] = every[rows, i]
        else:
            error[rows] = _error(maps[rows], nets[i], reconstruction.metric)
    if contrastive:
        own = (route >= 0) & (route < n_class)
        mask = torch.zeros_like(every, dtype=torch.bool)
        mask[own, route[own]] = True
        best_other = every.masked_fill(mask, float("inf")).amin(dim=1)
        tiny = 1e-12
        log_ratio = error.clamp_min(tiny).log() - best_other.clamp_min(tiny).log()
        error = error * torch.exp(reconstruction.contrast * log_ratio)
    known = route >= 0
    score = torch.zeros(len(x), device=x.device)
    # = -(score_samples - offset_) of the detector
    score[known] = error[known] + offsets[route[known]]
    return score


def _predicted_classes(model, X, batch_size, device):
    """The model's predicted class of each input, batch by batch."""
    with torch.no_grad():
        return np.concatenate(
            [
                model(torch.tensor(X[s : s + batch_size], device=device))
                .argmax(1)
                .cpu()
                .numpy()
                for s in range(0, len(X), batch_size)
            ]
        )


def _error(maps, net, metric):
    """The detector's reconstruction error of ``maps`` under ``net``, in torch."""
    diff = (maps - net(maps)).abs()
    if metric == "mse":
        return (diff**2).mean(dim=1)
    median = diff.median(dim=1, keepdim=True).values
    return (diff * (diff > median)).sum(dim=1) / diff.shape[1]


def make_adaptive_adversarial(
    detector,
    X,
    y=None,
    *,
    eps=0.3,
    eps_step=0.01,
    max_iter=40,
    detector_weight=10.0,
    confidence=1.0,
    stop_when_evading=False,
    random_start=False,
    softplus_beta=10.0,
    clip_values=(0.0, 1.0),
    batch_size=128,
    random_state=None,
):
    """White-box L-infinity PGD against the classifier *and* its detector.

    Each step descends ``max(m(x), -confidence) + detector_weight * s(x)``,
    where ``m`` is the classifier's margin (true logit minus the best other
    logit: negative once misclassified) and ``s`` is the detector's
    ``-decision_function`` (positive means flagged), differentiated through
    the saliency map with second-order gradients of a softplus surrogate of
    the classifier. With ``stop_when_evading=True`` an
    input stops moving as soon as it is both misclassified and below its
    class's threshold (the attack that targets the threshold).

    Parameters
    ----------
    detector : sklearn.pipeline.Pipeline
        A fitted pipeline of :class:`~skadv.ExplanationTransformer` (method
        ``"saliency"`` or ``"input_x_gradient"``) and
        :class:`~skadv.ExplanationReconstructionDetector`.

    X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
        Benign inputs within ``clip_values``.

    y : array-like of shape (n_samples,), default=None
        True labels; None uses the model's predictions on ``X``.

    eps : float, default=0.3
        L-infinity budget.

    eps_step : float, default=0.01
        Step size.

    max_iter : int, default=40
        Number of steps.

    detector_weight : float, default=10.0
        Weight of the detector term (reconstruction errors are small numbers:
        weights of 10 to 1000 matter); 0 gives plain PGD with the margin loss.

    confidence : float, default=1.0
        Margin by which an input must be misclassified before the classifier
        term stops pulling on it.

    stop_when_evading : bool, default=False
        Freeze each input once it is misclassified and not flagged.

    random_start : bool, default=False
        Start from a uniform random point of the eps-ball (PGD) instead of X.

    softplus_beta : float, default=10.0
        Steepness of the softplus that stands in for ReLU in the gradients.

    clip_values : tuple of two float, default=(0.0, 1.0)
        The model's input range.

    batch_size : int, default=128
        Inputs attacked at once.

    random_state : int, RandomState instance or None, default=None
        Seeds the random start.

    Returns
    -------
    X_adv : ndarray of the shape of X, float32
        The adversarial inputs.

    success : ndarray of shape (n_samples,), bool
        Misclassified by the model.

    evaded : ndarray of shape (n_samples,), bool
        Misclassified and not flagged by the detector (``predict`` is +1).

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
    transformer, reconstruction = _split_pipeline(detector)
    for name, value in (("eps", eps), ("eps_step", eps_step)):
        if not isinstance(value, numbers.Real) or not value > 0:
            raise ValueError(f"{name} must be a positive float; got {value!r}.")
    if not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}.")
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
    X_model = X.reshape(len(X), *transformer.input_shape_)

    model = transformer.module_
    device = transformer.device_
    surrogate = _softplus_surrogate(model, softplus_beta)
    nets = [net.module_.eval() for net in reconstruction.reconstructors_]
    out = np.empty_like(X_model)
    seed = seed_from_random_state(random_state)
    with eval_mode(model), torch_seed(seed):
        if y is None:
            y = _predicted_classes(model, X_model, batch_size, device)
        y = np.asarray(y).astype(np.int64)
        for start in range(0, len(X_model), batch_size):
            x0 = torch.tensor(X_model[start : start + batch_size], device=device)
            target = torch.tensor(y[start : start + batch_size], device=device)
            x = x0.clone()
            if random_start:
                x = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(low, high)
            frozen = torch.zeros(len(x), dtype=torch.bool, device=device)
            for _ in range(max_iter):
                x.requires_grad_(True)
                logits = model(x)
                # Carlini-Wagner margin, clamped at -confidence: once an input
                # is misclassified with that margin, only the detector term
                # moves it (Carlini & Wagner, "Adversarial examples are not
                # easily detected", 2017).
                true_logit = logits.gather(1, target[:, None]).squeeze(1)
                others = logits.scatter(1, target[:, None], float("-inf"))
                margin = true_logit - others.amax(dim=1)
                loss = margin.clamp_min(-confidence).sum()
                if detector_weight > 0:
                    score = _differentiable_score(
                        x, surrogate, transformer, reconstruction, nets
                    )
                    loss = loss + detector_weight * score.sum()
                (grad,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    if stop_when_evading:
                        misclassified = margin < 0
                        below = score <= 0 if detector_weight > 0 else True
                        frozen |= misclassified & below
                    step = -eps_step * grad.sign()
                    step[frozen] = 0
                    x = torch.minimum(torch.maximum(x + step, x0 - eps), x0 + eps)
                    x = x.clamp(low, high).detach()
            out[start : start + len(x)] = x.cpu().numpy()
    X_adv = out.reshape(shape)
    with eval_mode(model):
        predicted = _predicted_classes(model, out, batch_size, device)
    success = predicted != y
    evaded = success & (detector.predict(X_adv) == 1)
    return X_adv, success, evaded
