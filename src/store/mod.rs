//! The status tables: ward writes every program's state to SQL (SQLite
//! embedded by default, PostgreSQL for a fleet) for dashboards.
//!
//! Owns the database. Two tasks, neither of which the actors know about:
//! - the **observer** watches the supervisor's epoch and every instance's
//!   snapshot, diffs them ([`diff`]) into coalesced rows and new events, and
//!   hands batches to the writer with `try_send` (never waiting);
//! - the **writer** is an actor with a bounded inbox: it merges batches,
//!   writes each in one transaction, and when the database is down keeps the
//!   latest row per worker in memory (events up to a bound, the rest counted
//!   as dropped), warns once, and retries with backoff;
//! - the **reader** ([`heartbeats`]) reads the `heartbeats` table that
//!   `[[external]]` workers write, for the externals registry, once the
//!   writer has applied the migrations (only while externals are declared).
//!
//! The observer also turns the externals registry's snapshots into rows
//! (state `external`) and events.
//!
//! Must never block supervision: nothing here is awaited by an actor, the
//! control server or a log pump. Reads of live state never come from here
//! (`ward status` asks the actors); `ward status --db` and `ward events` read
//! the tables through [`Db`]. See docs/SCHEMA.md for the tables.

pub mod db;
pub mod diff;
pub mod heartbeats;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, SupervisorSettings};
use crate::control::protocol::StoreStatus;
use crate::heartbeat::external::ExternalSnapshot;
use crate::program::{now_ms, Snapshot};
use crate::supervisor::{Generation, Supervisor};

pub use db::{redact, Db, EventFilter, EventView, HostRow, StoreError, WorkerView};
use diff::{EventRow, Pending, Seen, SupervisorRow};

/// Events kept in memory while the database cannot take them.
pub const MAX_PENDING_EVENTS: usize = 10_000;
/// Batches waiting in the writer's inbox before the observer keeps merging locally.
const INBOX: usize = 64;
/// Longest wait between two write attempts during an outage.
const RETRY_MAX: Duration = Duration::from_secs(5);
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// One write attempt (connect, migrate, transaction) may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a change is signalled, wait this long (more changes coalesce) before scanning.
const SCAN_EVERY: Duration = Duration::from_millis(100);
/// After a state change, wait this long before scanning (see `Observer::run`).
const SETTLE: Duration = Duration::from_millis(20);
/// Every this many refreshes, all rows are rewritten (uptime, updated_at).
const FORCE_EVERY: u32 = 12;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The URL to open: the `database_url_env` variable's value when it is set
/// and not empty, else `database`.
pub fn database_url(s: &SupervisorSettings) -> String {
    if let Some(var) = &s.database_url_env {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return v.trim().to_string();
            }
        }
    }
    s.database.clone()
}

/// The running observer and writer.
pub struct StoreHandle {
    stop: Option<oneshot::Sender<oneshot::Sender<bool>>>,
    observer: JoinHandle<()>,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
}

enum Msg {
    Batch(Pending),
    /// Write what is pending now (one attempt) and say whether it worked.
    Flush(Pending, oneshot::Sender<bool>),
}

/// Start writing the status tables for `sup`; `None` when `[store] enabled = false`.
/// Never fails: a bad or unreachable database is reported and retried.
pub fn spawn(config: &Config, sup: Arc<Supervisor>) -> Option<StoreHandle> {
    if !config.store.enabled {
        tracing::info!("status tables disabled ([store] enabled = false)");
        return None;
    }
    let url = database_url(&config.supervisor);
    let backend = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    let health = Arc::new(Mutex::new(StoreStatus {
        backend: backend.into(),
        url: redact(&url),
        ..StoreStatus::default()
    }));
    sup.set_store_status(health.clone());
    let (tx, rx) = mpsc::channel(INBOX);
    let (stop_tx, stop_rx) = oneshot::channel();
    let host = config.supervisor.host.clone();
    let span = tracing::info_span!("store", backend);
    let (migrated_tx, migrated) = watch::channel(false);
    let reader = tokio::spawn(tracing::Instrument::instrument(
        heartbeats::run(url.clone(), sup.clone(), migrated),
        span.clone(),
    ));
    let writer = Writer {
        migrated: migrated_tx,
        url,
        host,
        db: None,
        health: health.clone(),
        pending: Pending::default(),
        failures: 0,
        next_try: Instant::now(),
        outage: None,
    };
    let writer = tokio::spawn(tracing::Instrument::instrument(
        writer.run(rx),
        span.clone(),
    ));
    let observer = Observer::new(config, sup, health, tx);
    let observer = tokio::spawn(tracing::Instrument::instrument(observer.run(stop_rx), span));
    Some(StoreHandle {
        stop: Some(stop_tx),
        observer,
        writer,
        reader,
    })
}

