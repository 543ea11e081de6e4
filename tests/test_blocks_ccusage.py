"""Our blocks against ccusage's ``blocks --json`` on the same tree, where its dedup agrees
with ours.

ccusage (installed from npm into ``bench/node_modules`` on first use, as
``bench/ccusage_crosscheck.py`` does) counts three kinds of line differently from
TRANSCRIPTS.md, measured there one case each: a ``/btw`` sidechain replay of a parent
response is matched only when the timestamps agree, every line of a response without a
``requestId`` counts, and a timestamp without a zone is dropped. The generated corpus
(resumed sessions, subagents, ``/btw`` side questions, ``<synthetic>`` notices) is written
without those lines; everything else stays, and both tools read the same files. One
session is still going on, so one block is active and has a burn rate.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.ccusage_crosscheck import ccusage_binary
from service import operations
from service.ingest.backfill import archive_all, find_transcripts
from service.ingest.blocks import Block
from service.ingest.pipeline import Ingest
from service.settings import Settings
from service.store import Store, blocks
from service.synthetic import corpus
from service.synthetic.lines import assistant, jsonl


def without_known_differences(projects: Path) -> dict[str, int]:
    """Rewrite every transcript under ``projects`` without the lines ccusage reads
    differently; returns how many of each were taken out."""
    files = sorted(projects.rglob("*.jsonl"))
    parsed: dict[Path, list[tuple[bytes, Any]]] = {}
    main_responses = set()
    for path in files:
        lines = []
        for raw in path.read_bytes().split(b"\n"):
            try:
                line = json.loads(raw)
            except ValueError:
                line = None  # blank, torn, invalid: both tools skip it
            lines.append((raw, line))
            if isinstance(line, dict) and line.get("type") == "assistant":
                message = line.get("message") or {}
                if not line.get("isSidechain") and message.get("id"):
                    main_responses.add(message["id"])
        parsed[path] = lines
    dropped = {"/btw replay": 0, "no requestId": 0, "no zone": 0}
    for path, lines in parsed.items():
        kept = []
        for raw, line in lines:
            if isinstance(line, dict) and line.get("type") == "assistant":
                message = line.get("message") or {}
                stamp = str(line.get("timestamp", ""))
                if line.get("isSidechain") and message.get("id") in main_responses:
                    dropped["/btw replay"] += 1
                    continue
                if "requestId" not in line:
                    dropped["no requestId"] += 1
                    continue
                if stamp and not (stamp.endswith("Z") or "+" in stamp[10:] or "-" in stamp[10:]):
                    dropped["no zone"] += 1
                    continue
            kept.append(raw)
        path.write_bytes(b"\n".join(kept))
    return dropped


def ongoing_session(projects: Path, now: datetime) -> None:
    usage = {
        "input_tokens": 900,
        "output_tokens": 2100,
        "cache_read_input_tokens": 40_000,
        "cache_creation_input_tokens": 5000,
    }
    lines = [
        assistant(
            uuid=f"now-{n}",
            ts=(now - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
            message_id=f"msg_now_{n}",
            request_id=f"req_now_{n}",
            model="claude-sonnet-4-5-20250929",
            usage=usage,
            session="9a1f0c3e-0000-4000-8000-00000000a0a0",
        )
        for n, minutes in enumerate([47, 31, 12, 3])
    ]
    folder = projects / "-home-analyst-now"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "9a1f0c3e-0000-4000-8000-00000000a0a0.jsonl").write_bytes(jsonl(*lines))


def ccusage_blocks(root: Path) -> list[dict[str, Any]]:
    """ccusage's blocks of the tree, gaps left out; in a zone half an hour off UTC, where
    a block starting at a local hour would show."""
    env = dict(os.environ, CLAUDE_CONFIG_DIR=str(root), TZ="Asia/Kolkata")
    done = subprocess.run(
        [str(ccusage_binary()), "claude", "blocks", "--json", "--offline"],
        capture_output=True,
        env=env,
        check=True,
        timeout=300,
    )
    return [b for b in json.loads(done.stdout)["blocks"] if not b["isGap"]]


def iso_z(moment: datetime) -> str:
    """ccusage's way of writing an instant: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ours_as_theirs(block: Block) -> dict[str, Any]:
    return {
        "startTime": iso_z(block.start),
        "endTime": iso_z(block.end),
        "actualEndTime": iso_z(block.last_at),
        "entries": block.entries,
        "tokenCounts": {
            "inputTokens": block.input_tokens,
            "outputTokens": block.output_tokens,
            "cacheCreationInputTokens": block.cache_creation_tokens,
            "cacheReadInputTokens": block.cache_read_tokens,
        },
        "totalTokens": block.total,
    }


def test_blocks_equal_ccusages_where_its_dedup_agrees_with_ours(
    tmp_path: Path, settings: Settings, store: Store
) -> None:
    root = tmp_path / "claude"
    expected = corpus.generate(root, size_bytes=1_500_000, seed=11, big_lines=False)
    assert expected.quirks["resumed session copies"] and expected.quirks["btw replays"]
    projects = root / "projects"
    dropped = without_known_differences(projects)
    assert dropped["/btw replay"] > 0
    assert any("/subagents/" in str(p) for p in projects.rglob("*.jsonl"))
    now = datetime.now(UTC).replace(microsecond=0)
    ongoing_session(projects, now)

    theirs = ccusage_blocks(root)
    user = store.write_sync(operations.add_user, "cc@example.com", False)
    target = settings.sessions_dir / user.id
    report = Ingest(settings, store).run(archive_all(find_transcripts([projects]), target))
    assert report.errors == []
    ours = store.read_sync(blocks.stored_blocks, user.id)

    assert len(ours) > 12
    keys = list(ours_as_theirs(ours[0]))
    assert [ours_as_theirs(b) for b in ours] == [{k: b[k] for k in keys} for b in theirs]
    for mine, their in zip(ours, theirs, strict=True):
        # ccusage names fast-mode responses as a model of their own, "<model>-fast"
        assert mine.models == sorted({m.removesuffix("-fast") for m in their["models"]})
        # the same prices: equal to a billionth of a dollar (ccusage sums in file order)
        assert mine.cost_usd is not None
        assert abs(mine.cost_usd - their["costUSD"]) < 1e-9

    # The block under way: the same pace, tokens per minute and dollars per hour.
    assert [b["isActive"] for b in theirs] == [False] * (len(theirs) - 1) + [True]
    stats = store.read_sync(
        blocks.block_stats, user.id, days=1, tz="UTC", token_limit=None, now=now
    )
    assert stats.active is not None and stats.active.start == theirs[-1]["startTime"].replace(
        ".000Z", "+00:00"
    )
    rate = theirs[-1]["burnRate"]
    assert stats.active.tokens_per_minute == round(rate["tokensPerMinute"], 3)
    assert stats.active.cost_per_hour is not None
    assert abs(stats.active.cost_per_hour - rate["costPerHour"]) < 1e-6
