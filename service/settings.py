"""Where the service keeps its data and where it listens, checked once at start-up.

Every setting comes from a command-line option or its ``AGNES_*`` environment variable
(the CLI declares both); this module only validates and derives paths from them.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

import msgspec

log = logging.getLogger("agnes.settings")

UPLOAD_TEMP_PREFIX = ".upload-"
"""An upload is written to ``user_sessions/<user id>/.upload-<random>.tmp`` and renamed into
place; only the server makes such files, so one found at start-up is a killed upload's."""


class SettingsError(Exception):
    """A setting that cannot work, with a message that says what and where."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8000
    watch: bool = True  # watch DATA_DIR for changes (off: only the periodic scan ingests)
    poll: bool = False  # poll instead of kernel notifications (network file systems)
    debounce_ms: int = 50  # longest a burst of file changes is grouped before ingest
    scan_interval: float = 60.0  # seconds between reconciling scans
    max_header_bytes: int = 64 * 1024  # a request's line and headers, at most (else 431)
    forwarded_allow_ips: str = ""  # proxies trusted to set X-Forwarded-For/-Proto; "": none
    duckdb_memory_limit: str = ""  # DuckDB's memory_limit ("2GiB"); "": from the machine
    duckdb_threads: int = 0  # DuckDB's threads; 0: from the machine

    @property
    def db_path(self) -> Path:
        return self.data_dir / "activity.duckdb"

    @property
    def sessions_dir(self) -> Path:
        return self.data_dir / "user_sessions"

    @property
    def audit_dir(self) -> Path:
        return self.data_dir / "audit"

    @property
    def local_md_dir(self) -> Path:
        """Each analyst's latest ``CLAUDE.local.md``, as ``<user_id>.md``."""
        return self.data_dir / "user_local_md"

    @property
    def admin_file(self) -> Path:
        """Where a running server leaves the loopback URL and secret of its admin API."""
        return self.data_dir / ".admin.json"


PRIVATE_UMASK = 0o077
"""What this process creates is its user's alone: folders 0700, files 0600 (the database,
transcripts, the server's spool file)."""

DUCKDB_MEMORY_SHARE = 0.25
"""The share of the memory this process may use that DuckDB's buffer manager may hold by
default (its own default is 80 %): the rest is for the sockets, the answers kept in
memory and the parsing of uploads."""
DUCKDB_MEMORY_FLOOR = 256 * 2**20


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def machine_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by its cgroup's CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota.isdigit() and period.isdigit() and int(period):
        cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    return cpus


def duckdb_memory_limit(settings: Settings | None = None) -> str:
    """DuckDB's ``memory_limit``: the setting, else ``DUCKDB_MEMORY_SHARE`` of
    :func:`machine_memory` (at least 256 MiB)."""
    if settings is not None and settings.duckdb_memory_limit:
        return settings.duckdb_memory_limit
    share = max(DUCKDB_MEMORY_FLOOR, int(machine_memory() * DUCKDB_MEMORY_SHARE))
    return f"{share // 2**20}MiB"


def duckdb_threads(settings: Settings | None = None) -> int:
    """DuckDB's ``threads``: the setting, else :func:`machine_cpus` (DuckDB's own default
    counts every CPU of the machine, whatever the process may use)."""
    if settings is not None and settings.duckdb_threads:
        return settings.duckdb_threads
    return machine_cpus()


def prepare_data_dir(settings: Settings) -> None:
    """Create ``DATA_DIR`` and its folders, or say plainly why that is impossible.

    From here on the process creates files and folders private to its user
    (:data:`PRIVATE_UMASK`), and a ``DATA_DIR`` that others may enter is closed to them
    (its group's rights are left as the operator set them)."""
    os.umask(PRIVATE_UMASK)
    for folder in (settings.data_dir, settings.sessions_dir, settings.audit_dir):
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(
                f"cannot create data directory {folder.resolve()}: {exc.strerror or exc}"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SettingsError(f"data directory {folder.resolve()} is not writable")
    mode = stat.S_IMODE(settings.data_dir.stat().st_mode)
    if mode & 0o007:
        try:
            settings.data_dir.chmod(mode & ~0o007)
        except OSError as exc:
            log.warning(
                "data directory %s is open to every user of the machine (mode %o) and cannot"
                " be closed: %s",
                settings.data_dir.resolve(),
                mode,
                exc.strerror or exc,
            )


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front so a busy port is a clear error, not a traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SettingsError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = "is already in use" if exc.errno == 98 else f"cannot be bound: {exc.strerror}"
        raise SettingsError(f"port {port} on {host} {reason}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
