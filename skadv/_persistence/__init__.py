"""Save and load fitted detectors without pickle: JSON and safetensors in a zip.

A skadv file describes the estimators, recursively (their class names,
parameters and fitted attributes, with the estimators nested in them described
in place, and the *names* of the reconstructor module, loss and optimizer
classes) in ``skadv.json`` and holds the autoencoders' weights in
``weights.safetensors``. Loading rebuilds everything from skadv's own classes
and from the few classes the audit and the caller allow; nothing in the file
is ever executed or unpickled.

One concern per module:

- ``_archive``: the file format (zip members, format version, SHA-256
  checksums, the classifier's weights fingerprint), written atomically;
- ``_json_values``: parameter and attribute values to JSON and back, nested
  estimators handed to the next two;
- ``_describe``: fitted estimators to a description and tensors;
- ``_build``: a description and tensors back to fitted estimators;
- ``_audit``: the classes and attributes a file may name, and the checks.
"""

from skadv._persistence._archive import read_archive, write_archive
from skadv._persistence._audit import check_modules
from skadv._persistence._build import build
from skadv._persistence._describe import describe

__all__ = ["load", "save"]


def save(estimator, path):
    """Save a fitted detector to a file that loads without unpickling anything.

    The file is a zip archive: ``skadv.json`` describes the estimator and
    every estimator nested in it (class names, parameters, fitted attributes,
    the names of the reconstructor module, loss and optimizer classes) and
    ``weights.safetensors`` holds the autoencoders' weights. SHA-256 checksums
    of both are recorded in the JSON. The file is written to a temporary file
    first, then renamed into place.

    The classifier that views, :class:`FeatureSqueezingDetector` and
    :class:`GuardedClassifier` run is not stored (only a fingerprint of its
    weights): pass it back to :func:`load`. Every one of them in the estimator
    must run the same classifier.

    Parameters
    ----------
    estimator : estimator
        A fitted estimator of skadv (a detector, a view, a
        :class:`ConformalDetector`, an :class:`EnsembleDetector`, a
        :class:`GuardedClassifier`, a :class:`DetectorClassifier`), or a fitted
        scikit-learn :class:`~sklearn.pipeline.Pipeline` or
        :class:`~sklearn.frozen.FrozenEstimator` of them, holding any of these
        in turn: what :func:`make_detector` builds, for every preset, and any
        guard around it. A meta-estimator's unfitted parameters (an
        ensemble's ``detectors``, a guard's ``detector``) are stored beside the
        fitted ones; an object held twice (a guard's ``detector_`` that is its
        ``detector``) is stored once and is one object again when loaded.
        ``ClassConditionalGaussianDetector``'s ``covariance_estimator`` may be
        any estimator of :mod:`sklearn.covariance`. Every other parameter must
        be a JSON value (number, string, boolean, None, list, tuple, dict),
        except the reconstructors' module (one of skadv's autoencoders or a
        class registered at load time), loss (a ``torch.nn`` loss class) and
        optimizer (a ``torch.optim`` optimizer).

    path : str or path-like
        Where to write the file (by convention ``*.skadv``); replaced if it
        exists.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.

    ValueError
        If the estimator, or one nested in it, is of another class
        (scikit-learn's ``IsolationForest``, a user's detector), if the
        estimators in it run different classifiers, or if a parameter cannot be
        stored without pickle (callbacks, a callable ``class_column``, a
        random_state instance, a custom dataset): the message names the
        parameter as ``set_params`` does. Use joblib for such estimators, and
        load those files only from sources you trust.

    See Also
    --------
    load : Load an estimator saved with this function.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from skadv import ExplanationReconstructionDetector, make_reconstructor
    >>> from skadv import load, save
    >>> rng = np.random.default_rng(0)
    >>> X = np.column_stack([rng.integers(0, 2, 40), rng.random((40, 8))])
    >>> detector = ExplanationReconstructionDetector(
    ...     reconstructor=make_reconstructor(max_epochs=1), random_state=0
    ... ).fit(X)
    >>> directory = tempfile.TemporaryDirectory()
    >>> save(detector, Path(directory.name) / "detector.skadv")
    >>> loaded = load(Path(directory.name) / "detector.skadv")
    >>> bool((loaded.decision_function(X) == detector.decision_function(X)).all())
    True

    An ensemble of two views' detectors, served by a guard, in one file:

    >>> import torch
    >>> from sklearn.pipeline import make_pipeline
    >>> from skadv import (
    ...     ActivationTransformer, ClassConditionalGaussianDetector,
    ...     EnsembleDetector, FeatureSqueezingDetector, GuardedClassifier,
    ... )
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
    ...     torch.nn.Linear(8, 3))
    >>> X = rng.random((200, 1, 4, 4), dtype=np.float32)
    >>> ensemble = EnsembleDetector(
    ...     [
    ...         ("activations", make_pipeline(
    ...             ActivationTransformer(model), ClassConditionalGaussianDetector())),
    ...         ("squeezing", FeatureSqueezingDetector(model)),
    ...     ],
    ...     random_state=0,
    ... )
    >>> guard = GuardedClassifier(model, ensemble).fit(X)
    >>> save(guard, Path(directory.name) / "guard.skadv")
    >>> loaded = load(Path(directory.name) / "guard.skadv", model=model)
    >>> bool((loaded.p_value(X) == guard.p_value(X)).all())
    True
    >>> directory.cleanup()
    """
    description, tensors = describe(estimator)
    write_archive(path, description, tensors)


