"""Daemons, pidfiles and loopback ports: the process plumbing every component shares."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fetalmlops.stack.config import Port
from fetalmlops.stack.errors import StackError

HOST = "127.0.0.1"
# The longest a daemon takes from fork to exec.
EXEC_TIMEOUT_S = 5.0


def require_executable(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"`{name}` was not found on PATH: {install_hint}")
    return path


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something holds ``host:port`` (listening or bound).

    SO_REUSEADDR makes the probe ignore TIME_WAIT leftovers of a process that has already
    exited, so only a live holder counts.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def accepts_connections(port: int, host: str = HOST, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_ports_free(ports: Iterable[Port]) -> None:
    """Raises when a port this component needs is held by a process that is not ours."""
    for port in ports:
        if port_in_use(port.number):
            raise StackError(
                f"port {port.number} ({port.component} {port.purpose}) is already in use by "
                f"another process. Stop that process or choose another port, e.g. "
                f"`export {port.env_var}=<free port>`."
            )


def is_alive(pid: int) -> bool:
    # Reap it first if it is our own exited child: a zombie still answers kill(pid, 0).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def log_tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in text[-lines:])


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, timeout_s: float, first_signal: int = signal.SIGTERM) -> None:
    """Signals the whole process group (the daemon and anything it forked), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, first_signal)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        is_alive(pgid)  # reaps the leader if it is our child, so the group can empty
        if not group_alive(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    while group_alive(pgid):
        is_alive(pgid)
        time.sleep(0.05)


def wait_until(
    check: Callable[[], bool],
    *,
    name: str,
    log: Path,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Polls ``check`` until it is true; fails fast, pointing at the log, when the process died."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if not alive():
            raise StackError(f"{name} exited while starting; see its log {log}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise StackError(
                f"{name} did not become healthy within {timeout_s:.0f} s; see its log {log}:\n"
                f"{log_tail(log)}"
            )
        time.sleep(0.25)


def run_logged(
    argv: Sequence[str], log: Path, *, what: str, env: Mapping[str, str] | None = None
) -> None:
    """Runs a setup command with its output appended to ``log``; fails with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            check=False,
        )
    if result.returncode != 0:
        raise StackError(
            f"{what} failed (exit code {result.returncode}); see {log}:\n{log_tail(log)}"
        )


@dataclass(frozen=True)
class Daemon:
    """A long-running server started in its own session, tracked by a pidfile.

    ``marker`` is a string (a path under the stack home) that must appear in the process's
    command line, so a pid recycled by an unrelated process after a reboot is never ours.
    """

    name: str
    pidfile: Path
    log: Path
    marker: str

    def pid(self) -> int | None:
        """The daemon's pid when it runs; a stale pidfile is removed."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if is_alive(pid) and self.marker in command_line(pid):
            return pid
        self.pidfile.unlink(missing_ok=True)
        return None

    def spawn(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                # Own session: survives the CLI's exit and Ctrl-C; the pgid names its whole tree.
                start_new_session=True,
            )
        self.pidfile.write_text(f"{process.pid}\n")
        # Between fork and exec the child's command line is Python's, or briefly empty: until
        # the program's own shows, `pid()` would take the daemon for a stranger.
        deadline = time.monotonic() + EXEC_TIMEOUT_S
        while self.marker not in command_line(process.pid) and process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return process.pid

    def stop(self, timeout_s: float) -> None:
        pid = self.pid()
        if pid is not None:
            stop_group(pid, timeout_s)
        self.pidfile.unlink(missing_ok=True)
