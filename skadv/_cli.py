"""Command line: ``skadv demo`` and ``skadv reproduce`` (also ``python -m skadv``)."""

import argparse
import sys

from skadv import __version__


def _eps_list(text):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--eps takes comma-separated numbers such as 0.1,0.3; got {text!r}"
        ) from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"--eps values must be in (0, 1]; got {text!r}"
        )
    return values


def _attack_list(text):
    from skadv.attacks import ATTACKS

    values = tuple(v.strip() for v in text.split(","))
    unknown = [v for v in values if v not in ATTACKS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}"
        )
    return values


def build_parser():
    """The argument parser of the ``skadv`` command."""
    from skadv._demo import DEMO_ATTACKS, DEMO_EPS

    parser = argparse.ArgumentParser(
        prog="skadv",
        description="Detect adversarial inputs to torch classifiers from their "
        "explanations.",
    )
    parser.add_argument("--version", action="version", version=f"skadv {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train, attack and detect on the bundled 8x8 digits (no download)",
        description="Train a small CNN on scikit-learn's bundled digits, craft "
        "adversarial examples, fit the detector on benign digits, calibrate its "
        "threshold and report detection figures; writes a picture, the results "
        "and the fitted detector.",
    )
    demo.add_argument(
        "--output-dir",
        default="skadv-demo",
        help="where to write (default: %(default)s)",
    )
    demo.add_argument(
        "--attacks",
        type=_attack_list,
        default=DEMO_ATTACKS,
        help="comma-separated attacks (default: fgsm,pgd)",
    )
    demo.add_argument(
        "--eps",
        type=_eps_list,
        default=DEMO_EPS,
        help="comma-separated L-inf budgets (default: 0.1,0.2,0.3)",
    )
    demo.add_argument("--random-state", type=int, default=0, help="seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="print nothing")
    _add_reproduce(commands)
    return parser


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _add_reproduce(commands):
    reproduce = commands.add_parser(
        "reproduce",
        help="reproduce Ko & Lim (2021) on MNIST and go past it",
        description="Run Ko & Lim's protocol on MNIST (the paper's CNN, saliency "
        "maps, one autoencoder per class, FGSM/BIM/MIM at eps 0.05-0.30, per-class "
        "ROC AUC), set thresholds without an oracle, and write the results (JSON), "
        "a Figure-2 style plot and Table-1 style markdown tables. Attacks and "
        "explanations are cached under the output folder.",
    )
    mode = reproduce.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="smoke run in a few minutes (5,000 training and 400 test images, "
        "2 classifier epochs)",
    )
    mode.add_argument(
        "--full",
        action="store_true",
        help="also the studies beyond the paper: more attacks, other explanation "
        "methods, ablations, MagNet-style baseline, best configuration",
    )
    reproduce.add_argument(
        "--data-home",
        default=None,
        help="folder with the MNIST IDX files (default: $SKADV_DATA_HOME)",
    )
    reproduce.add_argument(
        "--dataset",
        choices=("mnist", "digits"),
        default="mnist",
        help="mnist (the paper's) or the bundled 8x8 digits (default: mnist)",
    )
    reproduce.add_argument(
        "--output-dir",
        default="benchmarks/results",
        help="where to write (default: %(default)s)",
    )
    reproduce.add_argument(
        "--n-train",
        type=_positive_int,
        default=None,
        help="number of training images (default: all)",
    )
    reproduce.add_argument(
        "--n-test",
        type=_positive_int,
        default=None,
        help="number of test images (default: all)",
    )
    reproduce.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="classifier training epochs (default: 10)",
    )
    reproduce.add_argument(
        "--random-state", type=int, default=0, help="seed (default: 0)"
    )
    reproduce.add_argument(
        "--n-jobs",
        type=_positive_int,
        default=1,
        help="processes for crafting attacks and training autoencoders (default: 1)",
    )
    reproduce.add_argument(
        "--cache-dir",
        default=None,
        help="cache of attacks and explanations (default: OUTPUT_DIR/cache)",
    )
    reproduce.add_argument("--quiet", action="store_true", help="print nothing")


def main(argv=None):
    """Entry point of the ``skadv`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from skadv._demo import run_demo

        run_demo(
            args.output_dir,
            attacks=args.attacks,
            eps=args.eps,
            random_state=args.random_state,
            verbose=0 if args.quiet else 1,
        )
    elif args.command == "reproduce":
        from skadv.reproduce import reproduce

        reproduce(
            args.data_home,
            output_dir=args.output_dir,
            full=args.full,
            quick=args.quick,
            dataset=args.dataset,
            n_train=args.n_train,
            n_test=args.n_test,
            epochs=args.epochs,
            random_state=args.random_state,
            n_jobs=args.n_jobs,
            cache_dir=args.cache_dir,
            verbose=0 if args.quiet else 1,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
