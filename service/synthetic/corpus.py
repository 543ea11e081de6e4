"""A deterministic generator of realistic Claude Code transcript trees.

``generate(root, size_bytes=..., seed=...)`` writes ``root/projects/<encoded-cwd>/
<session>.jsonl`` files (plus ``<session>/subagents/agent-<id>.jsonl``) the way Claude
Code does, with the awkward parts real trees have: responses split over several lines
with placeholder ``output_tokens`` on the early ones, lines without ``requestId``,
``/btw`` sidechain replays of parent responses under a new ``requestId``, subagent
files, resumed sessions that copy earlier responses, ``<synthetic>`` error lines,
``null`` fields, torn, invalid and blank lines, invalid UTF-8, sessions across
midnight, several models, megabyte tool results, ``progress`` and
``file-history-snapshot`` lines.

The expected numbers are worked out from what the generator decided to write (which
copy of each response is the real one), not by running the accounting rules, so tests
can compare the parser and dedup against them. The file name an entry carries is its
path relative to ``root/projects``.
"""

from __future__ import annotations

import random
import string
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from service.synthetic import lines

MODELS = (
    "claude-opus-4-6",
    "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5-20251001",
    "claude-opus-4-1-20250805",
    "claude-sonnet-4-20250514",
)
VERSIONS = ("2.0.76", "2.1.12", "2.1.41")
PROJECT_DIRS = (
    "churn_model",
    "sales.v2",
    "q3_report.final",
    "infra",
    "data_team.notebooks",
    "ml_ops",
    "web.app",
)
"""Session n works in /home/analyst/work/PROJECT_DIRS[n % 7]: paths with '_' and '.',
which a project's key turns into '-' as Claude Code names its folder."""
TOOLS = ("Bash", "Read", "Edit", "Grep", "Write", "Glob", "TodoWrite")
BAD_UTF8 = "@@BAD-UTF8@@"
_K = TypeVar("_K", str, str | None)


@dataclass
class Totals:
    input: int = 0
    output: int = 0
    cache_creation: int = 0
    cache_read: int = 0
    entries: int = 0

    def add(self, usage: dict[str, Any]) -> None:
        self.input += usage["input_tokens"]
        self.output += usage["output_tokens"]
        self.cache_creation += usage["cache_creation_input_tokens"]
        self.cache_read += usage["cache_read_input_tokens"]
        self.entries += 1

    def remove(self, usage: dict[str, Any]) -> None:
        self.input -= usage["input_tokens"]
        self.output -= usage["output_tokens"]
        self.cache_creation -= usage["cache_creation_input_tokens"]
        self.cache_read -= usage["cache_read_input_tokens"]
        self.entries -= 1

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read


@dataclass
class SessionExpected:
    """What a session summary must say, from the generator's own bookkeeping."""

    tokens: Totals = field(default_factory=Totals)
    user_messages: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    subagent_dispatches: int = 0
    skill_invocations: int = 0
    mcp_calls: int = 0
    slash_commands: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    files: list[str] = field(default_factory=list)


@dataclass
class Expected:
    """Totals a correct parser + dedup must produce for the generated tree."""

    by_day_model: dict[tuple[str, str | None], Totals] = field(
        default_factory=lambda: defaultdict(Totals)
    )
    sessions: dict[str, SessionExpected] = field(
        default_factory=lambda: defaultdict(SessionExpected)
    )
    quirks: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """How many of each case where the reference tool is known to count differently."""
    quirk_tokens: dict[tuple[str, str, str, str], Totals] = field(
        default_factory=lambda: defaultdict(Totals)
    )
    """Tokens of the quirky responses, by (quirk, UTC month, model, session id)."""
    winners: list[tuple[datetime, str, dict[str, Any]]] = field(default_factory=list)
    """Every winning entry: (timestamp, model, usage) of the copy that counts."""
    credits: list[tuple[datetime, str | None, dict[str, Any], str]] = field(default_factory=list)
    """Every counted response: (time, model or None for <synthetic>, usage, project path)."""
    bytes_written: int = 0
    files: int = 0

    def by_day(self) -> dict[str, Totals]:
        return self._merged(lambda day, _model: day)

    def by_model(self) -> dict[str | None, Totals]:
        return self._merged(lambda _day, model: model)

    def _merged(self, key: Callable[[str, str | None], _K]) -> dict[_K, Totals]:
        merged: dict[_K, Totals] = defaultdict(Totals)
        for (day, model), totals in self.by_day_model.items():
            into = merged[key(day, model)]
            into.input += totals.input
            into.output += totals.output
            into.cache_creation += totals.cache_creation
            into.cache_read += totals.cache_read
            into.entries += totals.entries
        return dict(merged)


