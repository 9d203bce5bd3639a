"""Command line: ``skadv demo`` (also ``python -m skadv demo``)."""

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
    return parser


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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
