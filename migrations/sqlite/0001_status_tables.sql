-- ward status tables, SQLite dialect. Same tables and meaning as
-- migrations/postgres/0001_status_tables.sql; documented in docs/SCHEMA.md.
-- Released migrations are never edited: add a new numbered file instead.
-- Times are TEXT in RFC 3339 UTC with milliseconds (2026-01-02T03:04:05.678Z),
-- the shape strftime('%Y-%m-%dT%H:%M:%fZ', ...) produces, so they compare as text.

CREATE TABLE supervisors (
    host            TEXT    NOT NULL PRIMARY KEY,
    pid             INTEGER NOT NULL,
    version         TEXT    NOT NULL,
    config_path     TEXT    NOT NULL,
    started_at      TEXT    NOT NULL,
    last_seen_at    TEXT    NOT NULL,
    stopped_at      TEXT,
    refresh_ms      INTEGER NOT NULL,
    dropped_events  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE worker_status (
    host                  TEXT    NOT NULL,
    program               TEXT    NOT NULL,
    instance              INTEGER NOT NULL,
    name                  TEXT    NOT NULL,
    state                 TEXT    NOT NULL,
    pid                   INTEGER,
    started_at            TEXT,
    state_since           TEXT    NOT NULL,
    uptime_ms             INTEGER,
    restarts              INTEGER NOT NULL DEFAULT 0,
    last_exit_code        INTEGER,
    last_exit_signal      INTEGER,
    last_exit_at          TEXT,
    next_start_at         TEXT,
    message               TEXT,
    cpu_percent           REAL,
    rss_bytes             INTEGER,
    log_bytes_dropped     INTEGER NOT NULL DEFAULT 0,
    last_heartbeat_at     TEXT,
    health                TEXT,
    status_text           TEXT,
    jobs_processed        INTEGER,
    error_count           INTEGER,
    circuit_breaker_open  INTEGER,
    current_task          TEXT,
    metadata              TEXT,
    updated_at            TEXT    NOT NULL,
    PRIMARY KEY (host, program, instance)
);

CREATE TABLE worker_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    program      TEXT    NOT NULL,
    instance     INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    from_state   TEXT,
    to_state     TEXT,
    pid          INTEGER,
    exit_code    INTEGER,
    exit_signal  INTEGER,
    delay_ms     INTEGER,
    detail       TEXT
);
CREATE INDEX worker_events_at ON worker_events (at);
CREATE INDEX worker_events_worker ON worker_events (host, program, instance, at);

-- A supervisor is stale when it stopped, or has not refreshed last_seen_at
-- for three refresh intervals.
CREATE VIEW supervisor_health AS
SELECT s.*,
       (s.stopped_at IS NOT NULL
        OR s.last_seen_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now',
                                     '-' || (s.refresh_ms * 3 / 1000.0) || ' seconds')) AS stale
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
