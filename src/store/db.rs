//! The database itself: one of two concrete pools, the migrations, the one
//! batched write, and the reads behind `ward status --db` and `ward events`.
//!
//! Owns every SQL statement ward runs. The two dialects differ only in how a
//! timestamp is bound and read back (RFC 3339 text in SQLite, `timestamptz`
//! in PostgreSQL); both accept `$N` placeholders. Never logs a URL unredacted.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::diff::{removed_keys, EventRow, Pending, WorkerKey, WorkerRow};
use crate::heartbeat::external::{ExternalRow, Observed};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Rows per multi-row statement (see `bucketed`); 256 rows of 27
/// parameters stay well under both databases' limits.
const STATEMENT_SIZES: [usize; 5] = [256, 64, 16, 4, 1];
/// SQLite's prepared statements live in ward's memory, and a multi-row
/// upsert compiles to a program that grows with its rows (~2 KiB a row):
/// 64- and 256-row statements cost ~250 KiB of ward's heap for 100 programs.
/// Batches of at most 16 rows cost a few more statement runs per batch, each
/// in-process. PostgreSQL keeps its plans on the server, where the larger
/// sizes save round trips.
const SQLITE_STATEMENT_SIZES: [usize; 3] = [16, 4, 1];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL `{url}`")]
    Url {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot open the database `{url}`")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("no database at `{path}`")]
    Missing { path: String },
    #[error("cannot apply the migrations to `{url}`")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}

impl StoreError {
    pub fn hint(&self) -> Option<String> {
        match self {
            StoreError::Url { .. } => Some("write `sqlite:///path/ward.db` or `postgres://user@host:5432/db` in `[supervisor] database` (or the variable named by `database_url_env`)".into()),
            StoreError::Connect { url, .. } if url.starts_with("postgres") => Some("check that the PostgreSQL server is up and reachable, and the user, password and database name".into()),
            StoreError::Connect { .. } => Some("check that the directory exists and is writable".into()),
            StoreError::Missing { .. } => Some("start ward once (`ward up`) or run `ward db migrate` to create it".into()),
            StoreError::Migrate { .. } => Some("the database may belong to a newer ward, or its user may lack CREATE rights".into()),
            StoreError::Query(e) if e.as_database_error().is_some() => Some("if a table is missing, run `ward db migrate`".into()),
            StoreError::Query(_) => None,
        }
    }

    /// The message and its causes on one line, for logs and `last_error`.
    pub fn chain(&self) -> String {
        let mut msg = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    }
}

/// `postgres://ward:secret@db/ward` → `postgres://ward:***@db/ward`; also
/// hides a `password=` query parameter.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let end = url[start..]
            .find(['/', '?'])
            .map_or(url.len(), |i| start + i);
        if let Some(at) = url[start..end].rfind('@').map(|i| start + i) {
            if let Some(colon) = url[start..at].find(':').map(|i| start + i) {
                out = format!("{}***{}", &url[..colon + 1], &url[at..]);
            }
        }
    }
    if let Some(i) = out.find("password=") {
        let from = i + "password=".len();
        let to = out[from..].find('&').map_or(out.len(), |j| from + j);
        out.replace_range(from..to, "***");
    }
    out
}

