"""The detector's score in torch: one implementation for estimators and attacks.

Everything between an attribution and a detection score lives here: map
normalisation, the reconstruction error and the class-contrastive factor. The
estimators call these functions under ``torch.no_grad()`` on chunks of rows;
the adaptive attacks call them with gradients on the maps of the inputs they
perturb. An attack's score is therefore the deployed detector's
``-decision_function`` by construction, and a new detector feature is
attackable the day it lands.
"""

import numpy as np
import torch

METRICS = ("top_half_l1", "mse")

# Errors are non-negative; the contrast takes logs of them, so a zero error is
# held at this floor (and a zero error times any factor stays zero).
_TINY_ERROR = 1e-12


def _row_quantile_99(values):
    """``torch.quantile(values, 0.99, dim=1, keepdim=True)``, bit for bit.

    torch.quantile sorts every row; the 99th percentile needs only the top 1%
    of each, which one topk selects (ten times faster on 784-value maps).
    The interpolation is torch's own (linear, numpy.percentile's default):
    the rank ``0.99 * (n - 1)`` in the values' dtype, the two values around
    it, ``lerp`` between them; rows holding NaN give NaN, as quantile does.
    """
    n_values = values.shape[1]
    rank = torch.tensor(0.99, dtype=values.dtype, device=values.device) * (n_values - 1)
    below = int(rank.floor())
    # The n - below largest values, descending: the last is the value at
    # sorted position `below`, the one before it the value above.
    top = values.topk(n_values - below, dim=1, sorted=True).values
    value_below = top[:, -1:]
    value_above = top[:, -2:-1] if top.shape[1] > 1 else value_below
    quantile = torch.lerp(value_below, value_above, rank - below)
    has_nan = values.isnan().any(dim=1, keepdim=True)
    return torch.where(has_nan, torch.nan, quantile)


def normalize_attributions(attr, normalize, channels_first):
    """Turn raw attributions of shape (n, *input_shape) into flat maps.

    ``"percentile"`` is the normalisation of Ko & Lim's code (PAIR saliency's
    ``VisualizeImageGrayscale``): |a| summed over channels, minus the per-image
    minimum, divided by (99th percentile - minimum), clipped to [0, 1].
    ``"max"``: |a| summed over channels divided by its maximum. ``None``: the
    raw attribution, flattened. Differentiable wherever the map is.
    """
    attr = attr.float()  # quantile needs float32/64; half models give half grads
    if normalize is None:
        return attr.flatten(1)
    magnitude = attr.abs()
    if channels_first:
        magnitude = magnitude.sum(dim=1)
    magnitude = magnitude.flatten(1)
    if normalize == "percentile":
        vmin = magnitude.amin(dim=1, keepdim=True)
        vmax = _row_quantile_99(magnitude)
    else:  # "max"
        vmin = torch.zeros_like(magnitude[:, :1])
        vmax = magnitude.amax(dim=1, keepdim=True)
    span = vmax - vmin
    if normalize == "percentile":
        # A sparse map (over 99% of values at the minimum) has a zero
        # percentile span, where PAIR's code divides by zero: use the range.
        span = torch.where(span > 0, span, magnitude.amax(dim=1, keepdim=True) - vmin)
    # A constant map (e.g. a zero gradient) has no contrast to normalise: 0.
    safe_span = torch.where(span > 0, span, torch.ones_like(span))
    scaled = torch.where(span > 0, (magnitude - vmin) / safe_span, 0.0)
    return scaled.clamp(0.0, 1.0)


