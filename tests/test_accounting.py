"""Dedup (rules 3-5), session summaries, and the whole pipeline on a generated tree."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.ingest.accounting import SessionSummary, dedup, group_by_session, summarize_session
from service.ingest.names import subagent_parent
from service.ingest.transcript import TranscriptState, UsageEntry, feed, new_state, parse_file
from service.synthetic.corpus import Expected, generate, transcript_files
from service.synthetic.lines import SESSION, assistant, jsonl, tool_result, tool_use, user

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def entry(
    message_id: str | None = "msg_1",
    request_id: str | None = "req_1",
    *,
    total: int = 100,
    seconds: int = 0,
    file_name: str = "a.jsonl",
    sidechain: bool = False,
    line_key: str | None = None,
    session_id: str = "s",
    model: str = "claude-opus-4-6",
) -> UsageEntry:
    return UsageEntry(
        message_id=message_id,
        request_id=request_id,
        session_id=session_id,
        timestamp=T0 + timedelta(seconds=seconds),
        model=model,
        input_tokens=total,
        output_tokens=0,
        cache_creation_tokens=0,
        cache_creation_5m=0,
        cache_creation_1h=0,
        cache_read_tokens=0,
        is_sidechain=sidechain,
        speed=None,
        file_name=file_name,
        line_key=line_key or f"{file_name}:{message_id}:{request_id}:{total}:{seconds}",
    )


def winners(entries: list[UsageEntry]) -> list[UsageEntry]:
    """Dedup in every arrival order; all orders must agree (rule 4's last sentence)."""
    orders = itertools.permutations(entries) if len(entries) <= 5 else []
    results = {tuple(sorted(e.line_key for e in dedup(list(order)))) for order in orders} or {
        tuple(sorted(e.line_key for e in dedup(entries)))
    }
    shuffled = list(entries)
    for seed in range(10):
        random.Random(seed).shuffle(shuffled)
        results.add(tuple(sorted(e.line_key for e in dedup(shuffled))))
    assert len(results) == 1, results
    by_key = {e.line_key: e for e in entries}
    return [by_key[key] for key in results.pop()]


# --- rule 3 -----------------------------------------------------------------------------


def test_copies_with_one_key_count_once() -> None:
    kept = winners([entry(total=10), entry(total=10, seconds=1), entry(total=10, seconds=2)])
    assert len(kept) == 1


def test_different_request_ids_are_different_responses() -> None:
    kept = winners([entry(request_id="req_1"), entry(request_id="req_2"), entry(request_id=None)])
    assert len(kept) == 3


def test_entries_without_message_id_are_never_merged() -> None:
    kept = winners(
        [entry(message_id=None, seconds=1), entry(message_id=None, seconds=2), entry(None, None)]
    )
    assert len(kept) == 3


def test_the_same_line_read_twice_counts_once_even_without_message_id() -> None:
    line = entry(message_id=None, line_key="uuid-1")
    assert len(dedup([line, line])) == 1
    other_file = entry(message_id=None, line_key="uuid-1", file_name="b.jsonl")
    assert len(dedup([line, other_file])) == 2


def test_responses_without_request_id_merge_on_message_id() -> None:
    kept = winners([entry(request_id=None, total=1), entry(request_id=None, total=50, seconds=3)])
    assert [e.input_tokens for e in kept] == [50]


# --- rule 4 -----------------------------------------------------------------------------


def test_non_sidechain_copy_beats_a_bigger_sidechain_copy() -> None:
    kept = winners([entry(total=10), entry(total=10_000, sidechain=True)])
    assert [(e.input_tokens, e.is_sidechain) for e in kept] == [(10, False)]


def test_larger_total_wins_over_placeholder_lines() -> None:
    kept = winners([entry(total=5), entry(total=90, seconds=2), entry(total=40, seconds=1)])
    assert [e.input_tokens for e in kept] == [90]


def test_tie_goes_to_the_earlier_timestamp_then_the_first_file_name() -> None:
    kept = winners([entry(seconds=5, file_name="a.jsonl"), entry(seconds=1, file_name="z.jsonl")])
    assert [e.file_name for e in kept] == ["z.jsonl"]
    kept = winners([entry(file_name="b/x.jsonl"), entry(file_name="a/y.jsonl")])
    assert [e.file_name for e in kept] == ["a/y.jsonl"]


def test_winner_decides_day_and_model() -> None:
    late = entry(total=100, seconds=3600 * 14, model="claude-sonnet-4-5")
    early = entry(total=99, model="claude-opus-4-6")
    [kept] = winners([early, late])
    assert (kept.timestamp.date().isoformat(), kept.model) == ("2026-03-02", "claude-sonnet-4-5")


# --- rule 5 -----------------------------------------------------------------------------


def test_btw_replay_under_new_request_id_loses_to_the_parent() -> None:
    parent = entry(request_id="req_parent", total=20)
    replay = entry(request_id="req_btw", total=50_020, sidechain=True, file_name="sub.jsonl")
    answer = entry(message_id="msg_btw", request_id="req_answer", sidechain=True, total=700)
    kept = winners([parent, replay, answer])
    assert sorted((e.message_id, e.request_id) for e in kept) == [
        ("msg_1", "req_parent"),
        ("msg_btw", "req_answer"),
    ]


def test_sidechain_copies_alone_are_one_response_whatever_their_request_ids() -> None:
    kept = winners(
        [
            entry(request_id="r1", total=10, sidechain=True),
            entry(request_id="r2", total=30, sidechain=True),
            entry(request_id=None, total=20, sidechain=True),
        ]
    )
    assert [(e.request_id, e.input_tokens) for e in kept] == [("r2", 30)]


def test_a_sidechain_copy_does_not_merge_two_main_responses() -> None:
    kept = winners(
        [
            entry(request_id="r1", total=10),
            entry(request_id="r2", total=20),
            entry(request_id="r3", total=99, sidechain=True),
        ]
    )
    assert sorted(e.request_id or "" for e in kept) == ["r1", "r2"]


def test_dedup_of_100k_entries_keeps_the_same_winners_whatever_their_order() -> None:
    """Files arrive in any order: the winners of 100,000 copies (of 40,000 responses,
    with and without request ids, sidechain replays among them) do not depend on it.
    (How fast this is: ``bench/parse_throughput.py``.)"""
    rng = random.Random(1)
    entries = [
        entry(
            f"msg_{rng.randrange(40_000)}",
            rng.choice(("r1", "r2", None)),
            total=rng.randrange(1, 1000),
            seconds=rng.randrange(86_400),
            file_name=f"f{rng.randrange(50)}.jsonl",
            sidechain=rng.random() < 0.1,
            line_key=str(i),
        )
        for i in range(100_000)
    ]
    kept = {e.line_key for e in dedup(entries)}
    assert 30_000 < len(kept) < 100_000
    for _ in range(3):
        rng.shuffle(entries)
        assert {e.line_key for e in dedup(entries)} == kept


# --- session summary ----------------------------------------------------------------------

PARENT = "-home-analyst-repo/" + SESSION + ".jsonl"
SUBAGENT = f"-home-analyst-repo/{SESSION}/subagents/agent-a1b2.jsonl"


def session_files() -> dict[str, bytes]:
    opus_call_1 = assistant(
        uuid="a1",
        ts="2026-03-01T10:00:05Z",
        message_id="msg_A",
        request_id="req_A",
        usage={"input_tokens": 10, "output_tokens": 1},
        content=[tool_use("toolu_1", "Bash", command="pytest")],
    )
    opus_call_2 = assistant(
        uuid="a2",
        ts="2026-03-01T10:00:06Z",
        message_id="msg_A",
        request_id="req_A",
        usage={
            "input_tokens": 10,
            "output_tokens": 50,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        },
        content=[tool_use("toolu_2", "Skill", skill="pdf")],
    )
    prompt = user("<command-name>/review</command-name>", uuid="u1", ts="2026-03-01T10:00:00Z")
    parent = jsonl(
        {"type": "file-history-snapshot", "messageId": "m", "snapshot": {"trackedFileBackups": {}}},
        prompt,
        opus_call_1,
        opus_call_2,
        user([tool_result("toolu_1", is_error=True)], uuid="u2", ts="2026-03-01T10:00:10Z"),
        user([tool_result("toolu_2")], uuid="u3", ts="2026-03-01T10:00:11Z"),
        {
            "parentUuid": "u3",
            "isSidechain": False,
            "sessionId": SESSION,
            "type": "progress",
            "data": {"type": "hook_progress"},
            "uuid": "p1",
            "timestamp": "2026-03-01T10:30:00Z",
        },
        user([{"type": "text", "text": "now the docs"}], uuid="u4", ts="2026-03-01T10:35:00Z"),
        assistant(
            uuid="a3",
            ts="2026-03-01T10:35:10Z",
            message_id="msg_B",
            request_id="req_B",
            model="claude-sonnet-4-5-20250929",
            usage={"input_tokens": 5, "output_tokens": 200},
            content=[
                tool_use("toolu_3", "Task", description="look"),
                tool_use("toolu_4", "mcp__github__search", query="x"),
            ],
        ),
        assistant(
            uuid="a4",
            ts="2026-03-01T10:36:00Z",
            message_id="5e1d-synthetic",
            request_id=None,
            model="<synthetic>",
            usage={"input_tokens": 0, "output_tokens": 0},
            extra={"isApiErrorMessage": True},
        ),
        prompt,  # the same line again: counts once
    )
    replay = dict(opus_call_2, isSidechain=True, requestId="req_X", uuid="r1")
    replay["message"] = dict(
        opus_call_2["message"],
        usage=dict(opus_call_2["message"]["usage"], cache_read_input_tokens=5000),
    )
    subagent = jsonl(
        user("look around", uuid="s1", ts="2026-03-01T10:35:20Z", sidechain=True),
        assistant(
            uuid="s2",
            ts="2026-03-01T10:35:30Z",
            message_id="msg_D",
            request_id="req_D",
            model="claude-haiku-4-5-20251001",
            sidechain=True,
            usage={"input_tokens": 1, "output_tokens": 300},
            content=[tool_use("toolu_5", "Read", file_path="/x")],
        ),
        user(
            [tool_result("toolu_5", is_error=True)],
            uuid="s3",
            ts="2026-03-01T10:35:40Z",
            sidechain=True,
        ),
        replay,
    )
    return {PARENT: parent, SUBAGENT: subagent}


def summarize(files: dict[str, bytes]) -> SessionSummary:
    states: list[TranscriptState] = []
    entries: list[UsageEntry] = []
    for name, data in files.items():
        state = new_state(name)
        entries.extend(feed(state, data).entries)
        states.append(state)
    return summarize_session(states, dedup(entries))


def test_session_summary_fields_match_hand_checked_values() -> None:
    summary = summarize(session_files())
    assert summary.session_id == SESSION
    assert summary.started_at == datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
    assert summary.ended_at == datetime(2026, 3, 1, 10, 36, 0, tzinfo=UTC)
    expected = {
        "wall_seconds": 36 * 60,
        # 10:00:00-10:00:11, then (gap of 29 min) 10:30:00-10:36:00
        "active_seconds": 11 + 6 * 60,
        "user_messages": 2,  # u1 (twice) and u4; tool results and the subagent prompt are not
        "assistant_messages": 3,  # msg_A (its /btw replay loses), msg_B, msg_D; not <synthetic>
        "tool_calls": 3,  # Bash, Skill, Read
        "tool_errors": 2,
        "skill_invocations": 1,
        "subagent_dispatches": 1,
        "mcp_calls": 1,
        "slash_commands": 1,
        "distinct_tools": ["Bash", "Read", "Skill", "Task", "mcp__github__search"],
        "distinct_skills": ["pdf"],
        "primary_model": "claude-haiku-4-5-20251001",  # 300 output tokens
        "input_tokens": 10 + 5 + 1,
        "output_tokens": 50 + 200 + 300,
        "cache_read_tokens": 100,
        "cache_creation_tokens": 20,
        "tokens_total": 16 + 550 + 100 + 20,
        "unpriced_models": [],
        "files": [PARENT, SUBAGENT],
        "bad_lines": 0,
    }
    assert {field: getattr(summary, field) for field in expected} == expected
    # opus 4.6: 10*5 + 50*25 + 100*0.5 + 20*6.25 = 1475 (per MTok)
    # sonnet 4.5: 5*3 + 200*15 = 3015; haiku 4.5: 1*1 + 300*5 = 1501
    assert summary.cost_usd == pytest.approx((1475 + 3015 + 1501) / 1e6)


def test_summary_does_not_depend_on_file_order() -> None:
    files = session_files()
    reversed_files = dict(reversed(list(files.items())))
    first = summarize(files)
    second = summarize(reversed_files)
    for field in ("tool_calls", "tokens_total", "active_seconds", "primary_model", "cost_usd"):
        assert getattr(first, field) == getattr(second, field)


def test_primary_model_tie_goes_to_the_first_seen_and_never_synthetic() -> None:
    data = jsonl(
        assistant(
            uuid="a1",
            ts="2026-03-01T10:00:09Z",
            message_id="m1",
            model="claude-sonnet-4-5",
            usage={"input_tokens": 1, "output_tokens": 50},
        ),
        assistant(
            uuid="a2",
            ts="2026-03-01T10:00:01Z",
            message_id="m2",
            model="claude-opus-4-6",
            usage={"input_tokens": 1, "output_tokens": 50},
        ),
        assistant(
            uuid="a3",
            ts="2026-03-01T10:00:05Z",
            message_id="m3",
            model="<synthetic>",
            usage={"input_tokens": 0, "output_tokens": 999},
        ),
    )
    summary = summarize({"p/" + SESSION + ".jsonl": data})
    assert summary.primary_model == "claude-opus-4-6"


def test_unpriced_models_are_listed_and_never_cost_zero() -> None:
    unknown = assistant(
        uuid="a1",
        ts="2026-03-01T10:00:00Z",
        message_id="m1",
        model="gpt-oss-120b",
        usage={"input_tokens": 100, "output_tokens": 10},
    )
    summary = summarize({"p/" + SESSION + ".jsonl": jsonl(unknown)})
    assert summary.cost_usd is None
    assert summary.unpriced_models == ["gpt-oss-120b"]
    known = assistant(
        uuid="a2",
        ts="2026-03-01T10:00:01Z",
        message_id="m2",
        usage={"input_tokens": 1_000_000, "output_tokens": 0},
    )
    summary = summarize({"p/" + SESSION + ".jsonl": jsonl(unknown, known)})
    assert summary.cost_usd == pytest.approx(5.0)
    assert summary.unpriced_models == ["gpt-oss-120b"]


def test_empty_session_has_zero_counts() -> None:
    summary = summarize({"p/abc.jsonl": b""})
    assert summary.session_id == "abc"
    assert (summary.started_at, summary.wall_seconds, summary.tokens_total) == (None, 0, 0)
    assert summary.cost_usd == 0.0


# --- the whole pipeline on a generated tree ------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Expected]:
    root = tmp_path_factory.mktemp("tree")
    return root, generate(root, size_bytes=3_000_000, seed=11, big_lines=False)


def test_generated_tree_totals_match_by_day_and_model(tree: tuple[Path, Expected]) -> None:
    root, expected = tree
    files = transcript_files(root)
    totals_by_order = []
    for seed in (1, 2):
        random.Random(seed).shuffle(files)
        entries = [e for path, name in files for e in parse_file(str(path), file_name=name).entries]
        random.Random(seed).shuffle(entries)
        got: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for e in dedup(entries):
            model = None if e.model == "<synthetic>" else e.model
            row = got[(e.timestamp.date().isoformat(), model)]
            for index, value in enumerate(
                (e.input_tokens, e.output_tokens, e.cache_creation_tokens, e.cache_read_tokens, 1)
            ):
                row[index] += value
        totals_by_order.append(dict(got))
    want = {
        key: [t.input, t.output, t.cache_creation, t.cache_read, t.entries]
        for key, t in expected.by_day_model.items()
    }
    assert totals_by_order[0] == want
    assert totals_by_order[1] == want
    assert expected.quirks["btw replays"] > 0
    assert expected.quirks["resumed session copies"] > 0


def test_generated_tree_session_summaries_match(tree: tuple[Path, Expected]) -> None:
    root, expected = tree
    states: dict[str, list[TranscriptState]] = defaultdict(list)
    entries: list[UsageEntry] = []
    for path, name in transcript_files(root):
        parsed = parse_file(str(path), file_name=name)
        entries.extend(parsed.entries)
        parent = subagent_parent(name)
        if parent is None:
            states[parsed.state.session_id or ""].insert(0, parsed.state)
        else:
            states[parent].append(parsed.state)
    by_session = group_by_session(dedup(entries))
    fields = (
        "user_messages",
        "tool_calls",
        "tool_errors",
        "subagent_dispatches",
        "skill_invocations",
        "mcp_calls",
        "slash_commands",
        "started_at",
        "ended_at",
    )
    assert set(states) == set(expected.sessions)
    for session_id, session_states in states.items():
        summary = summarize_session(session_states, by_session.get(session_id, []))
        want = expected.sessions[session_id]
        got = {field: getattr(summary, field) for field in fields}
        assert got == {field: getattr(want, field) for field in fields}, session_id
        assert (
            summary.input_tokens,
            summary.output_tokens,
            summary.cache_creation_tokens,
            summary.cache_read_tokens,
        ) == (
            want.tokens.input,
            want.tokens.output,
            want.tokens.cache_creation,
            want.tokens.cache_read,
        )
