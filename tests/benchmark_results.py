"""The benchmarks' result files, as the tests that check figures read them."""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def robustness_report(name):
    """``benchmarks/results/robustness-NAME.json``, parsed."""
    return json.loads((RESULTS / f"robustness-{name}.json").read_text())
