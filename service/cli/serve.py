"""``serve`` and ``demo``: run the service (the demo on a fresh data dir of its own)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from service import __version__
from service.admin import open_store
from service.cli.options import (
    data_dir_option,
    fail,
    host_option,
    http_options,
    ingest_options,
    port_option,
    store_options,
)
from service.settings import Settings, SettingsError

__all__ = ["demo_command", "serve_command"]

# The server and the demo are imported by the commands that run them.


@click.command("serve")
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


@click.command("demo")
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
