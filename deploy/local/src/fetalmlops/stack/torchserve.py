"""A real TorchServe on loopback for tests and benchmarks, started and stopped around a block.

``running_torchserve`` starts ``torchserve --start --foreground --ncs`` from the virtual
environment (Java from PATH), waits until each model has a READY worker and, on exit, stops the
whole process group: the Python launcher, the Java frontend and its Python workers.

Nothing is written into the repository or into shared places: TorchServe's ``logs/`` go under
``workdir`` (its cwd, plus LOG_LOCATION/METRICS_LOCATION), and TEMP/TMPDIR point at a private
directory because TorchServe keeps its pidfile (``$TMPDIR/.model_server.pid``, which makes a
second instance refuse to start), its unpacked archives and its worker sockets
(``$TEMP/.ts.sock.9000``) there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fetalmlops.stack.errors import StackError
from fetalmlops.stack.process import HOST, log_tail, require_executable, stop_group

JAVA_HINT = "install a JDK 17+ (`apt-get install -y openjdk-17-jdk-headless`)."
TORCHSERVE_HINT = "install the dev dependencies (`make setup`): torchserve is one of them."
Envelope = Literal["kserve", "kservev2"]
STOP_TIMEOUT_S = 20.0
# A Unix socket path must fit in sun_path (108 bytes on Linux); TorchServe appends
# "/.ts.sock.<port>" to TEMP, so TEMP is a short directory of its own, not one under workdir.
SOCKET_DIR_PREFIX = "ts-"


@dataclass(frozen=True)
class TorchServePorts:
    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int

    def all(self) -> tuple[int, ...]:
        return (
            self.inference,
            self.management,
            self.metrics,
            self.grpc_inference,
            self.grpc_management,
        )


@dataclass(frozen=True)
class TorchServe:
    inference_url: str
    management_url: str
    metrics_url: str
    ports: TorchServePorts
    process: subprocess.Popen[bytes]
    log: Path  # the launcher's and the Java frontend's console output
    logs_dir: Path  # TorchServe's own logs: ts_log.log, model_log.log, access_log.log
    config: Path
    startup_s: float  # from spawning the launcher to every model answering READY

    @property
    def model_log(self) -> Path:
        return self.logs_dir / "model_log.log"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def choose_ports(ports: Sequence[int] | None) -> TorchServePorts:
    """The given (inference, management, metrics) ports, else free ones; gRPC ports are free.

    TorchServe always opens its two gRPC ports, so they are chosen too: the defaults (7070,
    7071) would collide with any other TorchServe on the machine.
    """
    if ports is not None and len(ports) != 3:
        raise ValueError(f"ports are (inference, management, metrics), got {tuple(ports)}")
    chosen = [*(ports or (0, 0, 0)), 0, 0]
    for index, wanted in enumerate(chosen):
        while chosen[index] == 0 or (wanted == 0 and chosen.count(chosen[index]) > 1):
            chosen[index] = free_port()
    return TorchServePorts(*chosen)


def model_names(models: Sequence[str], model_store: Path) -> list[str]:
    """The names TorchServe registers for ``--models`` entries ("name=file.mar", "file.mar")."""
    if list(models) == ["ALL"]:
        return sorted(path.stem for path in model_store.glob("*.mar"))
    return [entry.split("=", 1)[0] if "=" in entry else Path(entry).stem for entry in models]


def server_properties(ports: TorchServePorts, model_store: Path) -> dict[str, str]:
    """TorchServe settings that keep this instance on loopback and out of others' way."""
    return {
        "inference_address": f"http://{HOST}:{ports.inference}",
        "management_address": f"http://{HOST}:{ports.management}",
        "metrics_address": f"http://{HOST}:{ports.metrics}",
        "grpc_inference_address": HOST,
        "grpc_management_address": HOST,
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_port": str(ports.grpc_management),
        "model_store": str(model_store),
    }


