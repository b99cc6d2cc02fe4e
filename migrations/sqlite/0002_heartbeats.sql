-- Heartbeat rows of `[[external]]` workers, SQLite dialect. Same table and
-- meaning as migrations/postgres/0002_heartbeats.sql; a contract documented in
-- docs/SCHEMA.md and docs/HEARTBEATS.md. Released migrations are never edited.
--
-- A worker upserts its own row (INSERT ... ON CONFLICT (name) DO UPDATE).
-- `last_heartbeat` is always set by the database (RFC 3339 UTC with ms, like
-- every time in these tables), whatever the writer sends: the default covers
-- an insert, the triggers correct an explicit value and every update. ward
-- polls the table (SQLite has no notifications).

CREATE TABLE heartbeats (
    name                  TEXT    NOT NULL PRIMARY KEY,
    status                TEXT,
    jobs_processed        INTEGER NOT NULL DEFAULT 0 CHECK (jobs_processed >= 0),
    error_count           INTEGER NOT NULL DEFAULT 0 CHECK (error_count >= 0),
    circuit_breaker_open  INTEGER NOT NULL DEFAULT 0 CHECK (circuit_breaker_open IN (0, 1)),
    current_task          TEXT,
    last_error            TEXT,
    metadata              TEXT    CHECK (metadata IS NULL
                                         OR (json_valid(metadata)
                                             AND json_type(metadata) = 'object'
                                             AND length(metadata) <= 8192)),
    host                  TEXT,
    pid                   INTEGER,
    last_heartbeat        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- 'now' is the same for a whole statement, so the nested UPDATE leaves the
-- WHEN false and the triggers never recurse (even with recursive_triggers on).
CREATE TRIGGER heartbeats_touch_insert AFTER INSERT ON heartbeats
WHEN NEW.last_heartbeat IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
BEGIN
    UPDATE heartbeats SET last_heartbeat = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE name = NEW.name;
END;

CREATE TRIGGER heartbeats_touch_update AFTER UPDATE ON heartbeats
WHEN NEW.last_heartbeat IS NOT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
BEGIN
    UPDATE heartbeats SET last_heartbeat = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE name = NEW.name;
END;

-- External workers (state 'external') are workers that should run, like
-- those in these states; the view keeps every column it had.
DROP VIEW active_workers;
CREATE VIEW active_workers AS
SELECT w.*
FROM worker_status w
JOIN supervisor_health s ON s.host = w.host
WHERE NOT s.stale
  AND w.state IN ('waiting', 'starting', 'running', 'stopping', 'backoff', 'external');
