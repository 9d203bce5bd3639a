"""Plots of explanations and of per-class reconstruction errors.

matplotlib is imported inside the functions that draw, so that the rest of
skadv (and importing this module) works without it.
"""

import numbers

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from skadv._detector import ExplanationReconstructionDetector, check_detection_labels

# Okabe-Ito blue and vermillion: distinguishable with the common colour
# vision deficiencies, and the same pair everywhere in the docs.
BENIGN_COLOR = "#0072B2"
ADVERSARIAL_COLOR = "#D55E00"
THRESHOLD_COLOR = "#222222"


def _pyplot(caller):
    """Import matplotlib.pyplot, or explain how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f'{caller} needs matplotlib; install it with: pip install "skadv[plot]"'
        ) from exc
    return plt


def _image_shape(X, image_shape):
    """Return ``(images, (C, H, W))`` for inputs of ndim 2, 3 or 4."""
    n = X.shape[0]
    if X.ndim == 4:
        shape = X.shape[1:]
    elif X.ndim == 3:
        shape = (1, *X.shape[1:])
    elif X.ndim == 2:
        n_features = X.shape[1]
        if image_shape is not None:
            shape = tuple(int(s) for s in image_shape)
            if len(shape) == 2:
                shape = (1, *shape)
            if len(shape) != 3 or int(np.prod(shape)) != n_features:
                raise ValueError(
                    f"image_shape={tuple(image_shape)} does not fit inputs of "
                    f"{n_features} features; pass (C, H, W) or (H, W)."
                )
        else:
            side = int(round(np.sqrt(n_features)))
            if side * side != n_features:
                raise ValueError(
                    f"X is flat with {n_features} features, which is not a square "
                    "image; pass image_shape=(C, H, W) or (H, W), or X as "
                    "(n_samples, C, H, W)."
                )
            shape = (1, side, side)
    else:
        raise ValueError(
            "X must hold images as (n_samples, C, H, W), (n_samples, H, W) or flat "
            f"(n_samples, n_features); got an array of shape {X.shape}."
        )
    return X.reshape(n, *shape), tuple(int(s) for s in shape)


def _as_maps(maps, name, shape):
    """Reshape flat maps to (n, H, W); channels are summed as magnitudes."""
    c, h, w = shape
    width = maps.shape[1]
    if width == h * w:
        return maps.reshape(-1, h, w)
    if c > 1 and width == c * h * w:
        return np.abs(maps.reshape(-1, c, h, w)).sum(axis=1)
    raise ValueError(
        f"{name} has {width} values per row; expected {h * w} (a map of the "
        f"{h}x{w} input)."
    )


def _flat(array, name, n_rows):
    array = np.asarray(array, dtype=np.float64)
    if array.ndim < 2 or array.shape[0] != n_rows:
        raise ValueError(
            f"{name} must have one row per input ({n_rows} rows); got an array of "
            f"shape {array.shape}."
        )
    return array.reshape(n_rows, -1)


def plot_explanations(
    X,
    explanations,
    *,
    reconstructions=None,
    labels=None,
    n=5,
    image_shape=None,
    input_range=None,
    map_range=None,
    fig=None,
):
    """Show inputs, their explanation maps and, optionally, reconstructions.

    Each column is one input. Rows show the input, its explanation map and
    (when given) the detector's reconstruction of the map. With ``labels``,
    the first ``n`` benign (+1) inputs form a block of rows above the first
    ``n`` adversarial (-1) ones, so that passing benign digits followed by
    their adversarial versions puts each digit above its attacked copy.

    Parameters
    ----------
    X : array-like of shape (n_samples, C, H, W), (n_samples, H, W) or \
            (n_samples, n_features)
        The inputs. Flat inputs are reshaped with ``image_shape``, or to a
        square when it is None.

    explanations : array-like of shape (n_samples, n_map_features) or \
            (n_samples, 1 + n_map_features)
        Explanation maps of ``X``, e.g. the output of
        :meth:`ExplanationTransformer.transform
        <skadv.ExplanationTransformer.transform>`: its class column (the
        predicted class) is recognised from the width and shown above each
        input. Maps of ``C * H * W`` values are shown as their absolute values
        summed over channels.

    reconstructions : array-like of shape (n_samples, n_map_features), \
            default=None
        Reconstructed maps (without class column), shown in a third row.

    labels : array-like of shape (n_samples,), default=None
        +1 benign, -1 adversarial. ``None``: one block of the first ``n``
        inputs, with no benign/adversarial grouping.

    n : int, default=5
        Number of inputs shown per block (columns).

    image_shape : tuple of int, default=None
        Shape ``(C, H, W)`` or ``(H, W)`` of one input when ``X`` is flat.

    input_range : tuple of (float, float), default=None
        ``(vmin, vmax)`` of the inputs' colour scale, e.g. ``(0, 1)`` for
        pixel values in [0, 1]. ``None``: the range of the inputs shown.

    map_range : tuple of (float, float), default=None
        ``(vmin, vmax)`` of the colour scale shared by every explanation and
        reconstruction panel. ``None``: the range of the maps shown. Pass the
        same value to several figures to compare them on one scale.

    fig : matplotlib Figure or SubFigure, default=None
        Where to draw. ``None``: a new figure sized to the grid.

    Returns
    -------
    axes : ndarray of matplotlib Axes of shape (n_rows, n_columns)
        The panels; unused panels of a shorter block are switched off.

    See Also
    --------
    ReconstructionErrorDisplay : Per-class distributions of reconstruction
        errors.
    skadv.ExplanationTransformer : Computes the explanations.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from skadv.plotting import plot_explanations
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((6, 1, 8, 8))
    >>> maps = np.column_stack([rng.integers(0, 10, 6), rng.random((6, 64))])
    >>> axes = plot_explanations(
    ...     X, maps, labels=[1, 1, 1, -1, -1, -1], n=3, input_range=(0, 1)
    ... )
    >>> axes.shape  # (benign input, map, adversarial input, map) x 3 inputs
    (4, 3)
    >>> axes[1, 0].images[0].get_clim() == axes[3, 2].images[0].get_clim()
    True
    >>> plt.close("all")
    """
    plt = _pyplot("plot_explanations")
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}.")
    input_range = _check_range(input_range, "input_range")
    map_range = _check_range(map_range, "map_range")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim < 2:
        raise ValueError(
            "X must hold images as (n_samples, C, H, W), (n_samples, H, W) or flat "
            f"(n_samples, n_features); got an array of shape {X.shape}."
        )
    images, shape = _image_shape(X, image_shape)
    c, h, w = shape
    n_samples = X.shape[0]

    explanations = _flat(explanations, "explanations", n_samples)
    classes = None
    if explanations.shape[1] in (h * w + 1, c * h * w + 1):
        classes, explanations = explanations[:, 0], explanations[:, 1:]
    maps = _as_maps(explanations, "explanations", shape)
    panels = {"input": images, "explanation": maps}
    if reconstructions is not None:
        reconstructions = _flat(reconstructions, "reconstructions", n_samples)
        if reconstructions.shape[1] != explanations.shape[1]:
            raise ValueError(
                f"reconstructions has {reconstructions.shape[1]} values per row but "
                f"the explanation maps have {explanations.shape[1]}."
            )
        panels["reconstruction"] = _as_maps(reconstructions, "reconstructions", shape)

    if labels is None:
        blocks = [(None, np.arange(n_samples)[:n])]
    else:
        benign = check_detection_labels(labels, n_samples)
        blocks = [
            ("benign", np.flatnonzero(benign)[:n]),
            ("adversarial", np.flatnonzero(~benign)[:n]),
        ]
        blocks = [(name, rows) for name, rows in blocks if rows.size]

    kinds = list(panels)
    n_rows = len(blocks) * len(kinds)
    n_cols = max(rows.size for _, rows in blocks)
    if fig is None:
        fig = plt.figure(
            figsize=(1.15 * n_cols + 1.0, 1.2 * n_rows + 0.2), layout="constrained"
        )
    axes = fig.subplots(n_rows, n_cols, squeeze=False)

    # One colour scale for inputs, one for maps, so panels compare at a glance.
    if input_range is None:
        input_range = float(images.min()), float(images.max())
    if map_range is None:
        map_values = [panels[k] for k in kinds if k != "input"]
        map_range = (
            min(float(m.min()) for m in map_values),
            max(float(m.max()) for m in map_values),
        )
    for b, (block, rows) in enumerate(blocks):
        for k, kind in enumerate(kinds):
            row = b * len(kinds) + k
            for col in range(n_cols):
                ax = axes[row, col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col >= rows.size:
                    ax.set_axis_off()
                    continue
                i = rows[col]
                if kind == "input":
                    _show_input(ax, panels[kind][i], input_range)
                    if classes is not None:
                        ax.set_title(f"predicted {_label_text(classes[i])}", fontsize=8)
                else:
                    ax.imshow(
                        panels[kind][i],
                        cmap="magma",
                        vmin=map_range[0],
                        vmax=map_range[1],
                    )
                if col == 0:
                    text = kind if block is None else f"{block}\n{kind}"
                    color = {
                        "benign": BENIGN_COLOR,
                        "adversarial": ADVERSARIAL_COLOR,
                    }.get(block, "black")
                    ax.set_ylabel(text, fontsize=8, color=color)
    return axes


def _check_range(value, name):
    """``None`` or a ``(vmin, vmax)`` pair of finite floats with vmin < vmax."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
        ok = np.isfinite(low) and np.isfinite(high) and low < high
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"{name} must be None or a pair (vmin, vmax) of finite numbers with "
            f"vmin < vmax; got {value!r}."
        )
    return low, high


