"""Saving and loading detectors without pickle (skadv._persistence)."""

import copy
import hashlib
import json
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import load_file, save_file
from sklearn.covariance import OAS, EmpiricalCovariance
from sklearn.datasets import load_digits
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNetRegressor
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit

from skadv import (
    ActivationTransformer,
    ClassConditionalGaussianDetector,
    ConformalDetector,
    ConvAutoencoder,
    DetectorClassifier,
    EnsembleDetector,
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    FeatureSqueezingDetector,
    GuardedClassifier,
    RawInputTransformer,
    __version__,
    make_detector,
    make_reconstructor,
)
from skadv._persistence import load, save
from skadv.datasets import load_digits as skadv_load_digits
from skadv.models import DigitsCNN, make_digits_classifier

FAST = {"max_epochs": 5, "batch_size": 16}
SCORES = ("decision_function", "score_samples", "reconstruction_error", "predict")


def detector(**params):
    params.setdefault("reconstructor", make_reconstructor(**FAST))
    params.setdefault("random_state", 0)
    return ExplanationReconstructionDetector(**params)


def assert_same_scores(loaded, original, X):
    for method in SCORES:
        got, expected = getattr(loaded, method)(X), getattr(original, method)(X)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


@pytest.fixture(autouse=True)
def _no_unpickling(monkeypatch):
    """Nothing in these tests may unpickle: loading a skadv file never does."""

    def refuse(*args, **kwargs):
        raise AssertionError("a skadv file was unpickled")

    for target, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (torch, "load"),
        (joblib, "load"),
    ]:
        monkeypatch.setattr(target, name, refuse)


@pytest.fixture(scope="module")
def fitted(maps):
    benign, _ = maps
    return detector().fit(benign)


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "detector.skadv"
    save(fitted, path)
    return path


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DigitsCNN()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        inputs, targets = torch.from_numpy(X), torch.from_numpy(y)
        for _ in range(2):
            for start in range(0, len(X), 64):
                optimizer.zero_grad()
                logits = model(inputs[start : start + 64])
                torch.nn.functional.cross_entropy(
                    logits, targets[start : start + 64]
                ).backward()
                optimizer.step()
    model.eval()
    return model, X


@pytest.fixture(scope="module")
def pipeline(digits):
    model, X = digits
    return make_pipeline(
        ExplanationTransformer(model, batch_size=128),
        detector(reconstructor=make_reconstructor(max_epochs=2)),
    ).fit(X[:500])


def net_params(net):
    """A skorch net's parameters, comparable with ==: a generator by its state."""
    params = {
        k: v for k, v in net.get_params(deep=False).items() if not k.startswith("_")
    }
    generator = params.pop("iterator_train__generator", None)
    if generator is not None:
        params["iterator_train__generator"] = generator.get_state().tolist()
    return params


def rewrite(path, edit=None, weights=None, fix_checksums=True):
    """Rewrite a skadv file as a careful forger would: a valid zip, and, with
    ``fix_checksums``, SHA-256 sums recomputed as the format specifies."""
    with zipfile.ZipFile(path) as archive:
        document = json.loads(archive.read("skadv.json"))
        old_weights = archive.read("weights.safetensors")
    weights = old_weights if weights is None else weights
    if edit is not None:
        edit(document)
    if fix_checksums:
        del document["sha256"]
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        document["sha256"] = {
            "skadv.json": hashlib.sha256(canonical.encode()).hexdigest(),
            "weights.safetensors": hashlib.sha256(weights).hexdigest(),
        }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("skadv.json", json.dumps(document))
        archive.writestr("weights.safetensors", weights)


def read_document(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("skadv.json"))


# --------------------------------------------------------------------------
# Round trips


def test_detector_round_trip_is_bit_identical(maps, fitted, saved):
    benign, odd = maps
    loaded = load(saved)
    assert_same_scores(loaded, fitted, np.vstack([benign, odd]))
    for name in ("class_labels_", "fallback_classes_", "offset_"):
        got, expected = getattr(loaded, name), getattr(fitted, name)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    assert loaded.n_features_in_ == fitted.n_features_in_ == 17
    params = loaded.get_params(deep=False)
    expected = fitted.get_params(deep=False)
    assert net_params(params.pop("reconstructor")) == net_params(
        expected.pop("reconstructor")
    )
    assert params == expected


def test_loaded_reconstructors_match_the_originals(fitted, saved):
    loaded = load(saved)
    assert len(loaded.reconstructors_) == len(fitted.reconstructors_) == 3
    for got, expected in zip(
        loaded.reconstructors_, fitted.reconstructors_, strict=True
    ):
        assert type(got.module_) is type(expected.module_)
        got_state, expected_state = (
            got.module_.state_dict(),
            expected.module_.state_dict(),
        )
        assert list(got_state) == list(expected_state)
        for key in expected_state:
            assert torch.equal(got_state[key], expected_state[key])
        assert net_params(got) == net_params(expected)


