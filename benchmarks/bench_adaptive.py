"""The detector against attackers who ignore it and attackers who know it.

For each eps: plain PGD (BIM, the same margin loss, detector weight 0), the
adaptive attack (``make_adaptive_adversarial``, detector weight 10) and its
threshold-targeting variant (stops once misclassified and below threshold).
Reported per attack: attack success rate, the share that also evades the
detector's 5%-FPR threshold, detection ROC AUC and TPR at 5% FPR (benign test
inputs against the successful adversarial ones).

Usage::

    python benchmarks/bench_adaptive.py                                 # digits
    python benchmarks/bench_adaptive.py --dataset mnist --data-home ../shared/data
    python benchmarks/bench_adaptive.py --dataset mnist --data-home ../shared/data \
        --preset contrastive-h256

Results go to ``benchmarks/results/adaptive-<dataset>[-<preset>].json`` (the
MNIST default is Ko & Lim's configuration, preset ``ko-lim-2021``).
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from skadv import make_detector
from skadv._demo import make_digits_detector
from skadv._presets import PRESETS
from skadv.attacks import make_adaptive_adversarial
from skadv.metrics import detection_roc_auc, tpr_at_fpr

RESULTS = Path(__file__).parent / "results"


def load(dataset, data_home, n_attack, classifier_state=None, preset="ko-lim-2021"):
    if dataset == "digits":
        from skadv.datasets import load_digits
        from skadv.models import make_digits_classifier

        X, y = load_digits(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.3, stratify=y, random_state=0
        )
        classifier = make_digits_classifier(random_state=0).fit(X_train, y_train)
        detector = make_digits_detector(classifier).fit(X_train)
        transformer, reconstruction = detector[0], detector[-1]
        net = reconstruction.reconstructor.get_params()
        config = (
            f"demo detector: {transformer.method} maps, MLP "
            f"{net['module__hidden']} hidden, {net['max_epochs']} epochs, "
            f"validation_fraction={reconstruction.validation_fraction}"
        )
    else:
        from skadv.datasets import load_mnist
        from skadv.models import make_mnist_classifier

        X_train, y_train = load_mnist(
            subset="train", data_home=data_home, return_X_y=True
        )
        X_test, y_test = load_mnist(subset="test", data_home=data_home, return_X_y=True)
        if classifier_state:
            # A trained MnistCNN's state_dict (e.g. the reproduction's cache).
            classifier = make_mnist_classifier(random_state=0).initialize()
            state = torch.load(classifier_state, weights_only=True)
            classifier.module_.load_state_dict(state)
        else:
            classifier = make_mnist_classifier(random_state=0).fit(X_train, y_train)
        detector = make_detector(
            classifier, preset=preset, n_jobs=2, random_state=0
        ).fit(X_train)
        config = f"preset {preset!r}: {PRESETS[preset]['description']}"
    rng = np.random.default_rng(0)
    pick = rng.choice(len(X_test), size=min(n_attack, len(X_test)), replace=False)
    return detector, X_test, y_test, pick, config


def evaluate(detector, benign_score, X_adv, success, evaded):
    score = np.r_[benign_score, -detector.decision_function(X_adv[success])]
    labels = np.r_[np.ones(len(benign_score)), -np.ones(success.sum())]
    both = success.any() and len(benign_score)
    return {
        "attack_success_rate": float(success.mean()),
        "evasion_rate": float(evaded.mean()),
        "roc_auc": detection_roc_auc(labels, score) if both else None,
        "tpr_at_5_fpr": tpr_at_fpr(labels, score, fpr=0.05) if both else None,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--data-home", default=os.environ.get("SKADV_DATA_HOME"))
    parser.add_argument("--n-attack", type=int, default=500, help="inputs attacked")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument(
        "--classifier-state",
        help="MNIST: a trained MnistCNN state_dict to use instead of training one",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="ko-lim-2021",
        help="MNIST: the detector configuration (skadv.make_detector)",
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=[10.0],
        help="detector weights of the adaptive attack (its score's scale depends "
        "on the detector: try several)",
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    detector, X_test, y_test, pick, config = load(
        args.dataset, args.data_home, args.n_attack, args.classifier_state, args.preset
    )
    benign_score = -detector.decision_function(X_test)
    X, y = X_test[pick], y_test[pick]
    variants = {"pgd (non-adaptive)": {"detector_weight": 0.0}}
    for weight in args.weights:
        tag = "" if weight == 10 else f" (weight {weight:g})"
        variants[f"adaptive{tag}"] = {"detector_weight": weight}
        variants[f"adaptive, stop below threshold{tag}"] = {
            "detector_weight": weight,
            "stop_when_evading": True,
        }
    rows = []
    for eps in args.eps:
        for name, params in variants.items():
            X_adv, success, evaded = make_adaptive_adversarial(
                detector, X, y, eps=eps, eps_step=0.01, max_iter=40, **params
            )
            row = {
                "attack": name,
                "eps": eps,
                "detector_weight": params["detector_weight"],
                **evaluate(detector, benign_score, X_adv, success, evaded),
            }
            rows.append(row)
            print(
                f"{name:<46} eps={eps:.2f} success={row['attack_success_rate']:.3f} "
                f"evaded={row['evasion_rate']:.3f} auc={row['roc_auc']:.3f} "
                f"tpr@5%={row['tpr_at_5_fpr']:.3f}",
                flush=True,
            )
    results = {
        "dataset": args.dataset,
        "classifier": args.classifier_state or "trained here (seed 0)",
        "detector": config,
        "n_attacked": len(pick),
        "n_benign_test": len(X_test),
        "attack_settings": "L-inf, step 0.01, 40 steps, margin loss (confidence 1)",
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = (
        ""
        if args.dataset == "digits" or args.preset == "ko-lim-2021"
        else (f"-{args.preset}")
    )
    path = RESULTS / f"adaptive-{args.dataset}{suffix}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
