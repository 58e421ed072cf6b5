"""PostgreSQL from the distribution's packages: its own cluster, database and per-service roles."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from importlib import resources
from pathlib import Path
from string import Template

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection

from fetalmlops.stack.component import Progress
from fetalmlops.stack.config import DATABASE, OWNER_ROLE, SERVICES, Port, StackConfig
from fetalmlops.stack.credentials import POSTGRES_SUPERUSER, Credentials
from fetalmlops.stack.errors import StackError
from fetalmlops.stack.process import (
    HOST,
    command_line,
    is_alive,
    require_executable,
    run_logged,
    stop_group,
    wait_until,
)

RESOURCES = resources.files("fetalmlops.stack") / "resources"
INSTALL_HINT = "install the PostgreSQL server, e.g. `apt-get install -y postgresql`."
SYSTEM_USER = "postgres"
# When we are root the cluster lives here: PostgreSQL refuses to run as root and its own user
# cannot reach a home under /root (mode 700).
ROOT_DATA_PARENT = Path("/var/lib/postgresql/fetalmlops")
# Seconds during which a just-launched server may not have written postmaster.pid yet.
PIDFILE_GRACE_S = 5.0


def running_as_root() -> bool:
    return os.geteuid() == 0


def data_dir(config: StackConfig) -> Path:
    if not running_as_root():
        return config.home / "postgres"
    home_hash = hashlib.sha256(str(config.home.resolve()).encode()).hexdigest()[:12]
    return ROOT_DATA_PARENT / home_hash


def bin_dir() -> Path:
    """The server binaries: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(found.stdout.strip()))
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates += sorted(versions, key=lambda p: int(p.parent.name), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise StackError(f"PostgreSQL server binaries (initdb, pg_ctl) were not found: {INSTALL_HINT}")


def render_conf(template: str, *, port: int, socket_dir: Path) -> str:
    return Template(template).substitute(port=port, socket_dir=socket_dir)


def role_grants(owner: str, roles: list[str]) -> list[sql.Composed]:
    """Services may read and write rows in the owner's tables, never change the schema."""
    grantees = sql.SQL(", ").join(sql.Identifier(r) for r in roles)
    fmt = {"owner": sql.Identifier(owner), "roles": grantees}
    return [
        sql.SQL("GRANT USAGE ON SCHEMA public TO {roles}").format(**fmt),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {roles}"
        ).format(**fmt),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
            "GRANT USAGE ON SEQUENCES TO {roles}"
        ).format(**fmt),
        # Tables migrated before a role existed are not covered by the default privileges.
        sql.SQL(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {roles}"
        ).format(**fmt),
        sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {roles}").format(**fmt),
    ]


