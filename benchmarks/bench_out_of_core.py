"""Out-of-core scoring: a million MNIST-sized inputs streamed from disk.

Writes ``n`` inputs of shape 1 x 28 x 28 (float32; 3.1 GB for the default
million) to a ``.npy`` file in a temporary directory, fits the paper's
detector (the ``"ko-lim-2021"`` preset) on MNIST training images, then scores
every input of the file with :func:`skadv.score_in_chunks` into a memmapped
``.npy`` output, in a fresh process whose peak resident memory is the figure
reported, and checks that whole chunks of the streamed scores equal the
in-memory ``decision_function`` of the same rows exactly.

The inputs are the MNIST test images tiled (the scores of a tile repeat, the
work does not), or, without MNIST files, 8x8 digits upsampled to 28 x 28. The
classifier is the paper's CNN cached by ``bench_robustness.py``; without the
cache an untrained one (the cost of scoring does not depend on its weights).
The input file's pages are dropped from the page cache before streaming, so
the inputs really come from disk. The temporary directory is removed at the
end.

Usage::

    python benchmarks/bench_out_of_core.py --data-home ../shared/data --threads 2
    python benchmarks/bench_out_of_core.py --n 50000        # quick run

Results go to ``benchmarks/results/out-of-core.json`` and the table
``out-of-core.md`` (``out-of-core-quick.*`` when ``--n`` is not a million).
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

import skadv
from skadv import make_detector, score_in_chunks

RESULTS = Path(__file__).parent / "results"
CLASSIFIER_STATE = RESULTS / "cache" / "mnist-cnn-seed0.pt"
FULL = 1_000_000
INPUT_SHAPE = (1, 28, 28)


def load_images(data_home):
    """Training images for the detector, and the images to tile."""
    from skadv.datasets import load_mnist

    try:
        X_train, _ = load_mnist(subset="train", data_home=data_home, return_X_y=True)
        X_test, _ = load_mnist(subset="test", data_home=data_home, return_X_y=True)
        return X_train, X_test, "MNIST test images, tiled"
    except FileNotFoundError:
        from skadv.datasets import load_digits

        X, _ = load_digits(return_X_y=True)
        X = torch.nn.functional.interpolate(
            torch.as_tensor(X), size=INPUT_SHAPE[1:], mode="bilinear"
        ).numpy()
        X = X / X.max()
        return X[:1000], X[1000:], "8x8 digits upsampled to 28 x 28, tiled"


def load_classifier():
    from skadv.models import make_mnist_classifier

    classifier = make_mnist_classifier(random_state=0).initialize()
    if CLASSIFIER_STATE.exists():
        state = torch.load(CLASSIFIER_STATE, weights_only=True)
        classifier.module_.load_state_dict(state)
        return classifier, str(CLASSIFIER_STATE.relative_to(RESULTS.parent))
    return classifier, "untrained (the MNIST CNN cache was not found)"


def write_inputs(path, n, images):
    """``n`` inputs, ``images`` tiled, written block by block (bounded memory);
    then the file's pages leave the page cache, so that streaming reads disk."""
    X = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(n, *INPUT_SHAPE)
    )
    images = images.astype(np.float32).reshape(-1, *INPUT_SHAPE)
    for start in range(0, n, len(images)):
        stop = min(start + len(images), n)
        X[start:stop] = images[: stop - start]
        X.flush()
    del X
    with open(path, "rb") as file:
        os.fsync(file.fileno())
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return os.path.getsize(path)


