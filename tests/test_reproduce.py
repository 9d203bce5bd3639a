import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skadv import (
    ClassConditionalGaussianDetector,
    EnsembleDetector,
    ExplanationReconstructionDetector,
    FeatureSqueezingDetector,
)
from skadv._cli import main
from skadv.reproduce import _study
from skadv.reproduce._paper import (
    PAPER_ATTACKS,
    PAPER_EPS,
    paper_mean_auc,
    per_class_oracle_accuracy,
    set_key,
)
from skadv.reproduce._report import (
    check_targets,
    comparison_targets,
    format_summary,
    format_tables,
    plot_figure2,
)
from skadv.reproduce._settings import (
    PEERS,
    PRESET_NAMES,
    BaselineSpec,
    DetectorSpec,
    ensemble_specs,
    peer_specs,
    preset_specs,
)

COMPARED = [
    "paper",
    *(name for name in PRESET_NAMES[1:] if name not in PEERS),
    *PEERS,
    *(s.name for s in ensemble_specs("digits") if isinstance(s, BaselineSpec)),
]


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


def _short(specs):
    """The same specs with autoencoders trained 3 epochs: the run takes seconds."""
    return [
        dataclasses.replace(s, epochs=min(s.epochs, 3))
        if isinstance(s, DetectorSpec)
        else s
        for s in specs
    ]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("reproduce")
    printed = io.StringIO()
    argv = ["reproduce", "--dataset", "digits", "--quick", "--n-train", "300"]
    argv += ["--n-test", "90", "--epochs", "3", "--output-dir", str(out)]
    with pytest.MonkeyPatch.context() as patch:
        for name in ("preset_specs", "peer_specs", "ensemble_specs"):
            original = getattr(_study, name)
            patch.setattr(
                _study, name, lambda *a, original=original: _short(original(*a))
            )
        with contextlib.redirect_stdout(printed):
            main(argv)
    return out, printed.getvalue()


def test_peers_presets_and_ensembles_share_the_protocol(tiny_run):
    out, _ = tiny_run
    results = json.loads((out / "reproduce-digits-quick.json").read_text())
    detectors = results["detectors"]
    assert [n for n in detectors if n in COMPARED] == COMPARED
    paper_sets = set(detectors["paper"]["results"])
    for name in COMPARED:
        d = detectors[name]
        # The same adversarial sets, each detector's own contamination=0.05
        # threshold on benign training data, the same figures per set.
        assert set(d["results"]) == paper_sets
        assert 0 <= d["test_fpr_at_contamination_0.05"] <= 1
        for r in d["results"].values():
            assert (
                r["n_successful"]
                == detectors["paper"]["results"][set_key(r["attack"], r["eps"])][
                    "n_successful"
                ]
            )
            assert 0 <= r["tpr_at_contamination_0.05"] <= 1
            assert 0 <= r["tpr_at_5_fpr"] <= 1
    assert detectors["multiview"]["spec"]["ensemble_of"] == [
        "contrastive-h256",
        "binarized-pixels",
    ]
    assert detectors["feature-squeezing"]["spec"]["options"] == {
        "bit_depth": 1,
        "median_size": 2,
    }
    rows = {r["detector"]: r["role"] for r in results["tables"]["comparison"]}
    assert rows == {
        **{n: "preset" for n in ["paper", *PRESET_NAMES[1:]]},
        **{n: "peer" for n in PEERS},
        "multiview+squeezing": "ensemble",
        "small-data+squeezing": "ensemble",
        "small-data+magnet-raw": "ensemble",
    }
    markdown = (out / "reproduce-digits-quick-tables.md").read_text()
    assert "## Presets, peer methods and ensembles" in markdown
    for field in ("TPR at 5% FPR", "caught at contamination=0.05", "pooled ROC AUC"):
        assert f"### {field}" in markdown
    fs = detectors["feature-squeezing"]
    assert (
        f"| feature-squeezing | peer | {fs['test_fpr_at_contamination_0.05']:.3f} | "
        f"{fs['results']['fgsm@0.05']['tpr_at_5_fpr']:.3f} |" in markdown
    )
    assert set(results["targets"]) == {
        "benign_fpr",
        "ensemble_beats_members_and_peers",
        "digits_fgsm_pgd_0.1",
    }


def test_every_detector_is_fitted_with_the_same_contamination():
    study = _study._Study.__new__(_study._Study)
    study.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    study.s = {"random_state": 0}
    study.memory = None
    study.n_jobs = 1
    study.image_shape = (8, 8)
    study.input_shape = (1, 8, 8)
    study.specs = {s.name: s for s in [*preset_specs(), *peer_specs()]}
    study._blocks = {
        "multiview": np.array([0, 65, 130]),
        "squeezing-contrastive": np.array([0, 65, 130]),
        "small-data-raw": np.array([0, 65, 130]),
    }
    kinds = {}
    for spec in [*preset_specs(), *peer_specs()]:
        detector = study.detector(spec, contamination=0.05)
        final = detector[-1] if hasattr(detector, "steps") else detector
        kinds[spec.name] = type(final)
        assert final.get_params()["contamination"] == 0.05
        if isinstance(final, EnsembleDetector):
            for _, member in final.detectors:
                while hasattr(member, "steps"):  # pipelines in pipelines
                    member = member[-1]
                assert member.get_params()["contamination"] == 0.05
    assert kinds["feature-squeezing"] is FeatureSqueezingDetector
    assert kinds["mahalanobis"] is ClassConditionalGaussianDetector
    assert kinds["magnet-raw"] is ExplanationReconstructionDetector
    assert kinds["multiview"] is EnsembleDetector
    multiview = study.detector(study.specs["multiview"])
    assert multiview.combine == "bonferroni"
    assert multiview.calibration_size == 0.1
    assert isinstance(BaselineSpec.ensemble_preset("multiview"), BaselineSpec)
    # A weighted preset is measured with its weights.
    weighted = study.detector(study.specs["squeezing-contrastive"])
    assert (weighted.combine, weighted.weights) == ("bonferroni", (2, 1))