def minimal_config(properties: Mapping[str, str]) -> str:
    settings = {
        **properties,
        "disable_token_authorization": "true",
        "enable_envvars_config": "true",
        "default_workers_per_model": "1",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def environment(
    properties: Mapping[str, str],
    envelope: Envelope | None,
    logs_dir: Path,
    temp_dir: Path,
) -> dict[str, str]:
    """The child's environment: no inherited TS_* setting, ours as TS_* variables.

    With ``enable_envvars_config=true`` TorchServe ranks TS_* variables above its config file;
    that is how KServe sets ``TS_SERVICE_ENVELOPE`` and how a given config.properties (the one
    packaged for KServe) is moved onto loopback here.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("TS_")}
    env |= {f"TS_{key.upper()}": value for key, value in properties.items()}
    if envelope is not None:
        env["TS_SERVICE_ENVELOPE"] = envelope
    env |= {
        "LOG_LOCATION": str(logs_dir),
        "METRICS_LOCATION": str(logs_dir),
        "TEMP": str(temp_dir),
        "TMPDIR": str(temp_dir),
    }
    return env


def ready_workers(management_port: int, name: str) -> int:
    """How many workers of ``name`` answer READY on the management API (0 when unreachable)."""
    url = f"http://{HOST}:{management_port}/models/{name}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            described = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return 0
    return sum(
        worker.get("status") == "READY"
        for version in described
        for worker in version.get("workers", [])
    )


def wait_ready(
    server: subprocess.Popen[bytes],
    management_port: int,
    names: Sequence[str],
    timeout_s: float,
    logs: Sequence[Path],
) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(names)
    while waiting:
        waiting = [name for name in waiting if ready_workers(management_port, name) == 0]
        if not waiting:
            return
        if server.poll() is not None:
            raise StackError(
                f"TorchServe exited (code {server.returncode}) while loading "
                f"{', '.join(waiting)}:\n{tails(logs)}"
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"TorchServe had no READY worker for {', '.join(waiting)} within "
                f"{timeout_s:.0f} s:\n{tails(logs)}"
            )
        time.sleep(0.2)


def tails(logs: Sequence[Path]) -> str:
    return "\n".join(f"  {log}:\n{log_tail(log, 15)}" for log in logs if log.exists())


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group (Java's shutdown hook stops the workers), SIGKILL after a while.

    Once the group is gone, so are its listening sockets: the kernel closes them with it.
    """
    stop_group(server.pid, STOP_TIMEOUT_S)
    server.wait()


@contextmanager
def running_torchserve(
    model_store: Path,
    models: str | Sequence[str],
    workdir: Path,
    ports: Sequence[int] | None = None,
    *,
    envelope: Envelope | None = None,
    ts_config: Path | None = None,
    timeout_s: float = 60.0,
) -> Iterator[TorchServe]:
    """A TorchServe serving ``models`` (``--models`` entries) from ``model_store``.

    ``ports`` are (inference, management, metrics); free ones are chosen when omitted.
    ``envelope`` switches on TorchServe's KServe v1 or v2 request envelope, as KServe does.
    ``ts_config`` replaces the launcher's minimal config.properties (e.g. the one packaged for
    KServe); its addresses and model store are then overridden through TS_* variables, which
    needs ``enable_envvars_config=true`` in it, and a ``model_snapshot`` in it decides what is
    loaded (TorchServe then ignores ``--models``).
    """
    entries = [models] if isinstance(models, str) else list(models)
    require_executable("java", JAVA_HINT)  # the launcher runs `java` from PATH (or JAVA_HOME)
    torchserve = Path(sys.executable).with_name("torchserve")
    if not torchserve.exists():
        raise StackError(f"`torchserve` is not in {torchserve.parent}: {TORCHSERVE_HINT}")
    chosen = choose_ports(ports)
    properties = server_properties(chosen, model_store.resolve())
    workdir.mkdir(parents=True, exist_ok=True)
    logs_dir, log = workdir / "logs", workdir / "torchserve.log"
    config = ts_config if ts_config is not None else workdir / "config.properties"
    if ts_config is None:
        config.write_text(minimal_config(properties))
    temp_dir = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
    env = environment(properties, envelope, logs_dir, temp_dir)
    command = [
        str(torchserve), "--start", "--foreground", "--ncs",
        "--model-store", str(model_store.resolve()),
        "--models", *entries,
        "--ts-config", str(config.resolve()),
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("ab") as out:
        server = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: one signal reaches Java and the workers
        )
    try:
        wait_ready(
            server,
            chosen.management,
            model_names(entries, model_store),
            timeout_s,
            [log, logs_dir / "model_log.log"],
        )
        yield TorchServe(
            inference_url=f"http://{HOST}:{chosen.inference}",
            management_url=f"http://{HOST}:{chosen.management}",
            metrics_url=f"http://{HOST}:{chosen.metrics}",
            ports=chosen,
            process=server,
            log=log,
            logs_dir=logs_dir,
            config=config,
            startup_s=time.monotonic() - started,
        )
    finally:
        stop(server)
        shutil.rmtree(temp_dir, ignore_errors=True)