/// The database, one concrete pool per backend.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which dialect a statement is written for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Placeholder `$n` for a timestamp bound as RFC 3339 text.
    fn ts(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("${n}"),
            Dialect::Postgres => format!("${n}::timestamptz"),
        }
    }

    /// The `n`th placeholder of a long generated statement whose values are
    /// bound in order. SQLite gets anonymous `?`: binding named `$N`
    /// parameters costs a linear lookup each, quadratic per statement.
    fn seq(self, n: usize, timestamp: bool) -> String {
        match self {
            Dialect::Sqlite => "?".into(),
            Dialect::Postgres if timestamp => format!("${n}::timestamptz"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// A timestamp column read back as unix milliseconds.
    fn ms(self, col: &str) -> String {
        match self {
            Dialect::Sqlite => {
                format!("CAST(round((julianday({col}) - 2440587.5) * 86400000.0) AS INTEGER)")
            }
            Dialect::Postgres => format!("(extract(epoch from {col}) * 1000)::int8"),
        }
    }

    /// Milliseconds from timestamp `col` to the database's clock now, never negative.
    fn age_ms(self, col: &str) -> String {
        match self {
            Dialect::Sqlite => format!(
                "MAX(CAST(round((julianday('now') - julianday({col})) * 86400000.0) AS INTEGER), 0)"
            ),
            Dialect::Postgres => {
                format!(
                    "GREATEST((extract(epoch from (clock_timestamp() - {col})) * 1000)::int8, 0)"
                )
            }
        }
    }

    /// `col` is one of the names bound at `$n` (a text array in PostgreSQL,
    /// a JSON array of strings in SQLite, which has no arrays).
    fn one_of(self, col: &str, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("{col} IN (SELECT value FROM json_each(${n}))"),
            Dialect::Postgres => format!("{col} = ANY(${n})"),
        }
    }

    /// A boolean expression read back as 0/1.
    fn flag(self, col: &str) -> String {
        let int = match self {
            Dialect::Sqlite => "INTEGER",
            Dialect::Postgres => "BIGINT",
        };
        format!("CAST(CASE WHEN {col} THEN 1 ELSE 0 END AS {int})")
    }
}

/// Unix ms as the RFC 3339 text both backends store or cast.
pub fn ts(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    String::from_utf8_lossy(&crate::logs::format_rfc3339(t)).into_owned()
}

fn ts_opt(ms: Option<u64>) -> Option<String> {
    ms.map(ts)
}

/// What one batch wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Written {
    pub rows: usize,
    pub events: usize,
    pub removed: usize,
    pub pruned: u64,
}

/// A `supervisors` row as read back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostRow {
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub config_path: String,
    pub started_at_ms: i64,
    pub last_seen_at_ms: i64,
    pub stopped_at_ms: Option<i64>,
    pub refresh_ms: i64,
    pub dropped_events: i64,
    /// Stopped, or silent for three refresh intervals.
    pub stale: bool,
}

/// A `worker_status` row as read back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerView {
    pub host: String,
    pub program: String,
    pub instance: i64,
    pub name: String,
    pub state: String,
    pub pid: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub state_since_ms: i64,
    pub uptime_ms: Option<i64>,
    pub restarts: i64,
    pub last_exit_code: Option<i64>,
    pub last_exit_signal: Option<i64>,
    pub last_exit_at_ms: Option<i64>,
    pub next_start_at_ms: Option<i64>,
    pub message: Option<String>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<i64>,
    pub log_bytes_dropped: i64,
    pub updated_at_ms: i64,
}

/// A `worker_events` row as read back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventView {
    pub at_ms: i64,
    pub host: String,
    pub program: String,
    pub instance: i64,
    pub name: String,
    pub event: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub pid: Option<i64>,
    pub exit_code: Option<i64>,
    pub exit_signal: Option<i64>,
    pub delay_ms: Option<i64>,
    pub detail: Option<String>,
}

/// The `heartbeats` rows of these names, with the age of each beat by the
/// database's clock.
fn heartbeats_sql(d: Dialect) -> String {
    let metadata = match d {
        Dialect::Sqlite => "metadata",
        Dialect::Postgres => "metadata::text",
    };
    format!(
        "SELECT name, status, jobs_processed, error_count, {}, current_task, last_error, {metadata}, host, pid, {}, {} \
         FROM heartbeats WHERE {}",
        d.flag("circuit_breaker_open"),
        d.ms("last_heartbeat"),
        d.age_ms("last_heartbeat"),
        d.one_of("name", 1)
    )
}

fn undeclared_sql(d: Dialect) -> String {
    format!(
        "SELECT name FROM heartbeats WHERE NOT ({}) ORDER BY name LIMIT 100",
        d.one_of("name", 1)
    )
}

/// A `heartbeats` row as [`heartbeats_sql`] reads it.
fn heartbeat_row<R: Row>(r: &R) -> Result<Observed, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    usize: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let count = |v: i64| v.max(0) as u64;
    let metadata: Option<String> = r.try_get(7)?;
    Ok(Observed {
        name: r.try_get(0)?,
        row: ExternalRow {
            status: r.try_get(1)?,
            jobs_processed: count(r.try_get(2)?),
            error_count: count(r.try_get(3)?),
            circuit_breaker_open: r.try_get::<i64, _>(4)? != 0,
            current_task: r.try_get(5)?,
            last_error: r.try_get(6)?,
            // The table only takes objects; anything else is ignored.
            metadata: metadata.and_then(|m| crate::heartbeat::parse_metadata(&m).ok()),
            host: r.try_get(8)?,
            pid: r.try_get(9)?,
            beat_db_ms: r.try_get(10)?,
        },
        age: Duration::from_millis(count(r.try_get(11)?)),
    })
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub host: Option<String>,
    /// A program or an instance name.
    pub name: Option<String>,
    pub since_ms: u64,
    pub limit: i64,
}

