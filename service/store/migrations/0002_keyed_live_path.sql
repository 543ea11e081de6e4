-- The live path (an append of a few lines) finds what it needs by one-column keys: DuckDB
-- answers `column = ?` and short `column IN (...)` lists from an index, but scans the
-- whole table for anything else (a compound key included). On a database of 1,000 users
-- and 8.8 million usage entries a scan costs 25-50 ms; a keyed lookup about 1 ms.

-- A response's stored copies, found by a hash of (user, message.id). The hash is the
-- first 8 bytes of an MD5 read little-endian, shifted right by one bit to fit a BIGINT
-- (service.store.ingest.message_key).
CREATE TABLE usage_entries_keyed (
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
    winner                 BOOLEAN NOT NULL,
    message_key            BIGINT           -- NULL when message_id is
);
-- (rebuilt rather than altered: DuckDB builds no index on a table updated in the same
-- transaction)
INSERT INTO usage_entries_keyed
SELECT *, (md5_number_upper(user_id || '/' || message_id) >> 1)::BIGINT FROM usage_entries;
DROP TABLE usage_entries;
ALTER TABLE usage_entries_keyed RENAME TO usage_entries;
CREATE INDEX usage_entries_message_key ON usage_entries (message_key);

-- A session by one key (`user_id/session_file`), with what its next update starts from
-- (`kept`, msgpack: the paths of its files that have been read, and the per-model sums of
-- its winning entries; a BLOB because DuckDB updates LIST columns slowly). NULL on rows
-- written before this migration: the next update finds both by a scan, once.
CREATE TABLE sessions_keyed (
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
    kept                   BLOB
);
INSERT INTO sessions_keyed
SELECT user_id || '/' || session_file, *, NULL FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_keyed RENAME TO sessions;
