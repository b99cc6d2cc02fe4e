//! The reader of the `heartbeats` table: what `[[external]]` workers upsert,
//! handed to the externals registry (`heartbeat::external`).
//!
//! PostgreSQL: LISTEN on `ward_heartbeats` (the table's trigger notifies
//! each changed name), read those rows at once, a full read every
//! `SAFETY_POLL`, and a full read after every (re)connect, since
//! notifications sent while disconnected are lost. SQLite: a poll every
//! `POLL`, skipped while `PRAGMA data_version` says nothing was committed.
//! Both read at once when the registry asks (a deadline passed: it wants a
//! read made after it before it says `stale` or `hung`).
//! The database computes each beat's age, so clock skew between hosts does
//! not matter.
//!
//! Owns one small pool of its own. Must never block supervision: it only
//! talks to the registry, every query has a timeout, and an outage is
//! reported to the registry (externals then keep their last known state
//! until a deadline passes that ward cannot check) and retried with backoff.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{mpsc, watch};

use super::{redact, Db};
use crate::heartbeat::external::{Externals, ReadResult};
use crate::supervisor::Supervisor;

/// The channel the table's trigger notifies.
pub const CHANNEL: &str = "ward_heartbeats";
/// SQLite: how often the table is looked at.
const POLL: Duration = Duration::from_secs(1);
/// PostgreSQL: a full read this often, whatever the notifications said.
const SAFETY_POLL: Duration = Duration::from_secs(5);
/// One connect or query may take this long.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Notifications read in one go before their rows are fetched together.
const BATCH: usize = 512;
/// Undeclared names remembered (so each is logged once).
const IGNORED_KEPT: usize = 1000;
/// At most one log line about undeclared rows this often.
const IGNORED_LOG_EVERY: Duration = Duration::from_secs(60);

/// Read the table for `sup`'s externals once `migrated` turns true (the
/// writer applied the migrations), until the task is aborted.
pub(super) async fn run(url: String, sup: Arc<Supervisor>, mut migrated: watch::Receiver<bool>) {
    if migrated.wait_for(|m| *m).await.is_err() {
        return;
    }
    let mut reader = Reader {
        url,
        registry: sup.externals().clone(),
        confirm: sup.externals().confirm_requests(),
        epoch: sup.subscribe_epoch(),
        config: sup.config(),
        sup,
        ignored: Ignored::default(),
        failures: 0,
        outage: None,
    };
    loop {
        reader.wait_for_externals().await;
        let error = match timed(Db::open(&reader.url, false)).await {
            Ok(Ok(db)) => {
                let error = match &db {
                    Db::Sqlite(_) => reader.poll(&db).await,
                    Db::Postgres(pool) => reader.listen(&db, pool).await,
                };
                db.close().await;
                error
            }
            Ok(Err(e)) => e.chain(),
            Err(e) => e,
        };
        if error.is_empty() {
            // No externals any more (a reload removed them): wait for some.
            continue;
        }
        reader.failed(error).await;
        let delay = RETRY_FIRST
            .saturating_mul(1 << reader.failures.min(8))
            .min(RETRY_MAX);
        tokio::time::sleep(delay).await;
    }
}

struct Reader {
    url: String,
    sup: Arc<Supervisor>,
    registry: Externals,
    /// The registry asks for a read now.
    confirm: Arc<tokio::sync::Notify>,
    /// Bumped on every phase change and reload...
    epoch: watch::Receiver<u64>,
    /// ...so a reload is told by a new config.
    config: Arc<crate::config::Config>,
    ignored: Ignored,
    failures: u32,
    /// Since when reads fail.
    outage: Option<Instant>,
}

/// A query with [`QUERY_TIMEOUT`].
async fn timed<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(QUERY_TIMEOUT, f)
        .await
        .map_err(|_| format!("no answer within {}s", QUERY_TIMEOUT.as_secs()))
}

fn query_error(e: sqlx::Error) -> String {
    super::StoreError::Query(e).chain()
}

impl Reader {
    fn declared(&self) -> Vec<String> {
        self.config
            .externals
            .iter()
            .map(|x| x.name.clone())
            .collect()
    }

    /// Wait for the next reload (a new config).
    async fn reloaded(&mut self) {
        loop {
            if self.epoch.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let now = self.sup.config();
            if !Arc::ptr_eq(&now, &self.config) {
                self.config = now;
                return;
            }
        }
    }

    /// Return once the config declares at least one external.
    async fn wait_for_externals(&mut self) {
        while self.declared().is_empty() {
            self.reloaded().await;
        }
    }

    async fn failed(&mut self, error: String) {
        self.failures += 1;
        if self.outage.is_none() {
            self.outage = Some(Instant::now());
            tracing::warn!(
                url = %redact(&self.url),
                %error,
                "cannot read the `heartbeats` table; external workers keep their last known state (`unknown` once a deadline passes that ward cannot check) and ward retries"
            );
        }
        self.registry.read(ReadResult::Failed(error)).await;
    }

