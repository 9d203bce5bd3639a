"""What the study runs: its modes, and every detector configuration it compares.

The configurations that are presets (the paper's, the best one on MNIST, the
small-data one on the digits) are read from :data:`skadv._presets.PRESETS`, the
registry behind :func:`skadv.make_detector`; every other configuration is the
paper's with named changes, so that each one differs from it by what its name
says.
"""

import dataclasses

from skadv._autoencoder import ConvAutoencoder, make_reconstructor
from skadv._explain import METHODS
from skadv._presets import PRESETS

# Settings of each mode; ``n_train`` / ``n_test`` / ``epochs`` override them.
MODES = {
    ("mnist", "quick"): dict(
        n_train=5000, n_test=400, n_cal=500, epochs=2, n_subset=400, n_method_train=2000
    ),
    ("mnist", "paper"): dict(
        n_train=None,
        n_test=None,
        n_cal=2000,
        epochs=10,
        n_subset=1000,
        n_method_train=6000,
    ),
    ("digits", "quick"): dict(
        n_train=None,
        n_test=None,
        n_cal=None,
        epochs=20,
        n_subset=None,
        n_method_train=None,
    ),
    ("digits", "paper"): dict(
        n_train=None,
        n_test=None,
        n_cal=None,
        epochs=20,
        n_subset=None,
        n_method_train=None,
    ),
}

# The preset the study compares with the paper's on MNIST, and the one it
# recommends for small data (the demo's detector).
BEST_PRESET = "contrastive-h256"
DIGITS_BEST = "small-data"