def _show_input(ax, image, value_range):
    vmin, vmax = value_range
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=vmin, vmax=vmax)
        return
    rgb = np.moveaxis(image, 0, -1)
    if rgb.shape[-1] not in (3, 4):
        rgb = np.abs(rgb).sum(axis=-1)
        ax.imshow(rgb, cmap="gray")
        return
    span = vmax - vmin if vmax > vmin else 1.0
    ax.imshow(np.clip((rgb - vmin) / span, 0, 1))


def _label_text(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _final_detector(detector, X):
    """Return the detector at the end of ``detector`` and ``X`` transformed for it."""
    if isinstance(detector, Pipeline):
        final = detector.steps[-1][1]
        Xt = detector[:-1].transform(X) if len(detector.steps) > 1 else X
    else:
        final, Xt = detector, X
    if not isinstance(final, ExplanationReconstructionDetector):
        raise TypeError(
            "detector must be a fitted ExplanationReconstructionDetector or a "
            f"Pipeline ending in one; got {type(final).__name__}."
        )
    check_is_fitted(final)
    return final, Xt


class ReconstructionErrorDisplay:
    """Per-class reconstruction errors of benign and adversarial inputs.

    For each class (the predicted class that routes an input to its
    autoencoder), box plots and points show the reconstruction errors of the
    benign inputs (left, blue) and of the adversarial ones (right, orange),
    with the class's threshold as a dashed line: inputs above it are flagged
    as adversarial. Thresholds are in error units, ``-offset_`` of
    :class:`~skadv.ExplanationReconstructionDetector`.

    It is recommended to create one with :meth:`from_estimator` or
    :meth:`from_predictions`. All parameters are stored as attributes.

    Parameters
    ----------
    errors : ndarray of shape (n_samples,)
        Reconstruction errors, higher meaning more adversarial (the
        detector's ``reconstruction_error``).

    y : ndarray of shape (n_samples,)
        +1 benign, -1 adversarial.

    classes : ndarray of shape (n_samples,), default=None
        The class that routed each input to its autoencoder. ``None``: all
        inputs form one group.

    thresholds : dict, float or array-like of shape (n_classes,), default=None
        Threshold of each class on ``errors``: a dict ``{class: threshold}``,
        one float for all classes, or one value per class in sorted class
        order. ``None``: no threshold line.

    Attributes
    ----------
    class_labels_ : ndarray of shape (n_classes,)
        The classes along the x-axis, at positions 0, 1, ...

    threshold_lines_ : list of matplotlib Line2D or None
        Each class's threshold line, aligned with ``class_labels_`` (None
        where there is no threshold).

    benign_boxes_ : dict or None
        The artists of the benign box plots, as returned by
        :meth:`matplotlib.axes.Axes.boxplot`; None when no input is benign.

    adversarial_boxes_ : dict or None
        The same for the adversarial inputs.

    benign_points_ : matplotlib PathCollection or None
        The benign inputs' errors as points, when ``show_points`` is True.

    adversarial_points_ : matplotlib PathCollection or None
        The same for the adversarial inputs.

    ax_ : matplotlib Axes
        Axes with the plot.

    figure_ : matplotlib Figure
        Figure containing the plot.

    See Also
    --------
    plot_explanations : Inputs, explanation maps and reconstructions.
    skadv.ExplanationReconstructionDetector.reconstruction_error : The errors
        shown.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from skadv.plotting import ReconstructionErrorDisplay
    >>> rng = np.random.default_rng(0)
    >>> errors = np.r_[rng.gamma(2, 0.01, 60), rng.gamma(2, 0.03, 30)]
    >>> y = np.r_[np.ones(60), -np.ones(30)]
    >>> classes = rng.integers(0, 3, 90)
    >>> display = ReconstructionErrorDisplay.from_predictions(
    ...     errors, classes, y, thresholds={0: 0.05, 1: 0.06, 2: 0.04}
    ... )
    >>> display.class_labels_
    array([0, 1, 2])
    >>> [float(line.get_ydata()[0]) for line in display.threshold_lines_]
    [0.05, 0.06, 0.04]
    >>> plt.close("all")
    """

    def __init__(self, *, errors, y, classes=None, thresholds=None):
        self.errors = errors
        self.y = y
        self.classes = classes
        self.thresholds = thresholds

    @classmethod
    def from_estimator(
        cls, detector, X, y, *, ax=None, log_scale=False, show_points=True
    ):
        """Plot the reconstruction errors a fitted detector gives ``X``.

        Parameters
        ----------
        detector : ExplanationReconstructionDetector or Pipeline
            A fitted detector, or a fitted pipeline ending in one (e.g. an
            :class:`~skadv.ExplanationTransformer` followed by the detector).
            Its per-class thresholds ``-offset_`` are drawn; classes that
            share the fallback autoencoder show the fallback's threshold.

        X : array-like
            Inputs of ``detector``: images for a pipeline, rows of
            explanation maps for a bare detector.

        y : array-like of shape (n_samples,)
            +1 benign, -1 adversarial.

        ax : matplotlib Axes, default=None
            Axes to plot on. ``None``: a new figure and axes.

        log_scale : bool, default=False
            Use a logarithmic error axis.

        show_points : bool, default=True
            Draw every input's error as a point over the box plots.

        Returns
        -------
        display : ReconstructionErrorDisplay
            The plotted display.

        Examples
        --------
        >>> import matplotlib.pyplot as plt
        >>> import numpy as np
        >>> from skadv import ExplanationReconstructionDetector
        >>> from skadv.plotting import ReconstructionErrorDisplay
        >>> rng = np.random.default_rng(0)
        >>> maps = rng.random((100, 16), dtype=np.float32) * 0.2  # faint maps
        >>> X = np.column_stack([rng.integers(0, 2, 100), maps]).astype(np.float32)
        >>> detector = ExplanationReconstructionDetector(random_state=0).fit(X)
        >>> odd = np.column_stack([[0, 1], rng.random((2, 16))]).astype(np.float32)
        >>> display = ReconstructionErrorDisplay.from_estimator(
        ...     detector, np.vstack([X, odd]), np.r_[np.ones(100), -1, -1]
        ... )
        >>> thresholds = [line.get_ydata()[0] for line in display.threshold_lines_]
        >>> bool(np.allclose(thresholds, -detector.offset_))
        True
        >>> plt.close("all")
        """
        final, Xt = _final_detector(detector, X)
        errors = final.reconstruction_error(Xt)
        if final.class_column is None:
            classes, thresholds = None, float(-final.offset_[0])
        else:
            classes = np.asarray(Xt)[:, final.class_column].astype(np.int64)
            # offset_ is aligned with reconstructors_: the classes with an
            # autoencoder of their own first, the shared fallback (if any) last.
            own = {int(c): i for i, c in enumerate(final.class_labels_)}
            shared = getattr(final, "fallback_index_", len(final.offset_) - 1)
            thresholds = {
                int(c): float(-final.offset_[own.get(int(c), shared)])
                for c in np.unique(classes)
            }
        display = cls(errors=errors, y=y, classes=classes, thresholds=thresholds)
        return display.plot(ax=ax, log_scale=log_scale, show_points=show_points)

    @classmethod
    def from_predictions(
        cls,
        errors,
        classes,
        y,
        *,
        thresholds=None,
        ax=None,
        log_scale=False,
        show_points=True,
    ):
        """Plot given reconstruction errors per class.

        Parameters
        ----------
        errors : array-like of shape (n_samples,)
            Reconstruction errors, higher meaning more adversarial.

        classes : array-like of shape (n_samples,) or None
            The class routing each input (column 0 of
            :class:`~skadv.ExplanationTransformer` output). ``None``: one
            group.

        y : array-like of shape (n_samples,)
            +1 benign, -1 adversarial.

        thresholds : dict, float or array-like of shape (n_classes,), \
                default=None
            Threshold of each class on ``errors``: a dict ``{class:
            threshold}``, one float for all classes, or one value per class
            in sorted class order. ``None``: no threshold line.

        ax : matplotlib Axes, default=None
            Axes to plot on. ``None``: a new figure and axes.

        log_scale : bool, default=False
            Use a logarithmic error axis.

        show_points : bool, default=True
            Draw every input's error as a point over the box plots.

        Returns
        -------
        display : ReconstructionErrorDisplay
            The plotted display.

        Examples
        --------
        >>> import matplotlib.pyplot as plt
        >>> from skadv.plotting import ReconstructionErrorDisplay
        >>> display = ReconstructionErrorDisplay.from_predictions(
        ...     [0.1, 0.2, 0.9, 0.15, 0.8], [0, 0, 0, 1, 1], [1, 1, -1, 1, -1],
        ...     thresholds=0.5,
        ... )
        >>> len(display.threshold_lines_)
        2
        >>> plt.close("all")
        """
        display = cls(errors=errors, y=y, classes=classes, thresholds=thresholds)
        return display.plot(ax=ax, log_scale=log_scale, show_points=show_points)

    def _validated(self):
        """Checked arrays: errors, benign mask, class index, labels, thresholds."""
        errors = np.asarray(self.errors, dtype=np.float64)
        if errors.ndim != 1:
            raise ValueError(
                f"errors must be 1-D (one error per input); got shape {errors.shape}."
            )
        if not np.isfinite(errors).all():
            raise ValueError("errors must be finite; got NaN or infinite values.")
        n = errors.shape[0]
        y = np.asarray(self.y)
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(
                f"y must hold one +1/-1 label per error ({n}); got shape {y.shape}."
            )
        benign = check_detection_labels(y, n)
        if self.classes is None:
            labels, index = np.array(["all"]), np.zeros(n, dtype=np.intp)
        else:
            classes = np.asarray(self.classes)
            if classes.ndim != 1 or classes.shape[0] != n:
                raise ValueError(
                    f"classes must hold one class per error ({n}); got shape "
                    f"{classes.shape}."
                )
            if classes.dtype.kind == "f" and np.array_equal(classes, np.round(classes)):
                classes = classes.astype(np.int64)
            labels, index = np.unique(classes, return_inverse=True)
        return errors, benign, index, labels, self._thresholds_for(labels)

    def _thresholds_for(self, labels):
        """One threshold per entry of ``labels`` (NaN: none), or None."""
        thresholds = self.thresholds
        if thresholds is None:
            return None
        if isinstance(thresholds, dict):
            if self.classes is None:
                raise ValueError(
                    "thresholds is a dict but classes is None; pass one float."
                )
            keys = {_key(k): v for k, v in thresholds.items()}
            missing = [c for c in labels.tolist() if _key(c) not in keys]
            if missing:
                raise ValueError(f"thresholds has no value for classes {missing}.")
            values = [keys[_key(c)] for c in labels.tolist()]
        elif isinstance(thresholds, numbers.Real):
            values = [thresholds] * labels.size
        else:
            values = np.asarray(thresholds, dtype=np.float64).ravel().tolist()
            if len(values) != labels.size:
                raise ValueError(
                    f"thresholds has {len(values)} values but there are "
                    f"{labels.size} classes {labels.tolist()}; pass one threshold "
                    "per class in sorted class order, or a dict {class: threshold}."
                )
        return np.asarray(values, dtype=np.float64)

    def plot(self, ax=None, *, log_scale=False, show_points=True):
        """Plot the per-class distributions and thresholds.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to plot on. ``None``: a new figure and axes.

        log_scale : bool, default=False
            Use a logarithmic error axis.

        show_points : bool, default=True
            Draw every input's error as a point over the box plots.

        Returns
        -------
        display : ReconstructionErrorDisplay
            The display, with its artists stored as attributes.
        """
        plt = _pyplot("ReconstructionErrorDisplay")
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        errors, benign, index, labels, thresholds = self._validated()
        if ax is None:
            _, ax = plt.subplots(
                figsize=(max(6.0, 0.75 * labels.size + 2.5), 4.2),
                layout="constrained",
            )
        positions = np.arange(labels.size)
        # Points are jittered sideways to show how many inputs sit where; a
        # fixed generator keeps the picture reproducible.
        rng = np.random.default_rng(0)
        artists = {}
        for group, mask, color, shift in (
            ("benign", benign, BENIGN_COLOR, -0.2),
            ("adversarial", ~benign, ADVERSARIAL_COLOR, 0.2),
        ):
            present = [i for i in positions if np.any(mask & (index == i))]
            boxes = points = None
            if present:
                boxes = ax.boxplot(
                    [errors[mask & (index == i)] for i in present],
                    positions=positions[present] + shift,
                    widths=0.3,
                    showfliers=not show_points,
                    patch_artist=True,
                    manage_ticks=False,
                    boxprops={"facecolor": color, "alpha": 0.25, "edgecolor": color},
                    medianprops={"color": color, "linewidth": 1.5},
                    whiskerprops={"color": color},
                    capprops={"color": color},
                    flierprops={"markeredgecolor": color, "markersize": 3},
                )
            if show_points and mask.any():
                x = index[mask] + shift + rng.uniform(-0.09, 0.09, mask.sum())
                points = ax.scatter(
                    x, errors[mask], s=6, color=color, alpha=0.5, linewidths=0
                )
            artists[group] = (boxes, points)
        self.benign_boxes_, self.benign_points_ = artists["benign"]
        self.adversarial_boxes_, self.adversarial_points_ = artists["adversarial"]

        self.threshold_lines_ = [None] * labels.size
        if thresholds is not None:
            for i, t in enumerate(thresholds):
                if np.isfinite(t):
                    (self.threshold_lines_[i],) = ax.plot(
                        [i - 0.45, i + 0.45],
                        [t, t],
                        color=THRESHOLD_COLOR,
                        linestyle="--",
                        linewidth=1.2,
                    )

        ax.set_xticks(positions, [_label_text_any(c) for c in labels])
        ax.set_xlim(-0.6, labels.size - 0.4)
        if log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("class (predicted class of the input)")
        ax.set_ylabel("reconstruction error\n(higher = more adversarial)")
        handles = [
            Patch(
                facecolor=BENIGN_COLOR,
                alpha=0.5,
                label=f"benign (n={int(benign.sum())})",
            ),
            Patch(
                facecolor=ADVERSARIAL_COLOR,
                alpha=0.5,
                label=f"adversarial (n={int((~benign).sum())})",
            ),
        ]
        if thresholds is not None:
            handles.append(
                Line2D([], [], color=THRESHOLD_COLOR, linestyle="--", label="threshold")
            )
        # Outside the axes: the points fill the plotting area.
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
            frameon=False,
        )
        self.class_labels_ = labels
        self.ax_ = ax
        self.figure_ = ax.figure
        return self


def _key(value):
    """Dict key for a class: 3, 3.0 and np.int64(3) are the same class."""
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    return value


def _label_text_any(value):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return _label_text(value)
    return str(value)