def test_file_layout(fitted, saved):
    with zipfile.ZipFile(saved) as archive:
        assert archive.namelist() == ["skadv.json", "weights.safetensors"]
        document = json.loads(archive.read("skadv.json"))
        tensors = safetensors_load(archive.read("weights.safetensors"))
    assert document["format"] == "skadv-detector"
    assert document["format_version"] == 2
    assert document["skadv_version"] == __version__
    estimator = document["estimator"]
    assert estimator["type"] == "ExplanationReconstructionDetector"
    assert estimator["weights"] == ""  # the top estimator's tensors: no prefix
    assert estimator["params"]["contamination"] == 0.05
    assert estimator["params"]["reconstructor"]["module"]["name"] == "MLPAutoencoder"
    assert estimator["params"]["reconstructor"]["params"]["criterion"] == "MSELoss"
    assert estimator["params"]["reconstructor"]["params"]["optimizer"] == "Adam"
    offsets = estimator["fitted"]["offset_"]["__ndarray__"]["data"]
    assert [float.fromhex(x) for x in offsets] == fitted.offset_.tolist()
    assert sorted(document["sha256"]) == ["skadv.json", "weights.safetensors"]
    # Weights on the CPU, named after the reconstructor and its state_dict key.
    assert tensors["reconstructor.2.encoder.0.weight"].device.type == "cpu"
    np.testing.assert_array_equal(
        tensors["reconstructor.2.encoder.0.weight"].numpy(),
        fitted.reconstructors_[2].module_.encoder[0].weight.detach().numpy(),
    )
    assert len(tensors) == 3 * 4  # 3 autoencoders of 2 linear layers


def test_saving_twice_gives_the_same_bytes_and_leaves_no_temporary_file(
    fitted, saved, tmp_path
):
    path = tmp_path / "again.skadv"
    save(fitted, path)
    save(fitted, path)  # replaces the file
    assert path.read_bytes() == saved.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again.skadv"]


def test_a_failed_save_leaves_the_old_file_alone(maps, fitted, tmp_path):
    benign, _ = maps
    path = tmp_path / "detector.skadv"
    save(fitted, path)
    before = path.read_bytes()
    unsaveable = detector(random_state=np.random.RandomState(0)).fit(benign)
    with pytest.raises(ValueError, match="Cannot save parameter 'random_state'"):
        save(unsaveable, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["detector.skadv"]


def test_pipeline_round_trip_is_bit_identical(digits, pipeline, tmp_path):
    model, X = digits
    save(pipeline, tmp_path / "pipeline.skadv")
    loaded = load(tmp_path / "pipeline.skadv", model=model)
    assert [name for name, _ in loaded.steps] == [name for name, _ in pipeline.steps]
    transformer = loaded[0]
    assert transformer.model is model and transformer.module_ is model
    assert transformer.input_shape_ == (1, 8, 8)
    assert transformer.get_params() == pipeline[0].get_params()
    np.testing.assert_array_equal(
        transformer.transform(X[500:600]), pipeline[0].transform(X[500:600])
    )
    for method in ("decision_function", "score_samples", "predict"):
        np.testing.assert_array_equal(
            getattr(loaded, method)(X[500:800]), getattr(pipeline, method)(X[500:800])
        )


def test_pipeline_file_needs_the_model(pipeline, tmp_path):
    path = tmp_path / "pipeline.skadv"
    save(pipeline, path)
    msg = (
        f"{path} holds a Pipeline whose ExplanationTransformer runs your torch "
        "classifier; a skadv file does not store the classifier's weights: pass "
        "the trained classifier: load(path, model=model)."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path)


def test_detector_file_needs_no_model(saved, digits):
    msg = (
        f"{saved} holds an ExplanationReconstructionDetector, which runs no "
        "classifier: model= is for files of estimators that run one."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(saved, model=digits[0])


def test_another_model_at_load_time_is_flagged(pipeline, tmp_path):
    path = tmp_path / "pipeline.skadv"
    save(pipeline, path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        other = DigitsCNN()
    msg = (
        f"The model passed to load differs from the one {path} was saved with "
        "(the SHA-256 of its state_dict differs)"
    )
    with pytest.warns(UserWarning, match=re.escape(msg)):
        loaded = load(path, model=other)
    assert loaded[0].module_ is other


def test_a_model_that_does_not_fit_the_saved_shape_fails_at_load(pipeline, tmp_path):
    path = tmp_path / "pipeline.skadv"
    save(pipeline, path)
    wrong = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(10, 3))
    with pytest.warns(UserWarning, match="The model passed to load differs"):
        with pytest.raises(
            ValueError, match=re.escape("model failed on inputs of shape (1, 8, 8)")
        ):
            load(path, model=wrong)


LOAD_AND_SCORE = """
import sys
import numpy as np
import torch
from safetensors.torch import load_file
from skadv._persistence import load
from skadv.models import DigitsCNN

torch.set_num_threads(1)
detector_path, pipeline_path, weights_path, maps_path, X_path, out = sys.argv[1:]
model = DigitsCNN()
model.load_state_dict(load_file(weights_path))
np.savez(
    out,
    detector=load(detector_path).decision_function(np.load(maps_path)),
    pipeline=load(pipeline_path, model=model).decision_function(np.load(X_path)),
)
"""


def test_round_trip_in_a_fresh_process(maps, fitted, saved, digits, pipeline, tmp_path):
    benign, odd = maps
    model, X = digits
    maps_X, digits_X = np.vstack([benign, odd]), X[500:700]
    save(pipeline, tmp_path / "pipeline.skadv")
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    np.save(tmp_path / "maps.npy", maps_X)
    np.save(tmp_path / "X.npy", digits_X)
    files = ["pipeline.skadv", "model.safetensors", "maps.npy", "X.npy", "out.npz"]
    subprocess.run(
        [sys.executable, "-c", LOAD_AND_SCORE, str(saved)]
        + [str(tmp_path / name) for name in files],
        check=True,
    )
    with np.load(tmp_path / "out.npz") as scores:
        np.testing.assert_array_equal(
            scores["detector"], fitted.decision_function(maps_X)
        )
        np.testing.assert_array_equal(
            scores["pipeline"], pipeline.decision_function(digits_X)
        )


def test_convolutional_reconstructor_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    maps = (rng.random((30, 36)) < 0.2).astype(np.float32)
    X = np.column_stack([np.zeros(30), maps]).astype(np.float32)
    net = make_reconstructor(
        ConvAutoencoder,
        module__input_shape=(6, 6),
        module__channels=(4, 8),
        train_split=ValidSplit(3),  # skorch's default kind of split
        **FAST,
    )
    original = detector(reconstructor=net, min_class_size=1).fit(X)
    save(original, tmp_path / "conv.skadv")
    loaded = load(tmp_path / "conv.skadv")
    assert isinstance(loaded.reconstructors_[0].module_, ConvAutoencoder)
    assert loaded.reconstructor.module__input_shape == (6, 6)  # a tuple again
    assert loaded.reconstructor.train_split.cv == 3
    assert_same_scores(loaded, original, X)


class TinyAutoencoder(torch.nn.Module):
    """A user's own reconstructor, which the loader must be given explicitly."""

    def __init__(self, n_features, width=3):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_features, width), torch.nn.Linear(width, n_features)
        )

    def forward(self, x):
        return self.net(x)


