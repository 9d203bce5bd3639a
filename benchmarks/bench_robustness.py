"""Detectors against attackers who ignore them and attackers who know them.

For each preset: the detector is fitted on benign training data, its threshold
(``contamination=0.05``) is fixed, its false-positive rate is measured on the
benign test set, then ``skadv.attacks.evaluate_robustness`` runs plain PGD and
the adaptive suite (orthogonal and selective PGD through straight-through
surrogates of two steepnesses, targeted orthogonal runs towards each wrong
class from the second most likely on, an orthogonal run from a random start,
then gradient-free square searches on the exact scores, from the authors'
start and from the best misclassified iterate; best-of per input) on
correctly classified test inputs, in ``--n-jobs`` processes. Success is judged
on the real model and the real fitted detector.

Usage::

    python benchmarks/bench_robustness.py                       # digits, every preset
    python benchmarks/bench_robustness.py --dataset mnist --data-home DIR \\
        --preset ko-lim-2021 contrastive-h256
    python benchmarks/bench_robustness.py --dataset mnist --data-home DIR \\
        --preset feature-squeezing --fit-on test
    python benchmarks/bench_robustness.py --quick               # a smoke run
    python benchmarks/bench_robustness.py --summaries-only      # tables, figures

``--fit-on test`` fits the detectors on half of the test images not attacked
and measures the benign FPR on the other half: for feature squeezing, which
learns only its threshold, from the model's softmax, and the model is more
confident on the training images it learned from (a threshold from them
flags 6.3% of MNIST's test images at ``contamination=0.05``).

Results go to ``benchmarks/results/robustness-<dataset>-<preset>.json`` and a
figure ``robustness-<dataset>.png``. ``--classifier-state`` reuses a trained
``MnistCNN`` state_dict; the MNIST classifier trained here is cached under
``benchmarks/results/cache/``.
"""

import argparse
import json
import os
import re
import time
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.model_selection import train_test_split

import skadv
from skadv import list_presets, make_detector
from skadv._presets import PRESETS
from skadv.attacks import evaluate_robustness

RESULTS = Path(__file__).parent / "results"
SUITE = {
    "methods": ["orthogonal", "selective"],
    "surrogates": [["straight_through", 10.0], ["straight_through", 20.0]],
    "n_targets": 8,
    "target_methods": ["orthogonal"],
    "plain_pgd": True,
    "n_restarts": 1,
    "random_starts": 1,
    "square_queries": 1000,
}
#: ``--suite square``: plain PGD and the gradient-free square search only, to
#: measure what the search adds without rerunning the gradient strategies.
SQUARE_ONLY = dict(SUITE, methods=[], target_methods=[], n_targets=0, random_starts=0)


def fitted(classifier, preset, X_train, args):
    """The preset fitted on ``X_train`` (cached: fitting MNIST takes minutes)."""
    detector = make_detector(
        classifier, preset=preset, n_jobs=args.n_jobs, random_state=0
    )
    # The registry's settings, not repr(detector): a skorch net's repr prints a
    # set, whose order changes from one Python process to the next.
    settings = {
        name: PRESETS[name] for name in (preset, *PRESETS[preset].get("members", ()))
    }
    # The classifier's weights too: a detector fitted on another model's maps
    # or softmax is not this model's detector.
    weights = {
        k: v.detach().cpu().numpy() for k, v in classifier.module_.state_dict().items()
    }
    key = joblib.hash((settings, X_train, weights, skadv.__version__))
    path = RESULTS / "cache" / f"robustness-{args.dataset}-{preset}-{key[:12]}.joblib"
    if path.exists():
        detector, fit_seconds = joblib.load(path)
        return detector, fit_seconds
    start = time.perf_counter()
    detector.fit(X_train)
    fit_seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump((detector, fit_seconds), path)
    return detector, fit_seconds


