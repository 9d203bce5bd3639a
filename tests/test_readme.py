"""The README's examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("art")
    monkeypatch.chdir(tmp_path)  # the example writes detector.joblib
    example, attack, tune = python_blocks()
    namespace = {}
    exec(example, namespace)
    assert (tmp_path / "detector.joblib").exists()
    exec(attack, namespace)
    auc = namespace["detection_roc_auc"](namespace["y_eval"], namespace["score"])
    assert auc > 0.6  # PGD at eps 0.2, in-sample benign digits; measured 0.67
    # The threshold recipe, on the example's own labelled set.
    namespace.update(
        X_calibration=namespace["X_eval"],
        y_calibration=namespace["y_eval"],
        X_new=namespace["X_eval"][:4],
    )
    exec(tune, namespace)
    assert set(namespace["tuned"].predict(namespace["X_new"])) <= {-1, 1}