def _proc_status_bytes(field):
    """A memory field of /proc/self/status in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Restart the kernel's count of peak resident memory (Linux), so that the
    peak read afterwards is the streaming's own; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def stream(detector, input_path, output_path, chunk_size, threads, progress):
    """Run in a fresh process: score the whole file, report time and memory."""
    torch.set_num_threads(threads)
    X = np.load(input_path, mmap_mode="r")
    score_in_chunks(detector, X[:chunk_size])  # warm-up: lazy imports, pools
    X = np.load(input_path, mmap_mode="r")  # a fresh map: no page read yet
    before = {field: _proc_status_bytes(field) for field in ("VmRSS", "RssFile")}
    streaming_peak = reset_peak_rss()
    # Sampled to show which part of the peak is file pages of the memmap
    # (RssFile also counts the shared libraries, hence the growth).
    file_peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            file_peak[0] = max(file_peak[0], _proc_status_bytes("RssFile") or 0)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    scores = score_in_chunks(
        detector, X, chunk_size=chunk_size, out=output_path, verbose=progress
    )
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if streaming_peak:
        peak = _proc_status_bytes("VmHWM")
    else:  # the whole process's peak, start-up included
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "seconds": seconds,
        "rss_before_stream_bytes": before["VmRSS"],
        "peak_rss_bytes": peak,
        "peak_rss_is_streaming_only": streaming_peak,
        "peak_file_pages_growth_bytes": file_peak[0] - (before["RssFile"] or 0),
        "output_file_bytes": os.path.getsize(output_path),
        "n_scored": int(len(scores)),
    }


def check_against_in_memory(detector, input_path, output_path, chunk_size, n):
    """Whole chunks read into memory and scored in one call, against the stream.

    Chunks of ``chunk_size`` rows (a multiple of the detector's batches) split
    into the same batches in both, so the scores must be equal to the bit.
    """
    X = np.load(input_path, mmap_mode="r")
    streamed = np.load(output_path, mmap_mode="r")
    n_chunks = -(-n // chunk_size)
    checked, max_difference, seconds = 0, 0.0, 0.0
    for chunk in sorted({0, n_chunks // 2, n_chunks - 1}):
        rows = slice(chunk * chunk_size, min((chunk + 1) * chunk_size, n))
        inputs = np.array(X[rows])  # in memory
        start = time.perf_counter()
        expected = detector.decision_function(inputs)
        seconds += time.perf_counter() - start
        difference = np.abs(np.asarray(streamed[rows]) - expected).max()
        max_difference = max(max_difference, float(difference))
        checked += len(expected)
    return {
        "checked_rows": checked,
        "identical_to_in_memory": max_difference == 0.0,
        "max_abs_difference": max_difference,
        "in_memory_inputs_per_s": checked / seconds,
    }


def table(results):
    """The figures of a run as a markdown table, for the docs."""
    gib, s, check = 2**30, results["stream"], results["check"]
    peak = "peak RSS while streaming" if s["peak_rss_is_streaming_only"] else "peak RSS"
    same = "identical to" if check["identical_to_in_memory"] else "NOT identical to"
    rows = [
        (
            "inputs",
            f"{results['n_inputs']:,} x {' x '.join(map(str, INPUT_SHAPE))} float32, "
            f"a {results['input_file_bytes'] / gib:.2f} GiB .npy file "
            f"({results['inputs']})",
        ),
        (
            "throughput",
            f"{s['inputs_per_s']:,.0f} inputs/s ({s['seconds'] / 60:.1f} min); "
            f"in memory on whole chunks of the file: "
            f"{check['in_memory_inputs_per_s']:,.0f} inputs/s",
        ),
        (
            peak,
            f"{s['peak_rss_bytes'] / gib:.2f} GiB, "
            f"{s['peak_rss_over_input_file']:.0%} of the input file "
            f"({s['rss_before_stream_bytes'] / gib:.2f} GiB before streaming)",
        ),
        (
            "input pages resident at most",
            f"{s['peak_file_pages_growth_bytes'] / 2**20:.0f} MiB",
        ),
        (
            "scores checked",
            f"{check['checked_rows']:,} rows (whole chunks): {same} the in-memory "
            "`decision_function`",
        ),
    ]
    lines = [
        f"`{results['command']}`: {results['detector']}, chunks of "
        f"{results['chunk_size']:,} rows, {results['torch_threads']} torch "
        f"thread(s), {results['machine']['cpus']} CPUs.",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=FULL, help="inputs to score")
    parser.add_argument("--n-fit", type=int, default=10000, help="training images")
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--data-home", default=os.environ.get("SKADV_DATA_HOME"))
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    needed = args.n * int(np.prod(INPUT_SHAPE)) * 4 + args.n * 8
    free = shutil.disk_usage(args.workdir).free
    print(f"{args.workdir}: {free / 2**30:.1f} GiB free, {needed / 2**30:.2f} needed")
    if free < 1.2 * needed:
        sys.exit(f"Not enough free disk in {args.workdir} (--workdir).")

    X_train, images, source = load_images(args.data_home)
    classifier, classifier_source = load_classifier()
    detector = make_detector(classifier, preset="ko-lim-2021", random_state=0)
    start = time.perf_counter()
    detector.fit(X_train[: args.n_fit])
    fit_seconds = time.perf_counter() - start
    print(f"fitted on {min(args.n_fit, len(X_train))} images in {fit_seconds:.0f} s")

    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        input_path = Path(folder) / "inputs.npy"
        output_path = Path(folder) / "scores.npy"
        start = time.perf_counter()
        input_bytes = write_inputs(input_path, args.n, images)
        print(
            f"wrote {input_bytes / 2**30:.2f} GiB in "
            f"{time.perf_counter() - start:.0f} s"
        )
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            streamed = pool.submit(
                stream,
                detector,
                input_path,
                output_path,
                args.chunk_size,
                args.threads,
                args.progress,
            ).result()
        streamed["inputs_per_s"] = args.n / streamed["seconds"]
        streamed["peak_rss_over_input_file"] = streamed["peak_rss_bytes"] / input_bytes
        print(json.dumps(streamed, indent=2))
        check = check_against_in_memory(
            detector, input_path, output_path, args.chunk_size, args.n
        )
        print(json.dumps(check, indent=2))

    command = "python benchmarks/bench_out_of_core.py --threads " + str(args.threads)
    if args.n != FULL:
        command += f" --n {args.n}"
    results = {
        "command": command,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "skadv": skadv.__version__,
        },
        "n_inputs": args.n,
        "input_shape": list(INPUT_SHAPE),
        "input_file_bytes": input_bytes,
        "inputs": source,
        "classifier": classifier_source,
        "detector": (
            f"`ko-lim-2021` preset fitted on {min(args.n_fit, len(X_train)):,} "
            "training images"
        ),
        "fit_seconds": fit_seconds,
        "chunk_size": args.chunk_size,
        "torch_threads": args.threads,
        "stream": streamed,
        "check": check,
    }
    stem = "out-of-core" if args.n == FULL else "out-of-core-quick"
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