def load(dataset, data_home, classifier_state):
    if dataset == "digits":
        from skadv.datasets import load_digits
        from skadv.models import make_digits_classifier

        X, y = load_digits(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.3, stratify=y, random_state=0
        )
        classifier = make_digits_classifier(random_state=0).fit(X_train, y_train)
        return classifier, X_train, X_test, y_test
    from skadv.datasets import load_mnist
    from skadv.models import make_mnist_classifier

    X_train, y_train = load_mnist(subset="train", data_home=data_home, return_X_y=True)
    X_test, y_test = load_mnist(subset="test", data_home=data_home, return_X_y=True)
    classifier = make_mnist_classifier(random_state=0)
    state = classifier_state or RESULTS / "cache" / "mnist-cnn-seed0.pt"
    if Path(state).exists():
        classifier.initialize()
        classifier.module_.load_state_dict(torch.load(state, weights_only=True))
    else:
        classifier.fit(X_train, y_train)
        Path(state).parent.mkdir(parents=True, exist_ok=True)
        torch.save(classifier.module_.state_dict(), state)
    return classifier, X_train, X_test, y_test


def plot(dataset, reports, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 + 2.5 * len(reports), 3.6), layout="constrained")
    axes = fig.subplots(1, len(reports), sharey=True, squeeze=False)[0]
    for ax, (preset, report) in zip(axes, reports.items(), strict=True):
        for attack, style in (("pgd", "o--"), ("adaptive", "s-")):
            rows = [r for r in report["results"] if r["attack"] == attack]
            label = "plain PGD" if attack == "pgd" else "adaptive suite"
            ax.plot(
                [r["eps"] for r in rows],
                [r["evasion_rate"] for r in rows],
                style,
                label=label,
            )
        ax.set_title(f"{preset}\nbenign FPR {report['benign_fpr']:.3f}", fontsize=9)
        ax.set_xlabel("eps (L-inf)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("misclassified and undetected")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{dataset}: share of attacked inputs that get through", fontsize=10)
    fig.savefig(path, dpi=120)


def _f(value):
    return "n/a" if value is None else f"{value:.3f}"


def _data_name(report):
    """The table's data column: the data set, and what sets the run apart."""
    bits = report["settings"]["suite"].get("quantize")
    name = report["dataset"] + (f" ({bits}-bit)" if bits else "")
    if not report["settings"]["suite"]["methods"]:
        name += " (plain PGD + square search only)"
    return name


