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
import functools
import http.client
import io
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from fetalmlops.common.planes import Plane
from fetalmlops.datasets.phantom.dataset import ImageSpec, plan, sector_png
from fetalmlops.inference.client import PlaneClient
from fetalmlops.stack.torchserve import free_port, ready_workers, running_torchserve
from fetalmlops.trainer.backbones import Strategy, backbone, build
from fetalmlops.trainer.packaging import ModelLayout, build_mar, export_torchscript
from fetalmlops.trainer.preprocessing import Preprocessing, decode

SEED = 2026
CLASSES = [p.value for p in Plane]
NAME, VERSION = "fetal-planes", 1
BACKBONE, INPUT_SIZE = "resnet18", 224
CANONICAL_SIDE = 256  # the anonymizer's canonical PNG
# The cores this process may run on (os.cpu_count ignores an affinity mask such as taskset's).
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
SERVE = [str(Path(sys.executable).with_name("fetalmlops")), "serve"]
TARGET_LATENCY_RATIO = 1.3  # (b)/(a) p50 at concurrency 1, at most
TARGET_THROUGHPUT_RATIO = 1.0  # (b)/(c) requests per second at concurrency 16, at least
CONTENDERS = {
    "(a)": "TorchScript forward, in process",
    "(a')": "decode + forward, in process",
    "(b)": "our predictor, V1 :predict",
    "(c)": "TorchServe 0.12, /predictions",
}
# Answers over HTTP are JSON floats of the same float32 softmax: equal to well below this.
SAME_PROBABILITY = 1e-4

Call = Callable[[bytes], dict[str, float]]  # a PNG in, every plane's probability out
# One thread's way of calling a contender: its own connection, opened and closed around its run.
Session = Callable[[], AbstractContextManager[Call]]


@dataclass(frozen=True)
class Run:
    """One contender's measured requests: of one round, or of all rounds pooled."""

    latencies: list[float]  # seconds, one per measured request
    seconds: float  # from the first measured request to the last answer (summed over rounds)

    def percentile(self, p: int) -> float:
        """In milliseconds."""
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds


def pooled(runs: Sequence[Run]) -> Run:
    return Run([t for run in runs for t in run.latencies], sum(run.seconds for run in runs))


def canonical_png(spec: ImageSpec) -> bytes:
    return sector_png(spec, SEED, CANONICAL_SIDE)


def phantom_pngs(count: int) -> list[bytes]:
    return [canonical_png(spec) for spec in plan(count, SEED)[:count]]  # several per patient


def model_version(root: Path) -> ModelLayout:
    """The trainer's archive of a randomly initialised ResNet-18, as `job.py` packages one."""
    torch.manual_seed(SEED)
    spec = backbone(BACKBONE)
    model = build(BACKBONE, len(CLASSES), Strategy.FINE_TUNE).eval()
    prep = Preprocessing(size=INPUT_SIZE)
    torchscript = export_torchscript(
        model,
        torch.zeros(2, prep.channels, prep.size, prep.size),
        root / "model.pt",
        head=spec.head,
        features=spec.features,
    )
    return build_mar(NAME, VERSION, torchscript, prep, CLASSES, root / f"v{VERSION}")


def archived_model(layout: ModelLayout) -> torch.jit.ScriptModule:
    with zipfile.ZipFile(layout.mar) as archive:
        data = archive.read("model.pt")
    with warnings.catch_warnings():
        # Deprecated for torch.export, yet what TorchServe 0.12 and our service both load.
        warnings.filterwarnings("ignore", message="`torch.jit", category=FutureWarning)
        model: torch.jit.ScriptModule = torch.jit.load(io.BytesIO(data), map_location="cpu")  # type: ignore[no-untyped-call]
    return model.eval()


def probabilities(model: torch.jit.ScriptModule, batch: torch.Tensor) -> dict[str, float]:
    with torch.inference_mode():
        row = torch.softmax(model(batch).float(), dim=1)[0]
    return dict(zip(CLASSES, row.tolist(), strict=True))


