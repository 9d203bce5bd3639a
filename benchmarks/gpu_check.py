"""A short check of skadv on one GPU: fit time, scoring speed, precision, loading.

On MNIST (or the bundled 8x8 digits with ``--dataset digits``):

1. trains the paper's CNN for ``--epochs`` epochs, or loads its state_dict
   (``--classifier-state``);
2. fits ``skadv.make_detector(model, preset=...)`` on the training images,
   timed;
3. times ``decision_function`` on ``--n-score`` images against the floor of one
   forward and one backward pass on the same device (a bare torch loop, in
   batches of the transformer's ``batch_size``; best of 3 interleaved rounds),
   and the latency of one input (median of 50 calls);
4. scores with the classifier in bfloat16 and float16, under
   ``torch.autocast`` and as a half-precision copy of the classifier in a
   second transformer, against the float32 scores (a report only);
5. saves the fitted detector with ``skadv.save`` and loads it back with the
   classifier on the CPU, then loads both that file and a joblib pickle in a
   subprocess that sees no GPU (``CUDA_VISIBLE_DEVICES=""``), as a CPU-only
   machine would, and compares the CPU scores with the GPU ones;
6. writes ``gpu-check.json`` (device, versions, every figure) and prints a
   table.

Usage::

    python benchmarks/gpu_check.py --data-home DIR                # MNIST, GPU
    python benchmarks/gpu_check.py --data-home DIR --preset contrastive-h256
    python benchmarks/gpu_check.py --device cpu --dataset digits --quick \\
        --output-dir /tmp/gpu-check                               # smoke run

It runs in a few minutes on one GPU with the default preset (the
``contrastive-h256`` autoencoders train three times longer).
"""

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.base import clone

import skadv
from skadv.datasets import load_digits, load_mnist
from skadv.models import make_digits_classifier, make_mnist_classifier

RESULTS = Path(__file__).parent / "results"
HALF_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(candidates, repeat, device):
    """Best time of each candidate over ``repeat`` interleaved rounds.

    Alternating the baseline and ours, and keeping each one's best round,
    compares them under the same load.
    """
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(repeat):
        for name, fn in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def median_latency(fn, repeat, device):
    """Median wall time of ``repeat`` calls, in milliseconds."""
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def floor_gradients(model, X, batch_size, device):
    """The floor: one forward and one backward pass per input, nothing else.

    Inputs go to the device and gradients come back batch by batch, as the
    transformer does.
    """
    out = np.empty((len(X), int(np.prod(X.shape[1:]))), dtype=np.float32)
    model.eval()
    for start in range(0, len(X), batch_size):
        x = torch.tensor(X[start : start + batch_size], device=device)
        x.requires_grad_()
        logits = model(x)
        logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
        out[start : start + len(x)] = x.grad.reshape(len(x), -1).cpu().numpy()
    return out