class Postgres:
    name = "postgres"

    def __init__(self, config: StackConfig, credentials: Credentials) -> None:
        self.config = config
        self.credentials = credentials
        self.data_dir = data_dir(config)
        self.log = config.logs / "postgres.log"
        self.setup_log = config.logs / "postgres-setup.log"
        self._launched_at = 0.0

    @property
    def ports(self) -> tuple[Port, ...]:
        return (self.config.port(self.name, "server", "postgres_port"),)

    def _as_system_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", SYSTEM_USER, "--", *argv] if running_as_root() else argv

    def _give_to_system_user(self, path: Path) -> None:
        if running_as_root():
            user = pwd.getpwnam(SYSTEM_USER)
            os.chown(path, user.pw_uid, user.pw_gid)

    def pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        # PostgreSQL itself clears a stale postmaster.pid on start, so we only read it.
        if is_alive(pid) and str(self.data_dir) in command_line(pid):
            return pid
        return None

    def install(self, progress: Progress) -> None:
        bin_dir()
        if running_as_root():
            require_executable("runuser", "install util-linux: `apt-get install -y util-linux`.")
            try:
                pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise StackError(
                    f"running as root needs the `{SYSTEM_USER}` system user, which the Debian "
                    f"package creates: {INSTALL_HINT}"
                ) from None

    def _initdb(self) -> None:
        parent = self.data_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        if parent == ROOT_DATA_PARENT:
            self._give_to_system_user(parent)
        # A half-finished earlier initdb leaves a directory initdb refuses to reuse.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        pwfile = parent / f".{self.data_dir.name}.pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.credentials.postgres_superuser_password)
        self._give_to_system_user(pwfile)
        try:
            run_logged(
                self._as_system_user([
                    str(bin_dir() / "initdb"), "-D", str(self.data_dir),
                    "-U", POSTGRES_SUPERUSER, f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=peer",
                    "--encoding=UTF8", "--locale=C",
                ]),
                self.setup_log,
                what="initialising the PostgreSQL cluster (initdb)",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'fetalmlops.conf'\n")

    def start(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        conf = self.data_dir / "fetalmlops.conf"
        template = (RESOURCES / "postgresql.conf").read_text()
        port = self.config.postgres_port
        conf.write_text(render_conf(template, port=port, socket_dir=self.data_dir))
        self._give_to_system_user(conf)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # -W: do not wait; the three servers boot in parallel and wait_healthy does the waiting.
        # Without -l the server inherits pg_ctl's stdout, i.e. our log file, which the
        # postgres user could not open itself under a root-owned home.
        run_logged(
            self._as_system_user(
                [str(bin_dir() / "pg_ctl"), "start", "-D", str(self.data_dir), "-W", "-s"]
            ),
            self.log,
            what="starting PostgreSQL (pg_ctl start)",
        )
        self._launched_at = time.monotonic()

    def connect(self, dbname: str = "postgres") -> connection:
        return psycopg2.connect(
            host=HOST,
            port=self.config.postgres_port,
            user=POSTGRES_SUPERUSER,
            password=self.credentials.postgres_superuser_password,
            dbname=dbname,
            connect_timeout=2,
        )

    def _answers(self) -> bool:
        try:
            self.connect().close()
        except psycopg2.OperationalError:
            return False
        return True

    def wait_healthy(self) -> None:
        def alive() -> bool:
            booting = time.monotonic() - self._launched_at < PIDFILE_GRACE_S
            return booting or self.pid() is not None

        wait_until(
            self._answers,
            name=self.name,
            log=self.log,
            timeout_s=self.config.start_timeout_s,
            alive=alive,
        )

    def provision(self) -> None:
        passwords = self.credentials.database_passwords
        conn = self.connect()
        conn.autocommit = True  # CREATE DATABASE refuses to run inside a transaction
        try:
            with conn.cursor() as cur:
                for role in (OWNER_ROLE, *SERVICES):
                    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                    verb = "ALTER" if cur.fetchone() else "CREATE"
                    cur.execute(
                        sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(
                            sql.Identifier(role), sql.Literal(passwords[role])
                        )
                    )
        finally:
            conn.close()
        self.create_database(DATABASE)

    def create_database(self, name: str) -> None:
        """The database ``name`` (once), owned by the owner role, every service granted its
        rows as in the project's own."""
        conn = self.connect()
        conn.autocommit = True  # CREATE DATABASE refuses to run inside a transaction
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if not cur.fetchone():
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(name), sql.Identifier(OWNER_ROLE)
                        )
                    )
        finally:
            conn.close()
        conn = self.connect(name)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for statement in role_grants(OWNER_ROLE, list(SERVICES)):
                    cur.execute(statement)
        finally:
            conn.close()

    def drop_database(self, name: str) -> None:
        """Drops ``name``, closing the connections still open on it (PostgreSQL 13+)."""
        if name == DATABASE:
            raise ValueError(f"{DATABASE} is the stack's own database")
        conn = self.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        finally:
            conn.close()

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        subprocess.run(
            self._as_system_user(
                [str(bin_dir() / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                 "-t", str(int(self.config.stop_timeout_s)), "-s"]
            ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )  # fmt: skip
        # pg_ctl normally leaves nothing; SIGINT (fast shutdown) then SIGKILL if it did not.
        stop_group(pid, self.config.stop_timeout_s, first_signal=signal.SIGINT)
