"""
=======================================================
Choosing the threshold: ROC, precision-recall and FPR
=======================================================

The detector ranks inputs by how badly their class's autoencoder rebuilds
their explanation; the threshold turns that ranking into decisions. This
example plots the ranking's ROC and precision-recall curves with
scikit-learn's displays (with the signs right), checks what ``contamination``
means on held-out data, and sets the threshold in the two ways scikit-learn
offers: tuned for a score on a labelled calibration set, or fixed to meet a
false-positive budget.
"""

import shutil
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import (
    PrecisionRecallDisplay,
    RocCurveDisplay,
    roc_auc_score,
)
from sklearn.model_selection import (
    FixedThresholdClassifier,
    TunedThresholdClassifierCV,
    train_test_split,
)
from sklearn.pipeline import make_pipeline

from skadv import (
    DetectorClassifier,
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    make_reconstructor,
)
from skadv.attacks import make_adversarial
from skadv.datasets import load_digits
from skadv.models import make_digits_classifier

torch.set_num_threads(1)  # tiny networks: one thread is the fastest
# sphinx_gallery_thumbnail_number = 3

# %%
# Three splits
# ------------
# The detector is fitted on benign *training* digits. Thresholds are then
# calibrated on a separate *calibration* split (benign digits and their
# adversarial versions), and everything is judged on the *test* split, which
# neither step has seen.
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)
X_fit, X_cal, y_fit, y_cal = train_test_split(
    X_train, y_train, test_size=0.25, stratify=y_train, random_state=0
)
classifier = make_digits_classifier(random_state=0).fit(X_fit, y_fit)


def labelled(X_benign, y_benign):
    """Benign inputs (+1) followed by their successful PGD versions (-1)."""
    X_adv, success = make_adversarial(
        classifier, X_benign, y_benign, attack="pgd", eps=0.2, random_state=0
    )
    X_both = np.concatenate([X_benign, X_adv[success]])
    return X_both, np.r_[np.ones(len(X_benign)), -np.ones(success.sum())]


X_calibration, y_calibration = labelled(X_cal, y_cal)
X_eval, y_eval = labelled(X_test, y_test)

# ``memory`` caches the autoencoders: refitting with another contamination
# below only recomputes the thresholds.
cache = tempfile.mkdtemp()
detector = make_pipeline(
    ExplanationTransformer(classifier),
    ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(max_epochs=100, module__hidden=32),
        contamination=0.05,
        memory=cache,
        random_state=0,
    ),
).fit(X_fit)

# %%
# ROC and precision-recall curves, with the signs right
# -----------------------------------------------------
# "Adversarial" (-1) is the class to detect, so it is the positive class:
# pass ``pos_label=-1`` *and* a score that grows with it, the negated
# ``decision_function``. The decision function itself is higher for *benign*
# inputs; with ``pos_label=-1`` it would draw the mirror image of the ROC curve
# (AUC ``1 - AUC``), and its precision-recall curve would describe finding
# benign inputs, not adversarial ones.
score = -detector.decision_function(X_eval)  # higher = more adversarial

fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
roc = RocCurveDisplay.from_predictions(
    y_eval,
    score,
    pos_label=-1,
    name="detector",
    ax=ax_roc,
    plot_chance_level=True,
)
pr = PrecisionRecallDisplay.from_predictions(
    y_eval,
    score,
    pos_label=-1,
    name="detector",
    ax=ax_pr,
    plot_chance_level=True,
)
flagged = detector.predict(X_eval) == -1
fpr, tpr = flagged[y_eval == 1].mean(), flagged[y_eval == -1].mean()
ax_roc.plot(fpr, tpr, "o", color="black", label="contamination=0.05")
ax_roc.legend(loc="lower right")
ax_roc.set_title("ROC: adversarial (-1) is positive")
ax_pr.set_title("Precision-recall: adversarial (-1) is positive")

mirrored = roc_auc_score(y_eval == -1, detector.decision_function(X_eval))
print(f"ROC AUC, the right way: {roc.roc_auc:.3f}")
print(f"ROC AUC, the sign wrong: {mirrored:.3f}")

