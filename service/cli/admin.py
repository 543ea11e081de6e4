"""The operator's commands: ``users``, ``tokens``, ``ingest`` and ``reprocess``.

Each works whether or not a server holds the data dir (:class:`~service.admin.AdminClient`
goes through its admin API, or opens the database itself) and runs the same
:mod:`service.operations`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import msgspec

from service import operations
from service.admin import AdminClient
from service.cli.options import bytes_bar, data_dir_option, fail, json_option
from service.ingest.backfill import find_transcripts
from service.ingest.pipeline import BatchReport
from service.models import NewToken, TokenInfo, User

__all__ = ["ingest_command", "reprocess_command", "tokens_group", "users_group"]


@click.group("users")
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
    user = AdminClient(data_dir, create=True).run(
        User, operations.add_user, "POST", "/users", email=email, is_admin=is_admin
    )
    click.echo(f"added {user.email}{' (admin)' if user.is_admin else ''}")
    click.echo(user.id)


@users_group.command("list")
@json_option("Print JSON instead of a table.")
@data_dir_option
def users_list(as_json: bool, data_dir: Path) -> None:
    """List users."""
    found = AdminClient(data_dir).run(list[User], operations.list_users, "GET", "/users")
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
    user = AdminClient(data_dir).run(
        User, operations.set_active, "POST", "/users/active", email=email, active=active
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


@contextmanager
def _progress_bar(total_bytes: int) -> Iterator[Callable[[int], None]]:
    """A bar of the bytes read, on standard error (transient: gone once done)."""
    from rich.console import Console

    with bytes_bar(Console(stderr=True)) as bar:
        task = bar.add_task("ingesting", total=total_bytes)
        yield lambda done: bar.advance(task, done)


@click.command("ingest")
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
    operator = AdminClient(data_dir)
    known = operator.run(list[User], operations.list_users, "GET", "/users")
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
    report = operator.ingest(sources, operator.settings.sessions_dir / user.id, bar=_progress_bar)
    _ingest_summary(report, time.perf_counter() - started)
    sys.exit(1 if report.errors else 0)


@click.command("reprocess")
@data_dir_option
def reprocess_command(data_dir: Path) -> None:
    """Rebuild every number from the archived transcripts (after a fix in the rules)."""
    operator = AdminClient(data_dir)
    started = time.perf_counter()
    report = operator.reprocess(bar=_progress_bar)
    _ingest_summary(report, time.perf_counter() - started)
    sys.exit(1 if report.errors else 0)


@click.group("tokens")
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
    type=click.IntRange(1, operations.MAX_EXPIRES_DAYS),
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
    created = AdminClient(data_dir).run(
        NewToken,
        operations.create_token,
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
    found = AdminClient(data_dir).run(
        list[TokenInfo], operations.list_tokens, "GET", "/tokens", email=email
    )
    for info in found:
        click.echo(_show_token(info))


@tokens_group.command("revoke")
@click.argument("token_or_prefix")
@data_dir_option
def tokens_revoke(token_or_prefix: str, data_dir: Path) -> None:
    """Revoke a token, given whole or by the prefix that `tokens list` shows."""
    info = AdminClient(data_dir).run(
        TokenInfo,
        operations.revoke_token,
        "POST",
        "/tokens/revoke",
        token_or_prefix=token_or_prefix,
    )
    click.echo(f"revoked {info.prefix}… of {info.user_email}")
