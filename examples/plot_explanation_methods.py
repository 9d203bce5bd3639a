"""
===================================
Explanation methods side by side
===================================

:class:`~skadv.ExplanationTransformer` computes the explanation with one of
six captum attribution methods. This example shows the six maps of the same
digit before and after a PGD attack, then fits one detector per method and
compares their detection ROC AUC on held-out digits.
"""

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
from skadv.metrics import detection_roc_auc
from skadv.models import make_digits_classifier

torch.set_num_threads(1)  # tiny networks: one thread is the fastest

METHODS = {
    "saliency": "saliency\n(Ko & Lim)",
    "input_x_gradient": "input x\ngradient",
    "integrated_gradients": "integrated\ngradients",
    "smoothgrad": "SmoothGrad",
    "guided_backprop": "guided\nbackprop",
    "deeplift": "DeepLift",
}

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.3, stratify=y, random_state=0
)
classifier = make_digits_classifier(random_state=0).fit(X_train, y_train)
X_adv, success = make_adversarial(
    classifier, X_test, y_test, attack="pgd", eps=0.2, random_state=0
)

# %%
# One digit, six explanations
# ---------------------------
# Every method explains the class the model predicts. Maps are normalised as
# in Ko & Lim's code (absolute value, 99th percentile scaled to 1), so all
# panels share one colour scale.
i = np.flatnonzero(success)[0]
pair = np.stack([X_test[i], X_adv[i]])
maps = {}
for method in METHODS:
    explainer = ExplanationTransformer(classifier, method=method)
    maps[method] = explainer.fit_transform(pair)
predicted = maps["saliency"][:, 0].astype(int)

fig, axes = plt.subplots(
    2, 1 + len(METHODS), figsize=(11, 3.8), layout="constrained", squeeze=False
)
for row, (name, color) in enumerate(
    [("benign", "#0072B2"), ("adversarial", "#D55E00")]
):
    axes[row, 0].imshow(pair[row, 0], cmap="gray", vmin=0, vmax=1)
    axes[row, 0].set_ylabel(f"{name}\npredicted {predicted[row]}", color=color)
    for col, (method, title) in enumerate(METHODS.items(), start=1):
        axes[row, col].imshow(
            maps[method][row, 1:].reshape(8, 8), cmap="magma", vmin=0, vmax=1
        )
        if row == 0:
            axes[row, col].set_title(title, fontsize=9)
axes[0, 0].set_title("input", fontsize=9)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("The same digit before and after PGD (eps=0.2), six explanations")

# %%
# Which method separates benign from adversarial best?
# ----------------------------------------------------
# One detector per method, trained on the same benign digits (30 epochs per
# autoencoder to keep this example fast; the other examples use 100), scored
# on the held-out digits and their successful adversarial versions.
X_eval = np.concatenate([X_test, X_adv[success]])
y_eval = np.r_[np.ones(len(X_test)), -np.ones(success.sum())]
auc = {}
for method in METHODS:
    detector = make_pipeline(
        ExplanationTransformer(classifier, method=method),
        ExplanationReconstructionDetector(
            reconstructor=make_reconstructor(max_epochs=30, module__hidden=32),
            random_state=0,
        ),
    ).fit(X_train)
    auc[method] = detection_roc_auc(y_eval, -detector.decision_function(X_eval))
    print(f"{method:<21} ROC AUC {auc[method]:.3f}")

fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
bars = ax.barh(
    [METHODS[m].replace("\n", " ") for m in METHODS],
    list(auc.values()),
    color="#0072B2",
)
ax.bar_label(bars, fmt="%.3f", padding=3)
ax.axvline(0.5, color="grey", linestyle=":", label="chance")
ax.set_xlim(0.4, 1.0)
ax.invert_yaxis()
ax.set_xlabel("detection ROC AUC (PGD, eps=0.2, held-out digits)")
ax.legend(loc="lower right")

# %%
# The ranking is specific to this tiny model and data: on 8x8 digits the
# methods are within a tenth of each other. Saliency, the paper's choice, is
# also the cheapest (one forward and one backward pass per input); integrated
# gradients and SmoothGrad cost one pass per step or noise sample. Compare the
# methods on your own model and attacks before choosing one (see
# :ref:`explanation_methods`).