def load_data(args):
    """Training images and labels, and the images to score."""
    if args.dataset == "digits":
        X, y = load_digits(return_X_y=True)
        n_train = 1297
        X_train, y_train, X_score = X[:n_train], y[:n_train], X[n_train:]
    else:
        X_train, y_train = load_mnist(
            subset="train", data_home=args.data_home, return_X_y=True
        )
        X_score, _ = load_mnist(
            subset="test", data_home=args.data_home, return_X_y=True
        )
    if args.n_train is not None:
        X_train, y_train = X_train[: args.n_train], y_train[: args.n_train]
    # More images to score than the test set holds: repeat it.
    reps = -(-args.n_score // len(X_score))
    X_score = np.concatenate([X_score] * reps)[: args.n_score]
    return X_train, y_train, X_score


def make_classifier(dataset, **params):
    if dataset == "digits":
        return make_digits_classifier(**params)
    return make_mnist_classifier(**params)


def get_classifier(args, X_train, y_train):
    """The trained classifier's torch module, and its training time."""
    net = make_classifier(
        args.dataset,
        random_state=0,
        device=args.device,
        max_epochs=args.epochs,
        verbose=0,
    )
    start = time.perf_counter()
    if args.classifier_state:
        net.initialize()
        state = torch.load(args.classifier_state, map_location=args.device)
        net.module_.load_state_dict(state)
    else:
        net.fit(X_train, y_train)
    synchronize(args.device)
    return net.module_.eval(), time.perf_counter() - start


def score_agreement(reference_scores, reference_predict, scores, predict):
    return {
        "max_abs_diff": float(np.max(np.abs(scores - reference_scores))),
        "max_abs_diff_over_score_std": float(
            np.max(np.abs(scores - reference_scores)) / np.std(reference_scores)
        ),
        "predict_agreement": float(np.mean(predict == reference_predict)),
    }


def check_mixed_precision(pipe, model, X, X_fit, scores, predict, device):
    """decision_function with the classifier in half precision, two ways.

    ``autocast``: the whole call under ``torch.autocast`` (the classifier and
    the autoencoders run their matrix products in half precision, the inputs
    and the maps stay float32). ``half_model``: a half-precision copy of the
    classifier in a second transformer, the fitted float32 detector after it.
    """
    device_type = torch.device(device).type
    transformer, detector = pipe[0], pipe[-1]
    report = {}
    for name, dtype in HALF_DTYPES.items():
        entry = {}
        try:
            with torch.autocast(device_type=device_type, dtype=dtype):
                synchronize(device)
                start = time.perf_counter()
                half_scores = pipe.decision_function(X)
                synchronize(device)
                elapsed = time.perf_counter() - start
                half_predict = pipe.predict(X)
            entry["autocast"] = {
                "decision_function_s": elapsed,
                **score_agreement(scores, predict, half_scores, half_predict),
            }
        except Exception as exc:  # a report: record what failed and go on
            entry["autocast"] = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            half_model = copy.deepcopy(model).to(dtype)
            half_transformer = (
                clone(transformer).set_params(model=half_model).fit(X_fit)
            )
            synchronize(device)
            start = time.perf_counter()
            maps = half_transformer.transform(X)
            half_scores = detector.decision_function(maps)
            synchronize(device)
            elapsed = time.perf_counter() - start
            entry["half_model"] = {
                "decision_function_s": elapsed,
                **score_agreement(scores, predict, half_scores, detector.predict(maps)),
                "predicted_class_agreement": float(
                    np.mean(maps[:, 0] == transformer.transform(X)[:, 0])
                ),
            }
        except Exception as exc:  # a report: record what failed and go on
            entry["half_model"] = {"error": f"{type(exc).__name__}: {exc}"}
        report[name] = entry
    return report


def check_loading(pipe, model, X, scores, predict, args, tolerance):
    """Save, load on this machine, then load on a CPU-only one (a subprocess)."""
    report = {}
    cpu_model = copy.deepcopy(model).cpu()
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        path = directory / "detector.skadv"
        start = time.perf_counter()
        skadv.save(pipe, path)
        report["save_s"] = time.perf_counter() - start
        report["file_bytes"] = path.stat().st_size
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loaded = skadv.load(path, model=cpu_model)
                loaded_scores = loaded.decision_function(X)
                loaded_predict = loaded.predict(X)
            report["same_machine"] = {
                "transformer_device": str(loaded[0].device_),
                "warnings": sorted({str(w.message) for w in caught}),
                **score_agreement(scores, predict, loaded_scores, loaded_predict),
            }
        except Exception as exc:  # a report: record what failed and go on
            report["same_machine"] = {"error": f"{type(exc).__name__}: {exc}"}
        joblib.dump(pipe, directory / "detector.joblib")
        torch.save(cpu_model.state_dict(), directory / "classifier.pt")
        np.save(directory / "X.npy", X)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--dataset",
                args.dataset,
                "--cpu-load-child",
                str(directory),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            report["cpu_only_machine"] = {"error": child.stderr[-2000:]}
            return report
        cpu = json.loads(child.stdout.strip().splitlines()[-1])
        for kind in ("skadv", "joblib"):
            entry = cpu[kind]
            if "error" not in entry:
                result = np.load(directory / f"{kind}-scores.npz")
                entry.update(
                    score_agreement(
                        scores, predict, result["scores"], result["predict"]
                    )
                )
                entry["within_tolerance"] = (
                    entry["max_abs_diff_over_score_std"] <= tolerance
                )
        report["cpu_only_machine"] = cpu
    return report


def check_loading_or_error(pipe, model, X, scores, predict, args):
    try:
        return check_loading(pipe, model, X, scores, predict, args, args.tolerance)
    except Exception as exc:  # a report: record what failed and go on
        return {"error": f"{type(exc).__name__}: {exc}"}


def cpu_load_child(dataset, directory):
    """Load both files where no GPU is visible, score, and report (JSON line)."""
    directory = Path(directory)
    X = np.load(directory / "X.npy")
    model = make_classifier(dataset, device="cpu").initialize().module_
    model.load_state_dict(torch.load(directory / "classifier.pt", map_location="cpu"))
    report = {"cuda_available": torch.cuda.is_available()}
    loaders = {
        "skadv": lambda: skadv.load(directory / "detector.skadv", model=model.eval()),
        "joblib": lambda: joblib.load(directory / "detector.joblib"),
    }
    for kind, load in loaders.items():
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loaded = load()
                scores = loaded.decision_function(X)
                predict = loaded.predict(X)
            np.savez(directory / f"{kind}-scores.npz", scores=scores, predict=predict)
            report[kind] = {
                "transformer_device": str(loaded[0].device_),
                "warnings": sorted({str(w.message) for w in caught}),
            }
        except Exception as exc:  # a report: record what failed and go on
            report[kind] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(report))