def _iso(moment: datetime, style: str = "z") -> str:
    millis = f"{moment.microsecond // 1000:03d}"
    if style == "naive":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + millis
    if style == "offset":
        return (moment + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.") + millis + "+02:00"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + millis + "Z"


class _Writer:
    """One transcript file being written: lines go to a list, bytes to disk at the end;
    ``ctx`` says whose lines they are, ``expected`` is its session's bookkeeping."""

    def __init__(
        self, root: Path, relative: str, ctx: dict[str, Any], expected: SessionExpected
    ) -> None:
        self.path = root / "projects" / relative
        self.relative = relative
        self.ctx = ctx
        self.expected = expected
        expected.files.append(relative)
        self.lines: list[bytes] = []
        self.torn: bytes = b""

    def add(self, obj: dict[str, Any] | bytes) -> bytes:
        raw = obj if isinstance(obj, bytes) else msgspec.json.encode(obj)
        if BAD_UTF8.encode() in raw:
            raw = raw.replace(BAD_UTF8.encode(), b"\xff\xfe\xc3")
        self.lines.append(raw)
        return raw

    def close(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"\n".join(self.lines) + b"\n" + self.torn
        self.path.write_bytes(data)
        return len(data)


class _Generator:
    def __init__(
        self, root: Path, seed: int, size_bytes: int, big_lines: bool, start: datetime
    ) -> None:
        self.root = root
        self.start = start
        self.rng = random.Random(seed)
        self.size_bytes = size_bytes
        self.big_lines = big_lines
        self.expected = Expected()
        words = [
            "".join(self.rng.choices(string.ascii_lowercase, k=self.rng.randint(2, 9)))
            for _ in range(2000)
        ]
        words += ['"quoted"', "back\\slash", "tab\t", "new\nline", "<html>", "ünïcode", "✓"]
        self.filler = " ".join(self.rng.choices(words, k=800_000))
        self.previous: dict[str, list[tuple[bytes, dict[str, Any]]]] = defaultdict(list)
        self.cwd_of: dict[str, str] = {}  # session id -> its project's path

    # -- helpers -----------------------------------------------------------------------

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def token(self, prefix: str) -> str:
        return prefix + "".join(self.rng.choices(string.ascii_letters + string.digits, k=24))

    def text(self, low: int, high: int) -> str:
        size = self.rng.randint(low, high)
        start = self.rng.randrange(0, len(self.filler) - size)
        return self.filler[start : start + size]

    def count(self, session: SessionExpected, moment: datetime) -> None:
        if session.started_at is None or moment < session.started_at:
            session.started_at = moment
        if session.ended_at is None or moment > session.ended_at:
            session.ended_at = moment

    def credit(self, session_id: str, moment: datetime, model: str, usage: dict[str, Any]) -> None:
        day = moment.astimezone(UTC).strftime("%Y-%m-%d")
        self.expected.winners.append((moment, model, usage))
        priced = None if model == "<synthetic>" else model
        self.expected.by_day_model[(day, priced)].add(usage)
        self.expected.sessions[session_id].tokens.add(usage)
        self.expected.credits.append((moment, priced, usage, self.cwd_of[session_id]))

    def quirk_tokens(self, quirk: str, moment: datetime, model: str, session: str) -> Totals:
        return self.expected.quirk_tokens[(quirk, moment.strftime("%Y-%m"), model, session)]

    def usage(self, model: str) -> dict[str, Any]:
        rng = self.rng
        five = rng.choice((0, 0, rng.randint(1, 40_000)))
        hour = rng.choice((0, 0, 0, rng.randint(1, 30_000)))
        usage: dict[str, Any] = {
            "input_tokens": rng.randint(1, 400),
            "cache_creation_input_tokens": five + hour,
            "cache_read_input_tokens": rng.choice((0, rng.randint(1_000, 180_000))),
            "output_tokens": rng.randint(20, 4_000),
            "service_tier": "standard",
        }
        if rng.random() < 0.8:
            usage["cache_creation"] = {
                "ephemeral_5m_input_tokens": five,
                "ephemeral_1h_input_tokens": hour,
            }
        else:
            usage["cache_creation_input_tokens"] = five
            five, hour = five, 0
        if model == "claude-opus-4-6" and rng.random() < 0.1:
            usage["speed"] = "fast"
        elif rng.random() < 0.5:
            usage["speed"] = "standard"
        return usage

    def envelope(
        self,
        ctx: dict[str, Any],
        kind: str,
        moment: datetime,
        parent: str | None,
        ts_style: str = "z",
    ) -> dict[str, Any]:
        line: dict[str, Any] = {
            "parentUuid": parent,
            "isSidechain": ctx["sidechain"],
            "userType": "external",
            "cwd": ctx["cwd"],
            "sessionId": ctx["session_id"],
            "version": ctx["version"],
            "gitBranch": "main",
        }
        if ctx.get("agent_id"):
            line["agentId"] = ctx["agent_id"]
        line["type"] = kind
        line["_ts"] = _iso(moment, ts_style)
        return line

    @staticmethod
    def where(ctx: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of :mod:`lines`' builders that say whose line it is."""
        return {
            "session": ctx["session_id"],
            "sidechain": ctx["sidechain"],
            "cwd": ctx["cwd"],
            "version": ctx["version"],
            "agent_id": ctx.get("agent_id") or None,
        }

    @staticmethod
    def finish(line: dict[str, Any], uid: str) -> dict[str, Any]:
        stamp = line.pop("_ts")
        line["uuid"] = uid
        line["timestamp"] = stamp
        return line

    # -- one API response, possibly over several lines ------------------------------

    def response(
        self,
        writer: _Writer,
        moment: datetime,
        parent: str,
        *,
        model: str,
        tool_uses: list[dict[str, Any]],
        with_request_id: bool = True,
        ts_style: str = "z",
    ) -> tuple[datetime, str, list[tuple[bytes, dict[str, Any]]]]:
        """Writes one response as one line per content block; the last line carries
        the real usage, earlier ones a placeholder ``output_tokens``."""
        rng, ctx = self.rng, writer.ctx
        message_id = self.token("msg_01")
        request_id = self.token("req_011C") if with_request_id else None
        usage = self.usage(model)
        blocks: list[dict[str, Any]] = []
        if rng.random() < 0.5:
            thinking = self.text(50, 600)
            if rng.random() < 0.05:
                thinking += BAD_UTF8
            blocks.append({"type": "thinking", "thinking": thinking, "signature": "sig"})
        if rng.random() < 0.8 or not tool_uses:
            blocks.append({"type": "text", "text": self.text(20, 800)})
        blocks.extend(tool_uses)
        written: list[tuple[bytes, dict[str, Any]]] = []
        for index, block in enumerate(blocks):
            last = index == len(blocks) - 1
            line_usage = dict(usage)
            if not last:
                line_usage["output_tokens"] = rng.randint(1, 8)
            uid = self.uid()
            line = lines.assistant(
                uuid=uid,
                ts=_iso(moment, ts_style),
                message_id=message_id,
                request_id=request_id,
                model=model,
                usage=line_usage,
                content=[block],
                stop_reason="tool_use" if last and tool_uses else None,
                parent=parent,
                **self.where(ctx),
            )
            raw = writer.add(line)
            meta = {
                "model": model,
                "usage": line_usage,
                "moment": moment,
                "final": last,
                "file": writer.relative,
                "session": ctx["session_id"],
                "sidechain": ctx["sidechain"],
            }
            written.append((raw, meta))
            self.count(writer.expected, moment)
            parent = uid
            if not last:
                moment += timedelta(milliseconds=rng.randint(50, 3_000))
        return moment, parent, written

    # -- sessions ------------------------------------------------------------------

    def close(self, writer: _Writer) -> None:
        self.expected.bytes_written += writer.close()
        self.expected.files += 1

    def session(self, index: int) -> None:
        rng = self.rng
        cwd = f"/home/analyst/work/{PROJECT_DIRS[index % 7]}"
        project = "".join(c if c.isascii() and c.isalnum() else "-" for c in cwd)
        session_id = self.uid()
        self.cwd_of[session_id] = cwd
        relative = f"{project}/{session_id}.jsonl"
        expected = self.expected.sessions[session_id]
        ctx: dict[str, Any] = {
            "sidechain": False,
            "cwd": cwd,
            "session_id": session_id,
            "version": rng.choice(VERSIONS),
        }
        writer = _Writer(self.root, relative, ctx, expected)
        day = self.start + timedelta(days=rng.randint(0, 75))
        if rng.random() < 0.25:  # starts before midnight, runs into the next day
            moment = day + timedelta(hours=23, minutes=rng.randint(20, 58))
        else:
            moment = day + timedelta(hours=rng.randint(7, 20), minutes=rng.randint(0, 59))
        moment += timedelta(milliseconds=rng.randint(0, 999))
        model = rng.choice(MODELS)

        writer.add(
            {
                "type": "file-history-snapshot",
                "messageId": self.uid(),
                "snapshot": {
                    "messageId": self.uid(),
                    "trackedFileBackups": {"src/app.py": {"backupFileName": None, "version": 1}},
                    "timestamp": _iso(moment - timedelta(days=3)),
                },
                "isSnapshotUpdate": False,
            }
        )

        # A resumed session starts with copies of responses of an earlier session of
        # the same project, now under this session's id (rule 4 breaks the tie on the
        # file name).
        earlier = self.previous.get(project)
        if earlier and rng.random() < 0.3:
            for raw, meta in earlier[: rng.randint(1, 4)]:
                copy = msgspec.json.decode(raw.decode("utf-8", "replace"))
                copy["sessionId"] = session_id
                writer.add(copy)
                self.count(expected, meta["moment"])
                for block in copy["message"]["content"]:
                    if block["type"] == "tool_use":
                        self.count_tool(expected, block["name"])
                if meta["final"] and relative < meta["file"]:
                    # Same key, same total, same time: the first file name wins.
                    self.expected.sessions[meta["session"]].tokens.remove(meta["usage"])
                    expected.tokens.add(meta["usage"])
                    meta["file"], meta["session"] = relative, session_id
            self.expected.quirks["resumed session copies"] += 1

        parent: str | None = None
        turns = rng.randint(2, 9)
        own_lines: list[tuple[bytes, dict[str, Any]]] = []
        for _turn in range(turns):
            if rng.random() < 0.1:
                model = rng.choice(MODELS)
            moment += timedelta(seconds=rng.choice((5, 30, 120, 400, 700, 1500)))
            parent, moment = self.prompt(writer, moment, parent)
            for _step in range(rng.randint(1, 4)):
                moment += timedelta(seconds=rng.randint(1, 40))
                tool_uses = self.tool_uses(expected)
                no_request = rng.random() < 0.05
                ts_style = "offset" if rng.random() < 0.03 else "z"
                moment, parent, written = self.response(
                    writer,
                    moment,
                    parent,
                    model=model,
                    tool_uses=tool_uses,
                    with_request_id=not no_request,
                    ts_style=ts_style,
                )
                final = written[-1][1]
                self.credit(session_id, final["moment"], model, final["usage"])
                if no_request and len(written) > 1:
                    self.expected.quirks["responses without requestId over several lines"] += 1
                    self.quirk_tokens("requestless", final["moment"], model, session_id).add(
                        final["usage"]
                    )
                own_lines.extend(written)
                for tool in tool_uses:
                    moment += timedelta(seconds=rng.randint(1, 90))
                    parent, moment = self.tool_result(writer, moment, parent, tool)
                    if tool["name"] in ("Task", "Agent"):
                        self.subagent(writer, moment)
            if rng.random() < 0.05:
                moment = self.synthetic(writer, moment, parent)
            if rng.random() < 0.05:
                moment = self.junk(writer, moment, parent)
            if rng.random() < 0.1 and own_lines:
                self.btw(writer, moment, own_lines)

        if rng.random() < 0.02:
            moment += timedelta(seconds=3)
            self.zoneless(writer, moment, parent)
        if rng.random() < 0.05:
            assert parent is not None  # every session has turns
            writer.torn = (
                b'{"parentUuid":"' + parent.encode() + b'","isSidechain":false,"type":"assi'
            )
        self.previous[project] = [line for line in own_lines[-6:] if not line[1]["sidechain"]]
        self.close(writer)

    def prompt(
        self,
        writer: _Writer,
        moment: datetime,
        parent: str | None,
    ) -> tuple[str, datetime]:
        ctx, expected = writer.ctx, writer.expected
        rng = self.rng
        if rng.random() < 0.15:
            name = rng.choice(("review", "commit", "sc:plan", "fix-tests"))
            content: Any = (
                f"<command-message>{name} is running</command-message>\n"
                f"<command-name>/{name}</command-name>\n<command-args></command-args>"
            )
            expected.slash_commands += 1
        elif rng.random() < 0.2:
            content = [{"type": "text", "text": self.text(10, 300)}]
        else:
            content = self.text(10, 400)
        uid = self.uid()
        writer.add(lines.user(content, uuid=uid, ts=_iso(moment), parent=parent, **self.where(ctx)))
        self.count(expected, moment)
        if not ctx["sidechain"]:
            expected.user_messages += 1
        return uid, moment

    @staticmethod
    def count_tool(expected: SessionExpected, name: str) -> None:
        if name in ("Task", "Agent"):
            expected.subagent_dispatches += 1
        elif name.startswith("mcp__"):
            expected.mcp_calls += 1
        else:
            expected.tool_calls += 1
            if name == "Skill":
                expected.skill_invocations += 1

    def tool_uses(
        self, expected: SessionExpected, *, allow_task: bool = True
    ) -> list[dict[str, Any]]:
        rng = self.rng
        uses: list[dict[str, Any]] = []
        for _ in range(rng.choice((0, 0, 1, 1, 1, 2))):
            roll = rng.random()
            if roll < 0.05 and allow_task:
                name, tool_input = "Task", {"description": "explore", "prompt": self.text(20, 200)}
            elif roll < 0.1:
                name, tool_input = "Skill", {"skill": rng.choice(("pdf", "xlsx", "docx"))}
            elif roll < 0.18:
                name, tool_input = "mcp__github__search", {"query": self.text(5, 40)}
            else:
                name = rng.choice(TOOLS)
                tool_input = {"command": self.text(5, 120)}
            self.count_tool(expected, name)
            uses.append(lines.tool_use(self.token("toolu_01"), name, **tool_input))
        return uses

    def tool_result(
        self,
        writer: _Writer,
        moment: datetime,
        parent: str,
        tool: dict[str, Any],
    ) -> tuple[str, datetime]:
        ctx, expected = writer.ctx, writer.expected
        rng = self.rng
        # Progress lines between a call and its result; now and then a big one.
        for _ in range(rng.choice((0, 0, 1, 3))):
            big = self.big_lines and rng.random() < 0.03
            progress = self.envelope(ctx, "progress", moment, parent)
            progress["data"] = {
                "type": "agent_progress",
                "message": {
                    "type": "user",
                    "timestamp": _iso(moment),
                    "message": {
                        "role": "user",
                        "content": [{"type": "text", "text": self.text(20, 200)}],
                    },
                },
                "output": self.text(200_000, 1_500_000) if big else self.text(10, 300),
            }
            progress["toolUseID"] = tool["id"]
            writer.add(self.finish(progress, self.uid()))
            self.count(expected, moment)
            moment += timedelta(seconds=rng.randint(1, 20))
        is_error = rng.random() < 0.08
        if self.big_lines and rng.random() < 0.04:
            output = self.text(100_000, 2_000_000)
        else:
            output = self.text(10, 3_000)
        if rng.random() < 0.02:
            output += BAD_UTF8
        uid = self.uid()
        line = lines.user(
            [lines.tool_result(tool["id"], is_error=is_error, output=output)],
            uuid=uid,
            ts=_iso(moment),
            parent=parent,
            extra={"toolUseResult": {"stdout": output[:2000], "stderr": "", "interrupted": False}},
            **self.where(ctx),
        )
        writer.add(line)
        self.count(expected, moment)
        if is_error:
            expected.tool_errors += 1
        return uid, moment

    def side_file(self, parent: _Writer, agent: str) -> _Writer:
        """The transcript of a subagent (or /btw side question) of ``parent``'s session."""
        session_id = parent.ctx["session_id"]
        folder = parent.relative.rsplit("/", 1)[0]
        relative = f"{folder}/{session_id}/subagents/agent-{agent}.jsonl"
        ctx = dict(parent.ctx, sidechain=True, agent_id=agent)
        return _Writer(self.root, relative, ctx, parent.expected)

    def subagent(self, main: _Writer, moment: datetime) -> None:
        rng = self.rng
        session_id = main.ctx["session_id"]
        writer = self.side_file(main, "".join(rng.choices("0123456789abcdef", k=8)))
        parent: str | None = None
        parent, moment = self.prompt(writer, moment, parent)
        model = rng.choice(MODELS)
        for _ in range(rng.randint(1, 3)):
            moment += timedelta(seconds=rng.randint(1, 30))
            tool_uses = self.tool_uses(writer.expected, allow_task=False)
            moment, parent, written = self.response(
                writer, moment, parent, model=model, tool_uses=tool_uses
            )
            final = written[-1][1]
            self.credit(session_id, final["moment"], model, final["usage"])
            for tool in tool_uses:
                moment += timedelta(seconds=rng.randint(1, 30))
                parent, moment = self.tool_result(writer, moment, parent, tool)
        self.close(writer)

    def btw(
        self, main: _Writer, moment: datetime, own_lines: list[tuple[bytes, dict[str, Any]]]
    ) -> None:
        """A /btw side question: its log replays parent responses as sidechain lines
        under a new requestId (with more cache reads), then answers once."""
        rng = self.rng
        session_id, expected = main.ctx["session_id"], main.expected
        writer = self.side_file(main, "a" + "".join(rng.choices("0123456789abcdef", k=7)))
        for raw, _meta in own_lines[-3:]:
            copy = msgspec.json.decode(raw.decode("utf-8", "replace"))
            copy["isSidechain"] = True
            copy["requestId"] = self.token("req_011C")
            copy["message"]["usage"]["cache_read_input_tokens"] += 50_000
            writer.add(copy)
            self.count(expected, datetime.fromisoformat(copy["timestamp"]))
        self.expected.quirks["btw replays"] += 1
        moment += timedelta(seconds=5)
        parent, moment = self.prompt(writer, moment, None)
        moment += timedelta(seconds=3)
        model = rng.choice(MODELS)
        _moment, _parent, written = self.response(writer, moment, parent, model=model, tool_uses=[])
        final = written[-1][1]
        self.credit(session_id, final["moment"], model, final["usage"])
        self.close(writer)

    def synthetic(
        self,
        writer: _Writer,
        moment: datetime,
        parent: str | None,
    ) -> datetime:
        ctx, expected = writer.ctx, writer.expected
        moment += timedelta(seconds=2)
        line = self.envelope(ctx, "assistant", moment, parent)
        del line["type"]
        usage = lines.no_usage()
        line["message"] = {
            "id": self.uid(),
            "model": "<synthetic>",
            "role": "assistant",
            "type": "message",
            "content": [{"type": "text", "text": "API Error: Request was aborted."}],
            "usage": usage,
        }
        line["type"] = "assistant"
        line["isApiErrorMessage"] = True
        writer.add(self.finish(line, self.uid()))
        self.count(expected, moment)
        self.credit(ctx["session_id"], moment, "<synthetic>", usage)
        return moment

    def junk(
        self,
        writer: _Writer,
        moment: datetime,
        parent: str | None,
    ) -> datetime:
        """Lines that must be skipped: blank, invalid JSON, not an object, and a
        response whose ``costUSD`` is null (rule 1: not an entry)."""
        ctx, expected = writer.ctx, writer.expected
        rng = self.rng
        writer.add(b"")
        writer.add(b"   ")
        writer.add(b'{"type":"assistant","message":{"usage":{"input_tokens":5')
        writer.add(rng.choice((b"[1,2,3]", b"null", b"42", b'"text"')))
        moment += timedelta(seconds=1)
        line = self.envelope(ctx, "assistant", moment, parent)
        del line["type"]
        line["message"] = {
            "id": self.token("msg_01"),
            "model": rng.choice(MODELS),
            "role": "assistant",
            "content": [{"type": "text", "text": "x"}],
            "usage": {"input_tokens": 7, "output_tokens": 9},
        }
        line["requestId"] = self.token("req_011C")
        line["type"] = "assistant"
        line["costUSD"] = None
        writer.add(self.finish(line, self.uid()))
        self.count(expected, moment)
        writer.add(
            {
                "type": "summary",
                "summary": "Working on things",
                "leafUuid": self.uid(),
            }
        )
        return moment

    def zoneless(
        self,
        writer: _Writer,
        moment: datetime,
        parent: str | None,
    ) -> None:
        """One response stamped without a zone (taken as UTC by our rules)."""
        ctx = writer.ctx
        model = self.rng.choice(MODELS)
        _moment, _parent, written = self.response(
            writer,
            moment,
            parent or "x",
            model=model,
            tool_uses=[],
            ts_style="naive",
        )
        final = written[-1][1]
        self.credit(ctx["session_id"], final["moment"], model, final["usage"])
        self.expected.quirks["timestamps without zone"] += 1
        self.quirk_tokens("zoneless", final["moment"], model, ctx["session_id"]).add(final["usage"])

    def run(self) -> Expected:
        index = 0
        while self.expected.bytes_written < self.size_bytes or index < 3:
            self.session(index)
            index += 1
        return self.expected


def generate(
    root: Path | str,
    *,
    size_bytes: int = 2_000_000,
    seed: int = 0,
    big_lines: bool = True,
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC),
) -> Expected:
    """Write a tree of about ``size_bytes`` under ``root`` and return what it holds.

    The same seed, size and start always give the same bytes. ``big_lines=False`` keeps
    every line small (for fast tests that still cover every other case). Sessions start on
    days from ``start`` (a UTC midnight) to 75 days after it.
    """
    return _Generator(Path(root), seed, size_bytes, big_lines, start).run()


def transcript_files(root: Path | str) -> list[tuple[Path, str]]:
    """Every transcript under ``root/projects`` with the name entries carry."""
    base = Path(root) / "projects"
    return sorted((path, path.relative_to(base).as_posix()) for path in base.rglob("*.jsonl"))
