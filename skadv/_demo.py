"""The demo: the whole method on scikit-learn's bundled digits, no download."""

import json
import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.model_selection import TunedThresholdClassifierCV, train_test_split
from skorch.callbacks import Callback

from skadv._detector_classifier import DetectorClassifier
from skadv._explain import ExplanationTransformer
from skadv._presets import make_detector
from skadv._torch_utils import torch_threads

DEMO_ATTACKS = ("fgsm", "pgd")
DEMO_EPS = (0.1, 0.2, 0.3)
#: The configuration of :func:`skadv.make_detector` the demo uses.
DEMO_PRESET = "small-data-raw"


class _Steps:
    """Numbered progress lines; the long steps draw tqdm bars under theirs."""

    def __init__(self, total, verbose):
        self.total, self.verbose, self.done = total, verbose, 0
        self.started = time.perf_counter()

    def __call__(self, message):
        self.done += 1
        if self.verbose:
            print(f"[{self.done}/{self.total}] {message}", flush=True)

    def bar(self, iterable=None, **kwargs):
        """``iterable`` with a progress bar (on stderr) when verbose."""
        from tqdm.auto import tqdm

        return tqdm(iterable, disable=not self.verbose, **kwargs)

    def finish(self):
        if self.verbose:
            print(f"done in {time.perf_counter() - self.started:.0f} s", flush=True)


class _EpochBar(Callback):
    """Advance a progress bar once per epoch of a skorch net.

    skorch's own ``ProgressBar`` draws one bar per epoch over its batches; the
    demo's classifier trains 20 short epochs, so one bar over them says more.
    """

    def __init__(self, bar):
        self.bar = bar

    def on_epoch_end(self, net, **kwargs):
        self.bar.update()


def run_demo(
    output_dir="skadv-demo",
    *,
    attacks=DEMO_ATTACKS,
    eps=DEMO_EPS,
    random_state=0,
    verbose=1,
):
    """Train, attack, detect and report on scikit-learn's bundled digits.

    1. Train a small CNN on 70% of the digits (seeded).
    2. Craft adversarial examples of the held-out digits for every attack and
       eps, with IBM's adversarial-robustness-toolbox.
    3. Fit the detector, ``make_detector(classifier,
       preset="small-data-raw")`` (see :func:`skadv.make_detector`: input x
       gradient maps and the raw pixels, each with per-class autoencoders,
       combined by conformal p-values), on benign training digits only; it
       flags an input when either member's p-value is below 0.025.
    4. Calibrate a second threshold on a labelled calibration split (benign
       digits and their adversarial versions, never the test digits) with
       :class:`~sklearn.model_selection.TunedThresholdClassifierCV`.
    5. Report, per attack and eps on the test digits: attack success rate,
       ROC AUC, TPR at 5% FPR and the calibrated detection accuracy.

    Parameters
    ----------
    output_dir : str or path-like, default="skadv-demo"
        Where ``demo.png``, ``results.json``, ``detector.joblib`` (the fitted
        detector) and ``calibrated_detector.joblib`` (with the calibrated
        threshold) are written; created if needed.

    attacks : sequence of str, default=("fgsm", "pgd")
        Attacks from :func:`skadv.attacks.make_adversarial`.

    eps : sequence of float, default=(0.1, 0.2, 0.3)
        L-infinity budgets (pixel values are in [0, 1]).

    random_state : int, default=0
        Seeds the split, the classifier, the attacks and the autoencoders.

    verbose : int, default=1
        When positive, print each stage as it starts (with progress bars on
        stderr for the classifier's epochs, the attacks and the
        autoencoders) and the table at the end.

    Returns
    -------
    results : dict
        What ``results.json`` holds: the classifier's test accuracy, the
        calibrated threshold and one row per attack and eps.
    """
    # One torch thread: the table then does not depend on the machine's core
    # count (multi-threaded float sums differ in the last bits), and these
    # small networks gain little from more.
    with torch_threads(1):
        return _run_demo(output_dir, attacks, eps, random_state, verbose)


