"""Scoring inputs larger than memory, chunk by chunk: memmaps and dask arrays."""

import mmap
import numbers
import os
import sys

import numpy as np
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
    validate_params,
)
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted

# Methods that give one output row per input row, computed from that row
# alone, so that scoring chunk by chunk gives the in-memory result.
ROW_METHODS = (
    "decision_function",
    "score_samples",
    "predict",
    "predict_proba",
    "predict_log_proba",
    "transform",
    "reconstruction_error",
    "p_value",
)


def _release_pages(chunk):
    """Drop the pages of a memmapped chunk that has been read from this process.

    Pages of a mapped file count in the process's resident memory until the
    kernel reclaims them, so streaming a file through a memmap would look as if
    the process held the whole file. ``MADV_DONTNEED`` unmaps them (they stay in
    the page cache; reading them again faults them back in). numpy exposes no
    such call, hence this by hand; copy-on-write maps (``mode="c"``) are left
    alone, since dropping their pages would discard changes.
    """
    mapped = getattr(chunk, "_mmap", None)
    if (
        mapped is None
        or getattr(chunk, "mode", "c") == "c"
        or not hasattr(mmap, "MADV_DONTNEED")
        or not chunk.flags.contiguous
        or chunk.nbytes == 0
    ):
        return
    base = np.frombuffer(mapped, dtype=np.uint8)
    start = chunk.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    del base  # the buffer export would keep the map from closing
    first = start - start % mmap.PAGESIZE
    stop = min(start + chunk.nbytes, len(mapped))
    mapped.madvise(mmap.MADV_DONTNEED, first, stop - first)


def _call(estimator, method, X):
    """``estimator.method(X)`` as an array with one row per row of ``X``."""
    result = np.asarray(getattr(estimator, method)(X))
    if result.ndim == 0 or result.shape[0] != X.shape[0]:
        raise ValueError(
            f"estimator.{method} returned an array of shape {result.shape} for "
            f"{X.shape[0]} rows; score_in_chunks needs one output row per input row."
        )
    return result


def _score_chunk(estimator, method, chunk, start):
    """The method on rows ``start:start + len(chunk)`` of X, read here."""
    try:
        result = _call(estimator, method, chunk)
    except Exception as error:
        if hasattr(error, "add_note"):  # Python 3.11+
            stop = start + chunk.shape[0] - 1
            error.add_note(
                f"(score_in_chunks: in rows {start} to {stop} of X; row indices "
                "in the message count from the chunk's first row.)"
            )
        raise
    _release_pages(chunk)
    return result


def _score_block(block, estimator, method):
    return _call(estimator, method, np.asarray(block))


def _is_dask_array(X):
    # A dask array can only exist once dask.array is imported: no import here.
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(X, dask_array.Array)


def _score_dask(estimator, X, method, chunk_size):
    """A lazy dask array: the method mapped over blocks of ``chunk_size`` rows.

    The idea of dask-ml's ``ParallelPostFit``, written on dask itself: the
    fitted estimator enters the graph once, as one delayed object, and every
    block of rows is scored by it where the block lives.
    """
    import dask
    import dask.array as da

    X = X.rechunk({0: chunk_size, **dict.fromkeys(range(1, X.ndim), -1)})
    # One row, scored here, gives the output's dtype and trailing shape.
    sample = _call(estimator, method, np.asarray(X[:1].compute()))
    new_axes = {X.ndim + i: size for i, size in enumerate(sample.shape[1:])}
    return da.blockwise(
        _score_block,
        (0, *new_axes),
        X,
        tuple(range(X.ndim)),
        dask.delayed(estimator, pure=False),
        None,
        method,
        None,
        new_axes=new_axes,
        concatenate=True,
        dtype=sample.dtype,
        meta=np.empty((0,) * sample.ndim, dtype=sample.dtype),
        token="score_in_chunks",
    )


def _prepare_out(out, n_rows, sample, method):
    """The array to write: ``out`` checked, or a new array or .npy memmap."""
    shape = (n_rows, *sample.shape[1:])
    if out is None:
        return np.empty(shape, dtype=sample.dtype)
    if isinstance(out, (str, os.PathLike)):
        return np.lib.format.open_memmap(
            out, mode="w+", dtype=sample.dtype, shape=shape
        )
    if out.shape != shape:
        raise ValueError(
            f"out has shape {out.shape}, but {method} of X has shape {shape}."
        )
    if not np.can_cast(sample.dtype, out.dtype, casting="safe"):
        raise ValueError(
            f"out has dtype {out.dtype}, which cannot hold the {sample.dtype} "
            f"values of {method} without loss; pass an array of dtype "
            f"{sample.dtype}."
        )
    return out


