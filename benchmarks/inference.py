"""Serving latency and throughput: our KServe predictor against the bare model and TorchServe.

One run builds one `.mar` with the trainer's own code (a ResNet-18 at 224 px with random
weights: latency does not depend on the weights) and draws the same phantom images for every
contender: canonical 256-pixel PNGs, what the anonymizer hands on in production. Then, each at
concurrency 1 and 16 (threads, each with its own HTTP connection), after a warm-up:

* (a)  the archive's TorchScript (`model.pt`) in this process, one preprocessed image per call:
       the floor any server stands on;
* (a') the same, decoding and preprocessing each PNG first, as every server must (reference);
* (b)  our predictor, `fetalmlops serve` in its own process, V1 `:predict` with one image per
       request through `PlaneClient`;
* (c)  TorchServe 0.12 serving the same `.mar`, the PNG POSTed to `/predictions/<model>`.

Each request's latency is timed at the caller; throughput is the requests over the span from
the first measured request to the last answer. All servers run throughout, and at each
concurrency the contenders take turns (`--rounds`, a share of the requests each, the order
rotating), so that all meet the same load on a shared machine. The issue's targets: (b)/(a) p50
latency at concurrency 1 at most 1.3 (the service adds little to a forward pass), and (b)/(c)
throughput at concurrency 16 at least 1.0 (we serve at least as much as TorchServe on the same
machine), each over all rounds and as the median of the rounds' ratios.

Fairness: both servers are sized alike, the way a CPU is served. Every forward pass runs with
the same intra-op threads (`--threads`, default 1), and each server runs as many forward passes
at once as fit the cores (cores / threads): TorchServe as that many workers taking one request
at a time (batch size 1, the default of a registered model), our predictor as that many
parallel micro-batch runs (`FETALMLOPS_INFERENCE_PARALLEL_RUNS`). The in-process floor (a)
uses the same threads. Threads are set with `torch.set_num_threads` here and `OMP_NUM_THREADS`
in the servers, which torch reads when it starts.

    make bench            # or: .venv/bin/python benchmarks/inference.py --quick
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from serving.contenders import (
    check_agrees,
    decode_and_forward,
    forward_only,
    our_predictor,
    shared,
    torchserve_predictions,
)
from serving.contest import Results, contest
from serving.report import report
from serving.servers import all_workers_ready, serving, torchserve_config
from serving.workload import (
    BACKBONE,
    CANONICAL_SIDE,
    INPUT_SIZE,
    NAME,
    archived_model,
    model_version,
    phantom_pngs,
)

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.archive.preprocessing import Preprocessing, decode
from fetalmlops.stack.torchserve import running_torchserve

# The cores this process may run on (os.cpu_count ignores an affinity mask such as taskset's).
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="measured at concurrency 1")
    parser.add_argument("--concurrent-requests", type=int, default=800, help="measured at -c")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="turns the contenders take")
    parser.add_argument("--warmup", type=int, default=32, help="requests before the first round")
    parser.add_argument("--images", type=int, default=32, help="distinct phantom images")
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads of every forward pass"
    )
    parser.add_argument("--quick", action="store_true", help="40 and 160 requests in 4 rounds")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.concurrent_requests, args.rounds, args.warmup = 40, 160, 4, 16
    return args


def announce(
    images: list[bytes], layout: ModelLayout, seconds: float, args: argparse.Namespace, workers: int
) -> None:
    """What was built and how the run is sized, so that a figure can be read against both."""
    print(
        f"{len(images)} phantom PNGs ({CANONICAL_SIDE} px), {BACKBONE} at {INPUT_SIZE} px "
        f"archived as {layout.mar.name} ({layout.mar.stat().st_size / 1e6:.0f} MB) in "
        f"{seconds:.1f} s"
    )
    print(
        f"{CORES} CPU cores, torch {torch.__version__}, {args.threads} intra-op thread(s) "
        f"per forward, {workers} forward(s) at once in each server (TorchServe workers, "
        f"predictor runs); concurrency 1 "
        f"({args.requests} requests) and {args.concurrency} ({args.concurrent_requests}) "
        f"in {args.rounds} rounds, after {args.warmup} warm-up requests (at least 2 per "
        "thread)"
    )


def against_servers(
    layout: ModelLayout, images: list[bytes], tmp: Path, args: argparse.Namespace, workers: int
) -> Results:
    """Both servers started and checked to answer as the archive does, then the contest."""
    prep = Preprocessing(size=INPUT_SIZE)
    model = archived_model(layout)
    reference = decode_and_forward(model, prep)
    tensors = {png: decode(png, prep).unsqueeze(0) for png in images}
    config = torchserve_config(tmp / "torchserve", workers)
    with (
        serving(layout, tmp / "serve.log", args.threads, workers) as url,
        running_torchserve(
            layout.mar.parent, [f"{NAME}={layout.mar.name}"], tmp / "torchserve",
            ts_config=config, timeout_s=120,
        ) as torchserve,
    ):  # fmt: skip
        all_workers_ready(torchserve.ports.management, workers)
        sessions = {
            "(a)": shared(forward_only(model, tensors)),
            "(a')": shared(reference),
            "(b)": our_predictor(url),
            "(c)": torchserve_predictions(torchserve.inference_url),
        }
        check_agrees("our predictor", sessions["(b)"], reference, images[:4])
        check_agrees("TorchServe", sessions["(c)"], reference, images[:4])
        levels = ((1, args.requests), (args.concurrency, args.concurrent_requests))
        return contest(sessions, images, levels, args.rounds, args.warmup)


def main() -> None:
    args = options()
    torch.set_num_threads(args.threads)
    # Before TorchServe starts: its workers inherit it.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    workers = max(1, CORES // args.threads)  # forward passes at once, in either server

    with tempfile.TemporaryDirectory(prefix="bench-inference-") as scratch:
        tmp = Path(scratch)
        started = time.perf_counter()
        images = phantom_pngs(args.images)
        layout = model_version(tmp / "build")
        announce(images, layout, time.perf_counter() - started, args, workers)
        results = against_servers(layout, images, tmp, args, workers)
    report(results, args.concurrency)


if __name__ == "__main__":
    main()