def test_a_custom_module_loads_only_when_registered(maps, tmp_path):
    benign, odd = maps
    net = make_reconstructor(TinyAutoencoder, module__width=4, **FAST)
    original = detector(reconstructor=net).fit(benign)
    path = tmp_path / "custom.skadv"
    save(original, path)
    msg = (
        f"{path} uses the reconstructor module 'TinyAutoencoder' (saved from "
        f"{__name__}.TinyAutoencoder), which is not one of skadv's: pass the "
        "class to load if you trust it, e.g. load(path, modules={'TinyAutoencoder': "
        "TinyAutoencoder})."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path)
    loaded = load(path, modules={"TinyAutoencoder": TinyAutoencoder})
    assert type(loaded.reconstructors_[0].module_) is TinyAutoencoder
    assert_same_scores(loaded, original, np.vstack([benign, odd]))


def test_modules_must_map_names_to_module_classes(saved):
    with pytest.raises(TypeError, match="modules must map class names"):
        load(saved, modules={"TinyAutoencoder": TinyAutoencoder(3)})


def test_fallback_reconstructor_round_trip(maps, tmp_path):
    benign, odd = maps
    small = benign[benign[:, 0] == 0][:4] + np.r_[7, np.zeros(16)].astype(np.float32)
    original = detector(
        min_class_size=5, unseen_class="fallback", device=torch.device("cpu")
    ).fit(np.vstack([benign, small]))
    np.testing.assert_array_equal(original.fallback_classes_, [7])
    save(original, tmp_path / "fallback.skadv")
    loaded = load(tmp_path / "fallback.skadv")
    assert loaded.device == torch.device("cpu")  # a device again, not a string
    unseen = odd.copy()
    unseen[::2, 0] = 9  # a class never seen at fit time
    assert_same_scores(loaded, original, np.vstack([small, odd, unseen]))


def test_single_default_reconstructor(maps, tmp_path):
    benign, odd = maps
    original = ExplanationReconstructionDetector(class_column=None, random_state=0)
    original.fit(benign[:, 1:])
    save(original, tmp_path / "single.skadv")
    loaded = load(tmp_path / "single.skadv")
    assert loaded.reconstructor is None and loaded.class_labels_.size == 0
    assert_same_scores(loaded, original, odd[:, 1:])


def test_feature_names_round_trip(maps, tmp_path):
    benign, odd = maps
    columns = ["predicted_class"] + [f"explanation{i}" for i in range(16)]
    original = detector(reconstructor=make_reconstructor(max_epochs=1))
    original.fit(pd.DataFrame(benign, columns=columns))
    save(original, tmp_path / "named.skadv")
    loaded = load(tmp_path / "named.skadv")
    assert loaded.feature_names_in_.dtype == object
    assert loaded.feature_names_in_.tolist() == columns
    assert_same_scores(loaded, original, pd.DataFrame(odd, columns=columns))
    with pytest.raises(ValueError, match="The feature names should match"):
        loaded.predict(pd.DataFrame(odd, columns=columns[::-1]))