impl StoreHandle {
    /// Write the final state (every instance, the supervisor row marked
    /// stopped) within `deadline`, then end both tasks.
    pub async fn shutdown(mut self, deadline: Duration) {
        let (done_tx, done_rx) = oneshot::channel();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(done_tx);
        }
        match tokio::time::timeout(deadline, done_rx).await {
            Ok(Ok(true)) => tracing::debug!("status tables flushed"),
            Ok(_) => tracing::warn!("could not write the final state to the status tables"),
            Err(_) => tracing::warn!(
                ?deadline,
                "gave up writing the final state to the status tables"
            ),
        }
        self.observer.abort();
        self.writer.abort();
        self.reader.abort();
    }
}

struct Tracked {
    rx: watch::Receiver<Snapshot>,
    seen: Seen,
    /// The last sample changed its CPU % or RSS: the next scan looks again.
    moved: bool,
}

/// Turns snapshot changes into batches for the writer.
struct Observer {
    sup: Arc<Supervisor>,
    health: Arc<Mutex<StoreStatus>>,
    tx: mpsc::Sender<Msg>,
    refresh: Duration,
    retention: Duration,
    started_at_ms: u64,
    config_path: String,
    tracked: BTreeMap<String, Tracked>,
    /// The `[[external]]` registry's snapshots, and what was sent of each.
    externals: watch::Receiver<Arc<Vec<ExternalSnapshot>>>,
    externals_seen: BTreeMap<String, diff::SeenExternal>,
    generation: Option<Arc<Generation>>,
    /// Built but not yet accepted by the writer (its inbox was full).
    local: Pending,
}

impl Observer {
    fn new(
        config: &Config,
        sup: Arc<Supervisor>,
        health: Arc<Mutex<StoreStatus>>,
        tx: mpsc::Sender<Msg>,
    ) -> Observer {
        let mut externals = sup.externals().subscribe();
        externals.mark_changed();
        Observer {
            externals,
            externals_seen: BTreeMap::new(),
            started_at_ms: sup.started_at_ms,
            sup,
            health,
            tx,
            refresh: config.store.refresh,
            retention: config.store.events_retention,
            config_path: config.path.display().to_string(),
            tracked: BTreeMap::new(),
            generation: None,
            local: Pending::default(),
        }
    }

    async fn run(mut self, mut stop: oneshot::Receiver<oneshot::Sender<bool>>) {
        let mut epoch = self.sup.subscribe_epoch();
        let mut refresh = tokio::time::interval(self.refresh);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let changed = self.sup.changed();
        let mut last_prune: Option<Instant> = None;
        let mut refreshes: u32 = 0;
        loop {
            tokio::select! {
                done = &mut stop => {
                    self.scan(true);
                    self.local.supervisor = Some(self.supervisor_row(Some(now_ms())));
                    let batch = std::mem::take(&mut self.local);
                    if let Ok(done) = done {
                        let _ = self.tx.send(Msg::Flush(batch, done)).await;
                    }
                    return;
                }
                changed = epoch.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Let the burst settle (a restart is several transitions
                    // within a few ms): one scan for all of it, and no work
                    // competing with the spawn it is part of.
                    tokio::time::sleep(SETTLE).await;
                    self.scan(false);
                }
                // Heartbeat-only changes do not bump the epoch; this wakes on
                // any publish (coalesced), and never when nothing happens.
                _ = changed.notified() => {
                    tokio::time::sleep(SCAN_EVERY).await;
                    self.scan(false);
                }
                _ = refresh.tick() => {
                    // Metrics every refresh, but rows only when their content
                    // changed; every FORCE_EVERY-th refresh rewrites them all
                    // (uptime, updated_at). Liveness is the supervisors row.
                    refreshes = refreshes.wrapping_add(1);
                    self.sample_metrics();
                    self.scan(refreshes % FORCE_EVERY == 0);
                    self.local.supervisor = Some(self.supervisor_row(None));
                    if last_prune.map_or(true, |t| t.elapsed() >= PRUNE_EVERY) {
                        last_prune = Some(Instant::now());
                        self.local.prune_before_ms = Some(now_ms().saturating_sub(self.retention.as_millis() as u64));
                    }
                }
            }
            self.send();
        }
    }

