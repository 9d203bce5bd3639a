"""
=============================================
Views of an input and model-aware detectors
=============================================

A *view* writes what a detector reads: the model's predicted class, then
features of the input. Any detector that reads a class column works on any
view. Here, on the 8x8 digits, three pairings are compared with a detector
that needs the model itself:

- the raw pixels with per-class autoencoders
  (:class:`~skadv.RawInputTransformer` then
  :class:`~skadv.ExplanationReconstructionDetector`, MagNet-style);
- the penultimate activations with class-conditional Gaussians
  (:class:`~skadv.ActivationTransformer` then
  :class:`~skadv.ClassConditionalGaussianDetector`, Lee et al.);
- the raw pixels with the same Gaussians;
- feature squeezing on raw inputs (:class:`~skadv.FeatureSqueezingDetector`,
  Xu et al.), with the bit-depth squeezer alone: on 8x8 images a 2x2 median
  filter changes benign predictions as much as an attack does.

Each is fitted on benign training digits only and scored on held-out digits
and their FGSM adversarial examples (eps 0.2).
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from skadv import (
    ActivationTransformer,
    ClassConditionalGaussianDetector,
    ExplanationReconstructionDetector,
    FeatureSqueezingDetector,
    RawInputTransformer,
    make_reconstructor,
)
from skadv.attacks import make_adversarial
from skadv.datasets import load_digits
from skadv.metrics import detection_roc_auc, tpr_at_fpr
from skadv.models import make_digits_classifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=0.7, stratify=y, random_state=0
)
model = make_digits_classifier(random_state=0).fit(X_train, y_train)
X_adv, success = make_adversarial(
    model, X_test, y_test, attack="fgsm", eps=0.2, random_state=0
)
X_adv = X_adv[success]  # only the attacks that change the prediction

# %%
# Four detectors, each one scikit-learn estimator fitted on benign inputs.
detectors = {
    "raw pixels + autoencoders": make_pipeline(
        RawInputTransformer(model),
        ExplanationReconstructionDetector(
            reconstructor=make_reconstructor(max_epochs=50), random_state=0
        ),
    ),
    "activations + Gaussians": make_pipeline(
        ActivationTransformer(model),
        ClassConditionalGaussianDetector(covariance="per_class"),
    ),
    "raw pixels + Gaussians": make_pipeline(
        RawInputTransformer(model),
        ClassConditionalGaussianDetector(distance="closest"),
    ),
    "feature squeezing (1 bit)": FeatureSqueezingDetector(model, median_size=None),
}
labels = np.r_[np.ones(len(X_test)), -np.ones(len(X_adv))]
fig, ax = plt.subplots(figsize=(5.5, 4.5))
for name, detector in detectors.items():
    detector.fit(X_train)
    # Higher means more adversarial: the negated decision function.
    scores = -np.r_[
        detector.decision_function(X_test), detector.decision_function(X_adv)
    ]
    auc = detection_roc_auc(labels, scores)
    tpr = tpr_at_fpr(labels, scores, fpr=0.05)
    print(f"{name:28s} ROC AUC {auc:.3f}  TPR at 5% FPR {tpr:.2f}")
    fpr_curve, tpr_curve, _ = roc_curve(labels == -1, scores)
    ax.plot(fpr_curve, tpr_curve, label=f"{name} (AUC {auc:.2f})")
ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
ax.set(
    xlabel="false-positive rate (benign flagged)",
    ylabel="true-positive rate (attacks caught)",
    title="FGSM, eps 0.2, on 8x8 digits",
)
ax.legend(loc="lower right", fontsize="small")
plt.show()

# %%
# On these tiny images an FGSM step of 0.2 moves every pixel off the digits'
# few grey levels, which the pixel views see at once; the activation view and
# squeezing see only what the perturbation does to the model. The ranking on
# larger images and against attacks that know the detector can differ.
