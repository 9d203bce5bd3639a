"""Per-class training through joblib backends: the same scores everywhere."""

import numpy as np
import pytest
from joblib import parallel_config

from skadv import ExplanationReconstructionDetector, make_reconstructor


def detector(**params):
    return ExplanationReconstructionDetector(
        reconstructor=make_reconstructor(max_epochs=20, batch_size=16),
        random_state=0,
        **params,
    )


def test_dask_local_cluster_gives_the_local_scores(maps):
    distributed = pytest.importorskip("distributed")
    benign, odd = maps
    local = detector().fit(benign).decision_function(odd)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        parallel_config(backend="dask"),
    ):
        remote = detector(n_jobs=-1).fit(benign)
    np.testing.assert_array_equal(remote.decision_function(odd), local)


def test_loky_processes_give_the_local_scores(maps):
    benign, odd = maps
    local = detector().fit(benign).decision_function(odd)
    with parallel_config(backend="loky"):
        parallel = detector(n_jobs=2).fit(benign).decision_function(odd)
    np.testing.assert_array_equal(parallel, local)
