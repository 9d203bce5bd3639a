"""Fitting and scoring through joblib and dask: the same scores everywhere."""

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError

from skadv import (
    ExplanationReconstructionDetector,
    ExplanationTransformer,
    make_reconstructor,
    score_in_chunks,
)


def detector(**params):
    return ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(max_epochs=20, batch_size=16),
        random_state=0,
        **params,
    )


@pytest.fixture(scope="module")
def dask_client():
    """A local dask cluster of two single-threaded worker processes, started
    once for the tests that fit and score on it."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_dask_local_cluster_gives_the_local_scores(maps, dask_client):
    benign, odd = maps
    local = detector().fit(benign).decision_function(odd)
    with parallel_config(backend="dask"):
        remote = detector(n_jobs=-1).fit(benign)
    np.testing.assert_array_equal(remote.decision_function(odd), local)


def test_loky_processes_give_the_local_scores(maps):
    benign, odd = maps
    local = detector().fit(benign).decision_function(odd)
    with parallel_config(backend="loky"):
        parallel = detector(n_jobs=2).fit(benign).decision_function(odd)
    np.testing.assert_array_equal(parallel, local)


# Scoring larger-than-memory inputs chunk by chunk: score_in_chunks.


@pytest.fixture(scope="module")
def digits_detector(digits_fgsm):
    """A small fitted detector pipeline on digits, and inputs to score.

    The transformer explains in batches of 32, so chunks of a multiple of 32
    rows split into the batches of the in-memory call.
    """
    pipeline = make_pipeline(
        ExplanationTransformer(digits_fgsm.net, batch_size=32),
        detector(),
    ).fit(digits_fgsm.X_train[:300])
    return pipeline, digits_fgsm.X_test


@pytest.fixture
def memmapped(digits_detector, tmp_path):
    """The inputs as a .npy file opened the way a file larger than memory is."""
    _, X = digits_detector
    np.save(tmp_path / "X.npy", X)
    return np.load(tmp_path / "X.npy", mmap_mode="r")


@pytest.mark.parametrize("method", ["decision_function", "score_samples", "predict"])
def test_memmap_streamed_into_npy_file_gives_in_memory_scores(
    digits_detector, memmapped, tmp_path, method
):
    pipeline, X = digits_detector
    expected = getattr(pipeline, method)(X)
    # One chunk, as the detector's own scoring pass: identical to the bit.
    path = tmp_path / "scores.npy"
    scores = score_in_chunks(pipeline, memmapped, method=method, out=path)
    assert isinstance(scores, np.memmap)
    np.testing.assert_array_equal(scores, expected)
    written = np.load(path)
    assert written.dtype == expected.dtype
    np.testing.assert_array_equal(written, expected)


def test_chunks_change_scores_by_float32_rounding_at_most(digits_detector, memmapped):
    pipeline, X = digits_detector
    expected = pipeline.decision_function(X)
    out = np.full(len(X), np.nan)
    scores = score_in_chunks(pipeline, memmapped, chunk_size=100, out=out)
    assert scores is out
    # Smaller batches may take other float32 matrix-product kernels: the last
    # bits of a score can move, nothing more.
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-7)


def test_aligned_chunks_give_in_memory_maps(digits_detector, memmapped):
    pipeline, X = digits_detector
    view = pipeline[:-1]
    maps = score_in_chunks(view, memmapped, method="transform", chunk_size=64)
    assert maps.shape == (len(X), 65)
    assert maps.dtype == np.float32
    np.testing.assert_array_equal(maps, view.transform(X))


def test_joblib_processes_give_the_sequential_scores(digits_detector, memmapped):
    pipeline, _ = digits_detector
    sequential = score_in_chunks(pipeline, memmapped, chunk_size=100)
    with parallel_config(backend="loky"):
        parallel = score_in_chunks(pipeline, memmapped, chunk_size=100, n_jobs=2)
    np.testing.assert_array_equal(parallel, sequential)


def test_dask_array_on_local_cluster_gives_the_local_scores(
    digits_detector, dask_client
):
    da = pytest.importorskip("dask.array")
    pipeline, X = digits_detector
    local = score_in_chunks(pipeline, X, chunk_size=100)
    local_maps = score_in_chunks(pipeline[:-1], X, method="transform", chunk_size=100)
    # Blocks of any size come back as blocks of chunk_size rows.
    lazy = score_in_chunks(
        pipeline, da.from_array(X, chunks=(70, 1, 8, 8)), chunk_size=100
    )
    maps = score_in_chunks(
        pipeline[:-1], da.from_array(X), method="transform", chunk_size=100
    )
    assert lazy.chunks == ((100,) * 5 + (len(X) - 500,),)
    assert (maps.shape, maps.dtype) == ((len(X), 65), np.float32)
    remote, remote_maps = dask_client.compute([lazy, maps], sync=True)
    np.testing.assert_array_equal(remote, local)
    np.testing.assert_array_equal(remote_maps, local_maps)


def test_verbose_shows_progress_over_chunks(digits_detector, capsys):
    pipeline, X = digits_detector
    score_in_chunks(pipeline, X[:60], chunk_size=32, verbose=True)
    progress = capsys.readouterr().err
    assert "scoring: 100%" in progress
    assert "2/2" in progress


@pytest.mark.parametrize(
    "params, error, message",
    [
        (
            {"chunk_size": 0},
            InvalidParameterError,
            r"The 'chunk_size' parameter of score_in_chunks must be an int in the "
            r"range \[1, inf\)\. Got 0 instead\.",
        ),
        (
            {"method": "fit"},
            InvalidParameterError,
            r"The 'method' parameter of score_in_chunks must be a str among \{",
        ),
        (
            {"method": "transform"},
            ValueError,
            r"estimator has no method 'transform': pass one of the methods of "
            r"Pipeline\.",
        ),
        (
            {"out": [0.0]},
            InvalidParameterError,
            r"The 'out' parameter of score_in_chunks must be None, an instance of "
            r"'str', an instance of 'os\.PathLike' or an instance of "
            r"'numpy\.ndarray'\. Got \[0\.0\] instead\.",
        ),
        (
            {"out": np.zeros(3)},
            ValueError,
            r"out has shape \(3,\), but X has 540 rows: out needs one row per row "
            r"of X\.",
        ),
        (
            {"out": np.zeros((540, 2))},
            ValueError,
            r"out has shape \(540, 2\), but decision_function of X has shape "
            r"\(540,\)\.",
        ),
        (
            {"out": np.zeros(540, dtype=np.float32)},
            ValueError,
            r"out has dtype float32, which cannot hold the float64 values of "
            r"decision_function without loss; pass an array of dtype float64\.",
        ),
    ],
)
def test_bad_parameters_are_named(digits_detector, params, error, message):
    pipeline, X = digits_detector
    with pytest.raises(error, match=message):
        score_in_chunks(pipeline, X, **params)


def test_read_only_out_and_dask_out_are_refused(digits_detector):
    pipeline, X = digits_detector
    out = np.zeros(len(X))
    out.flags.writeable = False
    with pytest.raises(
        ValueError, match=r"^out is read-only: pass a writeable array\.$"
    ):
        score_in_chunks(pipeline, X, out=out)
    da = pytest.importorskip("dask.array")
    with pytest.raises(
        ValueError,
        match=r"^out is not supported with a dask array X: store the returned dask "
        r"array with dask \(dask\.array\.to_zarr, to_npy_stack or store\)\.$",
    ):
        score_in_chunks(pipeline, da.from_array(X), out=np.zeros(len(X)))


def test_unfitted_estimator_is_refused(digits_fgsm):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="is not fitted yet"):
        score_in_chunks(detector(), digits_fgsm.X_test)