def test_loading_leaves_torch_random_state_alone(saved):
    state = torch.random.get_rng_state()
    load(saved)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_file_saved_for_cuda_loads_on_the_cpu(maps, fitted, saved, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("tests the fallback of machines without CUDA")
    benign, _ = maps
    path = tmp_path / "gpu.skadv"
    path.write_bytes(saved.read_bytes())

    def on_cuda(document):  # as written by save on a GPU machine
        document["estimator"]["params"]["device"] = "cuda"
        for net in document["estimator"]["reconstructors"]:
            net["params"]["device"] = "cuda"

    rewrite(path, on_cuda)
    msg = (
        f"{path} was saved for CUDA (device='cuda', reconstructors_[0].device='cuda', "
        "reconstructors_[1].device='cuda', reconstructors_[2].device='cuda') but "
        "CUDA is not available on this machine: loaded onto the CPU instead."
    )
    with pytest.warns(UserWarning, match=re.escape(msg)):
        loaded = load(path)
    assert loaded.device == "cpu"
    assert {net.device for net in loaded.reconstructors_} == {"cpu"}
    np.testing.assert_array_equal(
        loaded.decision_function(benign), fitted.decision_function(benign)
    )


# --------------------------------------------------------------------------
# What save refuses


def test_save_needs_a_fitted_estimator(tmp_path):
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        save(detector(), tmp_path / "unfitted.skadv")
    assert not list(tmp_path.iterdir())


def test_save_needs_a_fitted_pipeline(digits, tmp_path):
    pipe = make_pipeline(ExplanationTransformer(digits[0]), detector())
    with pytest.raises(NotFittedError, match="is not fitted yet"):
        save(pipe, tmp_path / "unfitted.skadv")


def test_save_refuses_other_estimators(tmp_path):
    msg = (
        "save stores fitted skadv's estimators, scikit-learn's Pipeline and "
        "FrozenEstimator of them, and the covariance estimators of "
        "sklearn.covariance; got IsolationForest."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        save(IsolationForest().fit([[0.0], [1.0]]), tmp_path / "other.skadv")
    assert not list(tmp_path.iterdir())


class CountEpochs(Callback):
    pass


def test_callbacks_are_refused_with_a_pointer_to_joblib(maps, tmp_path):
    benign, _ = maps
    net = make_reconstructor(callbacks=[CountEpochs()], **FAST)
    fitted = detector(reconstructor=net).fit(benign)
    msg = (
        "Cannot save parameter 'reconstructor__callbacks' = "
        f"[<{__name__}.CountEpochs object at 0x"
    )
    with pytest.raises(ValueError, match=re.escape(msg)) as error:
        save(fitted, tmp_path / "callbacks.skadv")
    assert str(error.value).endswith(
        ": a skadv file stores only JSON values (numbers, strings, booleans, None, "
        "lists, tuples, dicts), numeric or string arrays, torch devices and torch "
        "CPU generators, so that loading it never runs code. Set "
        "reconstructor__callbacks to such a "
        "value, or save with joblib for files from trusted sources only (unpickling "
        "runs code)."
    )


class MyLoss(torch.nn.MSELoss):
    pass


def test_criterion_outside_torch_nn_is_refused(maps, tmp_path):
    benign, _ = maps
    fitted = detector(reconstructor=make_reconstructor(criterion=MyLoss, **FAST))
    fitted.fit(benign)
    msg = (
        "Cannot save parameter 'reconstructor__criterion' = <class "
        f"'{__name__}.MyLoss'>: a skadv file stores only a loss class of "
        "torch.nn (by name) for criterion, so that loading it never runs code."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        save(fitted, tmp_path / "loss.skadv")


def test_non_json_method_params_are_named_with_their_step(digits, tmp_path):
    model, X = digits
    pipe = make_pipeline(
        ExplanationTransformer(
            model, method="integrated_gradients", method_params={"baselines": 0.5}
        ),
        detector(reconstructor=make_reconstructor(max_epochs=1), min_class_size=1),
    ).fit(X[:40])
    save(pipe, tmp_path / "ig.skadv")  # a float baseline is JSON
    loaded = load(tmp_path / "ig.skadv", model=model)
    assert loaded[0].method_params == {"baselines": 0.5}
    pipe[0].set_params(method_params={"baselines": torch.zeros(1, 1, 8, 8)})
    msg = "Cannot save parameter 'explanationtransformer__method_params' = {'baselines'"
    with pytest.raises(ValueError, match=re.escape(msg)):
        save(pipe, tmp_path / "ig.skadv")


# --------------------------------------------------------------------------
# What load refuses


def test_not_a_zip(tmp_path):
    path = tmp_path / "notes.skadv"
    path.write_text("hello")
    with pytest.raises(
        ValueError, match=re.escape(f"{path} is not a skadv file: not a zip archive.")
    ):
        load(path)


def test_a_pickle_archive_is_not_a_skadv_file_and_is_never_unpickled(tmp_path):
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:  # the layout of a torch.save file
        archive.writestr("archive/data.pkl", b"\x80\x04cos\nsystem\n.")
    msg = (
        f"{path} is not a skadv file: the archive holds no skadv.json and "
        "weights.safetensors."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path)


def test_a_pickle_in_place_of_the_weights_is_never_unpickled(saved, tmp_path):
    path = tmp_path / "forged.skadv"
    path.write_bytes(saved.read_bytes())
    payload = b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system"
    rewrite(path, weights=payload)  # checksums recomputed by the forger
    msg = f"{path} is not a skadv file: weights.safetensors is not a safetensors file."
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path)


def test_a_json_that_is_not_a_skadv_description(saved, tmp_path):
    path = tmp_path / "other.skadv"
    path.write_bytes(saved.read_bytes())
    rewrite(path, lambda document: document.update(format="something-else"))
    msg = f"{path} is not a skadv file: skadv.json does not describe a skadv-detector."
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path)


def test_a_newer_format_version_asks_for_an_upgrade(saved, tmp_path):
    path = tmp_path / "future.skadv"
    path.write_bytes(saved.read_bytes())
    rewrite(
        path, lambda document: document.update(format_version=3, skadv_version="9.0")
    )
    msg = (
        f"{path} was written by skadv 9.0 with format version 3; this skadv reads "
        "format version 2: upgrade skadv."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path)


def test_a_flipped_byte_in_the_weights_is_caught(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        weights = archive.read("weights.safetensors")
    start = bytes(data).find(weights)  # stored uncompressed
    assert start > 0
    data[start + len(weights) - 7] ^= 0x01  # a bit of the last weight
    path = tmp_path / "flipped.skadv"
    path.write_bytes(bytes(data))
    msg = (
        f"{path} has been modified or corrupted: checksum mismatch in "
        "weights.safetensors."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path)


def test_modified_weights_in_a_valid_zip_are_caught(saved, tmp_path):
    path = tmp_path / "modified.skadv"
    path.write_bytes(saved.read_bytes())
    with zipfile.ZipFile(path) as archive:
        weights = bytearray(archive.read("weights.safetensors"))
    weights[-7] ^= 0x01
    rewrite(path, weights=bytes(weights), fix_checksums=False)  # fresh zip CRCs
    msg = (
        f"{path} has been modified or corrupted: checksum mismatch in "
        "weights.safetensors."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path)


def test_an_edited_json_is_caught(saved, tmp_path):
    path = tmp_path / "edited.skadv"
    path.write_bytes(saved.read_bytes())

    def lower_threshold(document):
        document["estimator"]["params"]["contamination"] = 0.01

    rewrite(path, lower_threshold, fix_checksums=False)
    msg = f"{path} has been modified or corrupted: checksum mismatch in skadv.json."
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path)


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (
            lambda d: d["estimator"].update(type="IsolationForest"),
            "ValueError: unknown estimator type 'IsolationForest'",
        ),
        (
            lambda d: d["estimator"]["reconstructors"][0]["params"].update(
                criterion="Module"
            ),
            "ValueError: criterion 'Module' is not a loss class of torch.nn",
        ),
        (
            lambda d: d["estimator"]["reconstructors"][0]["params"].update(
                optimizer="os.system"
            ),
            "ValueError: optimizer 'os.system' is not an optimizer of torch.optim",
        ),
        (
            lambda d: d["estimator"]["fitted"].update(predict=1),
            "ValueError: refusing to set attribute 'predict'",
        ),
        (
            lambda d: d["estimator"]["fitted"].update(__dict__={}),
            "ValueError: refusing to set attribute '__dict__'",
        ),
        (
            lambda d: d["estimator"]["fitted"]["offset_"]["__ndarray__"].update(
                dtype="complex128"
            ),
            "ValueError: unsupported array dtype 'complex128'",
        ),
        (
            lambda d: d["estimator"]["reconstructors"][1]["params"].update(
                module__hidden=5
            ),
            "ValueError: the weights of reconstructor 1 do not fit its module",
        ),
        (
            lambda d: d["estimator"]["reconstructors"][0]["params"].update(
                module__hidden=-5
            ),
            "RuntimeError: Trying to create tensor with negative dimension",
        ),
    ],
    ids=[
        "type",
        "criterion",
        "optimizer",
        "method",
        "dunder",
        "dtype",
        "shape",
        "negative",
    ],
)
def test_a_forged_description_is_refused(saved, tmp_path, edit, error):
    path = tmp_path / "forged.skadv"
    path.write_bytes(saved.read_bytes())
    rewrite(path, edit)  # with valid checksums: only the content is wrong
    with pytest.raises(
        ValueError, match=re.escape(f"{path} is not a valid skadv file: {error}")
    ):
        load(path)


