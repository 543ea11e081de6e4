"""Where transcripts lie in a Claude Code projects tree, the flat names they travel under,
and what a transcript's name says: its session, its parent session, its project's key.

Kept apart from :mod:`service.ingest.backfill` so that ``push`` (and the hook that runs it
after every response) can name files without loading the database engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

__all__ = [
    "find_transcripts",
    "flat_name",
    "project_key",
    "session_files",
    "session_of_file",
    "subagent_parent",
]

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
_SUBAGENT_FLAT = re.compile(r"^(?P<session>.+)\.(?P<agent>agent-[^./]+)\.jsonl$")


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


def subagent_parent(name: str) -> str | None:
    """The parent session of a subagent transcript, from its path or flat upload name.

    ``<session>/subagents/agent-<id>.jsonl`` (as on disk) and ``<session>.agent-<id>.jsonl``
    (as uploaded) both name ``<session>``; anything else is not a subagent file. The
    lines' ``sessionId`` is what ties a subagent file to its parent; this is the
    fallback for files whose lines carry none, and how a caller groups files.
    """
    path = PurePosixPath(name.replace("\\", "/"))
    if path.suffix != ".jsonl":
        return None
    parts = path.parts
    if len(parts) >= 3 and parts[-2] == "subagents" and path.stem.startswith("agent-"):
        return parts[-3]
    match = _SUBAGENT_FLAT.fullmatch(path.name)
    return match["session"] if match else None


def session_of_file(name: str) -> str:
    """The session a file belongs to when its lines do not say: its parent for a
    subagent file, else the file's stem."""
    parent = subagent_parent(name)
    if parent is not None:
        return parent
    stem = PurePosixPath(name.replace("\\", "/")).name
    return stem[: -len(".jsonl")] if stem.endswith(".jsonl") else stem


def project_key(path: str) -> str:
    """A project's key: its path with every character other than ``A-Z a-z 0-9`` replaced
    by ``-``, which is how Claude Code names the project's folder."""
    return _NOT_ALNUM.sub("-", path)