def _fake_results(dataset, tpr, fpr):
    """Results with the detectors of the comparison: name -> TPR per set."""
    sets = {"fgsm@0.05": ("fgsm", 0.05), "fgsm@0.10": ("fgsm", 0.1)}
    sets |= {"pgd@0.10": ("pgd", 0.1), "cw": ("cw", None)}
    specs = {
        "paper": {"preset": "ko-lim-2021"},
        "multiview": {
            "preset": "multiview",
            "detector": "ensemble",
            "ensemble_of": ["paper"],
        },
        "feature-squeezing": {"detector": "feature-squeezing"},
        "ablation": {"preset": None},
    }
    return {
        "config": {"dataset": dataset},
        "detectors": {
            name: {
                "spec": spec,
                "test_fpr_at_contamination_0.05": fpr[name],
                "results": {
                    key: {
                        "attack": attack,
                        "eps": eps,
                        "mean": 0.995,
                        "pooled_auc": 0.96,
                        "tpr_at_5_fpr": tpr[name][i],
                    }
                    for i, (key, (attack, eps)) in enumerate(sets.items())
                },
            }
            for name, spec in specs.items()
        },
    }


def test_comparison_targets_count_strict_wins_and_fpr_range():
    tpr = {
        "paper": [0.5, 0.8, 0.9, 1.0],
        "multiview": [0.6, 0.9, 0.95, 1.0],
        "feature-squeezing": [0.2, 0.3, 0.96, 0.5],
        "ablation": [1.0, 1.0, 1.0, 1.0],
    }
    fpr = {"paper": 0.05, "multiview": 0.07, "feature-squeezing": 0.01}
    fpr["ablation"] = 0.2
    targets = comparison_targets(_fake_results("digits", tpr, fpr))
    ens = targets["ensemble_beats_members_and_peers"]["ensembles"]["multiview"]
    # Beats both on fgsm@0.05 and fgsm@0.10, loses pgd@0.10 to feature
    # squeezing, ties the paper at 1.0 on cw; the ablation is no peer.
    assert ens["compared_with"] == ["paper", "feature-squeezing"]
    assert ens["share_beaten"] == 0.5 and ens["share_at_least"] == 0.75
    assert ens["losses"] == ["pgd@0.10"] and ens["ties"] == ["cw"]
    assert not targets["ensemble_beats_members_and_peers"]["met"]
    assert targets["benign_fpr"]["exceptions"] == {"multiview": 0.07}
    assert targets["benign_fpr"]["others"] == {"feature-squeezing": 0.01}
    digits = targets["digits_fgsm_pgd_0.1"]
    # multiview: AUC 0.96 and TPR 0.9 / 0.95 at eps 0.1; the paper's TPR too.
    assert digits["met"] and digits["best"] == "multiview"
    assert check_targets(_fake_results("digits", tpr, fpr)) == targets


def test_mnist_target_needs_every_set_from_eps_0_1():
    tpr = {
        "paper": [0.5, 0.96, 0.97, 0.99],
        "multiview": [0.6, 0.99, 0.94, 1.0],
        "feature-squeezing": [0.2, 0.3, 0.96, 0.5],
        "ablation": [1.0, 1.0, 1.0, 1.0],
    }
    fpr = dict.fromkeys(tpr, 0.05)
    target = comparison_targets(_fake_results("mnist", tpr, fpr))["mnist_auc_and_tpr"]
    assert target["detectors"]["paper"]["met"] is False  # no deepfool set
    assert target["detectors"]["multiview"]["tpr_below_target"] == {"pgd@0.10": 0.94}
    assert target["detectors"]["paper"]["min_tpr_at_5_fpr"] == 0.96
    assert "feature-squeezing" not in target["detectors"]


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


def test_digits_summary_is_what_the_script_writes_from_the_json():
    # The docs' digits table is generated: benchmarks/reproduce_summary.py.
    import importlib.util

    path = RESULTS.parent / "reproduce_summary.py"
    spec = importlib.util.spec_from_file_location("reproduce_summary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results, second = (
        json.loads((RESULTS / f"reproduce-digits{s}.json").read_text())
        for s in ("", "-seed1")
    )
    markdown = module.summary(results, second)
    assert markdown == (RESULTS / "reproduce-digits-summary.md").read_text()
