"""Where transcripts lie in a Claude Code projects tree, and the flat names they travel under.

Kept apart from :mod:`service.ingest.backfill` so that ``push`` (and the hook that runs it
after every response) can name files without loading the database engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["find_transcripts", "flat_name", "session_files"]


def flat_name(path: Path, root: Path) -> str:
    """``<cwd>/<s>.jsonl`` → ``<s>.jsonl``; ``<cwd>/<s>/subagents/agent-<id>.jsonl`` →
    ``<s>.agent-<id>.jsonl`` (the name ``agnes push`` uploads it under)."""
    parts = path.relative_to(root).parts
    if len(parts) >= 3 and parts[-2] == "subagents":
        return f"{parts[-3]}.{path.stem}.jsonl"
    return path.name


def find_transcripts(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """Every ``*.jsonl`` under the given files and folders, with its flat name."""
    found: dict[str, Path] = {}
    for given in paths:
        if given.is_file():
            found.setdefault(given.name, given)
            continue
        for path in sorted(given.rglob("*.jsonl")):
            if path.is_file() and not path.is_symlink():
                found.setdefault(flat_name(path, given), path)
    return sorted(((p, name) for name, p in found.items()), key=lambda item: item[1])


def session_files(transcript: Path) -> list[tuple[Path, str]]:
    """One session's files with their flat names: ``<cwd>/<s>.jsonl`` itself (when it is
    there) and its subagents' ``<cwd>/<s>/subagents/agent-*.jsonl``, as
    :func:`find_transcripts` names them in a walk of the whole tree."""
    folder = transcript.parent
    files = [(transcript, transcript.name)] if transcript.is_file() else []
    subagents = folder / transcript.stem / "subagents"
    for path in sorted(subagents.glob("agent-*.jsonl")):
        if path.is_file() and not path.is_symlink():
            files.append((path, flat_name(path, folder)))
    return files