    fn supervisor_row(&self, stopped_at_ms: Option<u64>) -> SupervisorRow {
        let dropped = lock(&self.health).dropped_events;
        SupervisorRow {
            pid: i64::from(std::process::id()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_path: self.config_path.clone(),
            started_at_ms: self.started_at_ms,
            last_seen_at_ms: now_ms(),
            stopped_at_ms,
            refresh_ms: self.refresh.as_millis() as i64,
            dropped_events: dropped as i64,
        }
    }

    /// Follow the current generation: new handles are tracked, handles of a
    /// reload replace their predecessors, and the key set is sent so rows
    /// of removed instances get marked.
    fn follow_generation(&mut self) {
        let current = self.sup.current();
        if self
            .generation
            .as_ref()
            .is_some_and(|g| Arc::ptr_eq(g, &current))
        {
            return;
        }
        let mut keys = BTreeMap::new();
        let mut tracked = BTreeMap::new();
        for h in &current.handles {
            let rx = h.subscribe();
            let entry = match self.tracked.remove(&h.id) {
                Some(mut t) if t.rx.same_channel(&rx) => {
                    t.rx = rx;
                    t
                }
                Some(mut t) => {
                    // A new actor for the same instance: its history starts afresh.
                    t.seen.new_actor();
                    Tracked {
                        rx,
                        seen: t.seen,
                        moved: false,
                    }
                }
                None => Tracked {
                    rx,
                    seen: Seen::default(),
                    moved: false,
                },
            };
            let mut entry = entry;
            if entry.seen.never_sent() {
                // Look at least once, even if it never changes.
                entry.rx.mark_changed();
            }
            let snap = entry.rx.borrow();
            keys.insert(
                (snap.program.clone(), i64::from(snap.instance)),
                snap.name.clone(),
            );
            drop(snap);
            tracked.insert(h.id.clone(), entry);
        }
        for x in &current.config.externals {
            keys.insert((x.name.clone(), 0), x.name.clone());
        }
        self.tracked = tracked;
        self.generation = Some(current);
        self.local.current = Some(keys);
    }

    /// Sample every instance's CPU %, RSS and dropped log bytes. A steady
    /// process's figures change without a new snapshot: the next scan looks
    /// again at the instances whose figures moved (only those: with 1,000
    /// idle programs, most did not).
    fn sample_metrics(&mut self) {
        self.follow_generation();
        let tracked = &mut self.tracked;
        self.sup.sample_metrics(|id, m| {
            if let Some(t) = tracked.get_mut(id) {
                t.moved |= t.seen.metrics != m;
                t.seen.metrics = m;
            }
        });
    }

    /// Diff the instances whose snapshot or figures changed (all of them
    /// when `force`).
    fn scan(&mut self, force: bool) {
        self.follow_generation();
        let now = now_ms();
        let mut gaps = 0;
        for t in self.tracked.values_mut() {
            let moved = std::mem::take(&mut t.moved);
            let changed = t.rx.has_changed().unwrap_or(false);
            if !changed && !force && !moved {
                continue;
            }
            let (d, gap) = {
                let snap = t.rx.borrow_and_update();
                let d = diff::observe(&mut t.seen, &snap, now, force);
                let gap = d.gap.then(|| gap_event(&snap, now));
                (d, gap)
            };
            if let Some(row) = d.row {
                self.local.push_row(row);
            }
            if let Some(gap) = gap {
                gaps += 1;
                self.local.dropped += 1;
                self.local.push_event(gap, MAX_PENDING_EVENTS);
            }
            for e in d.events {
                self.local.push_event(e, MAX_PENDING_EVENTS);
            }
        }
        if force || self.externals.has_changed().unwrap_or(false) {
            let snaps = self.externals.borrow_and_update().clone();
            let mut seen = std::mem::take(&mut self.externals_seen);
            for x in snaps.iter() {
                let s = seen.remove(&x.name).unwrap_or_default();
                let s = self.externals_seen.entry(x.name.clone()).or_insert(s);
                let d = diff::observe_external(s, x, now, force);
                if let Some(row) = d.row {
                    self.local.push_row(row);
                }
                if d.gap {
                    gaps += 1;
                    self.local.dropped += 1;
                }
                for e in d.events {
                    self.local.push_event(e, MAX_PENDING_EVENTS);
                }
            }
        }
        if gaps > 0 {
            tracing::debug!(
                instances = gaps,
                "transitions were faster than the store could look; some events were not recorded"
            );
        }
    }

    /// Hand the local batch to the writer unless its inbox is full.
    fn send(&mut self) {
        if self.local.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.local);
        match self.tx.try_send(Msg::Batch(batch)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Msg::Batch(batch))) => {
                // Keep it; newer changes merge on top and go with the next send.
                self.local = batch;
            }
            Err(_) => {}
        }
    }
}

