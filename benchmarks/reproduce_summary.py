"""The digits study's headline table, written from its result files.

One row per preset, peer method and ensemble of ``skadv reproduce --dataset
digits``: the benign test FPR at the detector's own threshold
(``contamination=0.05``) on the demo's split and on a second split and
classifier (``--random-state 1``), and the pooled ROC AUC and TPR at 5% FPR
against FGSM and PGD at eps 0.1 on the demo's split::

    python benchmarks/reproduce_summary.py

writes ``benchmarks/results/reproduce-digits-summary.md`` from
``reproduce-digits.json`` and ``reproduce-digits-seed1.json``; the docs'
results page includes it.
"""

import json
from pathlib import Path

from skadv.reproduce._report import summary_tables

RESULTS = Path(__file__).parent / "results"
#: The names the docs use for the study's detectors.
NAMES = {"paper": "paper (`ko-lim-2021`)", "feature-squeezing": "feature squeezing"}


def summary(results, second):
    """Markdown table of ``results`` with the benign FPR of ``second`` beside it."""
    other = {row["detector"]: row for row in summary_tables(second)["comparison"]}
    lines = [
        "| detector | role | benign test FPR (second split) | FGSM 0.1: pooled "
        "AUC / TPR at 5% FPR | PGD 0.1: pooled AUC / TPR at 5% FPR |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in summary_tables(results)["comparison"]:
        name = row["detector"]
        cells = [
            f"{row['sets'][key]['pooled_auc']:.3f} / "
            f"{row['sets'][key]['tpr_at_5_fpr']:.2f}"
            for key in ("fgsm@0.10", "pgd@0.10")
        ]
        fpr = f"{row['test_fpr']:.3f}"
        if name in other:
            fpr += f" ({other[name]['test_fpr']:.3f})"
        label = NAMES.get(name, name if row["role"] == "peer" else f"`{name}`")
        lines.append(f"| {label} | {row['role']} | {fpr} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main():
    results, second = (
        json.loads((RESULTS / f"reproduce-digits{s}.json").read_text())
        for s in ("", "-seed1")
    )
    markdown = summary(results, second)
    (RESULTS / "reproduce-digits-summary.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
