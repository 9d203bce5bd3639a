"""Many classes: one class-conditional autoencoder against one autoencoder per class.

Two parts, both written to ``benchmarks/results/many-classes.json``:

``scale`` (default): synthetic 3x224x224 maps (each class a fixed random
14x14 pattern, upsampled, plus noise) for 10, 100 and 1,000 classes, in two
series: a fixed number of maps per class (the number of maps grows with the
classes) and a fixed total number of maps (the classes grow, the maps do
not), so fit time can be read against the number of maps and the number of
classes apart. For each run: fit time, score time per map, the detector's
parameter count and pickled size (weights and Adam's state), and the peak
resident memory of a fresh process doing only that fit and score, next to
the memory of the maps themselves. The per-class MLP (Ko & Lim's default,
64 hidden units) is trained at 10 classes and only computed (parameters and
Adam state) beyond. The activation-view baseline,
``ClassConditionalGaussianDetector``, runs on 512 synthetic activations per
row (a ResNet-18's penultimate layer), since a Gaussian on 150,528-value maps
would need a 150,528-square covariance. Few epochs and few maps per class:
the point is memory and scaling, not detection quality.

``--mnist``: detection quality on MNIST. Saliency maps of the cached MNIST CNN
(``benchmarks/results/cache/mnist-cnn-seed0.pt``, loaded as
``bench_robustness.py`` does) for 20,000 training images; 1,000 test images
and their FGSM and PGD examples at eps 0.1 (those that change the
prediction). The ``ko-lim-2021`` and ``contrastive-h256`` presets' detectors,
with their per-class autoencoders and with one class-conditional autoencoder
of the same width and training, fitted on the same maps; ROC AUC of
``-decision_function`` (benign test maps against adversarial ones). Maps and
attacks are cached under ``benchmarks/results/cache/``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_many_classes.py           # scale
    OMP_NUM_THREADS=1 python benchmarks/bench_many_classes.py --mnist   # quality
    python benchmarks/bench_many_classes.py --quick                     # smoke run

Each part keeps the other's figures in the JSON.
"""

import argparse
import importlib.util
import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import torch

import skadv

RESULTS = Path(__file__).parent / "results"
CACHE = RESULTS / "cache"
OUTPUT = RESULTS / "many-classes.json"
SHAPE = (3, 224, 224)
N_FEATURES = int(np.prod(SHAPE))
# The conditional autoencoder of the scale runs: a stride-4 then two stride-2
# convolutions turn a 224x224 map into 64 channels of 14x14.
CONV = {"module__channels": (16, 32, 64), "module__strides": (4, 2, 2)}
MLP_HIDDEN = 64
GAUSSIAN_FEATURES = 512


def synthetic_rows(n_classes, n_maps, n_features, seed=0):
    """Rows as the views write them: class column, then a map in [0, 1]."""
    rng = np.random.default_rng(seed)
    classes = np.arange(n_maps) % n_classes
    X = np.empty((n_maps, 1 + n_features), dtype=np.float32)
    X[:, 0] = classes
    if n_features == N_FEATURES:
        # One 3x14x14 pattern per class, upsampled 16x: no 1,000-class table of
        # full-size patterns in memory.
        patterns = rng.random((n_classes, 3, 14, 14), dtype=np.float32)
        for i, c in enumerate(classes):
            full = patterns[c].repeat(16, axis=1).repeat(16, axis=2).reshape(-1)
            noise = 0.05 * rng.standard_normal(N_FEATURES, dtype=np.float32)
            X[i, 1:] = np.clip(full + noise, 0, 1)
    else:
        means = rng.standard_normal((n_classes, n_features), dtype=np.float32)
        X[:, 1:] = means[classes] + rng.standard_normal(
            (n_maps, n_features), dtype=np.float32
        )
    return X


def _parameters(detector):
    nets = getattr(detector, "reconstructors_", None)
    if nets is None:  # the Gaussian: its means and precision
        return int(detector.means_.size + detector.precision_.size)
    return sum(p.numel() for net in nets for p in net.module_.parameters())


