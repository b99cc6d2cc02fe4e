-- Heartbeat rows of `[[external]]` workers, PostgreSQL dialect. Same table and
-- meaning as migrations/sqlite/0002_heartbeats.sql; a contract documented in
-- docs/SCHEMA.md and docs/HEARTBEATS.md. Released migrations are never edited.
--
-- A worker upserts its own row (INSERT ... ON CONFLICT (name) DO UPDATE).
-- `last_heartbeat` is always the database's now(), whatever the writer sends,
-- so the clocks of the workers' hosts never matter; every change notifies
-- channel `ward_heartbeats` with the worker's name, so ward reads it at once.

CREATE TABLE heartbeats (
    name                  TEXT        NOT NULL PRIMARY KEY,
    status                TEXT,
    jobs_processed        BIGINT      NOT NULL DEFAULT 0 CHECK (jobs_processed >= 0),
    error_count           BIGINT      NOT NULL DEFAULT 0 CHECK (error_count >= 0),
    circuit_breaker_open  BOOLEAN     NOT NULL DEFAULT FALSE,
    current_task          TEXT,
    last_error            TEXT,
    metadata              JSONB       CHECK (metadata IS NULL
                                             OR (jsonb_typeof(metadata) = 'object'
                                                 AND length(metadata::text) <= 8192)),
    host                  TEXT,
    pid                   BIGINT,
    last_heartbeat        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE FUNCTION ward_heartbeats_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.last_heartbeat := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER heartbeats_touch
    BEFORE INSERT OR UPDATE ON heartbeats
    FOR EACH ROW EXECUTE PROCEDURE ward_heartbeats_touch();

CREATE FUNCTION ward_heartbeats_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('ward_heartbeats', OLD.name);
    ELSE
        PERFORM pg_notify('ward_heartbeats', NEW.name);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER heartbeats_notify
    AFTER INSERT OR UPDATE OR DELETE ON heartbeats
    FOR EACH ROW EXECUTE PROCEDURE ward_heartbeats_notify();

-- External workers (state 'external') are workers that should run, like
-- those in these states; the views keep every column they had.
CREATE OR REPLACE VIEW active_workers AS
SELECT w.*
FROM worker_status w
JOIN supervisor_health s ON s.host = w.host
WHERE NOT s.stale
  AND w.state IN ('waiting', 'starting', 'running', 'stopping', 'backoff', 'external');
