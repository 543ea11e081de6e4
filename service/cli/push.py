"""``push``: upload Claude Code transcripts to a server, and install or remove the Claude
Code hook that pushes each session as it goes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import msgspec

from service.cli.options import bytes_bar, json_option

__all__ = ["push_command"]

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# The push client and rich are imported when a push runs: `--help` should not load them.


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
        self.bar = bytes_bar(self.console)
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


class _PushUsageError(click.UsageError):
    exit_code = os.EX_USAGE  # push.EXIT_USAGE, which is not loaded for a mistake


def _push_usage_error(message: str) -> NoReturn:
    raise _PushUsageError(message, click.get_current_context())


@click.command("push", cls=_PushCommand)
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
@json_option("Print a JSON summary on standard output.")
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
