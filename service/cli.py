"""``agnes-activity``: run the service and administer it.

Every option also reads an environment variable (shown in ``--help``). The admin commands
work whether or not a server holds the data dir: when one does, they go through its admin
API on loopback, authenticated by the secret it keeps in ``DATA_DIR/.admin.json``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import msgspec

from service import __version__, admin
from service.admin import SECRET_HEADER, AdminEndpoint, open_store, read_admin_file
from service.ingest.backfill import archive_all, find_transcripts, ingest_files
from service.ingest.pipeline import BatchReport, Ingest
from service.models import NewToken, TokenInfo, User
from service.settings import Settings, SettingsError
from service.store import Store
from service.store.ingest import reset_derived
from service.store.users import ConflictError, NotFoundError
from watchers.scan import archived_files

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# The web framework, the HTTP client and rich are imported by the commands that use them:
# an admin command or `ingest` should not pay for loading the server (about 0.3 s).

T = TypeVar("T")

data_dir_option = click.option(
    "--data-dir",
    envvar="AGNES_DATA_DIR",
    show_envvar=True,
    default=Path("./data"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding the database, uploaded transcripts and audit spool.",
)


def ingest_options(command: Callable[..., None]) -> Callable[..., None]:
    """How the server notices new files: the options ``serve`` and ``demo`` share."""
    options = [
        click.option(
            "--watch/--no-watch",
            envvar="AGNES_WATCH",
            show_envvar=True,
            default=True,
            show_default=True,
            help="Watch the data dir and ingest new files at once (off: only the periodic scan).",
        ),
        click.option(
            "--poll/--no-poll",
            envvar="AGNES_POLL",
            show_envvar=True,
            default=False,
            show_default=True,
            help="Watch by polling, for network file systems that send no change events.",
        ),
        click.option(
            "--debounce-ms",
            envvar="AGNES_DEBOUNCE_MS",
            show_envvar=True,
            default=50,
            show_default=True,
            type=click.IntRange(1, 10_000),
            help="Longest time a burst of file changes is grouped into one ingest batch.",
        ),
        click.option(
            "--scan-interval",
            envvar="AGNES_SCAN_INTERVAL",
            show_envvar=True,
            default=60.0,
            show_default=True,
            type=click.FloatRange(min=0.1),
            help="Seconds between scans that ingest whatever the watcher missed.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def http_options(command: Callable[..., None]) -> Callable[..., None]:
    """What the HTTP server takes from clients: the options ``serve`` and ``demo`` share."""
    options = [
        click.option(
            "--max-header-bytes",
            envvar="AGNES_MAX_HEADER_BYTES",
            show_envvar=True,
            default=64 * 1024,
            show_default=True,
            type=click.IntRange(1024, 16 * 1024 * 1024),
            help="Longest request line and headers taken (bytes); a longer one gets 431.",
        ),
        click.option(
            "--forwarded-allow-ips",
            envvar="AGNES_FORWARDED_ALLOW_IPS",
            show_envvar=True,
            default="",
            help="Comma-separated addresses (or networks) of proxies trusted to say who the"
            " client is (X-Forwarded-For, X-Forwarded-Proto); default: none, the headers are"
            " ignored.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def store_options(command: Callable[..., None]) -> Callable[..., None]:
    """What DuckDB may use: the options ``serve`` and ``demo`` share."""
    options = [
        click.option(
            "--duckdb-memory-limit",
            envvar="AGNES_DUCKDB_MEMORY_LIMIT",
            show_envvar=True,
            default="",
            help="Most memory DuckDB keeps for table data and queries, e.g. 2GiB or 512MB"
            " (default: a quarter of the memory this process may use, at least 256 MiB).",
        ),
        click.option(
            "--duckdb-threads",
            envvar="AGNES_DUCKDB_THREADS",
            show_envvar=True,
            default=0,
            type=click.IntRange(0, 1024),
            help="Threads DuckDB runs a query on (default 0: the CPUs this process may use).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


host_option = click.option(
    "--host",
    envvar="AGNES_HOST",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
port_option = click.option(
    "--port",
    envvar="AGNES_PORT",
    show_envvar=True,
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agnes-activity")
def main() -> None:
    """agnes-activity: live personal activity dashboards for Claude Code analysts."""


@main.command("serve")
@host_option
@port_option
@data_dir_option
@ingest_options
@http_options
@store_options
def serve_command(host: str, port: int, data_dir: Path, **ingest: Any) -> None:
    """Run the service."""
    settings = Settings(data_dir=data_dir, host=host, port=port, **ingest)

    def announce(base: str) -> None:
        click.echo(f"agnes-activity {__version__} serving {base}/me/activity", err=True)
        click.echo(f"data dir: {settings.data_dir.resolve()}", err=True)

    from service.server import serve

    try:
        serve(settings, announce=announce)
    except SettingsError as exc:
        fail(str(exc))


@main.command("demo")
@port_option
@host_option
@click.option(
    "--interval",
    envvar="AGNES_DEMO_INTERVAL",
    show_envvar=True,
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between two steps of simulated activity (an upload, a query, a pull).",
)
@ingest_options
@http_options
@store_options
def demo_command(port: int, host: str, interval: float, **ingest: Any) -> None:
    """Start the service on a fresh data dir with three demo analysts: 30 days of history
    and new activity every --interval seconds. Prints the URL and a token that signs in.

    Everything arrives the way real data does: history through the backfill and the audit
    spool, the stream through `push` uploads, spool lines, manifest pulls and
    POST /api/audit/events.
    """

    root = Path(tempfile.mkdtemp(prefix="agnes-demo-"))
    try:
        _run_demo(root, port, host, interval, ingest)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # a demo leaves nothing behind


def _run_demo(root: Path, port: int, host: str, interval: float, ingest: dict[str, Any]) -> None:
    from service import demo
    from service.server import serve

    settings = Settings(data_dir=root / "data", host=host, port=port, **ingest)
    try:
        store = open_store(settings)
    except SettingsError as exc:
        fail(str(exc))
    try:
        seeded = demo.seed(settings, store, root)
    finally:
        store.close()
    stream = demo.Stream(seeded, interval)
    first = seeded.analysts[0]

    def announce(base: str) -> None:
        click.echo(f"\n  agnes-activity demo: {base}/login\n  sign in with token: {first.token}\n")
        click.echo(
            f"  {first.profile.email} and {len(seeded.analysts) - 1} more analysts, "
            f"{demo.HISTORY_DAYS} days of history ({seeded.files} transcripts, "
            f"{seeded.events} audit events); new activity every {interval:g} s",
            err=True,
        )
        click.echo(f"  demo folder: {root}  (Ctrl-C stops the demo and removes it)\n", err=True)
        stream.start(base)

    try:
        serve(settings, announce=announce)
    except SettingsError as exc:
        fail(str(exc))
    finally:
        stream.stop()


# -- push ----------------------------------------------------------------------------------


class _PushCommand(click.Command):
    """Command-line mistakes exit 64 (EX_USAGE), so scripts can tell them from a refused
    token, which exits 2 (click's own code for usage errors)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            from service import push

            exc.exit_code = push.EXIT_USAGE  # type: ignore[misc]
            raise

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from service import push

        with formatter.section("Exit codes"):
            formatter.write_dl([(str(code), meaning) for code, meaning in push.EXIT_CODES.items()])


class _PushProgress:
    """A push's progress bar and notices, on standard error (the bar only on a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def waiting(self, lock: Path) -> None:
        self.console.print(
            f"another push is running; waiting for it to finish (lock: {lock})",
            markup=False,
            soft_wrap=True,
        )

    def start(self, files: int, total_bytes: int) -> None:
        if not self.console.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task(f"pushing {files} files", total=total_bytes)

    def advance(self, name: str, size: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, size)

    def retrying(self, name: str, delay: float, reason: str) -> None:
        self.console.print(
            f"retrying {name} in {delay:.1f} s: {reason}", markup=False, soft_wrap=True
        )

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _claude_dir() -> str:
    return os.environ.get("CLAUDE_CONFIG_DIR") or str(Path.home() / ".claude")


def _push_usage_error(message: str) -> NoReturn:
    from service import push

    error = click.UsageError(message, click.get_current_context())
    error.exit_code = push.EXIT_USAGE  # type: ignore[misc]
    raise error


@main.command("push", cls=_PushCommand)
@click.option(
    "--server",
    envvar="AGNES_SERVER",
    show_envvar=True,
    help="Base URL of the agnes-activity server, e.g. https://agnes.example.com.",
)
@click.option(
    "--token",
    envvar="AGNES_TOKEN",
    show_envvar=True,
    help="Your personal access token (`agnes-activity tokens create EMAIL`); required "
    "unless --dry-run or --uninstall-hook.",
)
@click.option(
    "--claude-dir",
    envvar="AGNES_CLAUDE_DIR",
    show_envvar=True,
    default=_claude_dir,
    show_default="$CLAUDE_CONFIG_DIR, else ~/.claude",
    type=click.Path(file_okay=False, path_type=Path),
    help="Claude Code's config folder: its projects/ is pushed, the ledger, lock and hook "
    "log are kept in it, and --install-hook edits its settings.json.",
)
@click.option(
    "--projects",
    envvar="AGNES_PROJECTS",
    show_envvar=True,
    show_default="CLAUDE_DIR/projects",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Claude Code's projects folder; the ledger and lock are kept in its parent.",
)
@click.option(
    "--dry-run",
    envvar="AGNES_DRY_RUN",
    show_envvar=True,
    is_flag=True,
    help="List what would be sent; contacts no server, sends and writes nothing.",
)
@click.option(
    "--json",
    "as_json",
    envvar="AGNES_JSON",
    show_envvar=True,
    is_flag=True,
    help="Print a JSON summary on standard output.",
)
@click.option(
    "--retries",
    envvar="AGNES_PUSH_RETRIES",
    show_envvar=True,
    default=4,
    show_default=True,
    type=click.IntRange(0, 20),
    help="Retries of one request after 5xx, 408, 429 or a network error (backoff doubles).",
)
@click.option(
    "--install-hook",
    envvar="AGNES_PUSH_INSTALL_HOOK",
    show_envvar=True,
    is_flag=True,
    help="Instead of pushing now, add a Claude Code hook (Stop and SessionEnd in "
    "CLAUDE_DIR/settings.json) that pushes each session in the background as each "
    "response ends. The server and token are checked, then kept in "
    "CLAUDE_DIR/agnes-push-hook.json (mode 0600); the hook logs to CLAUDE_DIR/agnes-push.log.",
)
@click.option(
    "--uninstall-hook",
    envvar="AGNES_PUSH_UNINSTALL_HOOK",
    show_envvar=True,
    is_flag=True,
    help="Remove that hook (only ours; every other hook and setting stays) and its "
    "agnes-push-hook.json.",
)
def push_command(
    server: str | None,
    token: str | None,
    claude_dir: Path,
    projects: Path | None,
    dry_run: bool,
    as_json: bool,
    retries: int,
    install_hook: bool,
    uninstall_hook: bool,
) -> None:
    """Upload new and grown Claude Code transcripts (subagent files too) to the server.

    A ledger of what was sent, by path and size, is kept in agnes-push.json beside the
    projects folder (~/.claude/), so a push sends only what is new or grew since the last
    one. A second push started while one runs waits for it (lock: agnes-push.lock), then
    sends whatever is left. With --install-hook, Claude Code runs a push of the current
    session after every response, without holding it up.
    """
    from service import push

    if install_hook and uninstall_hook:
        _push_usage_error("--install-hook and --uninstall-hook exclude each other.")
    if (install_hook or uninstall_hook) and dry_run:
        _push_usage_error("--dry-run only goes with a push, not with a hook's (un)installation.")
    if uninstall_hook:
        _uninstall_hook(claude_dir)
    if server is None:
        _push_usage_error("Missing option '--server' (env var: 'AGNES_SERVER').")
    problem = push.server_url_problem(server)
    if problem is not None:
        _push_usage_error(problem)
    if token is None and not dry_run:
        _push_usage_error(
            "Missing option '--token' (env var: 'AGNES_TOKEN'); only --dry-run goes without."
        )
    if install_hook:
        _install_hook(claude_dir, server, token or "", retries)
    if projects is None:
        projects = claude_dir / "projects"
        if not projects.is_dir():
            _push_usage_error(
                f"Invalid value for '--projects': Directory '{projects}' does not exist."
            )
    progress = _PushProgress()
    try:
        report = push.push(
            server, token or "", projects, dry_run=dry_run, retries=retries, reporter=progress
        )
    finally:
        progress.stop()
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    else:
        total = _megabytes(sum(s.bytes for s in report.sent))
        if dry_run:
            for item in report.sent:
                click.echo(f"would send {item.name}  ({item.bytes} bytes)  {item.path}")
            click.echo(
                f"dry run: {len(report.sent)} files ({total}) would be sent, "
                f"{report.unchanged} unchanged"
            )
        elif report.sent or report.failed or report.error is None:
            gz = ", gzipped" if report.gzip and report.sent else ""
            click.echo(
                f"sent {len(report.sent)} files ({total}{gz}), {report.unchanged} "
                f"unchanged, {len(report.failed)} failed"
            )
    for failure in report.failed:
        status = f"{failure.status} " if failure.status else ""
        click.echo(f"failed: {failure.name}: {status}{failure.reason}", err=True)
    if report.error:
        click.echo(f"error: {report.error}", err=True)
    sys.exit(report.exit_code)


def _push_fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _install_hook(claude_dir: Path, server: str, token: str, retries: int) -> NoReturn:
    from service import hook, push

    code, answer = push.whoami(server, token, retries=retries, reporter=_PushProgress())
    if code != push.EXIT_OK:
        _push_fail(f"{answer}; the hook was not installed", code)
    try:
        installed = hook.install(claude_dir, server.rstrip("/"), token)
    except hook.SettingsError as exc:
        _push_fail(str(exc), push.EXIT_CONFIG)
    click.echo(
        f"installed the push hook for {' and '.join(hook.HOOK_EVENTS)} in {installed.settings}\n"
        f"  pushes to {server} as {answer}; server and token kept in {installed.config} "
        "(mode 0600)\n"
        f"  each push is logged to {installed.log}\n"
        "The hook sends only the session that ran it: run `agnes-activity push` once to send "
        "earlier sessions. `agnes-activity push --uninstall-hook` removes it."
    )
    sys.exit(push.EXIT_OK)


def _uninstall_hook(claude_dir: Path) -> NoReturn:
    from service import hook, push

    try:
        removed = hook.uninstall(claude_dir)
    except hook.SettingsError as exc:
        _push_fail(str(exc), push.EXIT_CONFIG)
    settings = claude_dir.absolute() / "settings.json"
    if removed:
        click.echo(f"removed the push hook ({removed} entries) from {settings}")
    else:
        click.echo(f"no push hook of ours in {settings}; nothing changed")
    sys.exit(push.EXIT_OK)


# -- admin commands ------------------------------------------------------------------------


class Admin:
    """Runs an admin action on the database directly, or through the running server.

    Only ``create`` (``users add``) makes a data dir and database that are not there yet;
    every other command says that there is none, and makes nothing."""

    def __init__(self, data_dir: Path, *, create: bool = False) -> None:
        self.settings = Settings(data_dir=data_dir)
        self.create = create
        self.endpoint = self._live_server()

    def _live_server(self) -> AdminEndpoint | None:
        endpoint = read_admin_file(self.settings.admin_file)
        if endpoint is None:
            return None
        import httpx

        try:
            httpx.get(f"{endpoint.url}/api/health", timeout=2).raise_for_status()
        except httpx.HTTPError:
            return None  # a stale file from a server that is gone
        return endpoint

    def run(self, kind: type[T], fn: Callable[..., T], method: str, path: str, **args: Any) -> T:
        """``fn(cursor, **args)`` on the database, or the same through the server's admin API
        (whose request fields are named like ``fn``'s parameters)."""
        if self.endpoint is None:
            return self._direct(fn, **args)
        if method == "GET":
            request = {"params": {k: v for k, v in args.items() if v is not None}}
        else:
            request = {"json": args}
        return self.remote(kind, method, path, **request)

    def open(self) -> Store:
        if not self.create:
            folder = self.settings.data_dir.resolve()
            if not folder.is_dir():
                fail(
                    f"no data dir {folder}: is --data-dir (AGNES_DATA_DIR) right?"
                    " `users add` or `serve` makes one"
                )
            if not self.settings.db_path.exists():
                fail(
                    f"no database in {folder} (no {self.settings.db_path.name}): is --data-dir"
                    " (AGNES_DATA_DIR) right? `users add` or `serve` makes one"
                )
        try:
            return open_store(self.settings)
        except SettingsError as exc:
            fail(f"{exc} (and no running server answered on its admin API)")
            raise

    def _direct(self, fn: Callable[..., T], **args: Any) -> T:
        store = self.open()
        try:
            return store.write_sync(fn, **args)
        except (NotFoundError, ConflictError, ValueError) as exc:
            fail(str(exc))
            raise
        finally:
            store.close()

    def remote(self, kind: type[T], method: str, path: str, **request: Any) -> T:
        assert self.endpoint is not None
        import httpx

        headers = {SECRET_HEADER: self.endpoint.secret}
        try:
            response = httpx.request(
                method,
                f"{self.endpoint.url}/api/admin{path}",
                headers=headers,
                timeout=30,
                **request,
            )
        except httpx.HTTPError as exc:
            fail(f"the server at {self.endpoint.url} did not answer: {exc}")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            fail(str(detail))
        return msgspec.json.decode(response.content, type=kind)


@main.group("users")
def users_group() -> None:
    """Add and list users."""


@users_group.command("add")
@click.argument("email")
@click.option(
    "--admin",
    "is_admin",
    envvar="AGNES_ADMIN",
    show_envvar=True,
    is_flag=True,
    help="Make the user an admin.",
)
@data_dir_option
def users_add(email: str, is_admin: bool, data_dir: Path) -> None:
    """Add a user; the new user's id is printed alone on the last line."""
    user = Admin(data_dir, create=True).run(
        User, admin.add_user, "POST", "/users", email=email, is_admin=is_admin
    )
    click.echo(f"added {user.email}{' (admin)' if user.is_admin else ''}")
    click.echo(user.id)


@users_group.command("list")
@click.option(
    "--json",
    "as_json",
    envvar="AGNES_JSON",
    show_envvar=True,
    is_flag=True,
    help="Print JSON instead of a table.",
)
@data_dir_option
def users_list(as_json: bool, data_dir: Path) -> None:
    """List users."""
    found = Admin(data_dir).run(list[User], admin.list_users, "GET", "/users")
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    rows = [("ID", "EMAIL", "ADMIN", "ACTIVE", "LAST PULL")]
    rows += [
        (
            user.id,
            user.email,
            "yes" if user.is_admin else "no",
            "yes" if user.is_active else "no",
            (user.last_pull_at or "never")[:19].replace("T", " "),
        )
        for user in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())
    if not found:
        click.echo("(no users yet: agnes-activity users add EMAIL)", err=True)


def _set_active(email: str, data_dir: Path, active: bool) -> None:
    user = Admin(data_dir).run(
        User, admin.set_active, "POST", "/users/active", email=email, active=active
    )
    click.echo(f"{'activated' if active else 'deactivated'} {user.email}")


@users_group.command("deactivate")
@click.argument("email")
@data_dir_option
def users_deactivate(email: str, data_dir: Path) -> None:
    """Stop a user's tokens and sessions from working, live sockets too (data stays)."""
    _set_active(email, data_dir, active=False)


@users_group.command("activate")
@click.argument("email")
@data_dir_option
def users_activate(email: str, data_dir: Path) -> None:
    """Let a deactivated user sign in again."""
    _set_active(email, data_dir, active=True)


def _ingest_summary(report: BatchReport, seconds: float) -> None:
    mb = report.bytes / 1e6
    rate = mb / seconds if seconds > 0 else 0.0
    for path, reason in report.errors:
        click.echo(f"problem: {path}: {reason}", err=True)
    click.echo(
        f"{report.files} files, {report.lines} lines, {report.bad_lines} bad lines, "
        f"{mb:.1f} MB in {seconds:.2f} s ({rate:.0f} MB/s)"
        + (f", {len(report.errors)} files with problems" if report.errors else "")
    )


def _run_with_progress(total_bytes: int, work: Callable[[Callable[[int], None]], T]) -> T:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("ingesting", total=total_bytes)
        return work(lambda done: bar.advance(task, done))


@main.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--user",
    "email",
    envvar="AGNES_USER",
    show_envvar=True,
    help="Whose transcripts these are (needed when there is more than one user).",
)
@data_dir_option
def ingest_command(paths: tuple[Path, ...], email: str | None, data_dir: Path) -> None:
    """Backfill transcripts from folders such as ~/.claude/projects (subagent files too).

    Files are copied into the archive (DATA_DIR/user_sessions/<user id>/) under the names
    `agnes push` would upload them as, then ingested; running it again reads only what grew.
    """
    operator = Admin(data_dir)
    known = operator.run(list[User], admin.list_users, "GET", "/users")
    if email is None:
        if len(known) != 1:
            fail(f"say whose transcripts these are with --user EMAIL ({len(known)} users exist)")
        user = known[0]
    else:
        matches = [u for u in known if u.email == email.strip().lower()]
        if not matches:
            fail(f"no user {email}")
        user = matches[0]
    sources = find_transcripts(list(paths))
    if not sources:
        fail("no *.jsonl transcripts under " + ", ".join(str(p) for p in paths))
    started = time.perf_counter()
    report = _ingest(operator, sources, operator.settings.sessions_dir / user.id)
    _ingest_summary(report, time.perf_counter() - started)
    sys.exit(1 if report.errors else 0)


@main.command("reprocess")
@data_dir_option
def reprocess_command(data_dir: Path) -> None:
    """Rebuild every number from the archived transcripts (after a fix in the rules)."""
    operator = Admin(data_dir)
    started = time.perf_counter()
    report = _ingest(operator)
    _ingest_summary(report, time.perf_counter() - started)
    sys.exit(1 if report.errors else 0)


def _ingest(
    operator: Admin, sources: list[tuple[Path, str]] | None = None, folder: Path | None = None
) -> BatchReport:
    """Copy ``(source, flat name)`` pairs into the archive ``folder`` and ingest them, or
    (None) forget everything derived and read every archived file again: through the
    running server, else on the database directly."""
    if operator.endpoint is not None:
        if sources is None or folder is None:
            return operator.remote(BatchReport, "POST", "/reprocess")
        paths = [str(p.resolve()) for p in archive_all(sources, folder)]
        return operator.remote(BatchReport, "POST", "/ingest", json={"paths": paths})
    store = operator.open()
    try:
        if sources is None or folder is None:
            store.write_sync(reset_derived)
            targets = [path for path, _, _ in archived_files(operator.settings)]
            originals = None
        else:
            targets = [folder / name for _, name in sources]
            originals = [source for source, _ in sources]
        return _run_with_progress(
            sum(p.stat().st_size for p in originals or targets),
            lambda step: ingest_files(
                Ingest(operator.settings, store), targets, sources=originals, progress=step
            ),
        )
    finally:
        store.close()


@main.group("tokens")
def tokens_group() -> None:
    """Create, list and revoke personal access tokens."""


@tokens_group.command("create")
@click.argument("email")
@click.option(
    "--name",
    envvar="AGNES_TOKEN_NAME",
    show_envvar=True,
    default="default",
    show_default=True,
    help="A label to tell tokens apart.",
)
@click.option(
    "--expires-days",
    envvar="AGNES_EXPIRES_DAYS",
    show_envvar=True,
    type=click.IntRange(1, admin.MAX_EXPIRES_DAYS),
    default=None,
    help="Days until the token stops working (default: never).",
)
@click.option(
    "--service",
    "is_service",
    envvar="AGNES_SERVICE_TOKEN",
    show_envvar=True,
    is_flag=True,
    help="A service token: may post audit events for any user.",
)
@data_dir_option
def tokens_create(
    email: str, name: str, expires_days: int | None, is_service: bool, data_dir: Path
) -> None:
    """Create a token; it is printed once, alone on the last line, and never shown again."""
    created = Admin(data_dir).run(
        NewToken,
        admin.create_token,
        "POST",
        "/tokens",
        email=email,
        name=name,
        expires_days=expires_days,
        is_service=is_service,
    )
    expiry = f", expires {created.info.expires_at}" if created.info.expires_at else ""
    click.echo(f"token {created.info.prefix}… for {created.info.user_email}{expiry}")
    click.echo(created.token)


def _show_token(info: TokenInfo) -> str:
    state = (
        "revoked"
        if info.revoked_at
        else f"expires {info.expires_at}"
        if info.expires_at
        else "active"
    )
    kind = " service" if info.is_service else ""
    return (
        f"{info.prefix}…  {info.user_email}  {info.name}{kind}  created {info.created_at}  {state}"
    )


@tokens_group.command("list")
@click.argument("email", required=False)
@data_dir_option
def tokens_list(email: str | None, data_dir: Path) -> None:
    """List tokens (prefixes only), of one user or of all."""
    found = Admin(data_dir).run(list[TokenInfo], admin.list_tokens, "GET", "/tokens", email=email)
    for info in found:
        click.echo(_show_token(info))


@tokens_group.command("revoke")
@click.argument("token_or_prefix")
@data_dir_option
def tokens_revoke(token_or_prefix: str, data_dir: Path) -> None:
    """Revoke a token, given whole or by the prefix that `tokens list` shows."""
    info = Admin(data_dir).run(
        TokenInfo, admin.revoke_token, "POST", "/tokens/revoke", token_or_prefix=token_or_prefix
    )
    click.echo(f"revoked {info.prefix}… of {info.user_email}")


if __name__ == "__main__":
    main()
