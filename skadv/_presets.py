"""Named detector configurations, each with the figures that justify it.

``PRESETS`` is the one registry: ``make_detector(model, preset=...)`` builds an
unfitted pipeline of an :class:`~skadv.ExplanationTransformer` and an
:class:`~skadv.ExplanationReconstructionDetector` from it, ``list_presets()``
shows it, and the reproduction study reads its settings. The numbers behind
the presets are in ``benchmarks/RESULTS.md`` (``skadv reproduce``,
``skadv demo``, ``benchmarks/bench_robustness.py``).
"""

from sklearn.pipeline import make_pipeline

from skadv._autoencoder import make_reconstructor
from skadv._detector import ExplanationReconstructionDetector
from skadv._ensemble import EnsembleDetector
from skadv._explain import ExplanationTransformer
from skadv._squeezing import FeatureSqueezingDetector
from skadv._views import RawInputTransformer

#: name -> settings. ``method`` and ``normalize`` go to the
#: ExplanationTransformer (``view="raw"``: a RawInputTransformer, with any
#: ``bit_depth`` instead); ``metric``, ``contrast`` and ``validation_fraction``
#: to the detector; ``hidden``, ``epochs``, ``batch_size`` and ``lr`` to its
#: MLP autoencoders (:func:`~skadv.make_reconstructor`). A preset with
#: ``detector="feature-squeezing"`` is a FeatureSqueezingDetector
#: (``bit_depth``, ``median_size``); one with ``members`` is an
#: EnsembleDetector of those presets (``combine``, ``weights``,
#: ``calibration_size``).
PRESETS = {
    "ko-lim-2021": {
        "description": "Ko & Lim (2021): saliency maps (percentile), one "
        "784-64-784 MLP autoencoder per predicted class, 10 epochs, top-half L1",
        "method": "saliency",
        "normalize": "percentile",
        "metric": "top_half_l1",
        "hidden": 64,
        "epochs": 10,
        "batch_size": 32,
        "lr": 1e-3,
        "contrast": 0.0,
        "validation_fraction": None,
    },
    "contrastive-h256": {
        "description": "saliency maps (percentile), one 784-256-784 MLP "
        "autoencoder per predicted class trained 30 epochs on 90% of the benign "
        "training maps, class-contrastive top-half L1 score (weight 0.5), "
        "thresholds from the other 10%",
        "method": "saliency",
        "normalize": "percentile",
        "metric": "top_half_l1",
        "hidden": 256,
        "epochs": 30,
        "batch_size": 32,
        "lr": 1e-3,
        "contrast": 0.5,
        "validation_fraction": 0.1,
    },
    "small-data": {
        "description": "input x gradient maps (percentile), one MLP autoencoder "
        "with 128 hidden units per predicted class trained 300 epochs on 80% of "
        "the benign training maps, top-half L1 score, thresholds from the other "
        "20%; for small data sets such as the 8x8 digits",
        "method": "input_x_gradient",
        "normalize": "percentile",
        "metric": "top_half_l1",
        "hidden": 128,
        "epochs": 300,
        "batch_size": 32,
        "lr": 1e-3,
        "contrast": 0.0,
        "validation_fraction": 0.2,
    },
    "binarized-pixels": {
        "description": "the input itself binarised at 0.5 (RawInputTransformer, "
        "bit_depth=1), one MLP autoencoder with 128 hidden units per predicted "
        "class trained 30 epochs on 90% of the benign training images, "
        "class-contrastive top-half L1 score (weight 0.5), thresholds from the "
        "other 10%; for black-and-white images such as MNIST",
        "view": "raw",
        "bit_depth": 1,
        "metric": "top_half_l1",
        "hidden": 128,
        "epochs": 30,
        "batch_size": 32,
        "lr": 1e-3,
        "contrast": 0.5,
        "validation_fraction": 0.1,
    },
    "raw-pixels": {
        "description": "the input itself (RawInputTransformer), one 64-unit MLP "
        "autoencoder per predicted class trained 300 epochs on 80% of the "
        "benign training images, top-half L1 score, thresholds from the other "
        "20% (MagNet-style); for small images such as the 8x8 digits",
        "view": "raw",
        "metric": "top_half_l1",
        "hidden": 64,
        "epochs": 300,
        "batch_size": 32,
        "lr": 1e-3,
        "contrast": 0.0,
        "validation_fraction": 0.2,
    },
    "feature-squeezing": {
        "description": "feature squeezing (Xu, Evans & Qi 2018): the largest L1 "
        "distance between the model's softmax on the input and on its binarised "
        "(bit depth 1) and 2x2 median-filtered copies; for black-and-white "
        "images such as MNIST",
        "detector": "feature-squeezing",
        "bit_depth": 1,
        "median_size": 2,
    },
    "multiview": {
        "description": "contrastive-h256 and binarized-pixels attacked as one: an "
        "EnsembleDetector that flags an input when either member's conformal "
        "p-value (on 10% of the benign training data held out from both) is "
        "below contamination / 2 (Bonferroni); for MNIST-like data",
        "members": ("contrastive-h256", "binarized-pixels"),
        "combine": "bonferroni",
        "calibration_size": 0.1,
    },
    "squeezing-contrastive": {
        "description": "feature-squeezing and contrastive-h256 attacked as one: "
        "an EnsembleDetector that flags an input when squeezing's conformal "
        "p-value (on 10% of the benign training data held out from both) is "
        "below 2/3 of contamination or contrastive-h256's below 1/3 (weighted "
        "Bonferroni); for black-and-white images such as MNIST",
        "members": ("feature-squeezing", "contrastive-h256"),
        "combine": "bonferroni",
        "weights": (2, 1),
        "calibration_size": 0.1,
    },
    "small-data-raw": {
        "description": "small-data and raw-pixels as one: an EnsembleDetector "
        "that flags an input when either member's conformal p-value (on 20% of "
        "the benign training data held out from both) is below contamination / "
        "2 (Bonferroni); for small data sets such as the 8x8 digits",
        "members": ("small-data", "raw-pixels"),
        "combine": "bonferroni",
        "calibration_size": 0.2,
    },
}


