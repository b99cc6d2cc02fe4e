-- ward status tables, PostgreSQL dialect. Same tables and meaning as
-- migrations/sqlite/0001_status_tables.sql; documented in docs/SCHEMA.md.
-- Released migrations are never edited: add a new numbered file instead.
-- Integers are BIGINT throughout, like SQLite's 64-bit INTEGER.

CREATE TABLE supervisors (
    host            TEXT        NOT NULL PRIMARY KEY,
    pid             BIGINT      NOT NULL,
    version         TEXT        NOT NULL,
    config_path     TEXT        NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    last_seen_at    TIMESTAMPTZ NOT NULL,
    stopped_at      TIMESTAMPTZ,
    refresh_ms      BIGINT      NOT NULL,
    dropped_events  BIGINT      NOT NULL DEFAULT 0
);

CREATE TABLE worker_status (
    host                  TEXT        NOT NULL,
    program               TEXT        NOT NULL,
    instance              BIGINT      NOT NULL,
    name                  TEXT        NOT NULL,
    state                 TEXT        NOT NULL,
    pid                   BIGINT,
    started_at            TIMESTAMPTZ,
    state_since           TIMESTAMPTZ NOT NULL,
    uptime_ms             BIGINT,
    restarts              BIGINT      NOT NULL DEFAULT 0,
    last_exit_code        BIGINT,
    last_exit_signal      BIGINT,
    last_exit_at          TIMESTAMPTZ,
    next_start_at         TIMESTAMPTZ,
    message               TEXT,
    cpu_percent           DOUBLE PRECISION,
    rss_bytes             BIGINT,
    log_bytes_dropped     BIGINT      NOT NULL DEFAULT 0,
    last_heartbeat_at     TIMESTAMPTZ,
    health                TEXT,
    status_text           TEXT,
    jobs_processed        BIGINT,
    error_count           BIGINT,
    circuit_breaker_open  BOOLEAN,
    current_task          TEXT,
    metadata              TEXT,
    updated_at            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (host, program, instance)
);

CREATE TABLE worker_events (
    id           BIGSERIAL   PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
    host         TEXT        NOT NULL,
    program      TEXT        NOT NULL,
    instance     BIGINT      NOT NULL,
    name         TEXT        NOT NULL,
    event        TEXT        NOT NULL,
    from_state   TEXT,
    to_state     TEXT,
    pid          BIGINT,
    exit_code    BIGINT,
    exit_signal  BIGINT,
    delay_ms     BIGINT,
    detail       TEXT
);
CREATE INDEX worker_events_at ON worker_events (at);
CREATE INDEX worker_events_worker ON worker_events (host, program, instance, at);

-- A supervisor is stale when it stopped, or has not refreshed last_seen_at
-- for three refresh intervals.
CREATE VIEW supervisor_health AS
SELECT s.*,
       (s.stopped_at IS NOT NULL
        OR s.last_seen_at < now() - (s.refresh_ms * 3) * INTERVAL '1 millisecond') AS stale
FROM supervisors s;

CREATE VIEW active_workers AS
SELECT w.*
FROM worker_status w
JOIN supervisor_health s ON s.host = w.host
WHERE NOT s.stale
  AND w.state IN ('waiting', 'starting', 'running', 'stopping', 'backoff');

CREATE VIEW dead_workers AS
SELECT w.*,
       CASE WHEN s.host IS NULL OR s.stale THEN 'supervisor stale' ELSE w.state END AS reason
FROM worker_status w
LEFT JOIN supervisor_health s ON s.host = w.host
WHERE w.state NOT IN ('removed', 'stopped')
  AND (w.state IN ('exited', 'fatal', 'unknown') OR s.host IS NULL OR s.stale);

CREATE VIEW host_summary AS
SELECT s.host,
       s.stale,
       s.last_seen_at,
       (SELECT COUNT(*) FROM worker_status w
         WHERE w.host = s.host AND w.state = 'running' AND NOT s.stale) AS running,
       (SELECT COUNT(*) FROM worker_status w
         WHERE w.host = s.host AND w.state <> 'removed') AS total
FROM supervisor_health s;
