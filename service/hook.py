"""The Claude Code hook that pushes after every response: ``push --install-hook``.

Claude Code runs the command of every hook registered for an event in its ``settings.json``
and hands it a JSON object on standard input (``session_id``, ``transcript_path``, ``cwd``,
``hook_event_name``). Installed for ``Stop`` (the end of each response) and ``SessionEnd``,
this hook sends that one session's files, so the dashboard moves while the analyst works.
What it promises:

- Claude Code is never held up. The command reads its input and its config, starts the push
  in a detached process (double fork, a session of its own, its standard streams on the
  log) and returns at once. It prints nothing on standard output (a ``Stop`` hook's output
  is read as a decision) and exits 0, or 1 with one line on standard error when it cannot
  push or the previous push failed (said once per spell of failures); never 2, which would
  make Claude Code carry on instead of stopping.
- It needs nothing from the environment. The command names this Python by absolute path,
  run with ``-E -P`` so that neither ``PYTHONPATH`` nor a ``service`` package in the
  project's folder can stand in for ours. Before it returns it loads nothing but the
  standard library (msgspec's import alone would double its CPU time). The server and
  token come from ``agnes-push-hook.json`` in the Claude config folder (mode 0600), never
  from ``settings.json``.
- Pushes go through :func:`service.push.push` and so share the ledger and the lock with a
  manual push: a second push waits for the first, and nothing is sent twice.
- Every push appends one line to ``agnes-push.log`` beside the ledger; past
  :data:`LOG_LIMIT_BYTES` the log is moved to ``agnes-push.log.1``, so the two never hold
  much more than twice that.
- Installing keeps every other setting and hook, is idempotent (an earlier hook of ours,
  from any install, is replaced) and writes ``settings.json`` atomically, keeping its mode
  and following a symlink to it. Uninstalling removes only our hooks, recognised by
  :data:`MARKER` at the end of their command, and the config file. A ``settings.json`` that
  is not a JSON object, or whose ``Stop``/``SessionEnd`` hooks are not shaped as Claude Code
  writes them, is left untouched: :class:`SettingsError`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

__all__ = [
    "CONFIG_NAME",
    "HOOK_EVENTS",
    "LOG_NAME",
    "MARKER",
    "HookConfig",
    "HookInput",
    "Installed",
    "SettingsError",
    "hook_command",
    "install",
    "main",
    "run",
    "uninstall",
]

HOOK_EVENTS = ("Stop", "SessionEnd")
MARKER = "# agnes-activity push hook"
"""Ends the command of every hook we install: how uninstall and reinstall find ours."""
CONFIG_NAME = "agnes-push-hook.json"
STATUS_NAME = "agnes-push-hook.failed.json"
LOG_NAME = "agnes-push.log"
LOG_LIMIT_BYTES = 1_000_000
FOLLOW_UP_SECONDS = 1.0
"""A session's files are looked at once more this long after a push: Claude Code may call
the hook before the end of the response is written to the transcript."""
EXIT_WARNED = 1  # Claude Code shows a hook's standard error when it exits neither 0 nor 2


class SettingsError(Exception):
    """``settings.json`` cannot be edited safely; it was left as it was."""


# Plain tuples and the json module, not msgspec Structs: see "loads nothing but" above.


class HookConfig(NamedTuple):
    """``agnes-push-hook.json``: where the hook pushes, with whose token."""

    server: str
    token: str


class HookInput(NamedTuple):
    """What Claude Code passes a hook on standard input: the fields we read."""

    transcript_path: str | None = None
    hook_event_name: str | None = None


class Installed(NamedTuple):
    settings: str
    config: str
    log: str
    command: str


class _Failed(NamedTuple):
    """``agnes-push-hook.failed.json``: the last push failed, and whether we said so."""

    reason: str
    warned: bool = False


def _object(raw: bytes, what: str, fields: dict[str, bool]) -> dict[str, Any]:
    """``raw`` decoded as a JSON object whose listed fields are strings (or absent, when
    not required); ValueError otherwise."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{what} is not a JSON object")
    for field, required in fields.items():
        value = data.get(field)
        if not isinstance(value, str) and (required or value is not None):
            raise ValueError(f"{what}: {field!r} is not a string")
    return data


def _read_config(path: Path) -> HookConfig:
    data = _object(path.read_bytes(), str(path), {"server": True, "token": True})
    return HookConfig(data["server"], data["token"])


def _read_failed(path: Path) -> _Failed | None:
    try:
        data = _object(path.read_bytes(), str(path), {"reason": True})
    except (OSError, ValueError):
        return None
    return _Failed(data["reason"], data.get("warned") is True)


def _write_failed(path: Path, failed: _Failed) -> None:
    _write_atomically(path, json.dumps(failed._asdict()).encode(), 0o600)


# -- settings.json -----------------------------------------------------------------------


