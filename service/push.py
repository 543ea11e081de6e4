"""Uploading a Claude Code projects tree to the server: what ``agnes-activity push`` does.

An analyst runs it at the end of every session, often from a Claude Code hook, so it must
be cheap when little changed, safe when two sessions end at once, and honest in its exit
code. What it promises:

- Every transcript under the projects folder is found, subagent files included, and sent
  under its flat name (:func:`service.ingest.names.flat_name`). Given one session's
  transcript (what the Claude Code hook does, :mod:`service.hook`), only that file and its
  subagents' files are looked at: one small upload after a response, no walk of the tree.
- Only new and grown files are sent. A ledger (``agnes-push.json`` beside the projects
  folder, i.e. in ``~/.claude/``) remembers, per server, the size of each file as it was
  sent; it is replaced atomically and saved as the run goes (at least every second), so
  an interrupted push resends only what it sent in its last second.
- Runs are serialised by ``flock`` on ``agnes-push.lock`` beside the ledger: a second
  push waits for the first and then reads the ledger the first left, so each file is
  sent once. (The lock is released by the kernel if a push dies.)
- Files are gzipped when ``GET /api/health`` advertises ``session-gzip``.
- 5xx, 408, 429 and network errors are retried with exponential backoff (``Retry-After``
  honoured), a bounded number of times; any other 4xx is final and kept, with the
  server's ``detail``, in the failed list.

The exit codes (:data:`EXIT_CODES`) are part of the interface; scripts rely on them.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import random
import time
import urllib.parse
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

import httpx
import msgspec

from service import __version__
from service.ingest.names import find_transcripts, session_files

__all__ = [
    "EXIT_AUTH",
    "EXIT_CODES",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "Failure",
    "PushReport",
    "Reporter",
    "Sent",
    "ledger_path",
    "push",
    "server_url_problem",
    "whoami",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_AUTH = 2
EXIT_UNREACHABLE = 3
EXIT_USAGE = 64  # sysexits' EX_USAGE: kept apart from EXIT_AUTH, which click's own 2 would blur
EXIT_CONFIG = 78  # sysexits' EX_CONFIG

EXIT_CODES = {
    EXIT_OK: "everything new was sent, or there was nothing to send",
    EXIT_FAILED: "some files were refused or kept failing (listed); the rest were sent",
    EXIT_AUTH: "the server refused the token (401/403); nothing more was sent",
    EXIT_UNREACHABLE: "the server could not be reached (or is no agnes-activity server)",
    EXIT_USAGE: "bad command line (unknown option, missing --server/--token, a --server that "
    "is no http(s) URL, no projects dir)",
    EXIT_CONFIG: "--install-hook/--uninstall-hook: Claude Code's settings.json is not valid "
    "JSON or not shaped as Claude Code writes it; it was left untouched",
}

LEDGER_NAME = "agnes-push.json"
LOCK_NAME = "agnes-push.lock"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))
BACKOFF_SECONDS = 0.5
"""The first retry's delay; each further retry doubles it (with jitter)."""
MAX_DELAY_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 120.0
"""A longer ``Retry-After`` is cut to this: a hook should not hang for an hour."""
SAVE_EVERY_SECONDS = 1.0
ACCEPTS_HEADER = "X-Agnes-Accepts"
"""The header :mod:`service.api.health` answers with; not imported from there, which would
load the web framework into every push (0.4 s before the first byte is sent)."""
TIMEOUT = httpx.Timeout(120.0, connect=10.0)


class Sent(msgspec.Struct, frozen=True):
    name: str  # the flat name it was uploaded under
    path: str
    bytes: int  # of the transcript, before gzip


class Failure(msgspec.Struct, frozen=True):
    name: str
    path: str
    status: int | None  # the last HTTP status, None after network errors
    reason: str  # the server's ``detail``, or what went wrong


class PushReport(msgspec.Struct, kw_only=True):
    """What one push did; ``--json`` prints exactly this."""

    server: str
    projects: str
    session: str | None = None
    """The one session's transcript that was looked at, or None: the whole tree."""
    dry_run: bool = False
    gzip: bool = False
    sent: list[Sent] = msgspec.field(default_factory=list)
    """Uploaded (with ``dry_run``: would be uploaded)."""
    failed: list[Failure] = msgspec.field(default_factory=list)
    unchanged: int = 0
    """Transcripts already on the server at their current size."""
    exit_code: int = EXIT_OK
    error: str | None = None
    """Why the run stopped early (bad token, unreachable server), else None."""


class Reporter(Protocol):
    """What a push tells its user while it runs (the CLI draws a progress bar)."""

    def waiting(self, lock: Path) -> None: ...
    def start(self, files: int, total_bytes: int) -> None: ...
    def advance(self, name: str, size: int) -> None: ...
    def retrying(self, name: str, delay: float, reason: str) -> None: ...


class Silent:
    def waiting(self, lock: Path) -> None:
        pass

    def start(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, name: str, size: int) -> None:
        pass

    def retrying(self, name: str, delay: float, reason: str) -> None:
        pass