def test_contrastive_detector_with_held_out_thresholds_round_trips(maps, tmp_path):
    benign, odd = maps
    original = detector(contrast=0.5, validation_fraction=0.2).fit(benign)
    save(original, tmp_path / "contrastive.skadv")
    loaded = load(tmp_path / "contrastive.skadv")
    assert loaded.get_params()["contrast"] == 0.5
    assert_same_scores(loaded, original, np.vstack([benign, odd]))


# --------------------------------------------------------------------------
# Guards


@pytest.fixture(scope="module")
def guard_data():
    X, y = skadv_load_digits(return_X_y=True)
    model = make_digits_classifier(random_state=0, max_epochs=3).fit(X[:1000], y[:1000])
    guard = GuardedClassifier(
        model,
        make_pipeline(
            ExplanationTransformer(model, method="saliency"),
            detector(reconstructor=make_reconstructor(max_epochs=3, batch_size=64)),
        ),
    ).fit(X[1000:1500])
    return model, guard, X[1500:]


def assert_same_guard(loaded, guard, X):
    for method in ("predict", "predict_proba", "detector_score"):
        got, expected = getattr(loaded, method)(X), getattr(guard, method)(X)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_guard_round_trip_is_bit_identical(guard_data, tmp_path):
    model, guard, X = guard_data
    save(guard, tmp_path / "guard.skadv")
    loaded = load(tmp_path / "guard.skadv", model=model)
    assert type(loaded) is GuardedClassifier
    assert_same_guard(loaded, guard, X)
    # The test rows hold a few rejects, so predict's two paths are both read.
    assert 0 < np.mean(loaded.predict(X) == -1) < 0.5
    assert loaded.model is model and loaded.module_ is model.module_
    # The unfitted detector it was given, and the clone it fitted, as saved.
    assert loaded.detector is not loaded.detector_
    with pytest.raises(NotFittedError):
        check_is_fitted(loaded.detector)
    assert loaded.detector[0].model is loaded.detector_[0].model is model
    assert loaded.shares_forward_pass_ and loaded._view is loaded.detector_[0]
    np.testing.assert_array_equal(loaded.classes_, np.arange(10))
    assert loaded.input_shape_ == (1, 8, 8) and loaded.n_features_in_ == 64
    params = {k: v for k, v in guard.get_params().items() if k != "detector"}
    assert {k: v for k, v in loaded.get_params().items() if k != "detector"} == params
    labels, proba, scores = loaded.predict_with_scores(X[:50])
    np.testing.assert_array_equal(labels, guard.predict(X[:50]))
    np.testing.assert_array_equal(scores, guard.detector_score(X[:50]))


def test_guard_with_frozen_detector_and_named_classes_round_trips(guard_data, tmp_path):
    model, fitted, X = guard_data
    names = np.array([f"digit {i}" for i in range(10)])
    guard = GuardedClassifier(
        model,
        FrozenEstimator(fitted.detector_),
        classes=names,
        reject_label="rejected",
        batch_size=100,
    ).fit(X[:10])
    save(guard, tmp_path / "frozen.skadv")
    loaded = load(tmp_path / "frozen.skadv", model=model)
    assert type(loaded.detector_) is FrozenEstimator
    assert loaded.batch_size == 100 and loaded.reject_label == "rejected"
    np.testing.assert_array_equal(loaded.classes, names)
    assert_same_guard(loaded, guard, X)
    assert "rejected" in set(loaded.predict(X))