    /// Read the rows of `names` (every declared external when `None`).
    async fn read(&mut self, db: &Db, names: Option<Vec<String>>) -> Result<(), String> {
        let declared = self.declared();
        let query: Vec<String> = match &names {
            Some(n) => n.iter().filter(|n| declared.contains(n)).cloned().collect(),
            None => declared.clone(),
        };
        if let Some(n) = &names {
            for name in n.iter().filter(|n| !declared.contains(n)) {
                self.ignored.note(name);
            }
        }
        if query.is_empty() {
            self.ignored.flush();
            return Ok(());
        }
        let rows = timed(db.heartbeats(&query)).await?.map_err(query_error)?;
        let at = Instant::now();
        if names.is_none() {
            let others = timed(db.undeclared_heartbeats(&declared))
                .await?
                .map_err(query_error)?;
            for name in &others {
                self.ignored.note(name);
            }
        }
        self.ignored.flush();
        self.failures = 0;
        if let Some(since) = self.outage.take() {
            tracing::info!(
                after = ?since.elapsed(),
                "the `heartbeats` table is readable again"
            );
        }
        self.registry
            .read(ReadResult::Rows {
                names: Some(query),
                rows,
                at,
            })
            .await;
        Ok(())
    }

    /// SQLite: look every [`POLL`]; read when another connection committed
    /// or the config changed. Returns the error that ended it (empty: no
    /// externals are declared any more).
    async fn poll(&mut self, db: &Db) -> String {
        let mut seen_version = None;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reread = true;
        loop {
            if self.declared().is_empty() {
                return String::new();
            }
            let version = match timed(db.data_version()).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return query_error(e),
                Err(e) => return e,
            };
            if reread || version != seen_version {
                if let Err(e) = self.read(db, None).await {
                    return e;
                }
                seen_version = version;
                reread = false;
            }
            let confirm = self.confirm.clone();
            tokio::select! {
                _ = tick.tick() => {}
                _ = confirm.notified() => reread = true,
                _ = self.reloaded() => reread = true,
            }
        }
    }

    /// PostgreSQL: LISTEN, a full read, then rows as they are notified.
    async fn listen(&mut self, db: &Db, pool: &PgPool) -> String {
        let mut listener = match timed(PgListener::connect_with(pool)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return query_error(e),
            Err(e) => return e,
        };
        // A lost connection must be said at once, not after a reconnect attempt.
        listener.eager_reconnect(false);
        match timed(listener.listen(CHANNEL)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return query_error(e),
            Err(e) => return e,
        }
        // The listener runs in its own task (a receive is not known to be
        // cancel-safe), so the select below only ever drops channel receives.
        let (tx, mut rx) = mpsc::channel::<Result<String, String>>(BATCH);
        let pump = tokio::spawn(async move {
            loop {
                let msg = match listener.try_recv().await {
                    Ok(Some(n)) => Ok(n.payload().to_string()),
                    Ok(None) => Err("the LISTEN connection was lost".to_string()),
                    Err(e) => Err(query_error(e)),
                };
                let lost = msg.is_err();
                if tx.send(msg).await.is_err() || lost {
                    return;
                }
            }
        });
        let error = self.follow(db, &mut rx).await;
        pump.abort();
        error
    }

    async fn follow(&mut self, db: &Db, rx: &mut mpsc::Receiver<Result<String, String>>) -> String {
        // Listening already: nothing written from here on can be missed.
        if let Err(e) = self.read(db, None).await {
            return e;
        }
        let mut safety = tokio::time::interval(SAFETY_POLL);
        safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        safety.tick().await;
        loop {
            if self.declared().is_empty() {
                return String::new();
            }
            let confirm = self.confirm.clone();
            let result = tokio::select! {
                msg = rx.recv() => {
                    let mut names = HashSet::new();
                    let mut next = msg;
                    loop {
                        match next {
                            Some(Ok(name)) => {
                                names.insert(name);
                            }
                            Some(Err(e)) => return e,
                            None => return "the LISTEN task ended".into(),
                        }
                        if names.len() >= BATCH {
                            break;
                        }
                        next = match rx.try_recv() {
                            Ok(m) => Some(m),
                            Err(_) => break,
                        };
                    }
                    self.read(db, Some(names.into_iter().collect())).await
                }
                _ = safety.tick() => self.read(db, None).await,
                _ = confirm.notified() => self.read(db, None).await,
                _ = self.reloaded() => self.read(db, None).await,
            };
            if let Err(e) = result {
                return e;
            }
        }
    }
}

/// Names with rows in `heartbeats` that this ward does not declare: each is
/// logged once, and at most one line a minute.
#[derive(Default)]
struct Ignored {
    seen: HashSet<String>,
    new: Vec<String>,
    last_log: Option<Instant>,
}

impl Ignored {
    fn note(&mut self, name: &str) {
        if self.seen.len() < IGNORED_KEPT && self.seen.insert(name.to_string()) {
            self.new.push(name.to_string());
        }
    }

    fn flush(&mut self) {
        if self.new.is_empty()
            || self
                .last_log
                .is_some_and(|t| t.elapsed() < IGNORED_LOG_EVERY)
        {
            return;
        }
        self.last_log = Some(Instant::now());
        let names: Vec<String> = self.new.drain(..).map(|n| format!("`{n}`")).collect();
        tracing::info!(
            ignored = self.seen.len(),
            "ignoring rows in `heartbeats` of workers this ward does not declare as `[[external]]`: {} (another host's, or a typo)",
            names.join(", ")
        );
    }
}
