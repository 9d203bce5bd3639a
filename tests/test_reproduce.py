import contextlib
import io
import json
from pathlib import Path

import pytest

from skadv._cli import main
from skadv.reproduce._paper import (
    PAPER_ATTACKS,
    PAPER_EPS,
    paper_mean_auc,
    per_class_oracle_accuracy,
    set_key,
)
from skadv.reproduce._report import format_summary, format_tables, plot_figure2


def test_oracle_accuracy_picks_each_class_best_threshold():
    # Class 0 alternates (0.1 benign, 0.15 adv, 0.2 benign, 0.25 adv, 0.3
    # benign, 0.5 adv): at best 4 of 6 right, balanced (1/3 + 1) / 2 or
    # (2/3 + 2/3) / 2; class 1 (0.5, 0.6 benign, 0.9 adv) is separable;
    # class 2 has no adversarial row and is left out.
    y_true = [1, 1, 1, 1, 1, 1, -1, -1, -1, -1]
    y_score = [0.1, 0.2, 0.3, 0.5, 0.6, 0.4, 0.25, 0.5, 0.15, 0.9]
    y_class = [0, 0, 0, 1, 1, 2, 0, 0, 0, 1]
    oracle = per_class_oracle_accuracy(y_true, y_score, y_class)
    assert oracle["accuracy"] == pytest.approx((4 / 6 + 1.0) / 2)
    assert oracle["balanced_accuracy"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_published_numbers_are_complete():
    for attack in PAPER_ATTACKS:
        values = [paper_mean_auc(attack, eps) for eps in PAPER_EPS]
        assert all(0.9 < v < 1 for v in values)
    assert paper_mean_auc("fgsm", 0.1) == 0.9583
    assert set_key("bim", 0.1) == "bim@0.10"
    assert set_key("cw") == "cw"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("reproduce")
    printed = io.StringIO()
    argv = ["reproduce", "--dataset", "digits", "--quick", "--n-train", "300"]
    argv += ["--n-test", "90", "--epochs", "3", "--output-dir", str(out)]
    with contextlib.redirect_stdout(printed):
        main(argv)
    return out, printed.getvalue()


def test_tiny_digits_run_writes_json_tables_and_figure(tiny_run):
    out, printed = tiny_run
    results = json.loads((out / "reproduce-digits-quick.json").read_text())
    assert results["config"]["dataset"] == "digits"
    assert results["config"]["n_train"] == 300
    assert results["config"]["n_test"] == 90
    assert {"config", "classifier", "attacks", "detectors", "thresholds"} <= set(
        results
    )
    assert {"timings", "tables"} <= set(results)
    keys = {set_key(a, e) for a in PAPER_ATTACKS for e in PAPER_EPS}
    assert set(results["attacks"]) == keys
    paper = results["detectors"]["paper"]["results"]
    assert set(paper) <= keys
    for r in paper.values():
        aucs = [a for a in r["per_class"] if a is not None]
        assert all(0 <= a <= 1 for a in aucs)
        assert r["mean"] is None or r["min"] <= r["mean"] <= r["max"]
        assert len(r["per_class"]) == 10
    rules = results["thresholds"]["paper"]["rules"]
    assert "contamination=0.05" in rules
    assert "calibrated balanced accuracy" in rules
    for rule in rules.values():
        for v in rule["sets"].values():
            assert 0 <= v["fpr"] <= 1 and 0 <= v["tpr"] <= 1
    assert len(results["tables"]["figure2"]) == len(paper)
    markdown = (out / "reproduce-digits-quick-tables.md").read_text()
    assert "| FGSM | 0.1 | 0.7768 |" in markdown
    assert "Mean / min / max per-class ROC AUC" in printed
    image = pytest.importorskip("matplotlib.image").imread(
        out / "reproduce-digits-quick-figure2.png"
    )
    assert image.shape[1] > 1000
    # Attacks and explanations were cached for the next run.
    assert any((out / "cache").glob("digits-*/adv/test-fgsm@0.05.npz"))


def test_quick_and_full_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--quick", "--full"])
    assert "not allowed with argument" in capsys.readouterr().err


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.mark.parametrize("name", ["reproduce", "reproduce-quick", "reproduce-digits"])
def test_committed_tables_are_what_the_report_writes_from_the_json(name):
    results = json.loads((RESULTS / f"{name}.json").read_text())
    markdown = format_tables(results)
    assert markdown == (RESULTS / f"{name}-tables.md").read_text()
    assert "Targets" not in markdown


def test_summary_states_what_the_quick_run_shows():
    results = json.loads((RESULTS / "reproduce-quick.json").read_text())
    summary = format_summary(results)[0]
    assert summary.startswith(
        "The paper's configuration is within 0.01 of the published mean "
        "per-class ROC AUC on 8 of 18 adversarial sets; the largest difference "
        "is +0.0516 (FGSM at eps 0.05)."
    )
    assert "`contrastive-h256` is at or above the published mean on 18 of 18" in (
        summary
    )
    digits = json.loads((RESULTS / "reproduce-digits.json").read_text())
    assert format_summary(digits) == []


def test_figure_leaves_the_callers_backend_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    results = json.loads((RESULTS / "reproduce-quick.json").read_text())
    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        fig = plot_figure2(results, tmp_path / "figure2.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_ylabel() == "per-class ROC AUC"
    assert (tmp_path / "figure2.png").stat().st_size > 10_000
