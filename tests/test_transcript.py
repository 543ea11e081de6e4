"""The parser: which lines are usage entries (rules 1-2), what each file counts, and
bad input that must never stop it."""

from __future__ import annotations

import random
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from service.ingest.names import session_of_file, subagent_parent
from service.ingest.transcript import (
    DEFAULT_CHUNK_BYTES,
    MAX_LINE_BYTES,
    TranscriptState,
    feed,
    new_state,
    parse_file,
)
from service.synthetic.lines import SESSION, assistant, jsonl, tool_result, tool_use, user

USAGE = {
    "input_tokens": 3,
    "output_tokens": 40,
    "cache_creation_input_tokens": 500,
    "cache_read_input_tokens": 7000,
}


def parse(data: bytes, name: str = "proj/s.jsonl") -> tuple[TranscriptState, list]:
    state = new_state(name)
    result = feed(state, data)
    return state, result.entries


def one_entry(line: dict, **changes: object) -> list:
    return parse(jsonl(line))[1]


# --- rule 1: what is a usage entry --------------------------------------------------


def test_assistant_line_becomes_entry_with_every_field() -> None:
    line = assistant(uuid="a1", ts="2026-03-01T10:00:05.250Z", usage=dict(USAGE, speed="fast"))
    [entry] = parse(jsonl(line), "proj/s.jsonl")[1]
    assert entry.message_id == "msg_01"
    assert entry.request_id == "req_01"
    assert entry.session_id == SESSION
    assert entry.timestamp == datetime(2026, 3, 1, 10, 0, 5, 250_000, tzinfo=UTC)
    assert entry.model == "claude-opus-4-6"
    assert (entry.input_tokens, entry.output_tokens) == (3, 40)
    assert (entry.cache_creation_tokens, entry.cache_creation_5m, entry.cache_creation_1h) == (
        500,
        500,
        0,
    )
    assert entry.cache_read_tokens == 7000
    assert entry.is_sidechain is False
    assert entry.speed == "fast"
    assert entry.file_name == "proj/s.jsonl"
    assert entry.line_key == "a1"
    assert entry.total_tokens == 7543


def test_response_over_several_lines_gives_one_entry_per_line() -> None:
    data = jsonl(
        assistant(uuid="a1", ts="2026-03-01T10:00:05Z", usage=dict(USAGE, output_tokens=1)),
        assistant(uuid="a2", ts="2026-03-01T10:00:06Z", usage=USAGE),
    )
    entries = parse(data)[1]
    assert [e.output_tokens for e in entries] == [1, 40]
    assert {e.message_id for e in entries} == {"msg_01"}


@pytest.mark.parametrize(
    "change",
    [
        {"version": "v2"},
        {"version": "2.1"},
        {"sessionId": ""},
        {"requestId": ""},
        {"version": None},
        {"sessionId": None},
        {"requestId": None},
        {"cwd": None},
        {"costUSD": None},
        {"isApiErrorMessage": None},
    ],
)
def test_line_fields_that_disqualify_an_entry(change: dict) -> None:
    line = assistant(uuid="a1", ts="2026-03-01T10:00:05Z", usage=USAGE)
    line.update(change)
    assert parse(jsonl(line))[1] == []


@pytest.mark.parametrize(
    "change",
    [
        {"id": ""},
        {"model": ""},
        {"id": None},
        {"model": None},
    ],
)
def test_message_fields_that_disqualify_an_entry(change: dict) -> None:
    line = assistant(uuid="a1", ts="2026-03-01T10:00:05Z", usage=USAGE)
    line["message"].update(change)
    assert parse(jsonl(line))[1] == []


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": "3", "output_tokens": 40},
        {"input_tokens": 3, "output_tokens": -40},
        {"input_tokens": 3.0, "output_tokens": 40},
        {"input_tokens": 3},
        {"input_tokens": 3, "output_tokens": 40, "cache_read_input_tokens": None},
        {"input_tokens": 3, "output_tokens": 40, "cache_creation_input_tokens": None},
        {"input_tokens": 3, "output_tokens": 40, "cache_read_input_tokens": "7"},
        {"input_tokens": 3, "output_tokens": 40, "speed": None},
        "3 tokens",
        None,
        [3, 40],
    ],
)
def test_usage_that_is_not_integers_is_no_entry_but_keeps_tool_calls(usage: object) -> None:
    line = assistant(
        uuid="a1", ts="2026-03-01T10:00:05Z", content=[tool_use("toolu_1", "Bash", command="ls")]
    )
    line["message"]["usage"] = usage
    state, entries = parse(jsonl(line))
    assert entries == []
    assert state.tool_uses == {"toolu_1": "Bash"}
    assert state.bad_lines == 0


