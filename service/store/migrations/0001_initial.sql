-- Raw facts (users, tokens, files, usage entries, audit events, errors) and the per-user
-- derived tables that the stats endpoints read. Derived tables can be rebuilt from the
-- raw files at any time (`agnes-activity reprocess`).

CREATE TABLE users (
    id            VARCHAR PRIMARY KEY,          -- UUID, also the folder name under user_sessions/
    email         VARCHAR NOT NULL UNIQUE,
    is_admin      BOOLEAN NOT NULL DEFAULT false,
    is_active     BOOLEAN NOT NULL DEFAULT true,
    created_at    TIMESTAMPTZ NOT NULL,
    last_pull_at  TIMESTAMPTZ
);

-- Personal access tokens: only a SHA-256 of the token is kept, plus a short prefix to show.
CREATE TABLE tokens (
    id          VARCHAR PRIMARY KEY,
    user_id     VARCHAR NOT NULL,
    name        VARCHAR NOT NULL,
    prefix      VARCHAR NOT NULL,
    hash        VARCHAR NOT NULL UNIQUE,
    is_service  BOOLEAN NOT NULL DEFAULT false,   -- may post audit events for any user
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);

-- Browser sessions made by signing in with a token; they end with that token.
CREATE TABLE web_sessions (
    hash        VARCHAR PRIMARY KEY,
    user_id     VARCHAR NOT NULL,
    token_id    VARCHAR NOT NULL,
    csrf        VARCHAR NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

-- Every change to a user's data bumps their version (live push and ETags build on it).
CREATE TABLE user_versions (
    user_id  VARCHAR PRIMARY KEY,
    version  BIGINT NOT NULL
);

-- Every transcript file seen under user_sessions/, with where reading stopped.
CREATE TABLE files (
    path           VARCHAR PRIMARY KEY,     -- relative to user_sessions/: <folder>/<name>
    user_id        VARCHAR,                 -- NULL while the folder matches no user (orphaned)
    name           VARCHAR NOT NULL,
    session_file   VARCHAR NOT NULL,        -- the session's own transcript (itself, unless a subagent file)
    is_subagent    BOOLEAN NOT NULL DEFAULT false,
    size           BIGINT NOT NULL DEFAULT 0,
    read_offset    BIGINT NOT NULL DEFAULT 0,
    fingerprint    VARCHAR,                 -- digest of the bytes before read_offset
    state          BLOB,                    -- the parser's TranscriptState (msgpack)
    status         VARCHAR NOT NULL DEFAULT 'pending',   -- pending | processed | error
    error          VARCHAR,
    lines          BIGINT NOT NULL DEFAULT 0,
    bad_lines      BIGINT NOT NULL DEFAULT 0,
    first_seen_at  TIMESTAMPTZ NOT NULL,
    processed_at   TIMESTAMPTZ
);

-- Every usage entry read (TRANSCRIPTS.md rule 1), every copy of it; ``winner`` marks the
-- copy that counts after dedup (rules 3 to 5) over all of the user's files. Keeping the
-- losing copies lets a later or rewritten file change the winner exactly.
CREATE TABLE usage_entries (
    user_id                VARCHAR NOT NULL,
    file_path              VARCHAR NOT NULL,
    line_key               VARCHAR NOT NULL,
    file_name              VARCHAR NOT NULL,
    session_file           VARCHAR NOT NULL,
    message_id             VARCHAR,
    request_id             VARCHAR,
    session_id             VARCHAR NOT NULL,
    ts                     TIMESTAMPTZ NOT NULL,
    model                  VARCHAR,
    input_tokens           BIGINT NOT NULL,
    output_tokens          BIGINT NOT NULL,
    cache_read_tokens      BIGINT NOT NULL,
    cache_creation_tokens  BIGINT NOT NULL,
    cache_creation_5m      BIGINT NOT NULL,
    cache_creation_1h      BIGINT NOT NULL,
    is_sidechain           BOOLEAN NOT NULL,
    speed                  VARCHAR,
    cost_usd               DOUBLE,          -- NULL: the model has no known price
    winner                 BOOLEAN NOT NULL
);

-- One row per session: a transcript file with its subagent files.
CREATE TABLE sessions (
    user_id                VARCHAR NOT NULL,
    session_file           VARCHAR NOT NULL,
    session_id             VARCHAR NOT NULL,
    started_at             TIMESTAMPTZ,
    ended_at               TIMESTAMPTZ,
    active_seconds         BIGINT NOT NULL DEFAULT 0,
    wall_seconds           BIGINT NOT NULL DEFAULT 0,
    user_messages          BIGINT NOT NULL DEFAULT 0,
    assistant_messages     BIGINT NOT NULL DEFAULT 0,
    tool_calls             BIGINT NOT NULL DEFAULT 0,
    tool_errors            BIGINT NOT NULL DEFAULT 0,
    skill_invocations      BIGINT NOT NULL DEFAULT 0,
    subagent_dispatches    BIGINT NOT NULL DEFAULT 0,
    mcp_calls              BIGINT NOT NULL DEFAULT 0,
    slash_commands         BIGINT NOT NULL DEFAULT 0,
    distinct_tools         VARCHAR[] NOT NULL DEFAULT [],
    distinct_skills        VARCHAR[] NOT NULL DEFAULT [],
    primary_model          VARCHAR,
    input_tokens           BIGINT NOT NULL DEFAULT 0,
    output_tokens          BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens      BIGINT NOT NULL DEFAULT 0,
    cache_creation_tokens  BIGINT NOT NULL DEFAULT 0,
    cost_usd               DOUBLE,
    PRIMARY KEY (user_id, session_file)
);

CREATE TABLE audit_events (
    id              VARCHAR PRIMARY KEY,
    ts              TIMESTAMPTZ NOT NULL,
    user_id         VARCHAR NOT NULL,
    action          VARCHAR NOT NULL,
    resource        VARCHAR,
    params          VARCHAR NOT NULL DEFAULT '{}',   -- a JSON object
    result          VARCHAR,
    duration_ms     DOUBLE,
    client_kind     VARCHAR,
    client_ip       VARCHAR,
    correlation_id  VARCHAR,
    ingested_at     TIMESTAMPTZ NOT NULL
);

-- Audit spool files under audit/, read append-only from a stored offset.
CREATE TABLE spool_files (
    path         VARCHAR PRIMARY KEY,
    read_offset  BIGINT NOT NULL DEFAULT 0,
    fingerprint  VARCHAR,
    bad_lines    BIGINT NOT NULL DEFAULT 0
);

-- Problems met while ingesting, kept for operators; ingest never stops for them.
CREATE TABLE processing_errors (
    path         VARCHAR NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    reason       VARCHAR NOT NULL
);