def run_settings(dataset, quick, full, n_train, n_test, epochs, random_state):
    """The settings of one run: the mode's, then the user's overrides."""
    if dataset not in ("mnist", "digits"):
        raise ValueError(f"dataset must be 'mnist' or 'digits'; got {dataset!r}.")
    if quick and full:
        raise ValueError("quick and full are exclusive.")
    mode = "quick" if quick else "paper"
    s = dict(MODES[dataset, mode])
    overrides = {"n_train": n_train, "n_test": n_test, "epochs": epochs}
    custom = {k: v for k, v in overrides.items() if v is not None}
    s.update(custom)
    if dataset == "mnist" and s["n_train"] is not None:
        s["n_cal"] = min(s["n_cal"], max(10, s["n_train"] // 10))
        s["n_method_train"] = min(s["n_method_train"], s["n_train"])
    s.update(
        dataset=dataset,
        mode="quick" if quick else ("full" if full else "paper"),
        random_state=int(random_state),
        custom=sorted(custom),
    )
    return s


def output_name(s):
    """Stem of the files a run writes: ``reproduce[-digits][-quick|-custom]``."""
    name = "reproduce" + ("-digits" if s["dataset"] == "digits" else "")
    if s["mode"] == "quick":
        return name + "-quick"
    if s["custom"]:
        return name + "-custom"
    return name


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """One detector configuration of the study.

    ``method`` to ``validation_fraction``: a preset's settings (see
    :data:`skadv._presets.PRESETS`); ``preset`` names the preset the spec is,
    if any. ``scope="full"`` trains on every training image and is evaluated
    on every adversarial set; ``scope="subset"`` trains on a stratified
    training subset and is evaluated on the test subset (for the costly
    explanation methods). ``inputs="raw"`` feeds the images themselves
    (MagNet-style) instead of their explanations. ``routing="true"`` trains
    reconstructor c on the images of true class c (the authors' code) instead
    of predicted class c (the paper's equation); test inputs are always
    routed by predicted class. ``shared`` trains one reconstructor for all
    classes. ``module="conv"`` uses convolutional autoencoders. ``members``
    makes an ensemble: the sum of the members' standardised log errors.
    """

    name: str
    description: str
    method: str
    normalize: str | None
    metric: str
    hidden: int
    epochs: int
    batch_size: int
    lr: float
    contrast: float
    validation_fraction: float | None
    preset: str | None = None
    scope: str = "full"
    inputs: str = "maps"
    routing: str = "predicted"
    shared: bool = False
    module: str = "mlp"
    members: tuple = ()
    bit_depth: int | None = None

    @classmethod
    def from_preset(cls, preset, *, name=None, description=None):
        """The spec of a registry preset (by default its name and description).

        A preset of the raw-input view (``view="raw"``) reads the images
        themselves, rounded to ``bit_depth`` bits, as
        :class:`~skadv.RawInputTransformer` does.
        """
        settings = PRESETS[preset]
        raw = settings.get("view") == "raw"
        return cls(
            name=preset if name is None else name,
            description=settings["description"] if description is None else description,
            preset=preset,
            method=None if raw else settings["method"],
            normalize=None if raw else settings["normalize"],
            inputs="raw" if raw else "maps",
            bit_depth=settings.get("bit_depth"),
            **{
                field: settings[field]
                for field in (
                    "metric",
                    "hidden",
                    "epochs",
                    "batch_size",
                    "lr",
                    "contrast",
                    "validation_fraction",
                )
            },
        )

    def variant(self, name, description, **changes):
        """This spec with ``changes``: a configuration of its own, no preset."""
        return dataclasses.replace(
            self, name=name, description=description, preset=None, **changes
        )

    def reconstructor(self, image_shape):
        params = {"max_epochs": self.epochs, "batch_size": self.batch_size}
        params["lr"] = self.lr
        if self.module == "conv":
            return make_reconstructor(
                ConvAutoencoder, module__input_shape=tuple(image_shape), **params
            )
        return make_reconstructor(module__hidden=self.hidden, **params)

    def as_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """A detector of the study that is not a per-class autoencoder.

    ``detector``: ``"feature-squeezing"`` (:class:`~skadv.FeatureSqueezingDetector`
    on the raw images, ``options`` its parameters), ``"mahalanobis"``
    (:class:`~skadv.ClassConditionalGaussianDetector` on the rows of an
    :class:`~skadv.ActivationTransformer`) or ``"ensemble"`` (an
    :class:`~skadv.EnsembleDetector` of the specs named in ``ensemble_of``,
    each fitted on the same rows as when it stands alone; ``options``: its
    ``combine``, ``calibration_size`` and any ``weights``). Every one is
    fitted on the benign training images only, with ``contamination=0.05``,
    like the autoencoder configurations.
    """

    name: str
    description: str
    detector: str
    options: tuple = ()
    ensemble_of: tuple = ()
    preset: str | None = None
    scope: str = "full"
    # What the study's row builders ask of every spec.
    routing: str = "predicted"
    shared: bool = False
    members: tuple = ()

    @property
    def inputs(self):
        return {"mahalanobis": "activations"}.get(self.detector, "raw")

    @classmethod
    def ensemble_preset(cls, preset):
        """The spec of a registry preset that is an EnsembleDetector."""
        settings = PRESETS[preset]
        return cls(
            name=preset,
            description=settings["description"],
            detector="ensemble",
            options=(
                ("calibration_size", settings["calibration_size"]),
                ("combine", settings["combine"]),
                *((("weights", settings["weights"]),) if "weights" in settings else ()),
            ),
            ensemble_of=tuple(settings["members"]),
            preset=preset,
        )

    def as_dict(self):
        out = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in ("name", "routing", "shared", "members")
        }
        out["options"] = dict(self.options)
        return out


PAPER_SPEC = DetectorSpec.from_preset(
    "ko-lim-2021",
    name="paper",
    description="Ko & Lim: saliency (percentile), one 64-unit MLP autoencoder per "
    "predicted class (784-64-784 on MNIST), 10 epochs, top-half L1",
)


#: The peer methods the study measures beside skadv's detectors: name ->
#: the paper that proposed it.
PEERS = {
    "feature-squeezing": "Xu, Evans & Qi (NDSS 2018)",
    "mahalanobis": "Lee et al. (NeurIPS 2018)",
    "magnet-raw": "Meng & Chen (CCS 2017), MagNet",
}

#: The presets of the registry, in its order; ``ko-lim-2021`` is the study's
#: ``paper`` configuration.
PRESET_NAMES = tuple(PRESETS)


def peer_specs():
    """Feature squeezing, the Mahalanobis detector and MagNet-style reconstruction."""
    return [
        BaselineSpec(
            "feature-squeezing",
            "feature squeezing (Xu et al.): largest L1 distance between the "
            "softmax on the image and on its 1-bit and 2x2-median copies",
            detector="feature-squeezing",
            options=tuple(
                (key, PRESETS["feature-squeezing"][key])
                for key in ("bit_depth", "median_size")
            ),
        ),
        BaselineSpec(
            "mahalanobis",
            "Mahalanobis detector (Lee et al.): penultimate activations, class "
            "means with a tied covariance, distance to the closest class mean",
            detector="mahalanobis",
            options=(("covariance", "tied"), ("distance", "closest")),
        ),
        PAPER_SPEC.variant(
            "magnet-raw",
            "MagNet-style baseline: the same per-class MLP autoencoders on the raw "
            "images (routed by predicted class)",
            inputs="raw",
        ),
    ]


def preset_specs():
    """Every preset of the registry (``ko-lim-2021`` as the study's ``paper``)."""
    specs = []
    for preset in PRESET_NAMES:
        if PRESETS[preset].get("detector") == "feature-squeezing":
            continue  # the peer of the same name (peer_specs) is this preset
        if preset == PAPER_SPEC.preset:
            specs.append(PAPER_SPEC)
        elif "members" in PRESETS[preset]:
            specs.append(BaselineSpec.ensemble_preset(preset))
        else:
            specs.append(DetectorSpec.from_preset(preset))
    return specs


DIGITS_RAW_SPEC = PAPER_SPEC.variant(
    "magnet-raw-e300",
    "MagNet-style: raw pixels, 300 epochs",
    epochs=300,
    inputs="raw",
)


def ensemble_specs(dataset):
    """Conformal ensembles beside the multiview preset (Bonferroni, 10% held out).

    With feature squeezing as a member; on the digits also the small-data
    preset with raw pixels, the ensemble that lifted the digits most in this
    study (chosen on the study's own test sets).
    """
    multiview = PRESETS["multiview"]
    options = (("calibration_size", 0.1), ("combine", "bonferroni"))
    specs = [
        BaselineSpec(
            "multiview+squeezing",
            "EnsembleDetector of contrastive-h256, binarized-pixels and "
            "feature-squeezing (Bonferroni, conformal p-values on 10% held out)",
            detector="ensemble",
            options=options,
            ensemble_of=(*multiview["members"], "feature-squeezing"),
        )
    ]
    if dataset == "digits":
        specs += [
            BaselineSpec(
                "small-data+squeezing",
                "EnsembleDetector of small-data and feature-squeezing (Bonferroni, "
                "conformal p-values on 10% held out)",
                detector="ensemble",
                options=options,
                ensemble_of=(DIGITS_BEST, "feature-squeezing"),
            ),
            # On 64-pixel digits the raw image carries the perturbation plainly
            # (the digits sweep's magnet-raw-e300); its in-sample thresholds
            # are useless, its conformal p-values on held-out rows are not.
            DIGITS_RAW_SPEC,
            BaselineSpec(
                "small-data+magnet-raw",
                "EnsembleDetector of small-data and magnet-raw-e300 (Bonferroni, "
                "conformal p-values on 10% held out)",
                detector="ensemble",
                options=options,
                ensemble_of=(DIGITS_BEST, DIGITS_RAW_SPEC.name),
            ),
        ]
    return specs


def ablation_specs(image_shape):
    return [
        PAPER_SPEC.variant(
            "true-label-routing",
            "paper, reconstructor c trained on images of TRUE class c (authors' code)",
            routing="true",
        ),
        PAPER_SPEC.variant(
            "shared-autoencoder",
            "paper, one autoencoder for all classes (class_column=None)",
            shared=True,
        ),
        PAPER_SPEC.variant(
            "mse", "paper, MSE score instead of top-half L1", metric="mse"
        ),
        PAPER_SPEC.variant(
            "conv-autoencoder",
            f"paper, ConvAutoencoder(input_shape={tuple(image_shape)}) per class",
            module="conv",
        ),
    ]


def method_specs():
    return [
        PAPER_SPEC.variant(
            f"method-{method}",
            f"paper detector on {method} maps (training and test subsets)",
            method=method,
            scope="subset",
        )
        for method in METHODS
    ]


def best_candidate_specs():
    """Configurations tried to beat the paper (full training set)."""
    best = DetectorSpec.from_preset(BEST_PRESET)
    return [
        PAPER_SPEC.variant(
            "ixg",
            "input x gradient maps (percentile), paper autoencoders",
            method="input_x_gradient",
        ),
        PAPER_SPEC.variant(
            "saliency+ixg",
            "ensemble: paper detector + input-x-gradient detector (standardised "
            "log errors summed)",
            members=("paper", "ixg"),
        ),
        PAPER_SPEC.variant(
            "saliency+raw",
            "ensemble: paper detector + MagNet-style raw-image detector",
            members=("paper", "magnet-raw"),
        ),
        PAPER_SPEC.variant(
            "saliency-e30-h128",
            "saliency, 128-unit autoencoders, 30 epochs",
            epochs=30,
            hidden=128,
        ),
        PAPER_SPEC.variant(
            "saliency-e30-h256",
            "saliency, 256-unit autoencoders, 30 epochs",
            epochs=30,
            hidden=256,
        ),
        PAPER_SPEC.variant(
            "saliency-e30-h256-mse",
            "saliency, 256-unit autoencoders, 30 epochs, MSE score",
            epochs=30,
            hidden=256,
            metric="mse",
        ),
        PAPER_SPEC.variant(
            "saliency-e30-h512",
            "saliency, 512-unit autoencoders, 30 epochs",
            epochs=30,
            hidden=512,
        ),
        PAPER_SPEC.variant(
            "paper-contrastive",
            "paper autoencoders (h64, 10 epochs), class-contrastive score (0.5)",
            contrast=0.5,
        ),
        # The autoencoders of saliency-e30-h256 (memory cache): the score and
        # the thresholds change, not the training.
        best.variant(
            f"{BEST_PRESET}-in-sample",
            f"{BEST_PRESET} trained on every benign training map, thresholds "
            "on the same maps",
            validation_fraction=None,
        ),
        best.variant(
            f"{BEST_PRESET}-w1",
            f"{BEST_PRESET} with contrast weight 1.0, in-sample thresholds",
            contrast=1.0,
            validation_fraction=None,
        ),
    ]


def digits_sweep_specs():
    """What might lift the paper's configuration on 8x8 digits (64-value maps)."""
    specs = [
        PAPER_SPEC.variant("e100", "100 epochs", epochs=100),
        PAPER_SPEC.variant("e300", "300 epochs", epochs=300),
        PAPER_SPEC.variant(
            "e100-h128", "100 epochs, hidden 128", epochs=100, hidden=128
        ),
        PAPER_SPEC.variant(
            "e300-h128", "300 epochs, hidden 128", epochs=300, hidden=128
        ),
        PAPER_SPEC.variant(
            "e300-contrastive",
            "300 epochs, class-contrastive score (0.5)",
            epochs=300,
            contrast=0.5,
        ),
        DIGITS_RAW_SPEC,
        PAPER_SPEC.variant(
            "ensemble-e300+raw-e300",
            "ensemble of e300 and magnet-raw-e300",
            members=("e300", "magnet-raw-e300"),
        ),
        PAPER_SPEC.variant("h32", "hidden 32", hidden=32),
        PAPER_SPEC.variant(
            "e100-h32",
            "100 epochs, hidden 32 (the demo's former settings)",
            epochs=100,
            hidden=32,
        ),
        PAPER_SPEC.variant("e100-h16", "100 epochs, hidden 16", epochs=100, hidden=16),
        PAPER_SPEC.variant("e100-h8", "100 epochs, hidden 8", epochs=100, hidden=8),
        PAPER_SPEC.variant(
            "e100-h16-mse",
            "100 epochs, hidden 16, MSE",
            epochs=100,
            hidden=16,
            metric="mse",
        ),
        PAPER_SPEC.variant(
            "e100-h16-max",
            "100 epochs, hidden 16, normalize='max'",
            epochs=100,
            hidden=16,
            normalize="max",
        ),
        PAPER_SPEC.variant(
            "e100-h16-true",
            "100 epochs, hidden 16, true-label routing",
            epochs=100,
            hidden=16,
            routing="true",
        ),
        PAPER_SPEC.variant(
            "e100-h16-shared",
            "100 epochs, hidden 16, one shared AE",
            epochs=100,
            hidden=16,
            shared=True,
        ),
        PAPER_SPEC.variant(
            "e100-h16-conv", "100 epochs, conv AE", epochs=100, module="conv"
        ),
        PAPER_SPEC.variant(
            "magnet-raw-e100-h16",
            "MagNet-style: raw pixels, 100 epochs, hidden 16",
            epochs=100,
            hidden=16,
            inputs="raw",
        ),
    ]
    for method in METHODS:
        if method == "saliency":
            continue
        specs.append(
            PAPER_SPEC.variant(
                f"{method}-e100-h16",
                f"{method} maps, 100 epochs, hidden 16",
                method=method,
                epochs=100,
                hidden=16,
            )
        )
    for method in ("input_x_gradient", "integrated_gradients"):
        specs.append(
            PAPER_SPEC.variant(
                f"{method}-e300-h128",
                f"{method} maps, 300 epochs, hidden 128",
                method=method,
                epochs=300,
                hidden=128,
            )
        )
    # Long-trained wide autoencoders fit their training maps: thresholds from
    # held-out benign maps instead. With input x gradient maps that is the
    # small-data preset.
    specs.append(
        PAPER_SPEC.variant(
            "e300-h128-val",
            "saliency maps, 300 epochs, hidden 128, thresholds on 20% held-out "
            "benign maps",
            epochs=300,
            hidden=128,
            validation_fraction=0.2,
        )
    )
    specs.append(DetectorSpec.from_preset(DIGITS_BEST))
    specs.append(
        PAPER_SPEC.variant(
            "e100-h16-contrastive",
            "100 epochs, hidden 16, class-contrastive score (0.5)",
            epochs=100,
            hidden=16,
            contrast=0.5,
        )
    )
    specs.append(
        PAPER_SPEC.variant(
            "ensemble-sal+ixg+raw",
            "ensemble of e100-h16, input_x_gradient-e100-h16 and magnet-raw-e100-h16",
            members=("e100-h16", "input_x_gradient-e100-h16", "magnet-raw-e100-h16"),
        )
    )
    return specs