@validate_params(
    {
        "estimator": [HasMethods(["fit"])],
        "X": ["array-like"],
        "method": [StrOptions(set(ROW_METHODS))],
        "chunk_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "out": [None, str, os.PathLike, np.ndarray],
        "n_jobs": [numbers.Integral, None],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def score_in_chunks(
    estimator,
    X,
    *,
    method="decision_function",
    chunk_size=4096,
    out=None,
    n_jobs=None,
    verbose=False,
):
    """Score inputs larger than memory with a fitted estimator, chunk by chunk.

    ``estimator.method`` runs on ``chunk_size`` rows of ``X`` at a time, and
    each chunk's output is written into one preallocated array, so memory holds
    a chunk, the estimator and the output, never all of ``X``. Every row is
    scored from its own input alone, so the result is the in-memory call's,
    ``estimator.method(X)``.

    ``X`` may be anything sliced by rows into numpy arrays: a numpy array, a
    memmap (``np.load(path, mmap_mode="r")``), an HDF5 or zarr array. A
    memmap's pages are handed back to the operating system once their chunk is
    scored, so the process's resident memory stays bounded while the file
    streams through. A dask array gives a lazy dask array back instead: the
    method mapped over its blocks (rechunked to ``chunk_size`` rows) by the
    fitted estimator, on whatever scheduler computes it, e.g. a
    ``dask.distributed`` cluster.

    Parameters
    ----------
    estimator : estimator or Pipeline
        A fitted estimator with the method, e.g. a detector pipeline
        (``ExplanationTransformer`` + ``ExplanationReconstructionDetector``),
        a :class:`GuardedClassifier`, or a view transformer.

    X : array-like or dask array of shape (n_samples, ...)
        Inputs, as the estimator takes them (e.g. ``(n_samples, C, H, W)``).

    method : {"decision_function", "score_samples", "predict", \
            "predict_proba", "predict_log_proba", "transform", \
            "reconstruction_error", "p_value"}, default="decision_function"
        The estimator's method to apply; each gives one output row per input
        row.

    chunk_size : int, default=4096
        Rows per call of the method. For results identical to the bit with the
        in-memory call, keep it a multiple of the estimator's own batch sizes
        (``batch_size=256`` of the transformers, 4096 rows per scoring pass of
        the detectors), which the default is.

    out : ndarray, str or path-like, default=None
        Where to write the output: ``None`` allocates a new array; an array
        (e.g. ``np.lib.format.open_memmap(path, mode="w+", ...)``) of the
        output's shape and a dtype that holds the method's values; a path
        creates a ``.npy`` file there, memmapped, for outputs larger than
        memory. Not supported for dask arrays, whose result is stored with
        dask (``dask.array.to_zarr``, ``to_npy_stack``, ``store``).

    n_jobs : int, default=None
        Chunks scored in parallel through joblib: ``None`` means 1 unless in a
        ``joblib.parallel_config`` context, ``-1`` all cores. Memmapped inputs
        reach joblib's worker processes by file name, not by copy, and only a
        few chunks are in flight at a time. Not used for dask arrays.

    verbose : bool or int, default=False
        Show a progress bar over the chunks (tqdm). Not used for dask arrays,
        which have dask's own (``dask.diagnostics.ProgressBar``,
        ``distributed.progress``).

    Returns
    -------
    scores : ndarray or dask array of shape (n_samples, ...)
        ``out`` when it is an array, the ``.npy`` memmap when it is a path, a
        new array otherwise; a lazy dask array for a dask ``X``.

    See Also
    --------
    ExplanationReconstructionDetector.partial_fit : Training on data larger
        than memory, chunk by chunk.
    dask.array.blockwise : What maps the method over a dask array's blocks.

    Notes
    -----
    The estimator must already be fitted, and the method must score each row
    independently of the others (all of skadv's do). Errors in a chunk carry a
    note naming the chunk's rows.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.ensemble import IsolationForest
    >>> from skadv import score_in_chunks
    >>> X = np.random.default_rng(0).normal(size=(1000, 4))
    >>> forest = IsolationForest(random_state=0).fit(X)
    >>> scores = score_in_chunks(forest, X, chunk_size=300)
    >>> bool(np.array_equal(scores, forest.decision_function(X)))
    True
    """
    check_is_fitted(estimator)
    if not hasattr(estimator, method):
        raise ValueError(
            f"estimator has no method {method!r}: pass one of the methods of "
            f"{type(estimator).__name__}."
        )
    if _is_dask_array(X):
        if out is not None:
            raise ValueError(
                "out is not supported with a dask array X: store the returned "
                "dask array with dask (dask.array.to_zarr, to_npy_stack or store)."
            )
        return _score_dask(estimator, X, method, chunk_size)
    if not hasattr(X, "shape") or not hasattr(X, "__getitem__"):
        X = np.asarray(X)
    n_rows = X.shape[0]
    if isinstance(out, np.ndarray):
        if not out.flags.writeable:
            raise ValueError("out is read-only: pass a writeable array.")
        if out.ndim == 0 or out.shape[0] != n_rows:
            raise ValueError(
                f"out has shape {out.shape}, but X has {n_rows} rows: out needs "
                "one row per row of X."
            )
    if n_rows == 0:
        # No chunk: the estimator's own answer to no rows (usually an error).
        return _prepare_out(out, 0, _call(estimator, method, X), method)
    starts = range(0, n_rows, chunk_size)
    chunks = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_score_chunk)(estimator, method, X[start : start + chunk_size], start)
        for start in starts
    )
    if verbose:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, total=len(starts), desc="scoring", unit="chunk")
    result = None
    for start, chunk in zip(starts, chunks, strict=True):
        if result is None:
            result = _prepare_out(out, n_rows, chunk, method)
        result[start : start + len(chunk)] = chunk
    if isinstance(result, np.memmap):
        result.flush()
    return result
