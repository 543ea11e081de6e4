"""Compare our accounting with ccusage's on the same generated tree.

    /work/venv/bin/python bench/ccusage_crosscheck.py [--size-mb 200] [--runs 3]

Installs the npm package ``ccusage`` into ``bench/node_modules`` when missing, generates
a tree under ``bench/out/`` (``CLAUDE_CONFIG_DIR`` layout: ``<root>/projects/...``),
runs ``ccusage claude monthly --json --offline`` and ``ccusage claude session --json
--offline`` with ``TZ=UTC``, and compares token totals per month and model and per
session with ours (parse + dedup). Where the two differ it says where, by how much,
and which kind of duplicate or odd line explains it. Last, it times ccusage's session
report against our full parse + dedup + session summaries on the same tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.ingest.accounting import dedup, group_by_session, summarize_session
from service.ingest.names import subagent_parent
from service.ingest.transcript import FileParse, TranscriptState, UsageEntry, parse_file
from service.synthetic.corpus import Expected, generate, transcript_files

BENCH = ROOT / "bench"
CCUSAGE_VERSION = "20.0.24"  # the newest version with a linux-x64 native build on the registry
KINDS = ("input", "output", "cache_creation", "cache_read")


def ccusage_binary() -> Path:
    binary = BENCH / "node_modules" / ".bin" / "ccusage"
    if not binary.exists():
        subprocess.run(
            [
                "npm",
                "install",
                "--prefix",
                str(BENCH),
                "--no-save",
                "--no-package-lock",
                f"ccusage@{CCUSAGE_VERSION}",
            ],
            check=True,
        )
    return binary


def run_ccusage(binary: Path, tree: Path, report: str) -> tuple[dict[str, Any], float]:
    env = dict(os.environ, CLAUDE_CONFIG_DIR=str(tree), TZ="UTC")
    started = time.perf_counter()
    output = subprocess.run(
        [str(binary), "claude", report, "--json", "--offline"],
        check=True,
        capture_output=True,
        env=env,
    ).stdout
    return json.loads(output), time.perf_counter() - started


def _parse_batch(jobs: list[tuple[str, str]]) -> bytes:
    return msgspec.msgpack.encode([parse_file(path, file_name=name) for path, name in jobs])


def our_pipeline(tree: Path, workers: int) -> tuple[list[FileParse], list[UsageEntry], float]:
    """Parse (a process pool), dedup and summarise every session: what a backfill does
    before writing to the store."""
    jobs = [(str(path), name) for path, name in transcript_files(tree)]
    batches = [jobs[start : start + 16] for start in range(0, len(jobs), 16)]
    decoder = msgspec.msgpack.Decoder(list[FileParse])
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        parsed = [p for packed in pool.map(_parse_batch, batches) for p in decoder.decode(packed)]
    entries = [entry for p in parsed for entry in p.entries]
    winners = dedup(entries)
    by_session = group_by_session(winners)
    for session_states in sessions(parsed).values():
        session_id = session_states[0].session_id or ""
        summarize_session(session_states, by_session.get(session_id, []))
    return parsed, entries, time.perf_counter() - started


def sessions(parsed: Iterable[FileParse]) -> dict[str, list[TranscriptState]]:
    groups: dict[str, list[TranscriptState]] = defaultdict(list)
    for p in parsed:
        parent = subagent_parent(p.state.file_name)
        if parent is None:
            groups[p.state.session_id or ""].insert(0, p.state)
        else:
            groups[parent].append(p.state)
    return groups


def tokens(entry: UsageEntry) -> tuple[int, int, int, int]:
    return (
        entry.input_tokens,
        entry.output_tokens,
        entry.cache_creation_tokens,
        entry.cache_read_tokens,
    )


def add(row: list[int], values: Iterable[int], sign: int = 1) -> None:
    for index, value in enumerate(values):
        row[index] += sign * value


Row = tuple[str, str]  # (month or session, model or "")
Quirks = dict[str, dict[Row, list[int]]]


def known_differences(
    entries: list[UsageEntry], winners: list[UsageEntry], expected: Expected
) -> tuple[Quirks, Quirks, Quirks]:
    """What ccusage counts beyond (or short of) TRANSCRIPTS.md's rules, from our entries:
    tokens per quirk and per (month, model), per (session, ""), and per (month, "") for
    the daily report. The behaviours were measured on ccusage itself, one case each:

    - session/monthly match a /btw sidechain replay under a new requestId with the kept
      copy only when both have the same timestamp (rule 5 has no such condition), so
      the replay of an earlier line of a split response counts again;
    - daily counts every line of a response without requestId (rule 3: one response);
    - all reports drop a line whose timestamp has no zone (we read it as UTC).
    """
    winner_of: dict[str, list[UsageEntry]] = defaultdict(list)
    for winner in winners:
        if winner.message_id is not None:
            winner_of[winner.message_id].append(winner)
    kept = {id(w) for w in winners}
    monthly: Quirks = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0]))
    session: Quirks = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0]))
    daily: Quirks = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0]))
    replays: dict[tuple[str, str | None], UsageEntry] = {}
    for entry in entries:
        if id(entry) in kept or entry.message_id is None:
            continue
        group = winner_of[entry.message_id]
        month = entry.timestamp.strftime("%Y-%m")
        if entry.is_sidechain and all(w.request_id != entry.request_id for w in group):
            if all(w.timestamp != entry.timestamp for w in group):
                key = (entry.message_id, entry.request_id)
                best = replays.get(key)
                if best is None or sum(tokens(entry)) > sum(tokens(best)):
                    replays[key] = entry
        elif entry.request_id is None and not entry.is_sidechain:
            add(daily["every line of a response without requestId"][(month, "")], tokens(entry))
    quirk = "/btw replay of an earlier line of a split response"
    for entry in replays.values():
        month = entry.timestamp.strftime("%Y-%m")
        model = (entry.model or "").removesuffix("-fast")
        add(monthly[quirk][(month, model)], tokens(entry))
        add(session[quirk][(entry.session_id, "")], tokens(entry))
    for (name, month, model, session_id), totals in expected.quirk_tokens.items():
        if name != "zoneless":
            continue
        values = (totals.input, totals.output, totals.cache_creation, totals.cache_read)
        quirk = "a timestamp without zone"
        add(monthly[quirk][(month, model)], values, -1)
        add(session[quirk][(session_id, "")], values, -1)
        add(daily[quirk][(month, "")], values, -1)
    return monthly, session, daily


def report(
    title: str, ours: dict[Row, list[int]], theirs: dict[Row, list[int]], quirks: Quirks
) -> None:
    """Print every row where ccusage and we differ, and whether the known quirks
    account for the whole difference."""
    keys = sorted(set(ours) | set(theirs))
    differing = [key for key in keys if ours.get(key, [0] * 4) != theirs.get(key, [0] * 4)]
    explained = 0
    lines = []
    for key in differing:
        delta = [
            t - o for t, o in zip(theirs.get(key, [0] * 4), ours.get(key, [0] * 4), strict=True)
        ]
        reasons = [name for name, rows in quirks.items() if any(rows.get(key, [0] * 4))]
        accounted = [0, 0, 0, 0]
        for name in reasons:
            add(accounted, quirks[name][key])
        if accounted == delta:
            explained += 1
            why = "; ".join(f"ccusage differs on {name}" for name in reasons)
        elif any("/btw" in name for name in reasons):
            why = (
                "ccusage's /btw replay matching depends on file order: it compares timestamps "
                "with whichever copy it holds when the replay arrives, so which replayed line "
                "counts again varies"
                + "".join(f"; ccusage differs on {name}" for name in reasons if "/btw" not in name)
            )
        else:
            why = "NOT EXPLAINED by the known quirks"
        lines.append(
            f"    {' '.join(k for k in key if k)}: ccusage - ours = "
            f"{dict(zip(KINDS, delta, strict=True))}\n      why: {why}"
        )
    print(
        f"  {title}: {len(keys)} rows, {len(keys) - len(differing)} equal, "
        f"{len(differing)} differ ({explained} fully explained)"
    )
    for line in lines[:8]:
        print(line)
    if len(lines) > 8:
        print(f"    ... and {len(lines) - 8} more")


def ccusage_rows(rows: Iterable[dict[str, Any]], key: str, by_model: bool) -> dict[Row, list[int]]:
    result: dict[Row, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        parts = row["modelBreakdowns"] if by_model else [row]
        for part in parts:
            model = part["modelName"].removesuffix("-fast") if by_model else ""
            add(
                result[(row[key], model)],
                (
                    part["inputTokens"],
                    part["outputTokens"],
                    part["cacheCreationTokens"],
                    part["cacheReadTokens"],
                ),
            )
    return result


def our_rows(winners: list[UsageEntry], how: str) -> dict[Row, list[int]]:
    result: dict[Row, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for entry in winners:
        if how == "session":
            add(result[(entry.session_id, "")], tokens(entry))
        elif how == "month":
            add(result[(entry.timestamp.strftime("%Y-%m"), "")], tokens(entry))
        elif entry.model is not None and entry.model != "<synthetic>":
            add(result[(entry.timestamp.strftime("%Y-%m"), entry.model)], tokens(entry))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--small-lines", action="store_true", help="no megabyte tool results")
    args = parser.parse_args()

    binary = ccusage_binary()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    tree = (
        BENCH
        / "out"
        / f"ccusage-{args.size_mb}mb-{args.seed}{'-small' if args.small_lines else ''}"
    )
    if tree.exists():
        shutil.rmtree(tree)
    expected = generate(
        tree, size_bytes=args.size_mb * 1_000_000, seed=args.seed, big_lines=not args.small_lines
    )
    print(
        f"ccusage {version.strip()}; tree {tree.name}: {expected.bytes_written / 1e6:.0f} MB, "
        f"{expected.files} files; generated quirks: {dict(expected.quirks)}"
    )

    monthly, _ = run_ccusage(binary, tree, "monthly")
    session_report, _ = run_ccusage(binary, tree, "session")
    daily, _ = run_ccusage(binary, tree, "daily")
    parsed, entries, _ = our_pipeline(tree, args.workers)
    winners = dedup(entries)
    by_month_model, by_session, by_day = known_differences(entries, winners, expected)
    daily_by_month: dict[Row, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (day, model), values in ccusage_rows(daily["daily"], "date", by_model=False).items():
        add(daily_by_month[(day[:7], model)], values)
    print("ccusage minus ours, with the reason where a known ccusage behaviour accounts for it:")
    report(
        "monthly, per month and model",
        our_rows(winners, "model"),
        ccusage_rows(monthly["monthly"], "month", by_model=True),
        by_month_model,
    )
    report(
        "session, per session",
        our_rows(winners, "session"),
        ccusage_rows(session_report["sessions"], "sessionId", by_model=False),
        by_session,
    )
    report("daily, summed per month", our_rows(winners, "month"), daily_by_month, by_day)

    theirs = [run_ccusage(binary, tree, "session")[1] for _ in range(args.runs)]
    ours = [our_pipeline(tree, args.workers)[2] for _ in range(args.runs)]
    their_time, our_time = statistics.median(theirs), statistics.median(ours)
    print(
        f"wall time, median of {args.runs}: ccusage session {their_time:.2f}s "
        f"({expected.bytes_written / their_time / 1e6:.0f} MB/s); ours parse+dedup+summaries "
        f"with {args.workers} workers {our_time:.2f}s "
        f"({expected.bytes_written / our_time / 1e6:.0f} MB/s); ratio {our_time / their_time:.2f}x"
    )
    del parsed


if __name__ == "__main__":
    main()