def hook_command(claude_dir: Path, python: str | None = None) -> str:
    """The shell command Claude Code runs: this Python, by absolute path."""
    import shlex

    python = os.path.abspath(python or sys.executable)  # not resolved: a venv's python is a link
    folder = shlex.quote(str(claude_dir.absolute()))
    return f"{shlex.quote(python)} -E -P -m service.hook --claude-dir {folder} {MARKER}"


def _is_ours(hook: Any) -> bool:
    command = hook.get("command") if isinstance(hook, dict) else None
    return isinstance(command, str) and command.rstrip().endswith(MARKER)


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None
    if not raw.strip():
        return {}
    try:
        settings = json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"{path} is not valid JSON ({exc}); it was left untouched") from None
    if not isinstance(settings, dict):
        raise SettingsError(f"{path} is not a JSON object; it was left untouched")
    hooks = settings.get("hooks", {})
    if not isinstance(hooks, dict):
        raise SettingsError(f'{path}: "hooks" is not a JSON object; it was left untouched')
    for event in HOOK_EVENTS:
        groups = hooks.get(event, [])
        if not isinstance(groups, list) or not all(
            isinstance(group, dict) and isinstance(group.get("hooks", []), list) for group in groups
        ):
            raise SettingsError(
                f'{path}: "hooks"."{event}" is not a list of {{"matcher": …, "hooks": […]}} '
                "groups; it was left untouched"
            )
    return settings


def _without_ours(settings: dict[str, Any]) -> int:
    """Removes our hooks from ``settings`` (and the groups, lists and object that held only
    them); how many were removed."""
    hooks = settings.get("hooks")
    if not isinstance(hooks, dict):
        return 0
    removed = 0
    for event in HOOK_EVENTS:
        groups = hooks.get(event)
        if not groups:
            continue
        kept_groups = []
        for group in groups:
            entries = group.get("hooks", [])
            kept = [hook for hook in entries if not _is_ours(hook)]
            removed += len(entries) - len(kept)
            if len(kept) == len(entries):
                kept_groups.append(group)
            elif kept:
                kept_groups.append({**group, "hooks": kept})
        if kept_groups:
            hooks[event] = kept_groups
        else:
            del hooks[event]
    if removed and not hooks:
        del settings["hooks"]
    return removed


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    import tempfile

    target = path.resolve()  # a settings.json linked from a dotfiles repository stays a link
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _write_settings(path: Path, settings: dict[str, Any]) -> None:
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    text = json.dumps(settings, indent=2, ensure_ascii=False) + "\n"
    _write_atomically(path, text.encode(), mode)


def install(claude_dir: Path, server: str, token: str, python: str | None = None) -> Installed:
    """Adds our hook for :data:`HOOK_EVENTS` (replacing any earlier one of ours) and
    records ``server`` and ``token`` in the config file; raises :class:`SettingsError`,
    with nothing written, when ``settings.json`` cannot be edited safely."""
    claude_dir = claude_dir.absolute()
    path = claude_dir / "settings.json"
    settings = _read_settings(path)
    _without_ours(settings)
    command = hook_command(claude_dir, python)
    hooks = settings.setdefault("hooks", {})
    for event in HOOK_EVENTS:
        hooks.setdefault(event, []).append(
            {"matcher": "", "hooks": [{"type": "command", "command": command}]}
        )
    claude_dir.mkdir(parents=True, exist_ok=True)
    config = claude_dir / CONFIG_NAME
    # The config first: a hook in settings.json must never find it missing.
    _write_atomically(config, json.dumps(HookConfig(server, token)._asdict()).encode(), 0o600)
    _write_settings(path, settings)
    (claude_dir / STATUS_NAME).unlink(missing_ok=True)
    return Installed(str(path), str(config), str(claude_dir / LOG_NAME), command)


def uninstall(claude_dir: Path) -> int:
    """Removes our hooks and the config file; how many hooks were removed. Raises
    :class:`SettingsError`, with nothing changed, when ``settings.json`` cannot be edited
    safely."""
    claude_dir = claude_dir.absolute()
    path = claude_dir / "settings.json"
    settings = _read_settings(path)
    removed = _without_ours(settings)
    if removed:
        _write_settings(path, settings)
    (claude_dir / CONFIG_NAME).unlink(missing_ok=True)
    (claude_dir / STATUS_NAME).unlink(missing_ok=True)
    return removed


# -- the hook ----------------------------------------------------------------------------


def _warn(message: str) -> None:
    print(f"agnes-activity push: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _take_warning(claude_dir: Path) -> str | None:
    """The previous push's failure, if it was not reported yet (and now it is)."""
    path = claude_dir / STATUS_NAME
    failed = _read_failed(path)
    if failed is None or failed.warned:
        return None
    _write_failed(path, failed._replace(warned=True))
    return failed.reason


def _rotate(log: Path) -> None:
    try:
        if log.stat().st_size > LOG_LIMIT_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))
    except FileNotFoundError:
        pass


