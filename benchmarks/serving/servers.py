"""The two servers: both run throughout, on loopback, stopped (with their workers) at the end.

Our predictor is `fetalmlops serve` in its own process; TorchServe is started by the stack's
`running_torchserve`, configured here with as many workers as the predictor has parallel runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.inference.client import PlaneClient
from fetalmlops.stack.torchserve import free_port, ready_workers
from serving.workload import NAME

SERVE = [str(Path(sys.executable).with_name("fetalmlops")), "serve"]


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