def list_presets():
    """The named detector configurations of :func:`make_detector`.

    Returns
    -------
    presets : dict of str to str
        Preset name -> one-line description, in the order of the registry.
        :func:`make_detector`'s docstring gives each one's measured figures.

    See Also
    --------
    make_detector : Builds the detector pipeline of a preset.

    Examples
    --------
    >>> from skadv import list_presets
    >>> presets = list_presets()
    >>> list(presets)  # doctest: +NORMALIZE_WHITESPACE
    ['ko-lim-2021', 'contrastive-h256', 'small-data', 'binarized-pixels',
     'raw-pixels', 'feature-squeezing', 'multiview', 'squeezing-contrastive',
     'small-data-raw']
    >>> print(presets["ko-lim-2021"])
    Ko & Lim (2021): saliency maps (percentile), one 784-64-784 MLP autoencoder per predicted class, 10 epochs, top-half L1
    >>> for name, description in presets.items():  # doctest: +SKIP
    ...     print(f"{name:<18} {description}")
    """  # noqa: E501
    return {name: settings["description"] for name, settings in PRESETS.items()}


def make_detector(
    model,
    *,
    preset="ko-lim-2021",
    contamination=0.05,
    input_shape=None,
    memory=None,
    n_jobs=None,
    device=None,
    random_state=None,
):
    """An unfitted detector pipeline with a named, benchmarked configuration.

    Which preset: ``"contrastive-h256"`` is the recommended one for MNIST-like
    data (28x28 images, thousands of training images per class);
    ``"small-data-raw"`` for small data sets and small images such as
    scikit-learn's 8x8 digits (it is what ``skadv demo`` uses), and
    ``"small-data"`` where explanations alone are wanted;
    ``"ko-lim-2021"`` (the default) reproduces the paper; on MNIST-like
    black-and-white images ``"feature-squeezing"`` is by far the hardest to
    get through for an attacker who knows the detector, ``"multiview"`` the
    hardest of the explanation presets, and ``"squeezing-contrastive"`` adds
    the explanation maps' detection of gradient attacks to squeezing. None
    is proven robust: the adaptive
    figures below (the share of attacked test inputs that end misclassified
    *and* unflagged, under
    :func:`skadv.attacks.adaptive_attack_suite`, 200 steps per run, against
    the threshold fixed at fit; ``benchmarks/bench_robustness.py``) belong
    next to any non-adaptive result.

    Presets, with their measured figures (mean per-class ROC AUC unless said
    otherwise; ``benchmarks/RESULTS.md``, ``benchmarks/results/*.json``):

    ``"ko-lim-2021"``
        The paper's detector: saliency maps with percentile normalisation,
        one 784-64-784 MLP autoencoder per predicted class (10 epochs, batch
        32, Adam 1e-3), top-half L1 score. MNIST (``skadv reproduce``): FGSM
        0.931-0.980, BIM 0.990-0.999, MIM 0.991-0.999 at eps 0.05-0.30 (the
        paper: 0.930-0.981, 0.972-0.996, 0.980-0.996). Adaptive suite
        (MNIST, 500 test images): 68% get through at eps 0.1 and 100% at 0.3
        (plain PGD: 10%, 9%). On 8x8 digits only 0.60-0.74.
    ``"contrastive-h256"``
        The best configuration we found on MNIST: the same maps, 256-unit
        autoencoders trained for 30 epochs, and a class-contrastive score
        (``contrast=0.5`` of :class:`ExplanationReconstructionDetector`) that
        also asks whether another class's autoencoder rebuilds the map
        better; 10% of the benign training maps are held out to set the
        thresholds (``validation_fraction=0.1``). MNIST: FGSM at eps 0.05
        0.979 (TPR 0.85 at 5% FPR, the paper's preset 0.59), 0.990-0.995 at
        larger eps, BIM and MIM 0.999-1.000: at least the paper's AUC for
        every attack and eps. Adaptive suite (500 test images): 61% get
        through at eps 0.1 and 100% at 0.3 (plain PGD: 2%, 1%). Fitting takes
        about 1.6x as long as the paper's preset on MNIST (the autoencoders train 7x
        longer, the maps cost the same); scoring runs every class's
        autoencoder on every map: about 1.5x the classifier's forward and
        backward pass on the CPU, against about 1.1x for the paper's preset
        (``benchmarks/bench_speed.py``).
    ``"small-data"``
        What the small-data study of ``skadv reproduce --dataset digits``
        found on 1.3k training digits: input x gradient maps (64-value
        saliency maps carry too little), one MLP autoencoder with 128 hidden
        units per predicted class trained for 300 epochs (the paper's 10
        epochs leave about 40 updates per class), and thresholds set on 20%
        of the benign training maps held out from the autoencoders
        (``validation_fraction=0.2``: autoencoders trained this long fit
        their own training maps, and in-sample thresholds would flag 30% of
        new benign digits). Digits: FGSM, BIM and MIM at eps 0.05-0.30
        0.93-0.97 (the paper's preset 0.60-0.74); pooled ROC AUC at FGSM and
        PGD eps 0.1 0.883 and 0.877. Adaptive suite (digits, the square
        search included): 42% get through at eps 0.1 and 100% at 0.3 (plain
        PGD: 24%, 47%).

    ``"binarized-pixels"``
        Not explanations but the input itself, binarised at 0.5
        (:class:`RawInputTransformer` with ``bit_depth=1``): one 128-unit MLP
        autoencoder per predicted class (30 epochs, class-contrastive score,
        thresholds on 10% held out). An L-infinity perturbation of a mostly
        black-and-white image changes only the pixels near 0.5, so an
        attacker must make the binarised image look like the class it
        claims. Weak against small perturbations that ignore it (they barely
        change the binarised image), hence the next preset. Digits: the
        adaptive suite (the square search included): 32% get through at eps
        0.1 and 95% at 0.3 (plain PGD: 23%, 36%), benign false positives
        3.1%.
    ``"raw-pixels"``
        MagNet-style: the input itself (:class:`RawInputTransformer`), one
        64-unit MLP autoencoder per predicted class (300 epochs, top-half L1,
        thresholds on 20% held out). On 64-pixel digits the raw image
        carries the perturbation plainly: FGSM and PGD at eps 0.1, pooled
        ROC AUC 0.971 and 0.968, TPR 0.88 and 0.87 at 5% FPR (``skadv
        reproduce --dataset digits``). Its thresholds come from about 25
        held-out digits per class, too few for a class's own quantile: the
        classes share one split-conformal threshold (benign false positives
        5.6% of the test digits, 2.8% on a second split). Adaptive suite
        (digits, the square search included): 28.0% get through at eps 0.1
        and 100% at 0.3 (plain PGD: 8.8%, 15.1%).
    ``"multiview"``
        ``"contrastive-h256"`` and ``"binarized-pixels"`` together, an
        :class:`EnsembleDetector` (Bonferroni: flagged when either member's
        conformal p-value, calibrated on 10% of the benign training data, is
        below ``contamination / 2``), attacked jointly by
        :func:`skadv.attacks.adaptive_attack_suite`. MNIST, every strategy
        of the suite (489 attacked test images): 46% get through at eps
        0.1 and 93% at 0.3 (plain PGD: 2.9%, 2.5%); benign false positives
        3.5% of the 10,000 test images. Fitting trains both members (about
        twice contrastive-h256's time).
    ``"feature-squeezing"``
        Not a view but Xu, Evans & Qi's prediction-consistency test
        (:class:`FeatureSqueezingDetector`, bit depth 1 and a 2x2 median
        filter): an attack tuned to exact pixel values is mostly squeezed out
        of the binarised copy, whose softmax then disagrees. Weak alone on
        attacks that move many pixels far (on MNIST, PGD and large-eps FGSM
        are better caught by the explanation presets) and useless on 8x8
        digits (16 grey levels: binarising them changes benign predictions);
        every strategy of the adaptive suite (MNIST, 500 test images,
        threshold fitted on 4,750 other test images) lets 4.3% get through
        at eps 0.1 and 46.6% at 0.3 (plain PGD: 0.2%, 0.0%), close to
        ``"squeezing-contrastive"`` (on another training of the classifier);
        benign false positives 5.5% of 4,750 further test images.
        Fit it on benign inputs the model was not trained on: fitted on
        MNIST's training images, which the model fits better, its threshold
        flagged 6.3% of the test images. Its rounding is attacked straight through; the
        gradient-free square search alone (1,000 queries on the exact
        scores) got 0.2% and 2.7% through; discrete searches aimed at the
        binarisation were not tried (see the security page).
    ``"squeezing-contrastive"``
        ``"feature-squeezing"`` and ``"contrastive-h256"`` attacked as one:
        an :class:`EnsembleDetector` with weighted Bonferroni (flagged when
        squeezing's conformal p-value, calibrated on 10% of the benign
        training data, is below ``2/3 * contamination`` or the explanation
        detector's below ``1/3 * contamination``): squeezing keeps most of
        the budget and the explanation maps catch the gradient attacks it
        misses. MNIST, every strategy of the adaptive suite (489 attacked
        test images): 5.9% get through at eps 0.1 and 49.1% at 0.3 (plain
        PGD: 0%, 0.2%); benign
        false positives 5.25% of the 10,000 test images, although
        squeezing's calibration images are ones the model was trained on.
        Attacks that ignore the detector (``skadv reproduce --full``, TPR at
        5% FPR on the 10,000 test images): at least contrastive-h256's on
        every attack and eps but FGSM at 0.3 (0.974 against 0.977),
        Carlini-Wagner 0.968 and DeepFool 0.998 (contrastive-h256 0.620 and
        0.750, squeezing alone 0.984 and 0.999), FGSM at eps 0.05 0.926
        (mean per-class ROC AUC 0.984). Fitting takes about contrastive-h256's
        time; scoring costs both members'. Useless on the 8x8 digits, as
        squeezing is.
    ``"small-data-raw"``
        ``"small-data"`` and ``"raw-pixels"`` together, an
        :class:`EnsembleDetector` (Bonferroni: flagged when either member's
        conformal p-value, calibrated on 20% of the benign training data, is
        below ``contamination / 2``); what ``skadv demo`` uses. Digits
        (``skadv reproduce --dataset digits``, the demo's split): FGSM and
        PGD at eps 0.1, pooled ROC AUC 0.958 and 0.953, TPR 0.78 and 0.76 at
        5% FPR, benign false positives 3.0%; on a second split and
        classifier (``--random-state 1``) 0.958, 0.959, 0.73, 0.73 and 5.4%.
        The raw-pixel member alone ranks better (0.971). Adaptive suite
        (digits, the square search included): 36.6% get through at eps 0.1
        and 100% at 0.3 (plain PGD: 16.8%, 25.2%), benign false positives
        3.0%.

    :func:`list_presets` lists them with one-line descriptions.

    Parameters
    ----------
    model : torch.nn.Module or skorch.NeuralNetClassifier
        The trained classifier to guard (frozen).
    preset : {"ko-lim-2021", "contrastive-h256", "small-data", \
            "binarized-pixels", "raw-pixels", "feature-squeezing", \
            "multiview", "squeezing-contrastive", "small-data-raw"}, \
            default="ko-lim-2021"
        The configuration.
    contamination : float, default=0.05
        Target false-positive rate on benign training data.
    input_shape : tuple of int, default=None
        Shape of one input when ``X`` is passed flat.
    memory : str or joblib.Memory, default=None
        Caches the fitted autoencoders (see
        :class:`ExplanationReconstructionDetector`).
    n_jobs : int, default=None
        Autoencoders trained in parallel.
    device : str, default=None
        Device of the explanations and the autoencoders.
    random_state : int, default=None
        Seeds the autoencoders.

    Returns
    -------
    detector : sklearn.pipeline.Pipeline, FeatureSqueezingDetector or \
            EnsembleDetector
        A view (``ExplanationTransformer`` or ``RawInputTransformer``), then
        the detector; a ``FeatureSqueezingDetector`` (it reads the inputs
        itself) for ``"feature-squeezing"``; an ``EnsembleDetector`` for
        ``"multiview"``, ``"squeezing-contrastive"`` and ``"small-data-raw"``.

    See Also
    --------
    list_presets : The preset names and their descriptions.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skadv import make_detector
    >>> _ = torch.manual_seed(0)  # a reproducible toy classifier
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    >>> X = np.random.default_rng(0).random((60, 1, 8, 8), dtype=np.float32)
    >>> detector = make_detector(model, preset="contrastive-h256", random_state=0)
    >>> detector.fit(X).predict(X[:4]).shape
    (4,)
    """
    try:
        p = PRESETS[preset]
    except (KeyError, TypeError):
        raise ValueError(
            f"preset must be one of {sorted(PRESETS)}; got {preset!r}."
        ) from None
    if "members" in p:
        members = [
            (
                name,
                make_detector(
                    model,
                    preset=name,
                    contamination=contamination,
                    input_shape=input_shape,
                    memory=memory,
                    device=device,
                    random_state=random_state,
                ),
            )
            for name in p["members"]
        ]
        return EnsembleDetector(
            members,
            combine=p["combine"],
            weights=p.get("weights"),
            contamination=contamination,
            calibration_size=p["calibration_size"],
            n_jobs=n_jobs,
            random_state=random_state,
        )
    if p.get("detector") == "feature-squeezing":
        return FeatureSqueezingDetector(
            model,
            bit_depth=p["bit_depth"],
            median_size=p["median_size"],
            contamination=contamination,
            input_shape=input_shape,
            device=device,
        )
    detector = ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(
            module__hidden=p["hidden"],
            max_epochs=p["epochs"],
            batch_size=p["batch_size"],
            lr=p["lr"],
        ),
        contamination=contamination,
        metric=p["metric"],
        contrast=p["contrast"],
        validation_fraction=p["validation_fraction"],
        memory=memory,
        n_jobs=n_jobs,
        device=device,
        random_state=random_state,
    )
    if p.get("view") == "raw":
        view = RawInputTransformer(
            model, input_shape=input_shape, bit_depth=p.get("bit_depth"), device=device
        )
    else:
        view = ExplanationTransformer(
            model,
            method=p["method"],
            normalize=p["normalize"],
            input_shape=input_shape,
            device=device,
        )
    return make_pipeline(view, detector)