def test_nulls_outside_the_listed_fields_do_not_matter() -> None:
    line = assistant(uuid="a1", ts="2026-03-01T10:00:05Z", usage=USAGE, extra={"parentUuid": None})
    line["message"]["content"] = [tool_use("toolu_1", "Edit", id=None, model=None)]
    assert len(parse(jsonl(line))[1]) == 1


def test_missing_optional_fields_are_fine() -> None:
    line = assistant(
        uuid="a1",
        ts="2026-03-01T10:00:05Z",
        message_id=None,
        request_id=None,
        usage={"input_tokens": 3, "output_tokens": 4},
    )
    del line["version"], line["sessionId"], line["cwd"]
    [entry] = parse(jsonl(line), "proj/abc.jsonl")[1]
    assert (entry.message_id, entry.request_id) == (None, None)
    assert entry.session_id == "abc"  # the file's stem
    assert (entry.cache_creation_tokens, entry.cache_read_tokens) == (0, 0)


def test_synthetic_lines_are_entries_with_their_model_kept() -> None:
    line = assistant(
        uuid="a1",
        ts="2026-03-01T10:00:05Z",
        request_id=None,
        message_id="4b3a-uuid",
        model="<synthetic>",
        usage={
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
        extra={"isApiErrorMessage": True},
    )
    [entry] = parse(jsonl(line))[1]
    assert entry.model == "<synthetic>"
    assert entry.total_tokens == 0


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-03-01T10:00:05Z", datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC)),
        ("2026-03-01T10:00:05.123456Z", datetime(2026, 3, 1, 10, 0, 5, 123456, tzinfo=UTC)),
        ("2026-03-01T12:00:05+02:00", datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC)),
        ("2026-03-01T05:00:05-05:00", datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC)),
        ("2026-03-01T10:00:05", datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC)),
        ("2026-03-01T10:00:05.500", datetime(2026, 3, 1, 10, 0, 5, 500_000, tzinfo=UTC)),
    ],
)
def test_timestamps_with_zone_offset_or_none_are_utc(stamp: str, expected: datetime) -> None:
    [entry] = parse(jsonl(assistant(uuid="a1", ts=stamp, usage=USAGE)))[1]
    assert entry.timestamp == expected
    assert entry.timestamp.utcoffset() is not None
    assert entry.timestamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "stamp",
    [
        "yesterday",
        "2026-13-01T10:00:00Z",
        "",
        1772359205,
        "0001-01-01T00:00:00+01:00",  # valid ISO 8601, but before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    ],
)
def test_unparseable_timestamp_is_no_entry_but_other_counts_stay(stamp: object) -> None:
    line = assistant(
        uuid="a1",
        ts=stamp,  # type: ignore[arg-type]
        usage=USAGE,
        content=[tool_use("toolu_1", "Grep", pattern="x")],
    )
    state, entries = parse(jsonl(line))
    assert entries == []
    if isinstance(stamp, str):
        assert state.tool_uses == {"toolu_1": "Grep"}
        assert state.started_at is None


# --- rule 2: cache creation ------------------------------------------------------------


