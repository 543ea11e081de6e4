-- Audit events in user order, and where each table's user order ends.
--
-- The Queries and Sync tabs read one user's events: DuckDB skips the row groups whose
-- zone maps (min/max of `user_id`) leave that user out, which only happens when the rows
-- lie ordered by user. `audit_events` is written again ordered by user, time and id, as
-- 0004 did for `files`, `sessions` and `usage_buckets`.
--
-- Rows added later go at the end of the table, in time order, where every user's read
-- scans them. `table_layout` records, for a table kept in user order by
-- service.store.layout, the rowid below which its rows lie in that order; what lies at
-- or above it is the unsorted tail that the maintenance measures and, past a threshold,
-- folds in by writing the table again in bounded steps.
CREATE TABLE audit_events_v5 (
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
INSERT INTO audit_events_v5 SELECT * FROM audit_events ORDER BY user_id, ts, id;
DROP TABLE audit_events;
ALTER TABLE audit_events_v5 RENAME TO audit_events;

CREATE TABLE table_layout (
    table_name    VARCHAR PRIMARY KEY,
    sorted_below  BIGINT NOT NULL     -- rows with a smaller rowid lie in user order
);
INSERT INTO table_layout SELECT 'audit_events', count(*) FROM audit_events;
