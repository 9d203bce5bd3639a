"""
=========================================
Saving a fitted detector and loading it
=========================================

A fitted detector pipeline (the frozen classifier, the explainer and the
per-class autoencoders with their thresholds) is one scikit-learn object:
``joblib.dump`` saves it and ``joblib.load`` gives it back, scoring exactly as
before. Loading runs the pickle machinery, so **only load files you trust**.
"""

import tempfile
from pathlib import Path

import joblib
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from skadv import (
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    make_reconstructor,
)
from skadv.attacks import make_adversarial
from skadv.datasets import load_digits
from skadv.models import make_digits_classifier
from skadv.plotting import ReconstructionErrorDisplay

torch.set_num_threads(1)  # tiny networks: one thread is the fastest

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)
classifier = make_digits_classifier(random_state=0).fit(X_train, y_train)
detector = make_pipeline(
    ExplanationTransformer(classifier),
    ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(max_epochs=100, module__hidden=32),
        random_state=0,
    ),
).fit(X_train)

# %%
# Save, then load
# ---------------
# The file holds the classifier too: the transformer cannot explain without it.
folder = Path(tempfile.mkdtemp())
path = folder / "detector.joblib"
joblib.dump(detector, path)
print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB")

loaded = joblib.load(path)  # trusted file: we just wrote it

# %%
# The loaded detector scores exactly like the original
# ----------------------------------------------------
X_adv, success = make_adversarial(
    classifier, X_test, y_test, attack="fgsm", eps=0.2, random_state=0
)
X_eval = np.concatenate([X_test, X_adv[success]])
y_eval = np.r_[np.ones(len(X_test)), -np.ones(success.sum())]

before = detector.decision_function(X_eval)
after = loaded.decision_function(X_eval)
np.testing.assert_array_equal(before, after)
# Same thresholds, too.
np.testing.assert_array_equal(detector[-1].offset_, loaded[-1].offset_)
print("identical decisions:", bool(np.array_equal(before, after)))

fig, (ax_same, ax_errors) = plt.subplots(
    1, 2, figsize=(12, 4.2), layout="constrained", width_ratios=[1, 2.4]
)
colors = np.where(y_eval == 1, "#0072B2", "#D55E00")  # benign, adversarial
ax_same.scatter(before, after, s=6, c=colors)
ax_same.axline((0, 0), slope=1, color="grey", linestyle=":")
ax_same.set_xlabel("decision_function, original")
ax_same.set_ylabel("decision_function, loaded")
ax_same.set_title("Same scores after the round trip")
display = ReconstructionErrorDisplay.from_estimator(
    loaded, X_eval, y_eval, ax=ax_errors
)
ax_errors.set_title("The loaded detector on test digits and FGSM versions")

# %%
# Loading elsewhere
# -----------------
# - A detector fitted on a GPU loads on a CPU-only machine: skorch maps the
#   autoencoders' weights to the CPU (with a warning), and
#   :class:`~skadv.ExplanationTransformer` does the same for the classifier.
# - Load with the same versions of skadv, scikit-learn, skorch and torch as
#   the ones that saved the file: pickles are not a stable exchange format.
# - Unpickling runs code chosen by whoever wrote the file: never load a
#   detector from an untrusted source (see :ref:`persistence`).
for file in folder.iterdir():
    file.unlink()
folder.rmdir()