def reconstruction_error(maps, reconstructed, metric="top_half_l1"):
    """Per-row error of flat maps under their reconstruction, as float64.

    ``"top_half_l1"`` is Ko & Lim's score: the absolute error of each value,
    kept only where it is above the row's median error, summed and divided by
    the number of values. ``"mse"`` is the mean squared error. Torch's median
    is the lower middle value (numpy's the mean of the two middle ones), but no
    entry lies strictly between them, so "above the median" selects the same
    entries either way.
    """
    diff = (maps - reconstructed).abs()
    if metric == "mse":
        return diff.double().pow(2).mean(dim=1)
    n_values = diff.shape[1]
    # The values from the median up: torch's median sits at sorted position
    # (n - 1) // 2, so the k = n - (n - 1) // 2 largest hold it as their
    # smallest. One partial selection (topk) is cheaper than median() plus a
    # pass over the whole row, and the sum runs over half the values.
    top = diff.topk(n_values - (n_values - 1) // 2, dim=1, sorted=False).values
    median = top.amin(dim=1, keepdim=True)
    return torch.where(top > median, top, 0.0).double().sum(dim=1) / n_values


def _device_of(module):
    param = next(module.parameters(), None)
    return None if param is None else param.device


def is_conditional(modules):
    """Whether ``modules`` is one class-conditional autoencoder, not a list."""
    return isinstance(modules, torch.nn.Module)


def reconstruct(module, maps, classes=None):
    """``module``'s reconstruction of ``maps``, on ``maps``' device and dtype.

    ``classes`` (an int64 tensor, one index per row) is the second input of a
    class-conditional module; None for a per-class one. Raises a ValueError
    when the reconstruction is not finite: the maps are far from anything the
    autoencoder was trained on, or its training diverged.
    """
    device = _device_of(module)
    inputs = maps if device is None else maps.to(device)
    if classes is None:
        out = module(inputs)
    else:
        out = module(inputs, classes if device is None else classes.to(device))
    out = out.to(device=maps.device, dtype=maps.dtype)
    # A finite sum means finite values; only when it is not (NaN, inf, or an
    # overflow of huge finite values) is every value checked.
    if not torch.isfinite(out.sum()) and not torch.isfinite(out).all():
        largest = float(maps.detach().abs().max()) if maps.numel() else 0.0
        if largest > 1e6:
            raise ValueError(
                "An autoencoder returned non-finite reconstructions for maps in X "
                f"with values as large as {largest:.3g}: X is far outside the maps "
                "the detector was fitted on."
            )
        raise ValueError(
            "An autoencoder returned non-finite reconstructions (NaN or inf): its "
            "training diverged. Lower the reconstructor's lr or check its module."
        )
    return out


def reconstruct_under(modules, maps, index):
    """Every row of ``maps`` reconstructed by autoencoder ``index``."""
    if is_conditional(modules):
        classes = torch.full((maps.shape[0],), index, device=maps.device)
        return reconstruct(modules, maps, classes)
    return reconstruct(modules[index], maps)


def reconstruct_routed(modules, maps, route):
    """Each row of ``maps`` reconstructed by its own autoencoder ``route``.

    ``modules`` is a list of autoencoders, ``route`` indexing it, or one
    class-conditional autoencoder, ``route`` then its class input: all rows
    go through it in one pass.
    """
    if is_conditional(modules):
        return reconstruct(modules, maps, route)
    out = torch.empty_like(maps)
    for i in route.unique().tolist():
        rows = route == i
        out = out.index_put((rows,), reconstruct(modules[i], maps[rows]))
    return out


def reconstruction_scores(
    maps, route, modules, *, metric, contrast=0.0, n_class=0, comparable=None
):
    """Each row's error under its autoencoder, times the class-contrastive factor.

    Parameters
    ----------
    maps : torch.Tensor of shape (n_samples, n_features)
        Flat maps.
    route : torch.Tensor of shape (n_samples,), int64
        Index into ``modules`` of each row's autoencoder.
    modules : list of torch.nn.Module or torch.nn.Module
        The autoencoders: the ``n_class`` per-class ones first, then any shared
        (fallback) one; or one class-conditional autoencoder, whose class
        input ``route`` then is (the same indices: classes, then the shared
        slot).
    metric : {"top_half_l1", "mse"}
        See :func:`reconstruction_error`.
    contrast : float, default=0.0
        A row routed to class ``c`` scores ``e_c * (e_c / min_{k != c} e_k)
        ** contrast``; rows of the shared autoencoder compare with every class.
    n_class : int, default=0
        Number of per-class autoencoders at the head of ``modules``.
    comparable : torch.Tensor of shape (n_class,), bool, default=None
        Which per-class autoencoders may enter the contrast (e.g. not those
        that have not been trained yet); None: all. A row with no comparable
        other class keeps its plain error.

    Returns
    -------
    scores : torch.Tensor of shape (n_samples,), float64
        Higher means more adversarial; ``-score_samples`` of the detector.
    """
    if maps.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64, device=maps.device)
    if contrast == 0 or n_class < 2:
        return reconstruction_error(
            maps, reconstruct_routed(modules, maps, route), metric
        )
    # Every class's autoencoder on every row: the contrast needs them all (one
    # pass of the conditional autoencoder per class).
    every = torch.stack(
        [
            reconstruction_error(maps, reconstruct_under(modules, maps, k), metric)
            for k in range(n_class)
        ],
        dim=1,
    )
    own_class = route < n_class
    clamped = route.clamp(max=n_class - 1)
    scores = every.gather(1, clamped[:, None]).squeeze(1)
    if not own_class.all():  # rows of the shared autoencoder
        shared = ~own_class
        rows = maps[shared]
        index = int(route[shared][0])
        error = reconstruction_error(
            rows, reconstruct_under(modules, rows, index), metric
        )
        scores = scores.index_put((shared,), error)
    mask = torch.nn.functional.one_hot(clamped, n_class).bool() & own_class[:, None]
    if comparable is not None:
        mask = mask | ~comparable.to(mask.device)[None, :]
    best_other = every.masked_fill(mask, float("inf")).amin(dim=1)
    log_ratio = (
        scores.clamp_min(_TINY_ERROR).log() - best_other.clamp_min(_TINY_ERROR).log()
    )
    log_ratio = torch.where(torch.isfinite(best_other), log_ratio, 0.0)
    return scores * torch.exp((contrast * log_ratio).clamp(-700.0, 700.0))


def route_to_tensor(route, like):
    """``route`` (numpy indices) as an int64 tensor on ``like``'s device."""
    return torch.as_tensor(np.asarray(route, dtype=np.int64), device=like.device)
