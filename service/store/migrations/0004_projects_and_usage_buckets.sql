-- Projects and per-user usage aggregates.
--
-- A session's project is the first `cwd` of its files (its own transcript first; kept in
-- each file's parser state); `project_key` is that path with every character other than
-- A-Z a-z 0-9 replaced by `-` ('' when no line of the session has a cwd).
--
-- `usage_buckets` holds the sums of the winning usage entries per user, 15-minute UTC
-- bucket of the winning copy's timestamp, session (the file that holds the copy) and
-- model, with the session's project: ingest keeps it in the same transaction as the
-- entries, from the batch's winners gained and lost, so the tokens answer reads it
-- instead of every entry (any time zone whose offset is a multiple of 15 minutes sums
-- its days exactly from it). `bucket_key` finds a row by one indexed column (a hash of
-- user, session, bucket and model, as service.store.usage.bucket_key computes it;
-- readers compare the columns too). The migration's Python step
-- (service.store.migrations.steps) fills the projects and the buckets.

-- Every per-user read (a tab's first page) finds a user's rows by the zone maps of
-- `user_id`, which only skip row groups when the rows lie ordered by user: `files` and
-- `sessions` are written again in that order (rows added later go at the end).
CREATE TABLE files_v3 (
    path           VARCHAR PRIMARY KEY,
    user_id        VARCHAR,
    name           VARCHAR NOT NULL,
    session_file   VARCHAR NOT NULL,
    is_subagent    BOOLEAN NOT NULL DEFAULT false,
    size           BIGINT NOT NULL DEFAULT 0,
    read_offset    BIGINT NOT NULL DEFAULT 0,
    fingerprint    VARCHAR,
    state          BLOB,
    status         VARCHAR NOT NULL DEFAULT 'pending',
    error          VARCHAR,
    lines          BIGINT NOT NULL DEFAULT 0,
    bad_lines      BIGINT NOT NULL DEFAULT 0,
    first_seen_at  TIMESTAMPTZ NOT NULL,
    processed_at   TIMESTAMPTZ
);
INSERT INTO files_v3 SELECT * FROM files ORDER BY user_id, first_seen_at;
DROP TABLE files;
ALTER TABLE files_v3 RENAME TO files;

CREATE TABLE sessions_v3 (
    key                    VARCHAR PRIMARY KEY,
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
    kept                   BLOB,
    project                VARCHAR,                       -- NULL: no cwd in the session's lines
    project_key            VARCHAR NOT NULL DEFAULT ''
);
-- (rebuilt rather than altered, as in 0002)
INSERT INTO sessions_v3 SELECT *, NULL, '' FROM sessions ORDER BY user_id, started_at;
DROP TABLE sessions;
ALTER TABLE sessions_v3 RENAME TO sessions;

CREATE TABLE usage_buckets (
    bucket_key             BIGINT NOT NULL,
    user_id                VARCHAR NOT NULL,
    bucket                 TIMESTAMPTZ NOT NULL,          -- start of the 15-minute UTC bucket
    session_file           VARCHAR NOT NULL,
    model                  VARCHAR,
    project_key            VARCHAR NOT NULL,
    entries                BIGINT NOT NULL,               -- winning entries (never 0: such a row goes)
    input_tokens           BIGINT NOT NULL,
    output_tokens          BIGINT NOT NULL,
    cache_read_tokens      BIGINT NOT NULL,
    cache_creation_tokens  BIGINT NOT NULL,
    cost                   DECIMAL(38, 12) NOT NULL,      -- exact sum of the priced entries' costs
    unpriced               BIGINT NOT NULL                -- entries whose model has no price
);
