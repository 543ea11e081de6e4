"""``agnes-activity demo``: the product alive within a minute of cloning it.

Three analysts get 30 days of history and then a stream of activity while the server
runs, all through the routes real data takes, so the demo shows what production does:

- History is written the way Claude Code writes it (several models, tool calls and tool
  errors, subagent files, API error notices, slash commands, weekends and other days
  without work) into each analyst's folder, then brought in by the backfill that
  ``agnes-activity ingest`` uses. Audit history (queries, syncs) is appended to the spool
  with :mod:`service.spool_writer`, as a query service would. Both are read before the
  server starts, so the dashboard shows history the moment its URL is printed.
- The stream (:class:`Stream`): every ``interval`` seconds one analyst's Claude Code writes
  more of today's session and :func:`service.push.push` uploads it over HTTP with that
  analyst's token, another analyst runs a query (a line in the spool), and every few
  ticks one pulls (``GET /api/sync/manifest``) and a sync is reported
  (``POST /api/audit/events`` with a service token).

Everything lives in one temporary folder: ``data/`` (the service's data dir) and
``analysts/<name>/`` (each analyst's machine: ``history/`` and ``.claude/projects/``).
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec

from service import operations, push
from service.ingest.backfill import archive_all, find_transcripts
from service.ingest.pipeline import Ingest
from service.models import AuditEvent
from service.settings import Settings
from service.spool_writer import append_events, daily_name
from service.store import Store
from service.synthetic import lines

__all__ = ["Analyst", "Demo", "Stream", "seed"]

log = logging.getLogger("agnes.demo")

HISTORY_DAYS = 30
CLAUDE_CODE_VERSION = "2.1.41"
QUERY_WRITER = "query-service"
LIVE_PACE = 0.05
"""Live sessions run 20 times faster than real ones, so their timestamps stay near now."""


@dataclass(frozen=True)
class Profile:
    """How one demo analyst works: models they use, projects, how busy they are."""

    email: str
    name: str
    models: tuple[str, ...]
    projects: tuple[str, ...]
    sessions_per_day: tuple[int, int]


PROFILES = (
    Profile(
        "ada@example.com",
        "ada",
        ("claude-opus-4-6", "claude-opus-4-6", "claude-haiku-4-5-20251001"),
        ("revenue-forecast", "churn-model"),
        (1, 3),
    ),
    Profile(
        "grace@example.com",
        "grace",
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805"),
        ("warehouse-dbt", "marketing-attribution"),
        (1, 2),
    ),
    Profile(
        "linus@example.com",
        "linus",
        ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"),
        ("ops-dashboards",),
        (2, 4),
    ),
)

PROMPTS = (
    "How many orders came in last week, by region?",
    "Why does the churn model score drop on Mondays?",
    "Add a test for the currency conversion in revenue.sql",
    "Rewrite this query so it uses the daily snapshot table",
    "Plot weekly active customers for the last quarter",
    "The dbt run fails on stg_payments, can you look?",
    "Summarise what changed in the attribution numbers since Friday",
    "Which campaigns have a cost per signup above 40 EUR?",
    "Make the forecast notebook run end to end again",
    "Check the row counts of yesterday's load against the source",
)
SLASH_COMMANDS = ("/review", "/compact", "/init", "/cost")
TABLES = (
    "sales.orders",
    "sales.order_items",
    "finance.revenue_daily",
    "marketing.campaigns",
    "product.events",
    "crm.customers",
)
TOOL_ERRORS = (
    'Error: relation "stg_payments_v2" does not exist',
    "Exit code 1\nTraceback (most recent call last): KeyError: 'region'",
    "File has not been read yet. Read it first before writing to it.",
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Session:
    """One Claude Code session of one analyst, appended to exchange by exchange the way
    Claude Code writes it: one line per content block, each repeating the response's id,
    request id and usage (a placeholder ``output_tokens`` on all but the last)."""

    def __init__(
        self,
        projects: Path,
        profile: Profile,
        project: str,
        rng: random.Random,
        pace: float = 1.0,
    ) -> None:
        self.rng = rng
        self.profile = profile
        self.id = self._uid()
        self.cwd = f"/home/{profile.name}/work/{project}"
        self.folder = projects / self.cwd.replace("/", "-")
        self.path = self.folder / f"{self.id}.jsonl"
        self.model = rng.choice(profile.models)
        self.exchanges = 0
        self.context = rng.randint(8_000, 20_000)  # tokens in the cache, grows with the session
        self.parent: str | None = None
        self.pace = pace
        self.ended: datetime | None = None

    def _later(self, moment: datetime, low: int, high: int) -> datetime:
        """``moment`` plus a pause of ``low`` to ``high`` seconds, scaled by the pace."""
        return moment + timedelta(seconds=self.rng.randint(low, high) * self.pace)

    def _uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _where(self, agent: str | None) -> dict[str, Any]:
        """Who writes the next line (:mod:`service.synthetic.lines`' keyword arguments),
        chained to the line before it as Claude Code does."""
        uid = self._uid()
        where = {
            "uuid": uid,
            "parent": self.parent,
            "session": self.id,
            "sidechain": agent is not None,
            "cwd": self.cwd,
            "version": CLAUDE_CODE_VERSION,
            "agent_id": agent,
        }
        self.parent = uid
        return where

    def _prompt(self, text: str, moment: datetime, agent: str | None = None) -> dict[str, Any]:
        return lines.user(text, ts=_iso(moment), **self._where(agent))

    def _usage(self) -> dict[str, Any]:
        rng = self.rng
        written = rng.randint(300, 6_000)
        usage = {
            "input_tokens": rng.randint(3, 40),
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": self.context,
            "output_tokens": rng.randint(80, 1_800),
            "cache_creation": {
                "ephemeral_5m_input_tokens": written,
                "ephemeral_1h_input_tokens": 0,
            },
            "service_tier": "standard",
        }
        self.context += written
        return usage

    def _response(
        self, moment: datetime, blocks: list[dict[str, Any]], agent: str | None = None
    ) -> list[dict[str, Any]]:
        message_id = "msg_01" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:24]
        request_id = "req_011C" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:20]
        usage = self._usage()
        written = []
        for index, block in enumerate(blocks):
            last = index == len(blocks) - 1
            stop = "tool_use" if block["type"] == "tool_use" else "end_turn"
            written.append(
                lines.assistant(
                    ts=_iso(moment),
                    message_id=message_id,
                    request_id=request_id,
                    model=self.model,
                    usage=usage if last else {**usage, "output_tokens": self.rng.randint(1, 8)},
                    content=[block],
                    stop_reason=stop if last else None,
                    **self._where(agent),
                )
            )
        return written

    def _tool_use(self) -> dict[str, Any]:
        rng = self.rng
        name = rng.choice(("Bash", "Bash", "Read", "Read", "Edit", "Grep", "Write", "Skill"))
        tool_input: dict[str, Any] = {
            "Bash": {
                "command": f"duckdb warehouse.db -c 'select count(*) from {rng.choice(TABLES)}'"
            },
            "Read": {"file_path": f"{self.cwd}/models/{rng.choice(TABLES)}.sql"},
            "Edit": {
                "file_path": f"{self.cwd}/notebooks/analysis.py",
                "old_string": "a",
                "new_string": "b",
            },
            "Grep": {"pattern": "revenue_eur", "path": self.cwd},
            "Write": {"file_path": f"{self.cwd}/reports/summary.md", "content": "# Summary\n"},
            "Skill": {"skill": "sql-style"},
        }[name]
        if rng.random() < 0.1:
            name, tool_input = (
                "mcp__warehouse__query",
                {"sql": f"select * from {rng.choice(TABLES)} limit 20"},
            )
        return lines.tool_use("toolu_01" + self._uid()[:20], name, **tool_input)

    def _result(
        self, tool: dict[str, Any], moment: datetime, agent: str | None = None
    ) -> dict[str, Any]:
        error = self.rng.random() < 0.07
        output = self.rng.choice(TOOL_ERRORS) if error else f"{self.rng.randint(12, 90_000)} rows"
        return lines.user(
            [lines.tool_result(tool["id"], is_error=error, output=output)],
            ts=_iso(moment),
            extra={
                "toolUseResult": {
                    "stdout": "" if error else output,
                    "stderr": output if error else "",
                    "interrupted": False,
                }
            },
            **self._where(agent),
        )

    def exchange(self, moment: datetime) -> datetime:
        """Append one prompt and the work it sets off; returns when it ended."""
        rng = self.rng
        out: list[dict[str, Any]] = []
        if rng.random() < 0.08:
            command = rng.choice(SLASH_COMMANDS)
            text = (
                f"<command-message>{command[1:]}</command-message>\n"
                f"<command-name>{command}</command-name>"
            )
        else:
            text = rng.choice(PROMPTS)
        out.append(self._prompt(text, moment))
        for _ in range(rng.randint(1, 4)):
            moment = self._later(moment, 3, 40)
            if rng.random() < 0.03:  # an error notice Claude Code makes up itself
                out.append(
                    lines.assistant(
                        ts=_iso(moment),
                        message_id=self._uid(),
                        request_id=None,
                        model="<synthetic>",
                        usage=lines.no_usage(),
                        content=[{"type": "text", "text": "API Error: 529 Overloaded. Retrying."}],
                        extra={"isApiErrorMessage": True},
                        **self._where(None),
                    )
                )
                continue
            blocks: list[dict[str, Any]] = [
                {"type": "text", "text": "Let me look at the data first."}
            ]
            if rng.random() < 0.12:
                task = lines.tool_use(
                    "toolu_01" + self._uid()[:20],
                    "Task",
                    description="Profile the source tables",
                    subagent_type="general-purpose",
                )
                out += self._response(moment, [*blocks, task])
                moment = self._subagent(moment)
                out.append(self._result(task, moment))
                continue
            tools = [self._tool_use() for _ in range(rng.choice((0, 1, 1, 2)))]
            out += self._response(moment, blocks + tools)
            for tool in tools:
                moment = self._later(moment, 1, 25)
                out.append(self._result(tool, moment))
        moment = self._later(moment, 5, 60)
        out += self._response(
            moment, [{"type": "text", "text": "Done: the numbers are in the report."}]
        )
        self._append(self.path, out)
        self.exchanges += 1
        self.ended = moment
        return moment

    def _subagent(self, moment: datetime) -> datetime:
        """A Task dispatch: the subagent's own transcript, tied to this session by its id."""
        agent = self._uid().replace("-", "")[:8]
        parent, self.parent = self.parent, None
        out = [self._prompt("Profile the source tables and report row counts.", moment, agent)]
        for _ in range(self.rng.randint(1, 3)):
            moment = self._later(moment, 2, 30)
            tool = self._tool_use()
            out += self._response(moment, [tool], agent)
            moment = self._later(moment, 1, 20)
            out.append(self._result(tool, moment, agent))
        self._append(self.folder / self.id / "subagents" / f"agent-{agent}.jsonl", out)
        self.parent = parent
        return self._later(moment, 2, 2)

    @staticmethod
    def _append(path: Path, written: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as out:
            out.write(lines.jsonl(*written))


def _query_event(user_id: str, moment: datetime, rng: random.Random) -> AuditEvent:
    table = rng.choice(TABLES)
    failed = rng.random() < 0.06
    return AuditEvent(
        timestamp=moment,
        user_id=user_id,
        action="query.run",
        resource=f"warehouse.{table}",
        params={
            "sql": f"select * from {table} where day >= current_date - 7",
            "rows": 0 if failed else rng.randint(1, 250_000),
        },
        result="error" if failed else "ok",
        duration_ms=round(rng.uniform(40, 9_000), 1),
        client_kind=rng.choice(("cli", "notebook", "api")),
        client_ip=f"10.20.{rng.randint(0, 9)}.{rng.randint(2, 250)}",
        correlation_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    )


def _sync_event(user_id: str, moment: datetime, rng: random.Random) -> AuditEvent:
    return AuditEvent(
        timestamp=moment,
        user_id=user_id,
        action="sync.trigger",
        resource=rng.choice(("warehouse", "crm", "marketing")),
        params={"tables": rng.randint(3, 40)},
        result="ok",
        duration_ms=round(rng.uniform(800, 20_000), 1),
        client_kind="cli",
    )


@dataclass
class Analyst:
    profile: Profile
    user_id: str
    token: str
    home: Path  # their machine: history/ and .claude/projects/
    rng: random.Random
    session: _Session | None = None

    @property
    def projects(self) -> Path:
        return self.home / ".claude" / "projects"


@dataclass
class Demo:
    settings: Settings
    analysts: list[Analyst]
    service_token: str  # posts audit events for anyone, as another service would
    files: int = 0  # transcripts of the history
    events: int = 0  # audit events of the history


def _workdays(rng: random.Random, today: date) -> list[date]:
    """The days of the last month this analyst worked: most weekdays, a rare weekend."""
    days = []
    for back in range(HISTORY_DAYS, 0, -1):
        day = today - timedelta(days=back)
        weekend = day.weekday() >= 5
        if rng.random() < (0.1 if weekend else 0.8):
            days.append(day)
    return days


def _write_history(analyst: Analyst, audit_dir: Path, today: date) -> int:
    """The analyst's last 30 days: transcripts in ``home/history``, audit events in the
    spool (one file per writer and day, as a query service writes them). Returns how many
    audit events were written."""
    rng, profile = analyst.rng, analyst.profile
    history = analyst.home / "history"
    events = 0
    for day in _workdays(rng, today):
        start = datetime(day.year, day.month, day.day, rng.randint(7, 10), tzinfo=UTC)
        moment = start + timedelta(minutes=rng.randint(0, 59))
        for _ in range(rng.randint(*profile.sessions_per_day)):
            session = _Session(history, profile, rng.choice(profile.projects), rng)
            for _ in range(rng.randint(2, 9)):
                moment = session.exchange(moment) + timedelta(minutes=rng.randint(1, 9))
            moment += timedelta(minutes=rng.randint(30, 150))
        queries = [
            _query_event(analyst.user_id, start + timedelta(minutes=rng.randint(0, 600)), rng)
            for _ in range(rng.randint(1, 8))
        ]
        if rng.random() < 0.5:
            queries.append(
                _sync_event(analyst.user_id, start + timedelta(hours=rng.randint(0, 9)), rng)
            )
        append_events(audit_dir, queries, name=daily_name(QUERY_WRITER, day))
        events += len(queries)
    return events


def seed(settings: Settings, store: Store, root: Path, *, seed: int = 7) -> Demo:
    """Three analysts with tokens and 30 days of history, ingested into ``store``."""
    rng = random.Random(seed)
    analysts = []
    for index, profile in enumerate(PROFILES):
        user = store.write_sync(operations.add_user, profile.email, index == 0)
        token = store.write_sync(operations.create_token, profile.email, "demo").token
        home = root / "analysts" / profile.name
        analysts.append(Analyst(profile, user.id, token, home, random.Random(rng.random())))
    service = store.write_sync(
        operations.create_token, PROFILES[0].email, "demo-services", None, True
    )
    demo = Demo(settings, analysts, service.token)
    today = datetime.now(UTC).date()
    archived: list[Path] = []
    for analyst in analysts:
        demo.events += _write_history(analyst, settings.audit_dir, today)
        sources = find_transcripts([analyst.home / "history"])
        archived += archive_all(sources, settings.sessions_dir / analyst.user_id)
    demo.files = len(archived)
    Ingest(settings, store).run([*archived, *sorted(settings.audit_dir.glob("*.jsonl"))])
    return demo


class Stream:
    """Simulated activity against the running server, on a background thread."""

    def __init__(self, demo: Demo, interval: float) -> None:
        self.demo = demo
        self.interval = interval
        self.rng = random.Random(11)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, base_url: str) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(base_url,), name="agnes-demo-stream", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, base_url: str) -> None:
        tick = 0
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while not self._stop.wait(self.interval if tick else 0.2):
                try:
                    self.tick(http, base_url, tick)
                except Exception as exc:  # the demo goes on; the server may be stopping
                    if not self._stop.is_set():
                        log.warning("demo stream: %s", exc)
                tick += 1

    def tick(self, http: httpx.Client, base_url: str, tick: int) -> None:
        analysts = self.demo.analysts
        now = datetime.now(UTC)
        writer = analysts[tick % len(analysts)]
        self._work(writer, now)
        pushed = push.push(base_url, writer.token, writer.projects, retries=1)
        if pushed.exit_code != push.EXIT_OK:
            raise RuntimeError(pushed.error or f"push of {writer.profile.email} failed")
        asker = analysts[(tick + 1) % len(analysts)]
        append_events(
            self.demo.settings.audit_dir,
            [_query_event(asker.user_id, now, self.rng)],
            name=daily_name(QUERY_WRITER),
        )
        if tick % 4 == 3:
            puller = analysts[(tick + 2) % len(analysts)]
            auth = {"Authorization": f"Bearer {puller.token}"}
            http.get("/api/sync/manifest", headers=auth).raise_for_status()
            service = {"Authorization": f"Bearer {self.demo.service_token}"}
            event = msgspec.to_builtins(_sync_event(puller.user_id, now, self.rng))
            http.post("/api/audit/events", json=[event], headers=service).raise_for_status()

    def _work(self, analyst: Analyst, now: datetime) -> None:
        """The analyst's Claude Code writes the next exchange of today's session, starting a
        new session now and then."""
        session = analyst.session
        if session is None or session.exchanges >= analyst.rng.randint(4, 8):
            profile = analyst.profile
            project = analyst.rng.choice(profile.projects)
            session = _Session(analyst.projects, profile, project, analyst.rng, pace=LIVE_PACE)
            analyst.session = session
        start = now - timedelta(seconds=5)
        session.exchange(max(start, session.ended or start))