# %%
# ``contamination`` is a false-positive rate on *training* data
# -------------------------------------------------------------
# Each class's threshold is the ``contamination`` quantile of its benign
# *training* scores. The autoencoders rebuild their own training maps a little
# better than new ones, so on held-out benign digits somewhat more than
# ``contamination`` are flagged. Refitting for another value reuses the cached
# autoencoders and takes a fraction of a second.
contaminations = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3]
held_out_fpr, held_out_tpr = [], []
for contamination in contaminations:
    detector.set_params(
        explanationreconstructiondetector__contamination=contamination
    ).fit(X_fit)
    flagged = detector.predict(X_eval) == -1
    held_out_fpr.append(flagged[y_eval == 1].mean())
    held_out_tpr.append(flagged[y_eval == -1].mean())
    print(
        f"contamination {contamination:.2f}: test FPR {held_out_fpr[-1]:.3f}, "
        f"TPR {held_out_tpr[-1]:.3f}"
    )
# Back to 5% for the rest of the example.
detector.set_params(explanationreconstructiondetector__contamination=0.05)
detector.fit(X_fit)

fig, ax = plt.subplots(figsize=(5, 4), layout="constrained")
ax.plot(contaminations, held_out_fpr, "o-", label="benign flagged (FPR)")
ax.plot(contaminations, held_out_tpr, "s-", label="adversarial flagged (TPR)")
ax.plot([0, 0.3], [0, 0.3], ":", color="grey", label="FPR = contamination")
ax.set_xlabel("contamination")
ax.set_ylabel("rate on the test digits")
ax.legend()

# %%
# Tuning the threshold on a labelled calibration set
# --------------------------------------------------
# scikit-learn's threshold tuners take binary classifiers:
# :class:`~skadv.DetectorClassifier` presents the fitted detector as one
# (``classes_ = [-1, 1]``, its decision function as the score of +1). With
# ``cv="prefit", refit=False`` the autoencoders are left as they are and only
# the threshold is chosen, here to maximise balanced accuracy.
tuned = TunedThresholdClassifierCV(
    DetectorClassifier(detector),
    scoring="balanced_accuracy",
    cv="prefit",
    refit=False,
).fit(X_calibration, y_calibration)
print(f"tuned threshold on the decision function: {tuned.best_threshold_:.4f}")

# %%
# Fixing the threshold for a false-positive budget
# ------------------------------------------------
# Balanced accuracy weighs a false alarm like a missed attack, which is rarely
# what a deployed service wants. For a budget of at most 5% of benign inputs
# flagged, take the 5% quantile of the decision function on *held-out* benign
# inputs and freeze the detector so that ``fit`` does not retrain it.
budget = 0.05
benign_decision = detector.decision_function(X_calibration[y_calibration == 1])
budgeted = FixedThresholdClassifier(
    FrozenEstimator(DetectorClassifier(detector)),
    threshold=np.quantile(benign_decision, budget),
).fit(X_calibration, y_calibration)

# %%
# Where each rule lands on the test ROC curve
# -------------------------------------------
rules = {
    "contamination=0.05": detector,
    "tuned (balanced accuracy)": tuned,
    "5% FPR budget (calibrated)": budgeted,
}
fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
roc.plot(ax=ax, name="detector", plot_chance_level=True)
for (name, rule), marker in zip(rules.items(), "os^", strict=True):
    flagged = rule.predict(X_eval) == -1
    fpr, tpr = flagged[y_eval == 1].mean(), flagged[y_eval == -1].mean()
    ax.plot(fpr, tpr, marker, markersize=8, label=f"{name}: FPR {fpr:.2f}")
    print(f"{name:<28} test FPR {fpr:.3f}  TPR {tpr:.3f}")
ax.axvline(budget, color="grey", linestyle="--", linewidth=0.8)
ax.legend(loc="lower right", fontsize="small")
ax.set_title("Operating points on the test digits")

# %%
# The calibrated budget lands closest to 5% false positives on unseen
# digits; the balanced-accuracy threshold catches more attacks at the price of
# flagging a large share of benign inputs. See :ref:`threshold` for how to
# choose.
shutil.rmtree(cache)