def test_cache_breakdown_wins_over_the_flat_count() -> None:
    usage = dict(
        USAGE,
        cache_creation_input_tokens=999,
        cache_creation={"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 250},
    )
    [entry] = parse(jsonl(assistant(uuid="a1", ts="2026-03-01T10:00:05Z", usage=usage)))[1]
    assert (entry.cache_creation_tokens, entry.cache_creation_5m, entry.cache_creation_1h) == (
        350,
        100,
        250,
    )


def test_partial_cache_breakdown_counts_missing_kinds_as_zero() -> None:
    usage = dict(USAGE, cache_creation={"ephemeral_1h_input_tokens": 250})
    [entry] = parse(jsonl(assistant(uuid="a1", ts="2026-03-01T10:00:05Z", usage=usage)))[1]
    assert (entry.cache_creation_tokens, entry.cache_creation_5m, entry.cache_creation_1h) == (
        250,
        0,
        250,
    )


# --- per-file counts --------------------------------------------------------------------


def test_counts_are_keyed_so_repeated_lines_count_once() -> None:
    prompt = user("fix the tests", uuid="u1", ts="2026-03-01T10:00:00Z")
    call = assistant(
        uuid="a1",
        ts="2026-03-01T10:00:05Z",
        content=[tool_use("toolu_1", "Bash", command="pytest")],
        usage=USAGE,
    )
    result = user([tool_result("toolu_1", is_error=True)], uuid="u2", ts="2026-03-01T10:00:09Z")
    state, _ = parse(jsonl(prompt, call, result, prompt, call, result))
    assert state.prompts == {"u1"}
    assert state.tool_uses == {"toolu_1": "Bash"}
    assert state.tool_errors == {"toolu_1"}


def test_prompts_exclude_tool_results_and_sidechain_lines() -> None:
    state, _ = parse(
        jsonl(
            user("a string prompt", uuid="u1", ts="2026-03-01T10:00:00Z"),
            user(
                [{"type": "text", "text": "a block prompt"}], uuid="u2", ts="2026-03-01T10:00:01Z"
            ),
            user([tool_result("toolu_1")], uuid="u3", ts="2026-03-01T10:00:02Z"),
            user("subagent task", uuid="u4", ts="2026-03-01T10:00:03Z", sidechain=True),
        )
    )
    assert state.prompts == {"u1", "u2"}
    assert state.tool_errors == set()


def test_slash_commands_and_skills_are_read_from_text_and_input() -> None:
    text = (
        "<command-message>review</command-message>\n<command-name>/review</command-name>"
        "<command-name>/sc:plan-2</command-name><command-name>/9bad</command-name>"
    )
    state, _ = parse(
        jsonl(
            user(text, uuid="u1", ts="2026-03-01T10:00:00Z"),
            user(
                [{"type": "text", "text": "<command-name>/clear</command-name>"}],
                uuid="u2",
                ts="2026-03-01T10:00:01Z",
            ),
            assistant(
                uuid="a1",
                ts="2026-03-01T10:00:02Z",
                content=[
                    tool_use("toolu_1", "Skill", skill="pdf"),
                    tool_use("toolu_2", "Skill", name="xlsx"),
                    tool_use("toolu_3", "Skill", args="no name"),
                ],
            ),
        )
    )
    assert sorted(state.slash_commands.values()) == ["clear", "review", "sc:plan-2"]
    assert state.skills == {"toolu_1": "pdf", "toolu_2": "xlsx", "toolu_3": ""}


def test_tool_uses_without_id_still_count_once_per_block() -> None:
    block = {"type": "tool_use", "name": "Read", "input": {}}
    line = assistant(uuid="a1", ts="2026-03-01T10:00:02Z", content=[block, block])
    state, _ = parse(jsonl(line, line))
    assert sorted(state.tool_uses) == ["a1#t0", "a1#t1"]


def test_session_id_is_the_first_non_empty_one() -> None:
    state, _ = parse(
        jsonl(
            {"type": "summary", "summary": "x", "leafUuid": "l"},
            user("hi", uuid="u1", ts="2026-03-01T10:00:00Z", session=""),
            user("hi", uuid="u2", ts="2026-03-01T10:00:00Z", session="first"),
            user("hi", uuid="u3", ts="2026-03-01T10:00:00Z", session="second"),
        )
    )
    assert state.session_id == "first"


def test_timestamps_of_skipped_line_types_still_count() -> None:
    progress = {
        "parentUuid": "a1",
        "isSidechain": False,
        "sessionId": SESSION,
        "type": "progress",
        "data": {
            "type": "agent_progress",
            "message": {
                "type": "assistant",
                "timestamp": "2026-03-09T00:00:00Z",
                "message": {"usage": {"input_tokens": 5, "output_tokens": 5}},
            },
            "output": "x" * 200_000,
        },
        "uuid": "p1",
        "timestamp": "2026-03-01T11:00:00Z",
    }
    snapshot = {
        "type": "file-history-snapshot",
        "messageId": "m",
        "snapshot": {"timestamp": "2026-02-01T00:00:00Z", "trackedFileBackups": {}},
    }
    queued = {
        "type": "queue-operation",
        "operation": "enqueue",
        "timestamp": "2026-03-01T09:00:00Z",
        "content": "y" * 10_000,
        "sessionId": SESSION,
    }
    state, entries = parse(
        jsonl(snapshot, queued, user("hi", uuid="u1", ts="2026-03-01T10:00:00Z"), progress)
    )
    assert entries == []
    assert state.started_at == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert state.ended_at == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert state.session_id == SESSION


# --- bad input ----------------------------------------------------------------------------


def test_empty_file_and_blank_lines_give_nothing(tmp_path: Path) -> None:
    for content in (b"", b"\n\n  \n\t\r\n"):
        path = tmp_path / "s.jsonl"
        path.write_bytes(content)
        parsed = parse_file(str(path))
        assert parsed.entries == []
        assert parsed.offset == len(content)
        assert (parsed.state.lines, parsed.state.bad_lines) == (0, 0)
        assert parsed.state.started_at is None


def test_json_that_is_not_an_object_is_a_bad_line() -> None:
    good = assistant(uuid="a1", ts="2026-03-01T10:00:05Z", usage=USAGE)
    state, entries = parse(jsonl(b"[1,2,3]", b"42", b"null", b'"usage"', b"{not json", good))
    assert len(entries) == 1
    assert state.bad_lines == 5


def test_torn_last_line_waits_and_counts_once_when_completed(tmp_path: Path) -> None:
    first = jsonl(assistant(uuid="a1", ts="2026-03-01T10:00:05Z", usage=USAGE))
    second = jsonl(
        assistant(uuid="a2", ts="2026-03-01T10:00:06Z", message_id="msg_02", usage=USAGE)
    )
    path = tmp_path / "s.jsonl"
    path.write_bytes(first + second[:40])
    parsed = parse_file(str(path))
    assert [e.line_key for e in parsed.entries] == ["a1"]
    assert parsed.offset == len(first)
    # The writer finishes the line; the next read resumes at the stored offset.
    path.write_bytes(first + second)
    state = msgspec.json.decode(msgspec.json.encode(parsed.state), type=TranscriptState)
    again = parse_file(str(path), state, parsed.offset)
    assert [e.line_key for e in again.entries] == ["a2"]
    assert again.offset == len(first + second)
    assert parse_file(str(path), again.state, again.offset).entries == []


def test_invalid_utf8_inside_strings_keeps_the_line() -> None:
    unread = jsonl(
        user(
            [tool_result("toolu_1", is_error=True, output="@BAD@")],
            uuid="u1",
            ts="2026-03-01T10:00:00Z",
        ),
        assistant(
            uuid="a1",
            ts="2026-03-01T10:00:05Z",
            usage=USAGE,
            content=[{"type": "text", "text": "caf@BAD@"}],
        ),
        user(
            "prompt @BAD@ <command-name>/review</command-name>",
            uuid="u2",
            ts="2026-03-01T10:00:09Z",
        ),
    ).replace(b"@BAD@", b"\xff\xfe\xc3")
    state, entries = parse(unread)
    assert len(entries) == 1
    assert state.tool_errors == {"toolu_1"}
    assert state.prompts == {"u2"}
    assert list(state.slash_commands.values()) == ["review"]
    assert state.bad_lines == 0


def test_a_100_mb_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    before = jsonl(assistant(uuid="a1", ts="2026-03-01T10:00:05Z", usage=USAGE))
    after = jsonl(assistant(uuid="a2", ts="2026-03-01T10:00:06Z", message_id="m2", usage=USAGE))
    with path.open("wb") as handle:
        handle.write(before)
        handle.write(b'{"type":"user","message":{"role":"user","content":"')
        block = b"x" * (1 << 20)
        for _ in range(100):
            handle.write(block)
        handle.write(b'"},"uuid":"u-huge","timestamp":"2026-03-01T10:00:00Z"}\n')
        handle.write(after)
    tracemalloc.start()
    try:
        parsed = parse_file(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [e.line_key for e in parsed.entries] == ["a1", "a2"]
    assert parsed.offset == path.stat().st_size
    assert parsed.state.oversized_lines == 1
    assert parsed.state.prompts == set()
    # Never the whole 100 MB line: the 32 MiB line limit plus a read or two of 8 MiB.
    assert peak < MAX_LINE_BYTES + 3 * DEFAULT_CHUNK_BYTES, peak


def test_a_long_line_split_over_many_chunks_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    line = assistant(
        uuid="a1",
        ts="2026-03-01T10:00:05Z",
        usage=USAGE,
        content=[tool_use("toolu_1", "Write", content="z" * 3_000_000)],
    )
    path.write_bytes(jsonl(line))
    parsed = parse_file(str(path), chunk_size=64 * 1024)
    assert len(parsed.entries) == 1
    assert parsed.state.tool_uses == {"toolu_1": "Write"}


# --- streaming -------------------------------------------------------------------------


def test_any_chunking_gives_the_same_result() -> None:
    data = jsonl(
        user("hi <command-name>/x</command-name>", uuid="u1", ts="2026-03-01T10:00:00Z"),
        assistant(
            uuid="a1",
            ts="2026-03-01T10:00:05Z",
            usage=USAGE,
            content=[tool_use("toolu_1", "Bash", command="ls")],
        ),
        b"",
        b"{broken",
        user([tool_result("toolu_1", is_error=True)], uuid="u2", ts="2026-03-01T10:20:00Z"),
        assistant(uuid="a2", ts="2026-03-01T10:21:00Z", message_id="msg_2", usage=USAGE),
    )
    whole_state, whole_entries = parse(data)
    rng = random.Random(7)
    for _ in range(30):
        state = new_state("proj/s.jsonl")
        entries = []
        offset = 0
        while offset < len(data):
            end = min(len(data), offset + rng.randint(1, 300))
            pending = data[offset:end]
            result = feed(state, pending)
            while result.consumed == 0 and end < len(data):
                end = min(len(data), end + rng.randint(1, 300))
                result = feed(state, data[offset:end])
            entries.extend(result.entries)
            offset += result.consumed
            # The state survives a trip through the database between reads.
            state = msgspec.json.decode(msgspec.json.encode(state), type=TranscriptState)
        assert entries == whole_entries
        assert state == whole_state


def test_activity_blocks_split_on_gaps_over_ten_minutes() -> None:
    stamps = ["10:00:00", "10:10:00", "10:20:01", "10:25:00", "09:55:00", "10:15:00"]
    state, _ = parse(
        jsonl(*(user("p", uuid=f"u{i}", ts=f"2026-03-01T{s}Z") for i, s in enumerate(stamps)))
    )
    # Sorted: 09:55 10:00 10:10 10:15 10:20:01 10:25 -- no gap over 600 s.
    assert len(state.blocks) == 1
    first, last = state.blocks[0]
    assert (last - first) // 1_000_000 == 30 * 60


# --- file names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parent"),
    [
        ("-home-x-repo/0b1c/subagents/agent-a3f9.jsonl", "0b1c"),
        ("0b1c/subagents/agent-a3f9.jsonl", "0b1c"),
        ("0b1c.agent-a3f9.jsonl", "0b1c"),
        ("0b1c-5e6f.agent-a1b2c3.jsonl", "0b1c-5e6f"),
        ("-home-x-repo/0b1c.jsonl", None),
        ("0b1c.jsonl", None),
        ("agent-a3f9.jsonl", None),
        ("0b1c/subagents/agent-a3f9.txt", None),
    ],
)
def test_subagent_files_name_their_parent_session(name: str, parent: str | None) -> None:
    assert subagent_parent(name) == parent


def test_session_of_file_falls_back_to_the_stem() -> None:
    assert session_of_file("-home-x/abc.jsonl") == "abc"
    assert session_of_file("abc.agent-7.jsonl") == "abc"
