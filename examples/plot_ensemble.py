"""
================================================
An ensemble of detectors with a guaranteed FPR
================================================

Two detectors watch the same classifier: Ko & Lim's explanation-map
autoencoders, and an isolation forest on the raw pixels.
:class:`~skadv.EnsembleDetector` fits both on the same benign digits, turns
each one's score into a conformal p-value on benign digits held out from
both, combines the p-values, and calibrates the combination again on the
same held-out digits, so that at most ``contamination`` of new benign digits
are flagged however much the two detectors agree. The attack is FGSM at
eps 0.2 on the held-out test digits.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skadv import (
    EnsembleDetector,
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    calibration_fpr_distribution,
    make_reconstructor,
)
from skadv.attacks import make_adversarial
from skadv.datasets import load_digits
from skadv.metrics import detection_roc_auc
from skadv.models import make_digits_classifier

torch.set_num_threads(1)  # tiny networks: one thread is the fastest

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)
model = make_digits_classifier(random_state=0).fit(X_train, y_train)
X_adv, success = make_adversarial(
    model, X_test, y_test, attack="fgsm", eps=0.2, random_state=0
)
X_eval = np.concatenate([X_test, X_adv[success]])
y_eval = np.r_[np.ones(len(X_test)), -np.ones(success.sum())]  # +1 benign


def flatten(X):
    return X.reshape(len(X), -1)


# %%
# The ensemble
# ------------
# Members are named, as in scikit-learn's ``VotingClassifier``: their
# parameters are ``name__param`` for ``set_params`` and ``GridSearchCV``.
# 20% of the benign training digits (252) are held out from both members to
# calibrate.
ensemble = EnsembleDetector(
    [
        (
            "saliency",
            make_pipeline(
                ExplanationTransformer(model, method="input_x_gradient"),
                ExplanationReconstructionDetector(
                    reconstructor=make_reconstructor(max_epochs=50), random_state=0
                ),
            ),
        ),
        (
            "pixels",
            make_pipeline(
                FunctionTransformer(flatten), IsolationForest(random_state=0)
            ),
        ),
    ],
    combine="fisher",
    contamination=0.05,
    random_state=0,
).fit(X_train)

member_p = ensemble.member_p_values(X_eval)
for j, name in enumerate(ensemble.named_detectors_):
    print(f"{name:>8}: ROC AUC {detection_roc_auc(y_eval, -member_p[:, j]):.3f}")
for combine in ("fisher", "min", "mean", "bonferroni"):
    p = ensemble.set_params(combine=combine).p_value(X_eval)
    print(
        f"{combine:>10}: ROC AUC {detection_roc_auc(y_eval, -p):.3f}, "
        f"benign flagged {np.mean(p[y_eval == 1] < 0.05):.3f}, "
        f"attacks flagged {np.mean(p[y_eval == -1] < 0.05):.3f}"
    )
ensemble.set_params(combine="fisher")

# %%
# The pixel forest sees FGSM clearly (every pixel moves by 0.2); the
# explanation maps of the 8x8 digits much less. Combined, the ensemble stays
# close to its best member, and the share of benign test digits flagged stays
# below 0.05. Both members' p-values of each digit, with the region the
# ensemble flags:
p = ensemble.p_value(X_eval)
fig, ax = plt.subplots(figsize=(5, 4.5))
for label, name, marker in ((1, "benign", "o"), (-1, "FGSM", "x")):
    rows = y_eval == label
    ax.scatter(
        member_p[rows, 0],
        member_p[rows, 1],
        s=12,
        marker=marker,
        c=np.where(p[rows] < 0.05, "tab:red", "tab:blue"),
        label=name,
        alpha=0.6,
    )
ax.set(
    xscale="log",
    yscale="log",
    xlabel="p-value, explanation maps",
    ylabel="p-value, raw pixels",
    title="Red: flagged by the ensemble (Fisher)",
)
ax.legend(loc="lower right")

# %%
# How many calibration rows?
# --------------------------
# The guarantee is on average over the calibration draw. The false-positive
# rate of one fitted ensemble is Beta-distributed: with ``n`` calibration rows
# its spread is about ``sqrt(0.05 * 0.95 / n)``, so 252 rows give 0.047 +-
# 0.013 and about 475 rows are needed for +-0.01.
sizes = np.array([20, 50, 100, 250, 500, 1000, 2000])
low, high = np.array(
    [calibration_fpr_distribution(n, 0.05).interval(0.9) for n in sizes]
).T
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.fill_between(sizes, low, high, alpha=0.3, label="90% of calibration sets")
ax.axhline(0.05, color="k", lw=1, label="contamination")
ax.set(
    xscale="log",
    xlabel="benign calibration rows",
    ylabel="false-positive rate",
    title="Realised FPR at contamination=0.05",
)
ax.legend()
plt.show()