def load(path, *, model=None, modules=None):
    """Load an estimator saved with :func:`save`, without unpickling anything.

    The file's format, version and SHA-256 checksums are checked first. The
    estimators are then rebuilt, nested ones first, from skadv's classes,
    scikit-learn's ``Pipeline`` and ``FrozenEstimator`` and the estimators of
    :mod:`sklearn.covariance` (looked up by name there only): each
    reconstructor with
    :func:`make_reconstructor` from its stored parameters, its loss and
    optimizer looked up by name in ``torch.nn`` and ``torch.optim`` only, its
    module among skadv's autoencoders or the classes passed in ``modules``,
    then ``initialize()`` and the stored weights (strictly). Weights are read
    onto the CPU first, so a file saved on a GPU loads on a CPU-only machine;
    a CUDA ``device`` is then replaced by ``"cpu"`` with a ``UserWarning``.

    The loaded estimator is fitted: it scores exactly as the saved one did.
    The reconstructors' training history and optimizer state (Adam's moments)
    are not stored: ``partial_fit`` on a loaded detector goes on with fresh
    optimizer state.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.

    model : torch.nn.Module or skorch.NeuralNetClassifier, default=None
        The trained classifier that the saved views,
        :class:`FeatureSqueezingDetector` or :class:`GuardedClassifier` run
        (its weights are not in the file); every one of them gets it.
        Required for files that hold any of them, refused for the others (a
        detector alone). A ``UserWarning`` says when its weights differ from
        those of the model the file was saved with; a model that fails on the
        saved input shape is refused.

    modules : dict of str to type, default=None
        Reconstructor module classes other than skadv's own
        (:class:`MLPAutoencoder`, :class:`ConvAutoencoder`), by class name,
        e.g. ``{"MyAutoencoder": MyAutoencoder}``. Only classes listed here
        are instantiated: pass only code you trust.

    Returns
    -------
    estimator : estimator
        The fitted estimator, of the class saved.

    Raises
    ------
    ValueError
        If the file is not a skadv file, was written in a newer format
        version, fails its checksums (modified or corrupted), names a class or
        module it may not name (a module not in ``modules``), or if ``model``
        is missing for a file whose estimators run a classifier (or given for
        one whose estimators do not).

    See Also
    --------
    save : Save a fitted estimator.

    Notes
    -----
    The checksums catch corrupted files and edits made without recomputing
    them; they are not a signature. What makes a file from an unknown source
    safe to load is that nothing in it is executed: its values are plain data,
    and its classes come only from skadv, scikit-learn's ``Pipeline``,
    ``FrozenEstimator`` and covariance estimators, ``torch.nn`` losses,
    ``torch.optim`` optimizers and ``modules``. Files of the first format
    version (skadv 0.1 development versions) load too.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> import torch
    >>> from sklearn.pipeline import make_pipeline
    >>> from skadv import (
    ...     ExplanationReconstructionDetector, ExplanationTransformer,
    ...     make_reconstructor,
    ... )
    >>> from skadv import load, save
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> X = np.random.default_rng(0).random((30, 1, 4, 4), dtype=np.float32)
    >>> pipe = make_pipeline(
    ...     ExplanationTransformer(model),
    ...     ExplanationReconstructionDetector(
    ...         reconstructor=make_reconstructor(max_epochs=1), min_class_size=1,
    ...         random_state=0,
    ...     ),
    ... ).fit(X)
    >>> directory = tempfile.TemporaryDirectory()
    >>> path = Path(directory.name) / "pipeline.skadv"
    >>> save(pipe, path)
    >>> load(path)
    Traceback (most recent call last):
    ...
    ValueError: ... pass the trained classifier: load(path, model=model).
    >>> loaded = load(path, model=model)
    >>> bool((loaded.decision_function(X) == pipe.decision_function(X)).all())
    True
    >>> directory.cleanup()
    """
    modules = check_modules(modules)
    document, tensors = read_archive(path)
    return build(document, tensors, model=model, modules=modules, path=path)
