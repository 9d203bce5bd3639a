"""The README's examples run as written; its and the security page's
figures are the result files'."""

import json
import re
from pathlib import Path

import pytest
from benchmark_results import RESULTS, robustness_report

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


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


def test_robustness_tables_are_what_the_benchmark_writes():
    # benchmarks/results/robustness-tables.md (included in the security page)
    # is bench_robustness.py's format_tables of the committed JSON files.
    import importlib.util

    path = ROOT / "benchmarks" / "bench_robustness.py"
    spec = importlib.util.spec_from_file_location("bench_robustness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.format_tables(RESULTS)
    assert (RESULTS / "robustness-tables.md").read_text() == expected


def _adaptive(name, eps):
    """The adaptive suite's row at ``eps`` of ``robustness-NAME.json``."""
    return next(
        r
        for r in robustness_report(name)["results"]
        if (r["attack"], r["eps"]) == ("adaptive", eps)
    )


def _newer_strategies(row, *names):
    """Inputs the strategies named (by substrings; default: the random start
    and the refining square search) got through."""
    names = names or ("random start", "from the best iterates")
    return sum(
        s["newly_evaded"]
        for s in row["strategies"]
        if any(name in s["strategy"] for name in names)
    )


def _accuracy(name):
    """The classifier test accuracy of ``robustness-NAME.json``, as written."""
    return f"{robustness_report(name)['classifier_accuracy']:.4f}"


def test_robustness_prose_figures_come_from_the_benchmark():
    section = README.read_text().split("## Under attack by someone who knows")[1]
    section = " ".join(section.split("\n## ")[0].split())
    combined, alone = "mnist-squeezing-contrastive", "mnist-feature-squeezing"
    fpr = robustness_report(combined)["benign_fpr"]
    low, high = _adaptive(combined, 0.1), _adaptive(combined, 0.3)
    assert low["n_attacked"] == high["n_attacked"]
    expected = [
        f"gets {low['evasion_rate']:.1%} through at eps 0.1 and "
        f"{high['evasion_rate']:.0%} at 0.3 ({low['n_attacked']} attacked images "
        f"each), at {fpr:.1%} benign false positives",
        f"Squeezing alone lets {_adaptive(alone, 0.1)['evasion_rate']:.1%} and "
        f"{_adaptive(alone, 0.3)['evasion_rate']:.0%} through (on another training "
        f"of the classifier, test accuracy {_accuracy(alone)} against "
        f"{_accuracy(combined)})",
        f"the suite gets {_adaptive('mnist-ko-lim-2021', 0.1)['evasion_rate']:.0%} "
        f"and {_adaptive('mnist-contrastive-h256', 0.1)['evasion_rate']:.0%} through",
    ]
    for phrase in expected:
        assert phrase in section


def test_security_page_figures_come_from_the_benchmark():
    page = (ROOT / "docs" / "user_guide" / "security.rst").read_text()
    page = " ".join(page.split())
    combined, alone = "mnist-squeezing-contrastive", "mnist-feature-squeezing"
    fpr = robustness_report(combined)["benign_fpr"]
    low, high = _adaptive(combined, 0.1), _adaptive(combined, 0.3)
    squeezed = _adaptive(alone, 0.3)
    expected = [
        f"it lets {_adaptive(alone, 0.1)['evasion_rate']:.1%} through at eps 0.1 "
        f"and {squeezed['evasion_rate']:.1%} at 0.3 "
        f"({squeezed['n_attacked']} attacked images; benign false positives "
        f"{robustness_report(alone)['benign_fpr']:.1%} of "
        f"{robustness_report(alone)['n_benign']:,} further test images)",
        f"(test accuracy {_accuracy(alone)} against {_accuracy(combined)}:",
        f"the square search from the best iterates got "
        f"{_newer_strategies(squeezed, 'from the best iterates')} of its "
        f"{round(squeezed['evasion_rate'] * squeezed['n_attacked'])} evasions and "
        f"the random start {_newer_strategies(squeezed, 'random start')}",
        f"({low['n_attacked']} attacked images at each eps;",
        f"{low['evasion_rate']:.1%} get through at eps 0.1 and "
        f"{high['evasion_rate']:.1%} at 0.3;",
        f"false-positive rate is {fpr:.2%} of the 10,000 test images",
        f"{low['seconds'] / 60:.0f} min at eps 0.1 and "
        f"{high['seconds'] / 60:.0f} min at 0.3, with ``n_jobs=2``",
    ]
    for phrase in expected:
        assert phrase in page


def test_limitations_page_figures_come_from_the_benchmark():
    # The demo's preset against the raw pixels alone, under the adaptive suite.
    page = (ROOT / "docs" / "user_guide" / "limitations.rst").read_text()
    page = " ".join(page.split())
    combined = _adaptive("digits-small-data-raw", 0.1)["evasion_rate"]
    raw = _adaptive("digits-raw-pixels", 0.1)["evasion_rate"]
    assert f"({combined:.0%} at eps 0.1 against {raw:.0%})" in page