const WORKER_COLUMNS: &str = "host, program, instance, name, state, pid, started_at, state_since, uptime_ms, restarts, last_exit_code, last_exit_signal, last_exit_at, next_start_at, message, cpu_percent, rss_bytes, log_bytes_dropped, updated_at, last_heartbeat_at, health, status_text, jobs_processed, error_count, circuit_breaker_open, current_task, metadata";
/// Positions (0-based) of the timestamp columns in `WORKER_COLUMNS`.
const WORKER_TS: [usize; 6] = [6, 7, 12, 13, 18, 19];
const EVENT_COLUMNS: &str = "at, host, program, instance, name, event, from_state, to_state, pid, exit_code, exit_signal, delay_ms, detail";

/// Split a batch into statements of 256, 64, 16, 4 and 1 rows (the largest
/// that fit, in that order). Each distinct row count is its own prepared
/// statement in the connection's cache, and a statement of a few hundred
/// rows compiles to a large program: a handful of sizes keeps that cache
/// (and ward's memory) small whatever the batches look like.
fn bucketed<T>(d: Dialect, items: &[T]) -> Vec<&[T]> {
    let sizes: &[usize] = match d {
        Dialect::Sqlite => &SQLITE_STATEMENT_SIZES,
        Dialect::Postgres => &STATEMENT_SIZES,
    };
    let mut out = Vec::new();
    let mut rest = items;
    for &size in sizes {
        while rest.len() >= size {
            let (head, tail) = rest.split_at(size);
            out.push(head);
            rest = tail;
        }
    }
    out
}

/// Keep the prepared statement for `rows` rows? In SQLite a statement lives
/// in ward's memory, ~2 KiB a row: the 16-row ones (~130 KiB for the upsert
/// and the insert) are prepared again each time, ~0.2 ms, which only a
/// batch of 16 changed rows or more pays. PostgreSQL keeps its plans.
fn cached(d: Dialect, rows: usize) -> bool {
    d == Dialect::Postgres || rows < 16
}

/// `INSERT ... VALUES (...), (...) ON CONFLICT ... DO UPDATE` for `n` rows.
fn upsert_rows_sql(d: Dialect, n: usize) -> String {
    let cols: Vec<&str> = WORKER_COLUMNS.split(", ").collect();
    let mut sql = format!("INSERT INTO worker_status ({WORKER_COLUMNS}) VALUES ");
    let mut p = 0;
    for r in 0..n {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols.len() {
            p += 1;
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&d.seq(p, WORKER_TS.contains(&c)));
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (host, program, instance) DO UPDATE SET ");
    let sets: Vec<String> = cols[3..]
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    sql.push_str(&sets.join(", "));
    sql
}

fn insert_events_sql(d: Dialect, n: usize) -> String {
    let cols = EVENT_COLUMNS.split(", ").count();
    let mut sql = format!("INSERT INTO worker_events ({EVENT_COLUMNS}) VALUES ");
    let mut p = 0;
    for r in 0..n {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            p += 1;
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&d.seq(p, c == 0));
        }
        sql.push(')');
    }
    sql
}

fn supervisor_sql(d: Dialect) -> String {
    format!(
        "INSERT INTO supervisors (host, pid, version, config_path, started_at, last_seen_at, stopped_at, refresh_ms, dropped_events) \
         VALUES ($1, $2, $3, $4, {}, {}, {}, $8, $9) \
         ON CONFLICT (host) DO UPDATE SET pid = excluded.pid, version = excluded.version, config_path = excluded.config_path, \
         started_at = excluded.started_at, last_seen_at = excluded.last_seen_at, stopped_at = excluded.stopped_at, \
         refresh_ms = excluded.refresh_ms, dropped_events = excluded.dropped_events",
        d.ts(5),
        d.ts(6),
        d.ts(7)
    )
}