fn gap_event(snap: &Snapshot, now: u64) -> EventRow {
    EventRow {
        at_ms: now,
        program: snap.program.clone(),
        instance: i64::from(snap.instance),
        name: snap.name.clone(),
        event: "events_dropped",
        from_state: None,
        to_state: Some(snap.state.as_str().into()),
        pid: None,
        exit_code: None,
        exit_signal: None,
        delay_ms: None,
        detail: Some("more than 16 transitions between two looks: some were not recorded".into()),
    }
}

fn lock(m: &Mutex<StoreStatus>) -> std::sync::MutexGuard<'_, StoreStatus> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer actor: merges batches, writes them, survives outages.
struct Writer {
    /// Set once the migrations are applied (the reader waits for it).
    migrated: watch::Sender<bool>,
    url: String,
    host: String,
    db: Option<Db>,
    health: Arc<Mutex<StoreStatus>>,
    pending: Pending,
    failures: u32,
    next_try: Instant,
    /// Since when writes fail, and how many events were dropped before it.
    outage: Option<(Instant, u64)>,
}

impl Writer {
    async fn run(mut self, mut inbox: mpsc::Receiver<Msg>) {
        loop {
            let msg = if self.pending.is_empty() {
                match inbox.recv().await {
                    Some(m) => Some(m),
                    None => return,
                }
            } else {
                tokio::select! {
                    m = inbox.recv() => match m {
                        Some(m) => Some(m),
                        None => return,
                    },
                    _ = tokio::time::sleep_until(self.next_try.into()) => None,
                }
            };
            let mut flush = None;
            let mut next = msg;
            loop {
                match next {
                    Some(Msg::Batch(b)) => self.merge(b),
                    Some(Msg::Flush(b, reply)) => {
                        self.merge(b);
                        flush = Some(reply);
                    }
                    None => {}
                }
                next = match inbox.try_recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                };
            }
            if let Some(reply) = flush {
                let ok = self.attempt().await;
                let _ = reply.send(ok);
                return;
            }
            if Instant::now() >= self.next_try {
                self.attempt().await;
            }
        }
    }

    fn merge(&mut self, mut batch: Pending) {
        let mut h = lock(&self.health);
        h.dropped_events += std::mem::take(&mut batch.dropped);
        let before = self.pending.dropped;
        self.pending.merge(batch, MAX_PENDING_EVENTS);
        h.dropped_events += self.pending.dropped - before;
        self.pending.dropped = 0;
        h.pending = self.pending.len();
    }

    /// One try at writing everything pending.
    async fn attempt(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let result = tokio::time::timeout(ATTEMPT_TIMEOUT, self.write()).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())),
        };
        match result {
            Ok(written) => {
                self.failures = 0;
                self.next_try = Instant::now();
                self.pending = Pending::default();
                let mut h = lock(&self.health);
                h.connected = true;
                h.pending = 0;
                h.last_error = None;
                if let Some((since, dropped_before)) = self.outage.take() {
                    tracing::info!(
                        url = %redact(&self.url),
                        after = ?since.elapsed(),
                        rows = written.rows,
                        events = written.events,
                        dropped_events = h.dropped_events - dropped_before,
                        "the status database is reachable again; wrote the state kept in memory"
                    );
                }
                if written.removed > 0 {
                    tracing::info!(
                        instances = written.removed,
                        "marked programs no longer in the config as `removed` in the status tables"
                    );
                }
                true
            }
            Err(error) => {
                self.failures += 1;
                let delay = RETRY_FIRST
                    .saturating_mul(1 << self.failures.min(8))
                    .min(RETRY_MAX);
                self.next_try = Instant::now() + delay;
                let mut h = lock(&self.health);
                h.connected = false;
                h.last_error = Some(error.clone());
                if self.outage.is_none() {
                    self.outage = Some((Instant::now(), h.dropped_events));
                    tracing::warn!(
                        url = %redact(&self.url),
                        %error,
                        "cannot write the status tables; ward keeps supervising, keeps the latest state in memory and retries (hint: check that the database is up and `[supervisor] database` is right)"
                    );
                }
                false
            }
        }
    }

    async fn write(&mut self) -> Result<db::Written, String> {
        if self.db.is_none() {
            let db = Db::open(&self.url, true).await.map_err(|e| e.chain())?;
            let applied = db.migrate(&self.url).await.map_err(|e| e.chain())?;
            for (version, description) in applied {
                tracing::info!(version, %description, "applied a status-table migration");
            }
            self.migrated.send_replace(true);
            self.db = Some(db);
        }
        let db = self.db.as_ref().expect("opened above");
        db.write(&self.host, &self.pending, now_ms())
            .await
            .map_err(|e| StoreError::Query(e).chain())
    }
}