def _run_demo(output_dir, attacks, eps, random_state, verbose):
    from skadv.attacks import make_adversarial
    from skadv.datasets import load_digits
    from skadv.metrics import detection_accuracy, detection_roc_auc, tpr_at_fpr
    from skadv.models import make_digits_classifier

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    step = _Steps(6, verbose)

    step("loading the bundled digits")
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=random_state
    )
    X_fit, X_cal, y_fit, y_cal = train_test_split(
        X_train, y_train, test_size=0.2, stratify=y_train, random_state=random_state
    )

    classifier = make_digits_classifier(random_state=random_state)
    step(
        f"training the digits CNN on {len(X_fit)} digits "
        f"({classifier.max_epochs} epochs)"
    )
    with step.bar(total=classifier.max_epochs, desc="epochs", unit="epoch") as bar:
        # The bar is a callback only while training, so the fitted classifier
        # (saved inside the detector) keeps skorch's default callbacks.
        classifier.set_params(callbacks=[("progress", _EpochBar(bar))])
        classifier.fit(X_fit, y_fit)
    classifier.set_params(callbacks=None)
    classifier.initialize_callbacks()
    accuracy = float(np.mean(classifier.predict(X_test) == y_test))

    settings = [(attack, e) for attack in attacks for e in eps]
    step(
        f"crafting {len(settings)} adversarial sets ({', '.join(attacks)} at eps "
        f"{', '.join(f'{e:g}' for e in eps)}) of the {len(X_test)} test and "
        f"{len(X_cal)} calibration digits"
    )
    adversarial = {}
    for attack, e in step.bar(settings, desc="attacks", unit="set"):
        for split, (Xs, ys) in {
            "test": (X_test, y_test),
            "cal": (X_cal, y_cal),
        }.items():
            X_adv, ok = make_adversarial(
                classifier, Xs, ys, attack=attack, eps=e, random_state=random_state
            )
            adversarial[attack, e, split] = (X_adv, ok)

    detector = make_detector(classifier, preset=DEMO_PRESET, random_state=random_state)
    step(
        f"fitting the detector (preset {DEMO_PRESET!r}: "
        f"{', '.join(name for name, _ in detector.detectors)}) on the "
        f"{len(X_fit)} benign training digits: one autoencoder per class each"
    )
    # verbose only draws the autoencoders' progress bars; it is reset so that
    # the saved detector refits silently.
    progress = [
        key for key in detector.get_params() if key.endswith("detector__verbose")
    ]
    detector.set_params(**dict.fromkeys(progress, int(bool(verbose))))
    detector.fit(X_fit)
    detector.set_params(**dict.fromkeys(progress, 0))

    step("calibrating the threshold on the calibration split")
    X_cal_adv = np.concatenate(
        [
            adversarial[a, e, "cal"][0][adversarial[a, e, "cal"][1]]
            for a in attacks
            for e in eps
        ]
    )
    X_calibration = np.concatenate([X_cal, X_cal_adv])
    y_calibration = np.r_[np.ones(len(X_cal)), -np.ones(len(X_cal_adv))]
    calibrated = TunedThresholdClassifierCV(
        DetectorClassifier(detector),
        scoring="balanced_accuracy",
        cv="prefit",
        refit=False,
    ).fit(X_calibration, y_calibration)

    step("scoring the test digits")
    benign_score = -detector.decision_function(X_test)
    benign_calibrated = calibrated.predict(X_test)
    rows, curves = [], {}
    for attack in attacks:
        for e in eps:
            X_adv, ok = adversarial[attack, e, "test"]
            X_hit = X_adv[ok]
            labels = np.r_[np.ones(len(X_test)), -np.ones(len(X_hit))]
            score = np.r_[benign_score, -detector.decision_function(X_hit)]
            predicted = np.r_[benign_calibrated, calibrated.predict(X_hit)]
            rows.append(
                {
                    "attack": attack,
                    "eps": e,
                    "attack_success_rate": float(ok.mean()),
                    "n_adversarial": int(ok.sum()),
                    "roc_auc": detection_roc_auc(labels, score),
                    "tpr_at_5_fpr": tpr_at_fpr(labels, score, fpr=0.05),
                    "calibrated_accuracy": detection_accuracy(labels, predicted),
                }
            )
            curves[attack, e] = (labels, score)

    results = {
        "dataset": "scikit-learn digits (8x8)",
        "classifier_test_accuracy": accuracy,
        "n_test_benign": len(X_test),
        "calibrated_threshold": float(calibrated.best_threshold_),
        "rows": rows,
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    joblib.dump(detector, output_dir / "detector.joblib")
    joblib.dump(calibrated, output_dir / "calibrated_detector.joblib")
    example_attack = "pgd" if "pgd" in attacks else attacks[0]
    example = adversarial[example_attack, max(eps), "test"]
    _plot_demo(
        output_dir / "demo.png",
        detector,
        X_test,
        example,
        example_attack,
        max(eps),
        curves,
    )
    step.finish()
    if verbose:
        print()
        print(format_table(results))
        print(f"\nWrote {output_dir}/demo.png, results.json, detector.joblib and")
        print("calibrated_detector.joblib (load with joblib.load; trusted files only).")
    return results


def format_table(results):
    """The demo's results as a text table."""
    header = (
        f"{'attack':<7} {'eps':>5} {'success':>8} {'ROC AUC':>8} "
        f"{'TPR@5%FPR':>10} {'calibrated acc':>15}"
    )
    lines = [
        f"digits CNN test accuracy: {results['classifier_test_accuracy']:.3f}",
        header,
        "-" * len(header),
    ]
    for r in results["rows"]:
        lines.append(
            f"{r['attack']:<7} {r['eps']:>5.2f} {r['attack_success_rate']:>8.3f} "
            f"{r['roc_auc']:>8.3f} {r['tpr_at_5_fpr']:>10.3f} "
            f"{r['calibrated_accuracy']:>15.3f}"
        )
    return "\n".join(lines)


def _plot_demo(path, detector, X_test, example, attack, eps, curves):
    # Figure, not pyplot: the picture is only saved, and the caller's pyplot
    # state and backend stay as they were.
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    from skadv.plotting import plot_explanations

    X_adv, ok = example
    index = np.flatnonzero(ok)[:4]
    # The explanation member's maps (the ensemble's other member reads pixels).
    transformer = next(
        member[0]
        for member in detector.detectors_
        if isinstance(member[0], ExplanationTransformer)
    )
    maps = transformer.transform(np.concatenate([X_test[index], X_adv[index]]))

    fig = Figure(figsize=(12, 5.5), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.1, 1])
    # Every input on the pixel scale [0, 1] and every map on [0, 1] (the
    # percentile normalisation's range), so grey and colour compare across
    # panels.
    axes = plot_explanations(
        np.concatenate([X_test[index], X_adv[index]]),
        maps,
        labels=np.r_[np.ones(len(index)), -np.ones(len(index))],
        n=len(index),
        input_range=(0.0, 1.0),
        map_range=(0.0, 1.0),
        fig=left,
    )
    left.colorbar(
        axes[1, 0].images[0], ax=axes, shrink=0.6, label="explanation (normalised)"
    )
    left.colorbar(
        axes[0, 0].images[0],
        ax=axes,
        location="bottom",
        shrink=0.4,
        aspect=30,
        label="pixel value",
    )
    left.suptitle(
        f"{attack.upper()} at eps {eps:g} moves each pixel by up to {eps:g} (the "
        "grey background):\nthe digit's shape stays, its prediction flips and "
        "its explanation spreads out",
        fontsize=10,
    )

    attacks = sorted({a for a, _ in curves})
    roc_axes = np.atleast_1d(right.subplots(1, len(attacks), sharey=True))
    for ax, attack in zip(roc_axes, attacks, strict=True):
        for (a, e), (labels, score) in sorted(curves.items()):
            if a != attack:
                continue
            fpr, tpr, _ = roc_curve(labels == -1, score)
            ax.plot(fpr, tpr, label=f"eps={e}")
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        ax.axvline(0.05, ls="--", c="grey", lw=0.8)
        ax.set_title(f"{attack.upper()}: detection ROC", fontsize=10)
        ax.set_xlabel("false-positive rate (benign flagged)")
        ax.legend(fontsize=8, loc="lower right")
    roc_axes[0].set_ylabel("true-positive rate (adversarial caught)")
    fig.savefig(path, dpi=110)