def measure(
    session: Session,
    images: Sequence[bytes],
    requests: int,
    concurrency: int,
    warmup: int,
    advance: Callable[[], None],
) -> Run:
    """``requests`` calls spread over ``concurrency`` threads, images taken round-robin.

    Every thread first warms its own connection up, then all start together; a shared
    counter hands out the measured requests, so a slower thread simply takes fewer.
    """
    handed_out = itertools.count()  # next() on it is atomic under the GIL
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    finished = [0.0] * concurrency
    began: list[float] = []
    barrier = threading.Barrier(concurrency, action=lambda: began.append(time.perf_counter()))

    def worker(slot: int) -> None:
        try:
            with session() as call:
                for i in range(math.ceil(warmup / concurrency)):
                    call(images[(slot + i) % len(images)])
                barrier.wait()
                own = latencies[slot]
                while (index := next(handed_out)) < requests:
                    started = time.perf_counter()
                    call(images[index % len(images)])
                    own.append(time.perf_counter() - started)
                    advance()
                finished[slot] = time.perf_counter()
        except BaseException:
            barrier.abort()  # the other threads stop waiting for this one
            raise

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return Run([t for own in latencies for t in own], max(finished) - began[0])


# The contenders' sessions.


def forward_only(model: torch.jit.ScriptModule, tensors: dict[bytes, torch.Tensor]) -> Call:
    return lambda png: probabilities(model, tensors[png])


def decode_and_forward(model: torch.jit.ScriptModule, prep: Preprocessing) -> Call:
    return lambda png: probabilities(model, decode(png, prep).unsqueeze(0))


def shared(call: Call) -> Session:
    """In process, every thread calls the same module: TorchScript runs concurrent calls."""
    return lambda: nullcontext(call)


def our_predictor(url: str) -> Session:
    @contextmanager
    def session() -> Iterator[Call]:
        with PlaneClient(url, NAME, timeout=120) as client:
            yield lambda png: client.predict([png])[0].probabilities

    return session


def torchserve_predictions(url: str) -> Session:
    host, port = url.removeprefix("http://").rsplit(":", 1)

    @contextmanager
    def session() -> Iterator[Call]:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)

        def call(png: bytes) -> dict[str, float]:
            headers = {"Content-Type": "image/png"}
            connection.request("POST", f"/predictions/{NAME}", body=png, headers=headers)
            response = connection.getresponse()
            body = response.read()
            if response.status != http.client.OK:
                raise RuntimeError(f"TorchServe answered {response.status}: {body[:300]!r}")
            answer: dict[str, Any] = json.loads(body)
            return {str(k): float(v) for k, v in answer["probabilities"].items()}

        try:
            yield call
        finally:
            connection.close()

    return session


# The servers: both run throughout, on loopback, stopped (with their workers) at the end.


@contextmanager
def serving(layout: ModelLayout, log: Path, threads: int, runs: int) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*SERVE, "--model-dir", str(layout.root), "--http-port", str(port)]
    # Tokens of the caller's environment would lock the client out: loopback needs none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FETALMLOPS_INFERENCE_TOKENS")}
    env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["FETALMLOPS_INFERENCE_PARALLEL_RUNS"] = str(runs)
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 120
        with PlaneClient(url, NAME, timeout=5) as probe:
            while not answers_ready(probe):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"fetalmlops serve did not start:\n{log.read_text()[-2000:]}"
                    )
                time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answers_ready(client: PlaneClient) -> bool:
    try:
        return client.ready()
    except OSError:
        return False  # not listening yet