class _Stop(Exception):
    """Ends the run: the token is refused or the server cannot be reached."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- the ledger and the lock -------------------------------------------------------------


class _Ledger(msgspec.Struct):
    version: int = 1
    servers: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    """server URL → absolute transcript path → size sent."""


def ledger_path(projects: Path) -> Path:
    """``~/.claude/projects`` → ``~/.claude/agnes-push.json``."""
    return projects.resolve().parent / LEDGER_NAME


def _load_ledger(path: Path) -> _Ledger:
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Ledger)
    except FileNotFoundError:
        return _Ledger()
    except (OSError, msgspec.DecodeError):
        # A ledger we cannot read costs one full resend (the server replaces same-named
        # files, so nothing is counted twice); refusing to push would cost the data.
        return _Ledger()


def _save_ledger(path: Path, ledger: _Ledger) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temp, "wb") as out:
        out.write(msgspec.json.format(msgspec.json.encode(ledger)))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


@contextlib.contextmanager
def _locked(path: Path, reporter: Reporter) -> Iterator[None]:
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            reporter.waiting(path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- HTTP with retries -------------------------------------------------------------------


def _reason(response: httpx.Response) -> str:
    """The server's ``detail``, else the start of its body, else the status phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    text = response.text.strip()[:200]
    return text or response.reason_phrase or f"HTTP {response.status_code}"


def retry_delay(attempt: int, response: httpx.Response | None) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): the server's
    ``Retry-After`` (seconds or an HTTP date) when given, else exponential backoff with
    jitter, so many clients turned away at once do not come back at once."""
    header = response.headers.get("retry-after") if response is not None else None
    if header:
        try:
            seconds = float(header)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(header).timestamp() - time.time()
            except (TypeError, ValueError):
                seconds = -1.0
        if seconds >= 0:
            return min(seconds, MAX_RETRY_AFTER_SECONDS)
    ceiling = min(BACKOFF_SECONDS * 2.0 ** (attempt - 1), MAX_DELAY_SECONDS)
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not secrecy


class _Client:
    def __init__(
        self,
        server: str,
        token: str,
        retries: int,
        reporter: Reporter,
        sleep: Callable[[float], None],
    ) -> None:
        self.server = server
        self.retries = retries
        self.reporter = reporter
        self.sleep = sleep
        self.http = httpx.Client(
            base_url=server,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"agnes-activity-push/{__version__}",
            },
            timeout=TIMEOUT,
            # Certificates matter only to https (redirects are not followed); building
            # their context is a good part of a hook's push (bench/README, hook_latency).
            verify=server.startswith("https:"),
        )

    def close(self) -> None:
        self.http.close()

    def request(self, what: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        """``send()`` until it gets a final answer; a retryable status after the last
        attempt is returned, a network error after the last attempt stops the run."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = send()
            except httpx.TransportError as exc:
                if attempt > self.retries:
                    raise _Stop(
                        EXIT_UNREACHABLE,
                        f"cannot reach {self.server}: {exc or type(exc).__name__}",
                    ) from None
                delay = retry_delay(attempt, None)
                self.reporter.retrying(what, delay, str(exc) or type(exc).__name__)
            else:
                if response.status_code not in RETRY_STATUSES or attempt > self.retries:
                    return response
                delay = retry_delay(attempt, response)
                self.reporter.retrying(what, delay, f"{response.status_code} {_reason(response)}")
            self.sleep(delay)

    def accepts_gzip(self) -> bool:
        """Checks the server is there and an agnes-activity server; True if it takes gzip."""
        response = self.request("health check", lambda: self.http.get("/api/health"))
        if response.status_code != 200:
            raise _Stop(
                EXIT_UNREACHABLE,
                f"{self.server} is not answering as an agnes-activity server "
                f"(GET /api/health: {response.status_code} {_reason(response)})",
            )
        accepts = response.headers.get(ACCEPTS_HEADER, "")
        return "session-gzip" in {part.strip() for part in accepts.split(",")}

    def upload(self, name: str, data: bytes, gzipped: bool) -> httpx.Response:
        if gzipped:
            name, data = f"{name}.gz", gzip.compress(data, compresslevel=6, mtime=0)
        return self.request(
            name,
            lambda: self.http.post(
                "/api/upload/sessions",
                files={"file": (name, data, "application/octet-stream")},
            ),
        )


# -- the run -----------------------------------------------------------------------------


def server_url_problem(server: str) -> str | None:
    """What is wrong with ``server`` as the base URL of a server (with the URL it
    probably meant), or None when it is one."""
    parts = urllib.parse.urlsplit(server)
    if parts.scheme in ("http", "https") and parts.hostname:
        return None
    if "://" in server:
        return f"--server must be an http:// or https:// URL, not {server!r}"
    host = server.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    local = host == "localhost" or host.replace(".", "").isdigit() or ":" in host
    guess = f"{'http' if local else 'https'}://{server}"
    return f"--server needs a scheme: did you mean {guess}?"