def test_guard_file_needs_the_model(guard_data, tmp_path):
    _, guard, _ = guard_data
    path = tmp_path / "guard.skadv"
    save(guard, path)
    msg = (
        f"{path} holds a GuardedClassifier, which runs your torch classifier; a "
        "skadv file does not store the classifier's weights: pass the trained "
        "classifier: load(path, model=model)."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path)


def test_another_model_at_guard_load_time_is_flagged(guard_data, tmp_path):
    _, guard, _ = guard_data
    path = tmp_path / "guard.skadv"
    save(guard, path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        other = DigitsCNN()
    msg = (
        f"The model passed to load differs from the one {path} was saved with "
        "(the SHA-256 of its state_dict differs)"
    )
    with pytest.warns(UserWarning, match=re.escape(msg)) as record:
        loaded = load(path, model=other)
    assert len(record) == 1 and record[0].filename == __file__
    assert loaded.module_ is other and loaded.detector_[0].module_ is other
    wrong = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(10, 3))
    with pytest.warns(UserWarning, match="The model passed to load differs"):
        with pytest.raises(
            ValueError, match=re.escape("model failed on inputs of shape (1, 8, 8)")
        ):
            load(path, model=wrong)


def test_an_estimator_of_another_library_inside_is_refused(guard_data, tmp_path):
    model, _, X = guard_data
    ensemble = EnsembleDetector([("forest", IsolationForest(random_state=0))])
    guard = GuardedClassifier(model, ensemble, input_shape=(1, 8, 8))
    guard.fit(X.reshape(len(X), -1))
    # Named as set_params names it, so that the message says what to replace.
    msg = (
        "Cannot save parameter 'detector__forest' = IsolationForest(random_state=0): "
        "a skadv file stores only skadv's estimators, scikit-learn's Pipeline and "
        "FrozenEstimator of them, and the covariance estimators of "
        "sklearn.covariance, so that loading it never runs code. Set "
        "detector__forest to such a value, or save with joblib"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        save(guard, tmp_path / "ensemble.skadv")
    assert not list(tmp_path.iterdir())


def test_guard_whose_detector_explains_another_model_is_refused(guard_data, tmp_path):
    model, fitted, X = guard_data
    guard = GuardedClassifier(model.module_, fitted.detector_).fit(X[:10])
    save(guard, tmp_path / "module.skadv")  # the net's own module: the same model
    other = copy.deepcopy(model.module_)
    guard = GuardedClassifier(other, fitted.detector_).fit(X[:10])
    msg = (
        "save stores estimators that all run one classifier (load takes one "
        "model): the GuardedClassifier saved runs another model than "
        "'detector__explanationtransformer'."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        save(guard, tmp_path / "other.skadv")


def test_save_needs_a_fitted_guard(guard_data, tmp_path):
    model, fitted, _ = guard_data
    with pytest.raises(NotFittedError, match="GuardedClassifier instance is not"):
        save(GuardedClassifier(model, fitted.detector_), tmp_path / "g.skadv")


def test_a_guard_finds_its_shared_view_again(guard_data, tmp_path):
    """Whether prediction and detection share the model's pass is found again
    at load, as fit finds it, not read from the file: a file cannot claim it."""
    model, guard, _ = guard_data
    path = tmp_path / "forged.skadv"
    save(guard, path)
    assert "shares_forward_pass_" not in read_document(path)["estimator"]["fitted"]

    def forge(document):
        document["estimator"]["fitted"]["shares_forward_pass_"] = False

    rewrite(path, forge)
    msg = (
        f"{path} is not a valid skadv file: ValueError: refusing to set attribute "
        "'shares_forward_pass_'"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        load(path, model=model)


# --------------------------------------------------------------------------
# Views, model-aware detectors, calibration, ensembles and presets

TINY = {"max_epochs": 1, "batch_size": 64, "module__hidden": 8}
OUTPUTS = (
    "decision_function",
    "score_samples",
    "predict",
    "p_value",
    "member_p_values",
    "predict_proba",
    "detector_score",
)


def tiny_detector(**params):
    return ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(**TINY), random_state=0, **params
    )


def activation_gaussian(model, **params):
    return make_pipeline(
        ActivationTransformer(model), ClassConditionalGaussianDetector(**params)
    )


def assert_same_outputs(loaded, original, X):
    """Every output the original has, identical in values and dtype."""
    compared = [m for m in OUTPUTS if hasattr(original, m)]
    assert "predict" in compared
    for method in compared:
        got, expected = getattr(loaded, method)(X), getattr(original, method)(X)
        assert got.dtype == expected.dtype, method
        np.testing.assert_array_equal(got, expected, err_msg=method)
    return compared


def comparable(value):
    """A parameter value comparable with ==: estimators and models by type,
    skorch nets by their parameters."""
    if isinstance(value, NeuralNetRegressor):
        return net_params(value)
    if hasattr(value, "get_params") or isinstance(value, torch.nn.Module):
        return type(value).__name__
    if isinstance(value, (list, tuple)):
        return type(value)(comparable(v) for v in value)
    return value


def assert_same_params(loaded, original):
    params = {k: comparable(v) for k, v in original.get_params().items()}
    assert {k: comparable(v) for k, v in loaded.get_params().items()} == params


def round_trip(estimator, path, model):
    save(estimator, path)
    return load(path, model=model)


COMPOSITIONS = {
    "raw-pixels": lambda model, X: make_pipeline(
        RawInputTransformer(model, bit_depth=1), tiny_detector(contrast=0.5)
    ),
    "smoothgrad": lambda model, X: make_pipeline(
        # Noise drawn from a seed fixed at fit: the seed must be stored too.
        ExplanationTransformer(
            model,
            method="smoothgrad",
            method_params={"nt_samples": 2},
            random_state=0,
        ),
        tiny_detector(),
    ),
    "activations-oas": lambda model, X: make_pipeline(
        ActivationTransformer(model, layer="fc1"),
        ClassConditionalGaussianDetector(covariance_estimator=OAS()),
    ),
    "activations-per-class": lambda model, X: activation_gaussian(
        model, covariance="per_class", distance="closest"
    ),
    "squeezing": lambda model, X: FeatureSqueezingDetector(model, median_size=3),
    "conformal": lambda model, X: ConformalDetector(
        activation_gaussian(model), random_state=0
    ),
    "conformal-frozen": lambda model, X: ConformalDetector(
        FrozenEstimator(activation_gaussian(model).fit(X[:100]))
    ),
    "detector-classifier": lambda model, X: DetectorClassifier(
        activation_gaussian(model)
    ),
}


@pytest.mark.parametrize("make", COMPOSITIONS.values(), ids=COMPOSITIONS.keys())
def test_views_and_detectors_round_trip(make, digits, tmp_path):
    model, X = digits
    original = make(model, X).fit(X[100:300])
    loaded = round_trip(original, tmp_path / "estimator.skadv", model)
    assert type(loaded) is type(original)
    assert_same_outputs(loaded, original, X[300:400])
    assert_same_params(loaded, original)


def test_the_model_is_the_one_passed_everywhere(digits, tmp_path):
    model, X = digits
    original = ConformalDetector(
        FrozenEstimator(activation_gaussian(model).fit(X[:100]))
    ).fit(X[100:200])
    loaded = round_trip(original, tmp_path / "conformal.skadv", model)
    # A frozen detector is used as it is: still one object after loading.
    assert loaded.detector_ is loaded.detector
    view = loaded.detector_.estimator[0]
    assert view.model is view.module_ is model
    assert view.layer_ == "fc2" and view.n_features_in_ == 64


@pytest.fixture(scope="module")
def multiview(digits):
    """make_detector's multiview preset, with tiny autoencoders.

    At contamination 0.1 its 30 calibration rows can flag a row: with
    Bonferroni's two members a p-value is at least 2 / 31.
    """
    model, X = digits
    ensemble = make_detector(
        model, preset="multiview", contamination=0.1, random_state=0
    )
    ensemble.set_params(
        **{
            f"{member}__explanationreconstructiondetector__reconstructor__{key}": value
            for member in ("contrastive-h256", "binarized-pixels")
            for key, value in TINY.items()
        }
    )
    return ensemble.fit(X[:300])


def test_multiview_preset_round_trip(multiview, digits, tmp_path):
    model, X = digits
    loaded = round_trip(multiview, tmp_path / "multiview.skadv", model)
    assert type(loaded) is EnsembleDetector
    assert_same_outputs(loaded, multiview, X[300:700])
    assert 0 < np.mean(loaded.predict(X[300:700]) == -1) < 0.4  # both labels read
    np.testing.assert_array_equal(
        loaded.calibration_scores_, multiview.calibration_scores_
    )
    assert loaded.calibration_classes_ is None
    assert loaded.min_class_rows_ == multiview.min_class_rows_ == 10
    # The members by name: in order, the fitted members themselves.
    assert list(loaded.named_detectors_) == ["contrastive-h256", "binarized-pixels"]
    assert loaded.named_detectors_["binarized-pixels"] is loaded.detectors_[1]
    assert loaded.detectors_[1][0].bit_depth == 1
    assert all(member[0].module_ is model for member in loaded.detectors_)
    # The members as given, unfitted, with their parameters.
    assert_same_params(loaded, multiview)
    with pytest.raises(NotFittedError):
        check_is_fitted(loaded.named_detectors["contrastive-h256"])


@pytest.fixture(scope="module")
def guarded_multiview(multiview, digits, tmp_path_factory):
    model, X = digits
    guard = GuardedClassifier(model, multiview).fit(X[:10])
    path = tmp_path_factory.mktemp("guard") / "guard.skadv"
    save(guard, path)
    return guard, path


def test_guard_around_an_ensemble_round_trips(guarded_multiview, digits):
    model, X = digits
    guard, path = guarded_multiview
    loaded = load(path, model=model)
    compared = assert_same_outputs(loaded, guard, X[300:700])
    assert {"p_value", "detector_score", "predict_proba"} <= set(compared)
    labels, proba, scores = loaded.predict_with_scores(X[300:400])
    np.testing.assert_array_equal(labels, guard.predict(X[300:400]))
    np.testing.assert_array_equal(scores, guard.p_value(X[300:400]))
    # A fitted detector given to the guard is its detector_: one object again.
    assert loaded.detector is loaded.detector_
    assert loaded.shares_forward_pass_ is guard.shares_forward_pass_
    assert loaded.module_ is model


def test_nested_estimators_are_described_in_place(guarded_multiview):
    _, path = guarded_multiview
    with zipfile.ZipFile(path) as archive:
        document = json.loads(archive.read("skadv.json"))
        tensors = safetensors_load(archive.read("weights.safetensors"))
    guard = document["estimator"]
    assert guard["type"] == "GuardedClassifier"
    assert guard["fitted"]["detector_"] == {"__estimator_ref__": "detector"}
    ensemble = guard["params"]["detector"]["__estimator__"]
    assert ensemble["type"] == "EnsembleDetector"
    assert ensemble["params"]["combine"] == "bonferroni"
    named = ensemble["fitted"]["named_detectors_"]["__bunch__"]
    assert named == [
        ["contrastive-h256", {"__estimator_ref__": "detector__detectors_[0]"}],
        ["binarized-pixels", {"__estimator_ref__": "detector__detectors_[1]"}],
    ]
    pixels = ensemble["fitted"]["detectors_"][1]["__estimator__"]
    view, detector = (
        step["__tuple__"][1]["__estimator__"] for step in pixels["params"]["steps"]
    )
    assert view["type"] == "RawInputTransformer"
    assert view["model_sha256"] == guard["model_sha256"]
    prefix = "detector__detectors_[1]__explanationreconstructiondetector__"
    assert detector["weights"] == prefix
    assert f"{prefix}reconstructor.0.encoder.0.weight" in tensors
    # The members as given are unfitted: parameters only, no weights.
    template = ensemble["params"]["detectors"][0]["__tuple__"][1]["__estimator__"]
    assert [
        s["__tuple__"][1]["__estimator__"]["fitted"]
        for s in template["params"]["steps"]
    ] == [{}, {}]
    assert len(tensors) == 2 * 10 * 4  # two members, ten classes, two layers each


def test_guard_around_an_unfitted_ensemble_round_trips(digits, tmp_path):
    model, X = digits
    ensemble = EnsembleDetector(
        [
            ("squeezing", FeatureSqueezingDetector(model)),
            ("dropped", "drop"),
            ("activations", activation_gaussian(model)),
        ],
        combine="fisher",
        random_state=0,
    )
    guard = GuardedClassifier(model, ensemble, reject_label=99).fit(X[:200])
    loaded = round_trip(guard, tmp_path / "guard.skadv", model)
    assert_same_outputs(loaded, guard, X[200:400])
    assert loaded.detector.detectors[1] == ("dropped", "drop")
    assert list(loaded.detector_.named_detectors_) == ["squeezing", "activations"]
    assert loaded.detector_.detectors_[0].module_ is model


def test_a_version_1_file_still_loads():
    """A guard saved by the first format version (pipelines and guards laid out
    apart): tests/data/persistence holds it, its model and what it returned."""
    data = Path(__file__).parent / "data" / "persistence"
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 3),
    )
    model.load_state_dict(load_file(data / "guard-v1-model.safetensors"))
    expected = load_file(data / "guard-v1-expected.safetensors")
    assert read_document(data / "guard-v1.skadv")["format_version"] == 1
    loaded = load(data / "guard-v1.skadv", model=model)
    X = expected["X"].numpy()
    np.testing.assert_array_equal(loaded.predict(X), expected["predict"].numpy())
    # Recorded on another CPU: float32 sums there and here may differ in their
    # last bits (vector width, summation order), which moves these scores of
    # ~1e-2 by up to ~2e-8.
    np.testing.assert_allclose(
        loaded.detector_score(X),
        expected["detector_score"].numpy(),
        rtol=1e-6,
        atol=1e-7,
    )
    # Version 1 stored the fitted detector only, as the guard's detector too.
    assert loaded.detector is loaded.detector_ and loaded.shares_forward_pass_


