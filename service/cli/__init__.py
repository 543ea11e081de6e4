"""``agnes-activity``: run the service and administer it.

Every option also reads an environment variable (shown in ``--help``). The admin commands
work whether or not a server holds the data dir: when one does, they go through its admin
API on loopback, authenticated by the secret it keeps in ``DATA_DIR/.admin.json``.

One module per kind of command: :mod:`~service.cli.serve` (``serve``, ``demo``),
:mod:`~service.cli.push` (``push`` and its hook), :mod:`~service.cli.admin` (``users``,
``tokens``, ``ingest``, ``reprocess``); :mod:`~service.cli.options` holds what they share.
"""

from __future__ import annotations

from typing import Any

import click

from service import __version__
from service.admin import AdminError
from service.cli.admin import ingest_command, reprocess_command, tokens_group, users_group
from service.cli.options import fail
from service.cli.push import push_command
from service.cli.serve import demo_command, serve_command

__all__ = ["main"]

# The web framework, the HTTP client and rich are imported by the commands that use them:
# an admin command or `ingest` should not pay for loading the server (about 0.3 s).


class _Commands(click.Group):
    """An admin action that cannot run ends the command with its message (exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdminError as exc:
            fail(str(exc))


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agnes-activity")
def main() -> None:
    """agnes-activity: live personal activity dashboards for Claude Code analysts."""


main.add_command(serve_command)
main.add_command(demo_command)
main.add_command(push_command)
main.add_command(users_group)
main.add_command(tokens_group)
main.add_command(ingest_command)
main.add_command(reprocess_command)