def format_tables(results_dir=RESULTS):
    """Markdown tables of every full (not quick) robustness-*.json result."""
    reports = [
        json.loads(path.read_text())
        for path in sorted(Path(results_dir).glob("robustness-*.json"))
        if "-quick" not in path.name
    ]
    lines = [
        "| data | preset | eps | benign FPR | attacked | plain PGD: misled / "
        "through | adaptive suite: misled / through | ROC AUC, PGD -> adaptive "
        "| suite time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    settings = []
    for report in reports:
        rows = {(r["eps"], r["attack"]): r for r in report["results"]}
        name = _data_name(report)
        held_out = report.get("fit_on") == "test"
        for eps in report["settings"]["eps"]:
            pgd, adaptive = rows[(eps, "pgd")], rows[(eps, "adaptive")]
            lines.append(
                f"| {name} | `{report['preset']}` | {eps:g} | "
                f"{report['benign_fpr']:.3f}{'*' if held_out else ''} | "
                f"{adaptive['n_attacked']} | "
                f"{pgd['attack_success_rate']:.3f} / {pgd['evasion_rate']:.3f} | "
                f"{adaptive['attack_success_rate']:.3f} / "
                f"**{adaptive['evasion_rate']:.3f}** | "
                f"{_f(pgd['roc_auc'])} -> {_f(adaptive['roc_auc'])} | "
                f"{adaptive['seconds'] / 60:.1f} min |"
            )
        settings.append(
            f"- {name}, `{report['preset']}` (classifier test accuracy "
            f"{report['classifier_accuracy']:.4f}): {report['attack_settings']}"
            + (f". Fitted on {report['fit_data']}" if held_out else "")
        )
    intro = (
        "Share of the attacked test inputs (correctly classified, 500 or fewer) "
        "that end misclassified by the model (misled) and misclassified *and* "
        "not flagged by the real fitted detector at its own threshold, fixed at "
        "fit on benign data with `contamination=0.05` (through). Benign FPR: "
        "share of the benign test set flagged at that threshold (*: fitted on "
        "half of the test images not attacked, the FPR measured on the other "
        "half; see the settings). ROC AUC: benign "
        "test inputs against the successful adversarial ones. Suite time: wall "
        "time on 2 CPU cores, one torch thread per run; some runs shared the "
        "cores with other jobs, so the times are upper bounds. The classifier "
        "is trained from the same recipe and seed when no cached weights are "
        "given, but training is not bit-for-bit reproducible across CPUs: the "
        "settings give each row's classifier test accuracy, and rows with "
        "different accuracies are against different classifiers."
    )
    return "\n".join(
        [
            intro,
            "",
            *lines,
            "",
            "Attack settings:",
            "",
            *settings,
            "",
            *_strategy_lines(reports),
        ]
    )


def _short(strategy):
    """A strategy's name without the parts every row shares."""
    strategy = strategy.replace("straight_through beta", "beta")
    return re.sub(r", \d+ queries$", "", strategy)


def _strategy_lines(reports):
    """Which of the suite's strategies got the evasions, per report and eps."""
    lines = [
        "Where the suite's evasions came from: the inputs each strategy newly "
        "got through, in the suite's order (each attacks only the inputs no "
        "earlier one got through; strategies that got none through are left "
        "out; beta: the straight-through surrogate's softplus steepness; "
        "target k: towards each input's k-th most likely class).",
        "",
        "| data | preset | eps | newly through, by strategy |",
        "| --- | --- | --- | --- |",
    ]
    for report in reports:
        for row in report["results"]:
            if row["attack"] != "adaptive" or "strategies" not in row:
                continue
            found = "; ".join(
                f"{_short(s['strategy'])}: {s['newly_evaded']}"
                for s in row["strategies"]
                if s["newly_evaded"]
            )
            lines.append(
                f"| {_data_name(report)} | `{report['preset']}` | {row['eps']:g} | "
                f"{found or 'none'} |"
            )
    return [*lines, ""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--data-home", default=os.environ.get("SKADV_DATA_HOME"))
    parser.add_argument(
        "--preset", nargs="+", choices=sorted(list_presets()), default=None
    )
    parser.add_argument("--n-attack", type=int, default=500, help="inputs attacked")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument(
        "--quantize", type=int, default=None, help="keep iterates on a b-bit grid"
    )
    parser.add_argument("--classifier-state", help="MNIST: a MnistCNN state_dict")
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=2,
        help="processes for the autoencoders' training and the adaptive suite",
    )
    parser.add_argument(
        "--fit-on",
        choices=["train", "test"],
        default="train",
        help="benign data the detectors are fitted on: the classifier's training "
        "images, or half of the test images not attacked (the benign FPR is then "
        "measured on the other half). 'test' is for detectors that learn nothing "
        "but their threshold from a score that depends on the classifier's "
        "confidence, which is higher on the images it was trained on",
    )
    parser.add_argument(
        "--suite",
        choices=["full", "square"],
        default="full",
        help="'square': plain PGD and the square search only (the report is "
        "written with a -square suffix)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="50 inputs, 20 steps, one surrogate"
    )
    parser.add_argument("--output-dir", default=str(RESULTS))
    parser.add_argument(
        "--summaries-only",
        action="store_true",
        help="rewrite the tables and figures from the result files in "
        "--output-dir, running nothing",
    )
    args = parser.parse_args(argv)
    if args.summaries_only:
        write_summaries(args.output_dir)
        return
    presets = args.preset or list(list_presets())
    suite = dict(SUITE if args.suite == "full" else SQUARE_ONLY)
    n_attack, max_iter = args.n_attack, args.max_iter
    if args.quick:
        n_attack, max_iter = 50, 20
        suite.update(surrogates=[["straight_through", 10.0]], square_queries=50)
        if args.suite == "full":
            suite.update(n_targets=1)
    if args.quantize:
        suite["quantize"] = args.quantize
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    classifier, X_train, X_test, y_test = load(
        args.dataset, args.data_home, args.classifier_state
    )
    accuracy = float(np.mean(classifier.predict(X_test) == y_test))
    print(f"{args.dataset}: classifier test accuracy {accuracy:.4f}", flush=True)
    order = np.random.default_rng(0).permutation(len(X_test))
    pick, rest = order[:n_attack], order[n_attack:]
    if args.fit_on == "test":
        X_fit, X_benign = X_test[rest[: len(rest) // 2]], X_test[rest[len(rest) // 2 :]]
        fit_data = (
            f"{len(rest) // 2} benign test images outside the attacked ones; "
            f"benign FPR on the other {len(rest) - len(rest) // 2}"
        )
    else:
        X_fit, X_benign = X_train, X_test
        fit_data = "the classifier's training images; benign FPR on the test images"
    reports = {}
    for preset in presets:
        start = time.perf_counter()
        detector, fit_seconds = fitted(classifier, preset, X_fit, args)
        print(f"{preset}: fitted in {fit_seconds:.0f} s", flush=True)
        X_attack = X_test[pick]
        if args.quantize:
            levels = 2**args.quantize - 1
            X_attack = np.round(X_attack * levels) / levels
        report = evaluate_robustness(
            detector,
            X_attack,
            y_test[pick],
            X_benign=X_benign,
            eps=args.eps,
            max_iter=max_iter,
            suite_params=suite,
            n_jobs=args.n_jobs,
            verbose=2,
        )
        report.update(
            dataset=args.dataset,
            preset=preset,
            description=list_presets()[preset],
            classifier_accuracy=accuracy,
            fit_seconds=round(fit_seconds, 1),
            fit_on=args.fit_on,
            fit_data=fit_data,
            attack_settings=(
                f"L-inf, {max_iter} steps per gradient run, signed steps from "
                "eps/8 decaying (cosine) to eps/80, no random start; adaptive "
                "suite: "
                + ("plain PGD first, then " if suite.get("plain_pgd") else "")
                + (
                    f"methods {suite['methods']}, surrogates {suite['surrogates']}, "
                    f"targeted {suite['target_methods']} runs towards the "
                    f"{suite['n_targets']} most likely wrong classes after the "
                    f"first, {suite.get('random_starts', 0)} run(s) of "
                    f"{suite['methods'][0]} from a random start, then "
                    if suite["methods"]
                    else ""
                )
                + f"square searches of {suite['square_queries']} queries per "
                "input on the exact scores (p_init 0.05) from the authors' start, "
                "then from the best misclassified iterate, "
                f"{suite['n_restarts']} run(s) per strategy"
                + (f", {args.quantize}-bit iterates" if args.quantize else "")
                + "; best-of per input; plain PGD: the classifier's margin only"
            ),
            command="python benchmarks/bench_robustness.py "
            + " ".join(argv if argv is not None else os.sys.argv[1:]),
        )
        reports[preset] = report
        suffix = "-quick" if args.quick else ""
        suffix += f"-{args.quantize}bit" if args.quantize else ""
        suffix += "-square" if args.suite == "square" else ""
        path = output / f"robustness-{args.dataset}-{preset}{suffix}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path} ({time.perf_counter() - start:.0f} s)", flush=True)
    if not args.quick:
        write_summaries(output, [args.dataset])


def write_summaries(output, datasets=("digits", "mnist")):
    """The tables of every result file in ``output`` and each data set's figure."""
    output = Path(output)
    (output / "robustness-tables.md").write_text(format_tables(output))
    for dataset in datasets:
        # The figure of every preset measured on this data set so far.
        everything = {
            f"{r['preset']}"
            + (
                f" ({bits}-bit)"
                if (bits := r["settings"]["suite"].get("quantize"))
                else ""
            )
            + ("" if r["settings"]["suite"]["methods"] else " (square only)"): r
            for r in (
                json.loads(p.read_text())
                for p in sorted(output.glob(f"robustness-{dataset}-*.json"))
                if "-quick" not in p.name
            )
        }
        if everything:
            plot(dataset, everything, output / f"robustness-{dataset}.png")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
