"""The README's examples run as written, and its figures are the result files'."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def table_rows(text):
    return [line for line in text.splitlines() if re.match(r"\| \S", line)]


def test_readme_example_prints_the_demo_tables_numbers(capsys):
    pytest.importorskip("art")
    example, tune = python_blocks()
    namespace = {}
    exec(example, namespace)
    printed = capsys.readouterr().out
    row = next(
        r
        for r in json.loads((RESULTS / "demo.json").read_text())["rows"]
        if (r["attack"], r["eps"]) == ("pgd", 0.2)
    )
    expected = f"ROC AUC {row['roc_auc']:.3f}, TPR at 5% FPR {row['tpr_at_5_fpr']:.3f}"
    assert printed.strip() == expected
    assert f"# {expected}:" in example
    # The threshold recipe, on the example's own calibration split.
    exec(tune, namespace)
    assert set(namespace["tuned"].predict(namespace["X_test"][:5])) <= {-1, 1}


def test_demo_table_is_the_demo_result_file():
    rows = json.loads((RESULTS / "demo.json").read_text())["rows"]
    expected = [
        f"| {r['attack'].upper()} | {r['eps']:g} | {r['attack_success_rate']:.3f} "
        f"| {r['roc_auc']:.3f} | {r['tpr_at_5_fpr']:.3f} "
        f"| {r['calibrated_accuracy']:.3f} |"
        for r in rows
    ]
    readme = README.read_text()
    for line in expected:
        assert line in readme


def test_robustness_figures_come_from_the_benchmark():
    # Every row of the README's robustness table is a row that
    # benchmarks/bench_robustness.py wrote from its JSON results.
    section = README.read_text().split("## Under attack by someone who knows")[1]
    section = section.split("\n## ")[0]
    rows = [r for r in table_rows(section) if "`" in r]
    assert rows
    generated = (RESULTS / "robustness-tables.md").read_text()
    for row in rows:
        assert row in generated


def test_speed_figures_come_from_the_benchmark():
    # The "Fast" section's ratios are bench_speed.py's, as rounded there.
    section = README.read_text().split("## Fast")[1].split("\n## ")[0]
    section = " ".join(section.split())
    speed = json.loads((RESULTS / "speed.json").read_text())
    assert f"takes {speed['scoring']['score_over_floor']:.2f}x a bare torch" in section
    assert f"60,000 images {speed['fit']['fit_over_bare']:.2f}x a bare" in section
    assert f"({speed['fit']['n_jobs_2_speedup']:.2f}x faster again" in section
    grid = speed["grid_search"]["grid_over_single_cv"]
    assert f"costs {grid:.2f}x a single 3-fold" in section
    ratios = [
        row["score_over_floor"]
        for name, row in speed["presets"]["presets"].items()
        if name in ("contrastive-h256", "feature-squeezing", "multiview")
    ]
    assert f"cost {min(ratios):.1f}-{max(ratios):.1f}x the forward" in section
