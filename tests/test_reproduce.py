import contextlib
import io
import json

import numpy as np
import pytest

from skadv._cli import main
from skadv.reproduce._paper import (
    PAPER_ATTACKS,
    PAPER_EPS,
    paper_mean_auc,
    per_class_auc,
    per_class_oracle_accuracy,
    per_class_rates,
    set_key,
)

# Hand-made scores (higher = more adversarial) with known per-class AUCs.
# Class 0: negatives 0.1 0.2 0.3; positives (adversarial PREDICTED as 0) 0.25,
# 0.5 and 0.15 (whose true label is 1: grouping is by adversarial prediction).
#   pairs won: 0.25 beats 2 of 3, 0.5 beats 3, 0.15 beats 1 -> 6 / 9.
# Class 1: negatives 0.5 0.6; one positive 0.9 -> 1.0.
# Class 2: negatives only (no successful attack predicted as 2) -> None.
# The failed attacks (success False) score 0.0 and would lower both AUCs.
BENIGN_SCORE = [0.1, 0.2, 0.3, 0.5, 0.6, 0.4]
BENIGN_LABEL = [0, 0, 0, 1, 1, 2]
ADV_SCORE = [0.25, 0.5, 0.15, 0.9, 0.0, 0.0]
ADV_PRED = [0, 0, 0, 1, 0, 1]
ADV_SUCCESS = [True, True, True, True, False, False]


def test_per_class_auc_groups_by_true_label_and_adversarial_prediction():
    result = per_class_auc(BENIGN_SCORE, BENIGN_LABEL, ADV_SCORE, ADV_PRED, ADV_SUCCESS)
    assert result["classes"] == [0, 1, 2]
    assert result["per_class"][0] == pytest.approx(6 / 9)
    assert result["per_class"][1] == pytest.approx(1.0)
    assert result["per_class"][2] is None
    assert result["n_benign"] == [3, 2, 1]
    assert result["n_adversarial"] == [3, 1, 0]
    assert result["mean"] == pytest.approx((6 / 9 + 1.0) / 2)
    assert result["min"] == pytest.approx(6 / 9)
    assert result["max"] == pytest.approx(1.0)


def test_per_class_auc_counts_only_successful_attacks():
    with_failures = per_class_auc(BENIGN_SCORE, BENIGN_LABEL, ADV_SCORE, ADV_PRED)
    # The two failed attacks (score 0.0, predicted 0 and 1) now count.
    assert with_failures["per_class"][0] == pytest.approx(6 / 12)
    assert with_failures["per_class"][1] == pytest.approx(2 / 4)
    assert with_failures["n_adversarial"] == [4, 2, 0]


def test_per_class_rates_and_oracle_accuracy():
    # Flag everything scoring above 0.35: class 0 keeps its 3 negatives and
    # catches 1 of 3 positives; class 1 flags both negatives and its positive.
    benign_flag = np.array(BENIGN_SCORE) > 0.35
    adv_flag = np.array(ADV_SCORE) > 0.35
    rates = per_class_rates(benign_flag, BENIGN_LABEL, adv_flag, ADV_PRED, ADV_SUCCESS)
    assert rates["fpr"] == pytest.approx(3 / 6)
    assert rates["tpr"] == pytest.approx(2 / 4)
    assert rates["accuracy"] == pytest.approx((4 / 6 + 1 / 3) / 2)
    assert rates["balanced_accuracy"] == pytest.approx(((1 + 1 / 3) / 2 + 0.5) / 2)
    oracle = per_class_oracle_accuracy(
        BENIGN_SCORE, BENIGN_LABEL, ADV_SCORE, ADV_PRED, ADV_SUCCESS
    )
    # Class 0 alternates (0.1 n, 0.15 p, 0.2 n, 0.25 p, 0.3 n, 0.5 p): at best
    # 4 of 6 right; class 1 is separable.
    assert oracle["accuracy"] == pytest.approx((4 / 6 + 1.0) / 2)


def test_per_class_auc_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        per_class_auc([0.1, 0.2], [0], [0.3], [0])
    with pytest.raises(ValueError, match="adv_success must have the length"):
        per_class_auc([0.1], [0], [0.3], [0], [True, False])


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