def _detach(work: Callable[[], int], log: Path) -> None:
    """Runs ``work`` in a grandchild in a session of its own, its standard streams moved
    off Claude Code's pipes first, and returns as soon as the child has forked it."""
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    code = 70  # EX_SOFTWARE, should anything below raise
    try:
        quiet = os.open(os.devnull, os.O_RDONLY)
        logged = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(quiet, 0)
        os.dup2(logged, 1)
        os.dup2(logged, 2)
        os.close(quiet)
        os.close(logged)
        os.setsid()
        os.chdir("/")
        if os.fork():
            os._exit(0)
        code = work()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _kilobytes(n: int) -> str:
    return f"{n / 1000:.1f} KB"


def _push(
    claude_dir: Path, config: HookConfig, given: HookInput, session: Path | None, begun: float
) -> int:
    """The detached part: push, log one line, remember a failure for the next hook."""
    from datetime import UTC, datetime

    # httpx loads its own command line (click, rich, pygments) whenever click is installed:
    # CPU that this process, which exits after one push, has no use for (bench/README,
    # hook_latency.py). A None in sys.modules makes that import fail, and httpx goes on
    # without it.
    sys.modules.setdefault("click", None)  # type: ignore[arg-type]
    from service import push  # httpx: loaded after Claude Code has its answer

    loaded = time.monotonic()
    projects = claude_dir / "projects"
    report = push.push(config.server, config.token, projects, session=session)
    pushed = time.monotonic()
    if report.exit_code == push.EXIT_OK and session is not None:
        time.sleep(FOLLOW_UP_SECONDS)
        later = push.push(config.server, config.token, projects, session=session)
        report.sent += later.sent
        report.failed += later.failed
        report.exit_code, report.error = later.exit_code, later.error
    what = session.name if session is not None else "all sessions"
    line = (
        f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} {given.hook_event_name or 'push'} {what}: "
        f"sent {len(report.sent)} files ({_kilobytes(sum(s.bytes for s in report.sent))}) "
        f"in {pushed - loaded:.3f} s, {pushed - begun:.3f} s after the hook began; "
        f"{report.unchanged} unchanged, {len(report.failed)} failed"
    )
    reasons = [f"{f.name}: {f.status or ''} {f.reason}".replace("  ", " ") for f in report.failed]
    if report.error:
        reasons.append(report.error)
    print(line + "".join(f"; {reason}" for reason in reasons), flush=True)
    status = claude_dir / STATUS_NAME
    if report.exit_code == push.EXIT_OK:
        status.unlink(missing_ok=True)
    else:
        before = _read_failed(status)
        reason = reasons[0] if reasons else f"exit code {report.exit_code}"
        _write_failed(status, _Failed(reason, before.warned if before is not None else False))
    return report.exit_code


def run(claude_dir: Path, stdin: IO[bytes]) -> int:
    """The hook itself: starts the push and returns Claude Code's exit code for it."""
    begun = time.monotonic()
    claude_dir = claude_dir.absolute()
    try:
        raw = b"" if stdin.isatty() else stdin.read()
        fields = {"transcript_path": False, "hook_event_name": False}
        data = _object(raw, "standard input", fields) if raw.strip() else {}
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        _warn(f"standard input is not a Claude Code hook's JSON ({exc}); nothing pushed")
        return EXIT_WARNED
    given = HookInput(data.get("transcript_path"), data.get("hook_event_name"))
    config_path = claude_dir / CONFIG_NAME
    try:
        config = _read_config(config_path)
    except FileNotFoundError:
        _warn(f"{config_path} is missing; run `agnes-activity push --install-hook` again")
        return EXIT_WARNED
    except (OSError, ValueError) as exc:
        _warn(f"cannot read {config_path} ({exc}); run `agnes-activity push --install-hook`")
        return EXIT_WARNED
    log = claude_dir / LOG_NAME
    _rotate(log)
    code = 0
    reason = _take_warning(claude_dir)
    if reason is not None:
        _warn(f"the last push failed: {reason} (more in {log})")
        code = EXIT_WARNED
    # Made absolute here: the detached push runs in /, not in Claude Code's folder.
    session = Path(given.transcript_path).absolute() if given.transcript_path else None
    _detach(lambda: _push(claude_dir, config, given, session, begun), log)
    return code


def main(argv: list[str] | None = None) -> None:
    """``python -m service.hook --claude-dir DIR``, as ``settings.json`` names it."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--claude-dir":
        _warn("usage: python -m service.hook --claude-dir DIR (see push --install-hook)")
        sys.exit(EXIT_WARNED)
    try:
        code = run(Path(args[1]), sys.stdin.buffer)
    except Exception as exc:  # one line on Claude Code's screen, never a traceback
        _warn(f"the hook failed: {type(exc).__name__}: {exc}")
        code = EXIT_WARNED
    sys.exit(code)


if __name__ == "__main__":
    main()