def one_run(kind, n_classes, n_maps, epochs):
    """Fit and score one detector in this (fresh) process; a dict of figures."""
    from skadv import (
        ClassConditionalGaussianDetector,
        ExplanationReconstructionDetector,
        make_conditional_reconstructor,
        make_reconstructor,
    )

    torch.set_num_threads(1)
    n_features = GAUSSIAN_FEATURES if kind == "gaussian" else N_FEATURES
    X = synthetic_rows(n_classes, n_maps, n_features)
    X_score = X[: min(len(X), 200)]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if kind == "gaussian":
        detector = ClassConditionalGaussianDetector()
    else:
        reconstructor = (
            make_conditional_reconstructor(SHAPE, max_epochs=epochs, **CONV)
            if kind == "conditional"
            else make_reconstructor(module__hidden=MLP_HIDDEN, max_epochs=epochs)
        )
        # Every class gets its own threshold slot however few its maps (their
        # thresholds then pool the tails of all classes).
        detector = ExplanationReconstructionDetector(
            reconstructor=reconstructor, min_class_size=1, random_state=0
        )
    start, cpu_start = time.perf_counter(), time.process_time()
    detector.fit(X)
    fit_seconds = time.perf_counter() - start
    fit_cpu_seconds = time.process_time() - cpu_start
    detector.decision_function(X_score[:2])  # warm-up
    start = time.perf_counter()
    detector.decision_function(X_score)
    score_seconds = (time.perf_counter() - start) / len(X_score)
    return {
        "kind": kind,
        "n_classes": n_classes,
        "n_maps": n_maps,
        "n_features": n_features,
        "epochs": None if kind == "gaussian" else epochs,
        "fit_seconds": fit_seconds,
        # CPU time of the process: less disturbed than wall time when other
        # jobs share the cores.
        "fit_cpu_seconds": fit_cpu_seconds,
        "score_ms_per_map": 1000 * score_seconds,
        "parameters": _parameters(detector),
        "pickled_bytes": len(pickle.dumps(detector)),
        "data_bytes": int(X.nbytes),
        "rss_before_fit_bytes": int(rss_before),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def per_class_mlp_need(n_classes, n_features=N_FEATURES, hidden=MLP_HIDDEN):
    """What one MLP per class holds: computed, not trained."""
    per_class = 2 * n_features * hidden + hidden + n_features
    parameters = n_classes * per_class
    return {
        "kind": "per_class_mlp_computed",
        "n_classes": n_classes,
        "parameters": parameters,
        # float32 weights, and Adam's two moments kept by every fitted net.
        "weights_bytes": 4 * parameters,
        "weights_and_adam_bytes": 12 * parameters,
    }


def _in_subprocess(kind, n_classes, n_maps, epochs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        __file__,
        "--one",
        kind,
        str(n_classes),
        str(n_maps),
        str(epochs),
    ]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_scale(quick):
    classes = (10, 100) if quick else (10, 100, 1000)
    per_class, total, epochs = (2, 200, 1) if quick else (2, 1000, 2)
    runs = []
    plan = [("conditional", n, per_class * n, "maps_per_class") for n in classes]
    plan += [("conditional", n, total, "fixed_total") for n in classes]
    plan += [("per_class_mlp", classes[0], per_class * classes[0], "maps_per_class")]
    plan += [("gaussian", n, max(total, 2 * n), "fixed_total") for n in classes]
    for kind, n_classes, n_maps, series in plan:
        run = _in_subprocess(kind, n_classes, n_maps, epochs)
        run["series"] = series
        runs.append(run)
        print(
            f"{kind:>14} {series:>14} classes {n_classes:>5} maps {n_maps:>5}: "
            f"fit {run['fit_seconds']:7.1f} s ({run['fit_cpu_seconds']:7.1f} s CPU), "
            f"score {run['score_ms_per_map']:6.2f} ms/map, "
            f"{run['parameters']:>11,} parameters, pickled "
            f"{run['pickled_bytes'] / 2**20:8.1f} MiB, peak RSS "
            f"{run['peak_rss_bytes'] / 2**30:5.2f} GiB (data "
            f"{run['data_bytes'] / 2**30:5.2f} GiB)",
            flush=True,
        )
    computed = [per_class_mlp_need(n) for n in classes]
    for need in computed:
        print(
            f"per-class MLP, {need['n_classes']:>5} classes (computed): "
            f"{need['parameters']:>14,} parameters, "
            f"{need['weights_bytes'] / 2**30:7.1f} GiB of weights, "
            f"{need['weights_and_adam_bytes'] / 2**30:7.1f} GiB with Adam's state"
        )
    return {
        "map_shape": list(SHAPE),
        "conditional_reconstructor": {
            "module": "ConditionalConvAutoencoder",
            "channels": list(CONV["module__channels"]),
            "strides": list(CONV["module__strides"]),
            "max_epochs": epochs,
            "batch_size": 32,
        },
        "gaussian_features": GAUSSIAN_FEATURES,
        "maps_per_class": per_class,
        "fixed_total": total,
        "torch_threads": 1,
        "runs": runs,
        "per_class_mlp_computed": computed,
    }


# --------------------------------------------------------------------------
# MNIST quality


def _bench_robustness():
    spec = importlib.util.spec_from_file_location(
        "bench_robustness", Path(__file__).parent / "bench_robustness.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mnist_maps(data_home, n_train, n_test, eps, quick):
    """Saliency maps of benign training, benign test and adversarial test rows."""
    from sklearn.model_selection import train_test_split

    from skadv import ExplanationTransformer
    from skadv.attacks import make_adversarial

    path = CACHE / f"many-classes-mnist-{n_train}-{n_test}-{eps}.npz"
    if path.exists():
        return dict(np.load(path))
    classifier, X_train, X_test, y_test = _bench_robustness().load(
        "mnist", data_home, None
    )
    X_fit, _ = train_test_split(X_train, train_size=n_train, random_state=0)
    X_eval, _, y_eval, _ = train_test_split(
        X_test, y_test, train_size=n_test, stratify=y_test, random_state=0
    )
    transformer = ExplanationTransformer(classifier, method="saliency").fit(X_fit[:1])
    found = {
        "train": transformer.transform(X_fit),
        "test": transformer.transform(X_eval),
    }
    for attack in ("fgsm", "pgd"):
        X_adv, success = make_adversarial(
            classifier, X_eval, y_eval, attack=attack, eps=eps, random_state=0
        )
        found[attack] = transformer.transform(X_adv[success])
        print(f"{attack} at eps {eps}: {success.sum()} of {n_test} succeed", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **found)
    return found


def run_mnist(data_home, quick):
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score

    from skadv import make_conditional_reconstructor, make_detector
    from skadv._presets import PRESETS

    torch.set_num_threads(1)
    n_train, n_test, eps = (2000, 200, 0.1) if quick else (20000, 1000, 0.1)
    maps = mnist_maps(data_home, n_train, n_test, eps, quick)
    out = {"n_train": n_train, "n_test": n_test, "eps": eps, "presets": {}}
    for preset in ("ko-lim-2021", "contrastive-h256"):
        p = PRESETS[preset]
        per_class = make_detector(None, preset=preset, random_state=0)[-1]
        conditional = clone(per_class).set_params(
            reconstructor=make_conditional_reconstructor(
                module__hidden=p["hidden"],
                max_epochs=p["epochs"],
                batch_size=p["batch_size"],
                lr=p["lr"],
            )
        )
        # The classes started apart (random FiLM scales and shifts), for the
        # class-contrastive score.
        apart = clone(conditional).set_params(reconstructor__module__embedding_std=3.0)
        detectors = [("per_class", per_class), ("conditional", conditional)]
        if p["contrast"] > 0:
            detectors.append(("conditional_embedding_std3", apart))
        if quick:
            for _, detector in detectors:
                detector.set_params(reconstructor__max_epochs=2)
        figures = {}
        for name, detector in detectors:
            # Figures cached per configuration and data: a rerun fits only
            # what is new (the name stands for the configuration: a skorch
            # net's repr holds a set, whose order changes between processes).
            key = joblib.hash((preset, name, maps["train"], skadv.__version__))
            path = CACHE / f"many-classes-mnist-{preset}-{name}-{key[:12]}.json"
            if path.exists():
                figures[name] = json.loads(path.read_text())
                continue
            start = time.perf_counter()
            detector.fit(maps["train"])
            fit_seconds = time.perf_counter() - start
            benign = -detector.decision_function(maps["test"])
            row = {
                "fit_seconds": fit_seconds,
                "parameters": _parameters(detector),
                "benign_test_flagged": float(np.mean(benign > 0)),
            }
            for attack in ("fgsm", "pgd"):
                adversarial = -detector.decision_function(maps[attack])
                labels = np.r_[np.zeros(len(benign)), np.ones(len(adversarial))]
                row[f"{attack}_auc"] = float(
                    roc_auc_score(labels, np.r_[benign, adversarial])
                )
                row[f"{attack}_n"] = len(adversarial)
            figures[name] = row
            path.write_text(json.dumps(row))
        for name, _ in detectors[1:]:
            suffix = name.removeprefix("conditional")
            for attack in ("fgsm", "pgd"):
                figures[f"{attack}_auc_difference{suffix}"] = (
                    figures[name][f"{attack}_auc"]
                    - figures["per_class"][f"{attack}_auc"]
                )
        out["presets"][preset] = figures
        for name, _ in detectors:
            row = figures[name]
            print(
                f"{preset:>17} {name:>26}: FGSM AUC {row['fgsm_auc']:.4f}, PGD AUC "
                f"{row['pgd_auc']:.4f}, benign flagged "
                f"{row['benign_test_flagged']:.3f}, {row['parameters']:,} "
                f"parameters, fit {row['fit_seconds']:.0f} s",
                flush=True,
            )
        for name, _ in detectors[1:]:
            suffix = name.removeprefix("conditional")
            print(
                f"{preset:>17} {name:>26} - per_class: FGSM "
                f"{figures['fgsm_auc_difference' + suffix]:+.4f}, PGD "
                f"{figures['pgd_auc_difference' + suffix]:+.4f}"
            )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", action="store_true", help="MNIST quality only")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument(
        "--data-home", default=os.environ.get("SKADV_DATA_HOME"), help="MNIST files"
    )
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        kind, n_classes, n_maps, epochs = args.one
        print(json.dumps(one_run(kind, int(n_classes), int(n_maps), int(epochs))))
        return
    output = OUTPUT.with_name("many-classes-quick.json") if args.quick else OUTPUT
    results = json.loads(output.read_text()) if output.exists() else {}
    if args.mnist:
        results["mnist"] = run_mnist(args.data_home, args.quick)
    else:
        results["scale"] = run_scale(args.quick)
    results["command"] = "OMP_NUM_THREADS=1 python benchmarks/bench_many_classes.py"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