def torchserve_config(workdir: Path, workers: int) -> Path:
    """`running_torchserve` overrides addresses and model store through TS_* variables."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.properties"
    config.write_text(
        "enable_envvars_config=true\n"
        "disable_token_authorization=true\n"
        f"default_workers_per_model={workers}\n"
    )
    return config


def all_workers_ready(management_port: int, workers: int, timeout_s: float = 120) -> None:
    """`running_torchserve` returns once one worker is READY; the others may still load."""
    deadline = time.monotonic() + timeout_s
    while ready_workers(management_port, NAME) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"TorchServe has not {workers} READY workers in {timeout_s} s")
        time.sleep(0.2)


def check_agrees(name: str, session: Session, reference: Call, images: Sequence[bytes]) -> None:
    """A contender that answered differently would not be serving the same model."""
    with session() as call:
        for png in images:
            got, want = call(png), reference(png)
            worst = max(abs(got[c] - want[c]) for c in CLASSES)
            if worst > SAME_PROBABILITY:
                raise RuntimeError(f"{name} differs from the in-process model by {worst:.2g}")


# The report.


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def report(results: dict[tuple[str, int], list[Run]], concurrency: int) -> None:
    columns = ("conc.", "requests", "p50 ms", "p99 ms", "req/s", "p50 vs (a)", "req/s vs (a)")
    print(f"\n{'contender':<40}" + "".join(f"{c:>{len(c) + 3}}" for c in columns))
    for level in (1, concurrency):
        base = pooled(results["(a)", level])
        for key, name in CONTENDERS.items():
            run = pooled(results[key, level])
            print(
                f"{key:<5}{name:<35}{level:>8}{len(run.latencies):>11}"
                f"{run.percentile(50):>9.1f}{run.percentile(99):>9.1f}{run.throughput:>8.1f}"
                f"{run.percentile(50) / base.percentile(50):>13.2f}"
                f"{run.throughput / base.throughput:>15.2f}"
            )
    print()
    latency = ratios(results, 1, lambda b, a: b.percentile(50) / a.percentile(50), "(a)")
    met = [r <= TARGET_LATENCY_RATIO for r in latency]
    print(
        f"(b)/(a) p50 latency at concurrency 1 (target ≤ {TARGET_LATENCY_RATIO}): "
        f"{latency[0]:.2f} over all rounds {verdict(met[0])}, {latency[1]:.2f} the median of "
        f"the rounds' ratios {verdict(met[1])}"
    )
    throughput = ratios(results, concurrency, lambda b, c: b.throughput / c.throughput, "(c)")
    met = [r >= TARGET_THROUGHPUT_RATIO for r in throughput]
    print(
        f"(b)/(c) throughput at concurrency {concurrency} (target ≥ {TARGET_THROUGHPUT_RATIO}): "
        f"{throughput[0]:.2f} over all rounds {verdict(met[0])}, {throughput[1]:.2f} the median "
        f"of the rounds' ratios {verdict(met[1])}"
    )


def ratios(
    results: dict[tuple[str, int], list[Run]],
    level: int,
    ratio: Callable[[Run, Run], float],
    baseline: str,
) -> tuple[float, float]:
    """(b) against ``baseline``: over all rounds pooled, and the median of the rounds' ratios.

    Each round's ratio compares runs made within seconds of each other: a change of load on
    a shared machine slows both alike, so their median barely moves with it.
    """
    ours, theirs = results["(b)", level], results[baseline, level]
    by_round = [ratio(b, other) for b, other in zip(ours, theirs, strict=True)]
    return ratio(pooled(ours), pooled(theirs)), statistics.median(by_round)


def main() -> None:
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
    torch.set_num_threads(args.threads)
    # Before TorchServe starts: its workers inherit it.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    workers = max(1, CORES // args.threads)  # forward passes at once, in either server

    with tempfile.TemporaryDirectory(prefix="bench-inference-") as scratch:
        tmp = Path(scratch)
        started = time.perf_counter()
        images = phantom_pngs(args.images)
        layout = model_version(tmp / "build")
        print(
            f"{len(images)} phantom PNGs ({CANONICAL_SIDE} px), {BACKBONE} at {INPUT_SIZE} px "
            f"archived as {layout.mar.name} ({layout.mar.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - started:.1f} s"
        )
        print(
            f"{CORES} CPU cores, torch {torch.__version__}, {args.threads} intra-op thread(s) "
            f"per forward, {workers} forward(s) at once in each server (TorchServe workers, "
            f"predictor runs); concurrency 1 "
            f"({args.requests} requests) and {args.concurrency} ({args.concurrent_requests}) "
            f"in {args.rounds} rounds, after {args.warmup} warm-up requests (at least 2 per "
            "thread)"
        )
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
            results = contest(sessions, images, levels, args.rounds, args.warmup)
    report(results, args.concurrency)


def contest(
    sessions: dict[str, Session],
    images: Sequence[bytes],
    levels: Sequence[tuple[int, int]],
    rounds: int,
    warmup: int,
) -> dict[tuple[str, int], list[Run]]:
    """At each concurrency, the contenders take turns, one share of the requests at a time
    (the order rotating), so that all meet the same load on a shared machine."""
    results: dict[tuple[str, int], list[Run]] = {}
    keys = list(sessions)
    with Progress() as progress:
        for concurrency, requests in levels:
            tasks = {
                key: progress.add_task(f"{key:<5}×{concurrency}", total=requests) for key in keys
            }
            share = math.ceil(requests / rounds)
            for turn in range(rounds):
                for key in keys[turn % len(keys) :] + keys[: turn % len(keys)]:
                    # After the first round every thread is new but the model is warm: one
                    # request each opens its connection and starts its thread's torch state.
                    first = max(warmup, 2 * concurrency) if turn == 0 else concurrency
                    run = measure(
                        sessions[key],
                        images,
                        min(share, requests - turn * share),
                        concurrency,
                        first,
                        functools.partial(progress.advance, tasks[key]),
                    )
                    results.setdefault((key, concurrency), []).append(run)
    return results


if __name__ == "__main__":
    main()
