"""The options several commands share, each with its environment variable; how a command
fails (a message on standard error, then the exit code); the progress bar of bytes sent or
read."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = [
    "bytes_bar",
    "data_dir_option",
    "fail",
    "host_option",
    "http_options",
    "ingest_options",
    "json_option",
    "port_option",
    "store_options",
]

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


def json_option(help: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``--json`` (``AGNES_JSON``): print JSON, as ``help`` says, instead of text."""
    return click.option(
        "--json", "as_json", envvar="AGNES_JSON", show_envvar=True, is_flag=True, help=help
    )


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def bytes_bar(console: Console) -> Progress:
    """A transient bar of bytes done, with speed and time, on ``console`` (rich is imported
    here, by the commands that show one)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