fn mark_removed_sql(d: Dialect) -> String {
    format!(
        "UPDATE worker_status SET state = 'removed', pid = NULL, uptime_ms = NULL, cpu_percent = NULL, rss_bytes = NULL, \
         next_start_at = NULL, message = 'removed from the config', state_since = {t}, updated_at = {t} \
         WHERE host = $1 AND program = $2 AND instance = $3",
        t = d.ts(4)
    )
}

fn removed_event(key: &WorkerKey, name: String, state: String, now_ms: u64) -> EventRow {
    EventRow {
        at_ms: now_ms,
        program: key.0.clone(),
        instance: key.1,
        name,
        event: "removed",
        from_state: Some(state),
        to_state: Some("removed".into()),
        pid: None,
        exit_code: None,
        exit_signal: None,
        delay_ms: None,
        detail: Some("removed from the config".into()),
    }
}

/// Bind one worker row in `WORKER_COLUMNS` order.
macro_rules! bind_row {
    ($q:expr, $host:expr, $r:expr) => {
        $q.bind($host)
            .bind(&$r.program)
            .bind($r.instance)
            .bind(&$r.name)
            .bind(&$r.state)
            .bind($r.pid)
            .bind(ts_opt($r.started_at_ms))
            .bind(ts($r.state_since_ms))
            .bind($r.uptime_ms)
            .bind($r.restarts)
            .bind($r.last_exit_code)
            .bind($r.last_exit_signal)
            .bind(ts_opt($r.last_exit_at_ms))
            .bind(ts_opt($r.next_start_at_ms))
            .bind(&$r.message)
            .bind($r.cpu_percent)
            .bind($r.rss_bytes)
            .bind($r.log_bytes_dropped)
            .bind(ts($r.updated_at_ms))
            .bind(ts_opt($r.last_heartbeat_at_ms))
            .bind(&$r.health)
            .bind(&$r.status_text)
            .bind($r.jobs_processed)
            .bind($r.error_count)
            .bind($r.circuit_breaker_open)
            .bind(&$r.current_task)
            .bind(&$r.metadata)
    };
}

macro_rules! bind_event {
    ($q:expr, $host:expr, $e:expr) => {
        $q.bind(ts($e.at_ms))
            .bind($host)
            .bind(&$e.program)
            .bind($e.instance)
            .bind(&$e.name)
            .bind($e.event)
            .bind(&$e.from_state)
            .bind(&$e.to_state)
            .bind($e.pid)
            .bind($e.exit_code)
            .bind($e.exit_signal)
            .bind($e.delay_ms)
            .bind(&$e.detail)
    };
}