class MyCovariance(EmpiricalCovariance):
    pass


def test_what_stays_unsupported_is_named(digits, tmp_path):
    model, X = digits
    pipe = make_pipeline(
        ActivationTransformer(model),
        ClassConditionalGaussianDetector(covariance_estimator=MyCovariance()),
    ).fit(X[:100])
    msg = (
        "Cannot save parameter 'classconditionalgaussiandetector__covariance_"
        "estimator' = MyCovariance(): a skadv file stores only skadv's estimators, "
        "scikit-learn's Pipeline and FrozenEstimator of them, and the covariance "
        "estimators of sklearn.covariance, so that loading it never runs code."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        save(pipe, tmp_path / "covariance.skadv")

    ensemble = EnsembleDetector(
        [("gaussian", activation_gaussian(model))],
        class_column=lambda X: np.zeros(len(X)),
        min_class_rows=20,
    ).fit(X[:200])
    msg = "Cannot save parameter 'class_column' = <function "
    with pytest.raises(ValueError, match=re.escape(msg)):
        save(ensemble, tmp_path / "callable.skadv")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        other = DigitsCNN().eval()
    two_models = EnsembleDetector(
        [("a", FeatureSqueezingDetector(model)), ("b", FeatureSqueezingDetector(other))]
    ).fit(X[:200])
    msg = (
        "save stores estimators that all run one classifier (load takes one "
        "model): 'b' runs another model than 'a'."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        save(two_models, tmp_path / "two.skadv")
    assert not list(tmp_path.iterdir())


def forge_ensemble(document, edit):
    edit(document["estimator"]["params"]["detector"]["__estimator__"])


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (
            lambda d: d["estimator"]["fitted"].update(
                detector_={"__estimator_ref__": "elsewhere"}
            ),
            "ValueError: detector_ refers to no estimator before it",
        ),
        (
            lambda d: forge_ensemble(d, lambda e: e.update(type="IsolationForest")),
            "ValueError: unknown estimator type 'IsolationForest'",
        ),
        (
            lambda d: forge_ensemble(
                d, lambda e: e["fitted"].update(p_value={"__tuple__": []})
            ),
            "ValueError: refusing to set attribute 'p_value'",
        ),
        (
            lambda d: forge_ensemble(
                d,
                lambda e: e["fitted"]["detectors_"][0]["__estimator__"]["params"][
                    "steps"
                ][1]["__tuple__"][1]["__estimator__"].update(weights="elsewhere"),
            ),
            "ValueError: the weights of reconstructor 0 do not fit its module",
        ),
    ],
    ids=["dangling-reference", "nested-type", "method", "weights"],
)
def test_a_forged_nested_description_is_refused(
    guarded_multiview, digits, tmp_path, edit, error
):
    _, saved_path = guarded_multiview
    path = tmp_path / "forged.skadv"
    path.write_bytes(saved_path.read_bytes())
    rewrite(path, edit)
    with pytest.raises(
        ValueError, match=re.escape(f"{path} is not a valid skadv file: {error}")
    ):
        load(path, model=digits[0])