def environment(device):
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "skadv": skadv.__version__,
        "python": platform.python_version(),
    }
    if torch.device(device).type == "cuda":
        info.update(
            device_name=torch.cuda.get_device_name(),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            # TF32 convolutions (torch's default) change the maps' last digits
            # against a CPU run.
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def print_table(results):
    rows = [
        ("device", results["environment"]["device_name"]),
        ("classifier", f"{results['classifier']['seconds']:.1f} s"),
        (
            f"fit {results['preset']} ({results['fit']['n']} images)",
            f"{results['fit']['seconds']:.1f} s",
        ),
    ]
    s = results["scoring"]
    rows += [
        (
            f"decision_function, {s['n']} images",
            f"{s['decision_function_s']:.2f} s ({s['images_per_s']:.0f}/s)",
        ),
        ("forward+backward floor", f"{s['floor_s']:.2f} s"),
        ("score / floor", f"{s['score_over_floor']:.2f}"),
        ("one input (median)", f"{s['single_input_latency_ms']:.1f} ms"),
        ("one input, floor (median)", f"{s['single_input_floor_ms']:.1f} ms"),
    ]
    for dtype, entry in results["mixed_precision"].items():
        for way, figures in entry.items():
            value = figures.get("error") or (
                f"max |diff| {figures['max_abs_diff']:.2e}, predict agrees "
                f"{figures['predict_agreement']:.4f}"
            )
            rows.append((f"{dtype} {way}", value[:90]))
    loading = results["loading"]
    if "error" in loading:
        rows.append(("save and load", loading["error"][:90]))
        loading = {"save_s": float("nan"), "file_bytes": 0, "same_machine": {}}
        loading["cpu_only_machine"] = {"error": "not run"}
    rows.append(("save", f"{loading['save_s']:.2f} s, {loading['file_bytes']} bytes"))
    same = loading["same_machine"]
    value = same.get("error") or f"max |diff| {same.get('max_abs_diff', np.nan):.2e}"
    rows.append((f"skadv.load here ({same.get('transformer_device')})", value[:90]))
    cpu = loading["cpu_only_machine"]
    for kind in ("skadv", "joblib"):
        entry = cpu.get(kind, cpu)
        value = entry.get("error") or (
            f"max |diff| {entry['max_abs_diff']:.2e} "
            f"({entry['max_abs_diff_over_score_std']:.1e} score std), predict "
            f"agrees {entry['predict_agreement']:.4f}, "
            f"{'ok' if entry['within_tolerance'] else 'OUTSIDE TOLERANCE'}"
        )
        rows.append((f"{kind} load, no GPU visible", value[:90]))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("mnist", "digits"), default="mnist")
    parser.add_argument("--data-home", default=os.environ.get("SKADV_DATA_HOME"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="ko-lim-2021")
    parser.add_argument("--epochs", type=int, default=2, help="classifier epochs")
    parser.add_argument(
        "--classifier-state", help="a state_dict of the classifier, instead of training"
    )
    parser.add_argument("--n-train", type=int, help="training images (default: all)")
    parser.add_argument("--n-score", type=int, default=10000)
    parser.add_argument(
        "--n-check",
        type=int,
        default=2000,
        help="images scored for the precision and loading checks",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-2,
        help="largest CPU-GPU score difference accepted, in GPU score std",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, smoke run")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--cpu-load-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu_load_child:
        cpu_load_child(args.dataset, args.cpu_load_child)
        return
    if args.quick:
        args.n_score = min(args.n_score, 500)
        args.n_check = min(args.n_check, 200)
    latency_repeat = 10 if args.quick else 50
    device = args.device

    X_train, y_train, X_score = load_data(args)
    model, classifier_s = get_classifier(args, X_train, y_train)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    pipe = skadv.make_detector(model, preset=args.preset, device=device, random_state=0)
    synchronize(device)
    start = time.perf_counter()
    pipe.fit(X_train)
    synchronize(device)
    fit_s = time.perf_counter() - start

    batch_size = pipe[0].batch_size
    pipe.decision_function(X_score[:batch_size])  # warm-up
    floor_gradients(model, X_score[:batch_size], batch_size, device)
    t = interleaved(
        {
            "floor": lambda: floor_gradients(model, X_score, batch_size, device),
            "ours": lambda: pipe.decision_function(X_score),
        },
        repeat=3,
        device=device,
    )
    one = X_score[:1]
    scoring = {
        "n": len(X_score),
        "batch_size": batch_size,
        "floor_s": t["floor"],
        "decision_function_s": t["ours"],
        "images_per_s": len(X_score) / t["ours"],
        "score_over_floor": t["ours"] / t["floor"],
        "single_input_latency_ms": median_latency(
            lambda: pipe.decision_function(one), latency_repeat, device
        ),
        "single_input_floor_ms": median_latency(
            lambda: floor_gradients(model, one, 1, device), latency_repeat, device
        ),
    }
    if torch.device(device).type == "cuda":
        scoring["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20

    X_check = X_score[: args.n_check]
    scores, predict = pipe.decision_function(X_check), pipe.predict(X_check)
    results = {
        "environment": environment(device),
        "dataset": args.dataset,
        "preset": args.preset,
        "quick": args.quick,
        "classifier": {
            "seconds": classifier_s,
            "epochs": None if args.classifier_state else args.epochs,
            "state": args.classifier_state,
        },
        "fit": {"n": len(X_train), "seconds": fit_s},
        "scoring": scoring,
        "mixed_precision": check_mixed_precision(
            pipe, model, X_check, X_train[:64], scores, predict, device
        ),
        "loading": check_loading_or_error(pipe, model, X_check, scores, predict, args),
        "n_check": len(X_check),
        "tolerance_in_score_std": args.tolerance,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / "gpu-check.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