def whoami(
    server: str, token: str, *, retries: int = 1, reporter: Reporter | None = None
) -> tuple[int, str]:
    """Asks the server whose ``token`` it is: ``(EXIT_OK, email)``, else ``(exit code,
    why not)`` with :data:`EXIT_AUTH` or :data:`EXIT_UNREACHABLE`."""
    client = _Client(server.rstrip("/"), token, retries, reporter or Silent(), time.sleep)
    try:
        response = client.request("token check", lambda: client.http.get("/api/me"))
    except _Stop as stop:
        return stop.exit_code, str(stop)
    finally:
        client.close()
    if response.status_code in (401, 403):
        return EXIT_AUTH, f"the server refused the token ({response.status_code}): " + _reason(
            response
        )
    try:
        email = response.json()["email"]
    except (ValueError, KeyError, TypeError):
        email = None
    if response.status_code != 200 or not isinstance(email, str):
        return EXIT_UNREACHABLE, (
            f"{client.server} is not answering as an agnes-activity server "
            f"(GET /api/me: {response.status_code} {_reason(response)})"
        )
    return EXIT_OK, email


def _pending(
    files: list[tuple[Path, str]], sent: dict[str, int]
) -> tuple[list[tuple[Path, str, int]], int]:
    """Transcripts bigger than when last sent (new ones: bigger than nothing) as
    (path, flat name, size), and how many are unchanged."""
    pending = []
    unchanged = 0
    for path, name in files:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue  # deleted while we looked
        if size > sent.get(str(path), 0):
            pending.append((path, name, size))
        else:
            unchanged += 1
    return pending, unchanged


def push(
    server: str,
    token: str,
    projects: Path,
    *,
    session: Path | None = None,
    dry_run: bool = False,
    retries: int = 4,
    reporter: Reporter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PushReport:
    """Send every new or grown transcript under ``projects`` to ``server``; given a
    ``session`` (a transcript's path), only that session's files, wherever they lie.

    The ledger and the lock are kept beside ``projects`` in either case. ``retries`` is
    how many times one request is tried again after a retryable failure. ``dry_run``
    looks only at the ledger and the files: nothing is locked, sent or written, and the
    server is not contacted. Never raises for what the server or the network do; the
    report's ``exit_code`` and ``error`` say how it went.
    """
    reporter = reporter or Silent()
    server = server.rstrip("/")
    projects = projects.resolve()
    report = PushReport(server=server, projects=str(projects), dry_run=dry_run)
    ledger_file = ledger_path(projects)

    def files() -> list[tuple[Path, str]]:
        if session is None:
            return find_transcripts([projects])
        return session_files(session.resolve())

    if session is not None:
        report.session = str(session.resolve())
    if dry_run:
        known = _load_ledger(ledger_file).servers.get(server, {})
        pending, report.unchanged = _pending(files(), known)
        report.sent = [Sent(name=n, path=str(p), bytes=s) for p, n, s in pending]
        return report
    with _locked(ledger_file.with_name(LOCK_NAME), reporter):
        # Read inside the lock: a push that held it before us may have sent our files.
        ledger = _load_ledger(ledger_file)
        known = ledger.servers.setdefault(server, {})
        pending, report.unchanged = _pending(files(), known)
        if not pending:
            return report
        client = _Client(server, token, retries, reporter, sleep)
        saved_at = time.monotonic()
        dirty = False
        try:
            report.gzip = client.accepts_gzip()
            reporter.start(len(pending), sum(size for _, _, size in pending))
            for path, name, size in pending:
                try:
                    data = path.read_bytes()  # may have grown since the listing: send it all
                except OSError as exc:
                    report.failed.append(Failure(name, str(path), None, f"cannot read: {exc}"))
                    continue
                response = client.upload(name, data, report.gzip)
                if response.status_code in (401, 403):
                    raise _Stop(
                        EXIT_AUTH,
                        f"the server refused the token ({response.status_code}): "
                        f"{_reason(response)}",
                    )
                if response.status_code == 200:
                    known[str(path)] = len(data)
                    report.sent.append(Sent(name=name, path=str(path), bytes=len(data)))
                    dirty = True
                else:
                    report.failed.append(
                        Failure(name, str(path), response.status_code, _reason(response))
                    )
                reporter.advance(name, size)
                if dirty and time.monotonic() - saved_at >= SAVE_EVERY_SECONDS:
                    _save_ledger(ledger_file, ledger)
                    saved_at, dirty = time.monotonic(), False
        except _Stop as stop:
            unsent = len(pending) - len(report.sent) - len(report.failed)
            report.exit_code = stop.exit_code
            report.error = f"{stop} ({unsent} files not sent; the next push sends them)"
        finally:
            client.close()
            if dirty:
                _save_ledger(ledger_file, ledger)
    if report.exit_code == EXIT_OK and report.failed:
        report.exit_code = EXIT_FAILED
    return report