/// The body of [`Db::write`], expanded once per backend.
macro_rules! write_batch {
    ($pool:expr, $d:expr, $host:expr, $p:expr, $now_ms:expr) => {{
        let d: Dialect = $d;
        let host: &str = $host;
        let p: &Pending = $p;
        let mut w = Written::default();
        let mut tx = $pool.begin().await?;
        if let Some(s) = &p.supervisor {
            sqlx::query(&supervisor_sql(d))
                .bind(host)
                .bind(s.pid)
                .bind(&s.version)
                .bind(&s.config_path)
                .bind(ts(s.started_at_ms))
                .bind(ts(s.last_seen_at_ms))
                .bind(ts_opt(s.stopped_at_ms))
                .bind(s.refresh_ms)
                .bind(s.dropped_events)
                .execute(&mut *tx)
                .await?;
        }
        let rows: Vec<&WorkerRow> = p.rows.values().collect();
        for chunk in bucketed(d, &rows) {
            let sql = upsert_rows_sql(d, chunk.len());
            let mut q = sqlx::query(&sql).persistent(cached(d, chunk.len()));
            for r in chunk {
                q = bind_row!(q, host, r);
            }
            q.execute(&mut *tx).await?;
            w.rows += chunk.len();
        }
        let mut events: Vec<EventRow> = p.events.iter().cloned().collect();
        if let Some(current) = &p.current {
            // Rare (a reload, a start): not kept prepared, like the two below.
            let existing = sqlx::query("SELECT program, instance, name, state FROM worker_status WHERE host = $1 AND state <> 'removed'")
                .persistent(false)
                .bind(host)
                .fetch_all(&mut *tx)
                .await?;
            let mut names = BTreeMap::new();
            let mut keys = Vec::new();
            for r in &existing {
                let key: WorkerKey = (r.try_get(0)?, r.try_get(1)?);
                names.insert(key.clone(), (r.try_get::<String, _>(2)?, r.try_get::<String, _>(3)?));
                keys.push(key);
            }
            for key in removed_keys(&keys, current) {
                sqlx::query(&mark_removed_sql(d))
                    .persistent(false)
                    .bind(host)
                    .bind(&key.0)
                    .bind(key.1)
                    .bind(ts($now_ms))
                    .execute(&mut *tx)
                    .await?;
                let (name, state) = names.remove(&key).unwrap_or_default();
                events.push(removed_event(&key, name, state, $now_ms));
                w.removed += 1;
            }
        }
        for chunk in bucketed(d, &events) {
            let sql = insert_events_sql(d, chunk.len());
            let mut q = sqlx::query(&sql).persistent(cached(d, chunk.len()));
            for e in chunk {
                q = bind_event!(q, host, e);
            }
            q.execute(&mut *tx).await?;
            w.events += chunk.len();
        }
        if let Some(before) = p.prune_before_ms {
            let sql = format!("DELETE FROM worker_events WHERE at < {}", d.ts(1));
            w.pruned = sqlx::query(&sql).persistent(false).bind(ts(before)).execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(w)
    }};
}

macro_rules! read_hosts {
    ($pool:expr, $d:expr, $host:expr) => {{
        let d: Dialect = $d;
        let sql = format!(
            "SELECT host, pid, version, config_path, {}, {}, {}, refresh_ms, dropped_events, {} FROM supervisor_health \
             WHERE ($1 IS NULL OR host = $1) ORDER BY host",
            d.ms("started_at"),
            d.ms("last_seen_at"),
            d.ms("stopped_at"),
            d.flag("stale")
        );
        let rows = sqlx::query(&sql).bind($host).fetch_all($pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(HostRow {
                host: r.try_get(0)?,
                pid: r.try_get(1)?,
                version: r.try_get(2)?,
                config_path: r.try_get(3)?,
                started_at_ms: r.try_get(4)?,
                last_seen_at_ms: r.try_get(5)?,
                stopped_at_ms: r.try_get(6)?,
                refresh_ms: r.try_get(7)?,
                dropped_events: r.try_get(8)?,
                stale: r.try_get::<i64, _>(9)? != 0,
            });
        }
        Ok(out)
    }};
}

macro_rules! read_workers {
    ($pool:expr, $d:expr, $host:expr) => {{
        let d: Dialect = $d;
        let sql = format!(
            "SELECT host, program, instance, name, state, pid, {}, {}, uptime_ms, restarts, last_exit_code, last_exit_signal, {}, {}, \
             message, cpu_percent, rss_bytes, log_bytes_dropped, {} FROM worker_status \
             WHERE ($1 IS NULL OR host = $1) ORDER BY host, program, instance",
            d.ms("started_at"),
            d.ms("state_since"),
            d.ms("last_exit_at"),
            d.ms("next_start_at"),
            d.ms("updated_at")
        );
        let rows = sqlx::query(&sql).bind($host).fetch_all($pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(WorkerView {
                host: r.try_get(0)?,
                program: r.try_get(1)?,
                instance: r.try_get(2)?,
                name: r.try_get(3)?,
                state: r.try_get(4)?,
                pid: r.try_get(5)?,
                started_at_ms: r.try_get(6)?,
                state_since_ms: r.try_get(7)?,
                uptime_ms: r.try_get(8)?,
                restarts: r.try_get(9)?,
                last_exit_code: r.try_get(10)?,
                last_exit_signal: r.try_get(11)?,
                last_exit_at_ms: r.try_get(12)?,
                next_start_at_ms: r.try_get(13)?,
                message: r.try_get(14)?,
                cpu_percent: r.try_get(15)?,
                rss_bytes: r.try_get(16)?,
                log_bytes_dropped: r.try_get(17)?,
                updated_at_ms: r.try_get(18)?,
            });
        }
        Ok(out)
    }};
}

macro_rules! read_events {
    ($pool:expr, $d:expr, $f:expr) => {{
        let d: Dialect = $d;
        let f: &EventFilter = $f;
        let sql = format!(
            "SELECT {}, host, program, instance, name, event, from_state, to_state, pid, exit_code, exit_signal, delay_ms, detail \
             FROM worker_events WHERE ($1 IS NULL OR host = $1) AND ($2 IS NULL OR name = $2 OR program = $2) AND at >= {} \
             ORDER BY at DESC, id DESC LIMIT $4",
            d.ms("at"),
            d.ts(3)
        );
        let rows = sqlx::query(&sql)
            .bind(&f.host)
            .bind(&f.name)
            .bind(ts(f.since_ms))
            .bind(f.limit)
            .fetch_all($pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(EventView {
                at_ms: r.try_get(0)?,
                host: r.try_get(1)?,
                program: r.try_get(2)?,
                instance: r.try_get(3)?,
                name: r.try_get(4)?,
                event: r.try_get(5)?,
                from_state: r.try_get(6)?,
                to_state: r.try_get(7)?,
                pid: r.try_get(8)?,
                exit_code: r.try_get(9)?,
                exit_signal: r.try_get(10)?,
                delay_ms: r.try_get(11)?,
                detail: r.try_get(12)?,
            });
        }
        out.reverse();
        Ok(out)
    }};
}

impl Db {
    /// Open the database at `url`. `create` makes a missing SQLite file
    /// (the daemon, `ward db migrate`); readers pass `false`.
    pub async fn open(url: &str, create: bool) -> Result<Db, StoreError> {
        let shown = redact(url);
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|source| StoreError::Url {
                    url: shown.clone(),
                    source,
                })?
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // A small page cache (128 KiB, not SQLite's 2 MiB): ward writes
                // a few pages per batch (the status rows, the end of the
                // events), misses are reads from the OS cache, and ward's
                // memory budget is a few MiB.
                .pragma("cache_size", "-128")
                .statement_cache_capacity(32)
                .busy_timeout(Duration::from_secs(5));
            let file = opts.get_filename().to_path_buf();
            if !create && file != std::path::Path::new(":memory:") && !file.exists() {
                return Err(StoreError::Missing {
                    path: file.display().to_string(),
                });
            }
            if create {
                if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                    let _ = std::fs::create_dir_all(dir);
                }
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await
                .map_err(|source| StoreError::Connect { url: shown, source })?;
            Ok(Db::Sqlite(pool))
        } else {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|source| StoreError::Url {
                    url: shown.clone(),
                    source,
                })?
                .application_name("ward")
                .statement_cache_capacity(32);
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(opts)
                .await
                .map_err(|source| StoreError::Connect { url: shown, source })?;
            Ok(Db::Postgres(pool))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Db::Sqlite(_) => &SQLITE_MIGRATIONS,
            Db::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Every migration this ward knows, as `(version, description)`.
    pub fn known_migrations(&self) -> Vec<(i64, String)> {
        self.migrator()
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    }

    /// Versions already applied (none when the bookkeeping table is absent).
    async fn applied(&self) -> Vec<i64> {
        let sql = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        let got = match self {
            Db::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_all(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_all(pool).await,
        };
        got.unwrap_or_default()
    }

    /// Apply what is missing; returns the migrations applied now.
    pub async fn migrate(&self, url: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let before = self.applied().await;
        let result = match self {
            Db::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        };
        result.map_err(|source| StoreError::Migrate {
            url: redact(url),
            source,
        })?;
        if let Db::Sqlite(pool) = self {
            // The migrator's and `applied`'s statements stay prepared in the
            // connection's cache, in ward's memory, and never run again.
            if let Ok(mut conn) = pool.acquire().await {
                let _ = sqlx::Connection::clear_cached_statements(&mut *conn).await;
            }
        }
        Ok(self
            .known_migrations()
            .into_iter()
            .filter(|(v, _)| !before.contains(v))
            .collect())
    }

    /// Write `p` for `host` in one transaction.
    pub async fn write(
        &self,
        host: &str,
        p: &Pending,
        now_ms: u64,
    ) -> Result<Written, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => write_batch!(pool, Dialect::Sqlite, host, p, now_ms),
            Db::Postgres(pool) => write_batch!(pool, Dialect::Postgres, host, p, now_ms),
        }
    }

    /// `supervisors` rows with their staleness; one host or all.
    pub async fn hosts(&self, host: Option<&str>) -> Result<Vec<HostRow>, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => read_hosts!(pool, Dialect::Sqlite, host),
            Db::Postgres(pool) => read_hosts!(pool, Dialect::Postgres, host),
        }
    }

    /// `worker_status` rows; one host or all.
    pub async fn workers(&self, host: Option<&str>) -> Result<Vec<WorkerView>, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => read_workers!(pool, Dialect::Sqlite, host),
            Db::Postgres(pool) => read_workers!(pool, Dialect::Postgres, host),
        }
    }

    /// The newest `limit` events matching `f`, oldest first.
    pub async fn events(&self, f: &EventFilter) -> Result<Vec<EventView>, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => read_events!(pool, Dialect::Sqlite, f),
            Db::Postgres(pool) => read_events!(pool, Dialect::Postgres, f),
        }
    }

    /// The `heartbeats` rows of `names`, with their ages by the database's clock.
    pub async fn heartbeats(&self, names: &[String]) -> Result<Vec<Observed>, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => {
                let names = serde_json::to_string(names).unwrap_or_else(|_| "[]".into());
                let rows = sqlx::query(&heartbeats_sql(Dialect::Sqlite))
                    .bind(names)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(heartbeat_row).collect()
            }
            Db::Postgres(pool) => {
                let rows = sqlx::query(&heartbeats_sql(Dialect::Postgres))
                    .bind(names)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(heartbeat_row).collect()
            }
        }
    }

    /// Names in `heartbeats` other than `declared` (at most 100).
    pub async fn undeclared_heartbeats(
        &self,
        declared: &[String],
    ) -> Result<Vec<String>, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => {
                let names = serde_json::to_string(declared).unwrap_or_else(|_| "[]".into());
                sqlx::query_scalar(&undeclared_sql(Dialect::Sqlite))
                    .bind(names)
                    .fetch_all(pool)
                    .await
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar(&undeclared_sql(Dialect::Postgres))
                    .bind(declared)
                    .fetch_all(pool)
                    .await
            }
        }
    }

    /// SQLite's `PRAGMA data_version`: changes when another connection
    /// commits. `None` for PostgreSQL.
    pub async fn data_version(&self) -> Result<Option<i64>, sqlx::Error> {
        match self {
            Db::Sqlite(pool) => sqlx::query_scalar("PRAGMA data_version")
                .fetch_one(pool)
                .await
                .map(Some),
            Db::Postgres(_) => Ok(None),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_few_statement_sizes() {
        let sizes = |d: Dialect, n: usize| {
            bucketed(d, &vec![0u8; n])
                .iter()
                .map(|c| c.len())
                .collect::<Vec<_>>()
        };
        let pg = |n| sizes(Dialect::Postgres, n);
        assert_eq!(pg(0), Vec::<usize>::new());
        assert_eq!(pg(3), [1, 1, 1]);
        assert_eq!(pg(100), [64, 16, 16, 4]);
        assert_eq!(pg(1000).iter().sum::<usize>(), 1000);
        assert_eq!(pg(1000)[..3], [256, 256, 256]);
        let lite = |n| sizes(Dialect::Sqlite, n);
        assert_eq!(lite(0), Vec::<usize>::new());
        assert_eq!(lite(21), [16, 4, 1]);
        assert_eq!(lite(100), [16, 16, 16, 16, 16, 16, 4]);
        assert_eq!(lite(1000).iter().sum::<usize>(), 1000);
        assert!(lite(1000).iter().all(|&c| c <= 16));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://ward:s3cr@t@db:5432/ward"),
            "postgres://ward:***@db:5432/ward"
        );
        assert_eq!(redact("postgres://ward@db/ward"), "postgres://ward@db/ward");
        assert_eq!(
            redact("postgres://db/ward?user=w&password=x&sslmode=disable"),
            "postgres://db/ward?user=w&password=***&sslmode=disable"
        );
        assert_eq!(
            redact("sqlite:///var/lib/ward/ward.db"),
            "sqlite:///var/lib/ward/ward.db"
        );
    }

    #[test]
    fn statements_have_one_placeholder_per_value() {
        let sql = upsert_rows_sql(Dialect::Postgres, 2);
        assert!(sql.contains("$47::timestamptz, $48,"), "{sql}");
        assert!(sql.contains("$54)") && !sql.contains("$55"), "{sql}");
        assert!(sql.contains("updated_at = excluded.updated_at"));
        let sql = insert_events_sql(Dialect::Postgres, 2);
        assert!(sql.ends_with("$26)"), "{sql}");
        let sql = insert_events_sql(Dialect::Sqlite, 2);
        assert_eq!(sql.matches('?').count(), 26, "{sql}");
        assert_eq!(ts(1_500), "1970-01-01T00:00:01.500Z");
    }
}
