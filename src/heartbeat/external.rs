//! `[[external]]` workers: processes ward does not run (on other machines,
//! or started by something else) that upsert a row into the `heartbeats`
//! table. This is their registry: one actor with a deadline timer that owns
//! every external's liveness and publishes their snapshots.
//!
//! The store's reader task reads the table (LISTEN/NOTIFY or polling) and
//! sends what it read here; the age of each beat is computed by the database
//! (`now() - last_heartbeat`), so clocks of other hosts never matter, and
//! deadlines then run on ward's monotonic clock. A passed deadline is only
//! a suspicion: the registry asks the reader for a fresh read, and says
//! `stale`/`hung` only when a read made after the deadline still shows the
//! old beat (`unknown` when no read comes back within `CONFIRM_GRACE`). The
//! rules (`Tracked`) are pure and take the time as an argument; the actor
//! only adds the timer and the channels. Must never do I/O, and never be
//! awaited by a program actor.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::{clip, liveness, Beat, Health, HeartbeatView, Liveness};
use crate::config::{External, OnHung};
use crate::program::{human, now_ms, BeatRefused};

/// Health changes kept per external (as for programs).
const HISTORY: usize = 16;
/// Messages from the reader and the control server waiting for the actor.
const INBOX: usize = 64;
/// How long a read asked for at a deadline may take before the health is `unknown`.
pub const CONFIRM_GRACE: Duration = Duration::from_secs(6);

/// One row of the `heartbeats` table, as the reader read it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExternalRow {
    pub status: Option<String>,
    pub jobs_processed: u64,
    pub error_count: u64,
    pub circuit_breaker_open: bool,
    pub current_task: Option<String>,
    pub last_error: Option<String>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Where the worker says it runs (informational).
    pub host: Option<String>,
    pub pid: Option<i64>,
    /// `last_heartbeat` on the database's clock (unix ms): a new value is a new beat.
    pub beat_db_ms: i64,
}

/// A row and how old its beat was when the database answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub name: String,
    pub row: ExternalRow,
    /// `now() - last_heartbeat`, computed by the database.
    pub age: Duration,
}

/// What the reader tells the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadResult {
    /// Rows read at `at`. `names` are the externals the query covered
    /// (`None`: every declared one); a covered name without a row has none.
    Rows {
        names: Option<Vec<String>>,
        rows: Vec<Observed>,
        at: Instant,
    },
    /// The table cannot be read (the database is down, or not migrated yet).
    Failed(String),
}

/// One health change of an external, kept in its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthChange {
    pub at_ms: u64,
    pub from: Health,
    pub to: Health,
    pub detail: String,
}

/// What an external looks like right now; `ward status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalSnapshot {
    pub name: String,
    /// Always `external`: ward runs no process for it.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub health: Health,
    /// Unix ms when `health` was entered.
    pub since_ms: u64,
    /// Why it has this health, when that needs saying.
    pub message: Option<String>,
    /// What its rows said. `last_beat_ms` is on ward's clock: the time ward
    /// read the row minus the age the database computed.
    pub heartbeat: HeartbeatView,
    /// The `host` and `pid` columns of its row (informational).
    pub worker_host: Option<String>,
    pub worker_pid: Option<i64>,
    /// Recent health changes, oldest first (only with `ward status NAME`).
    pub history: VecDeque<HealthChange>,
}

/// What ward knows of an external's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The table was not read yet.
    NotRead,
    /// Read, and there is no row (never written, or deleted).
    NoRow,
    /// A row (or an operator's beat) gives a last sign of life.
    Beating,
    /// A deadline passed while the table could not be read: ward cannot tell.
    Blind,
}

/// The health of an external, from what ward knows of it.
pub fn evaluate(known: Known, live: Liveness, circuit_open: bool) -> Health {
    match known {
        Known::NotRead | Known::Blind => Health::Unknown,
        Known::NoRow => Health::Stopped,
        Known::Beating => match live {
            Liveness::Hung => Health::Hung,
            Liveness::Stale => Health::Stale,
            Liveness::Fresh if circuit_open => Health::CircuitOpen,
            Liveness::Fresh => Health::Healthy,
        },
    }
}

/// One external's state: the pure rules of the registry.
#[derive(Debug, Clone)]
pub struct Tracked {
    decl: External,
    snap: ExternalSnapshot,
    known: Known,
    level: Liveness,
    /// The last row applied (to tell a new beat or new counters).
    row: Option<ExternalRow>,
    /// Last sign of life, on ward's monotonic clock.
    alive_at: Option<Instant>,
    /// A liveness deadline passed and a read was asked for: without one by
    /// then, ward cannot tell, and says `unknown`.
    confirm_by: Option<Instant>,
}

impl Tracked {
    pub fn new(decl: External, now_ms: u64) -> Tracked {
        let snap = ExternalSnapshot {
            name: decl.name.clone(),
            state: "external".into(),
            description: decl.description.clone(),
            health: Health::Unknown,
            since_ms: now_ms,
            message: Some("the `heartbeats` table was not read yet".into()),
            heartbeat: HeartbeatView::default(),
            worker_host: None,
            worker_pid: None,
            history: VecDeque::new(),
        };
        Tracked {
            decl,
            snap,
            known: Known::NotRead,
            level: Liveness::Fresh,
            row: None,
            alive_at: None,
            confirm_by: None,
        }
    }

    pub fn snapshot(&self) -> &ExternalSnapshot {
        &self.snap
    }

    /// A reload kept this external, maybe with new thresholds.
    pub fn redeclare(&mut self, decl: External, now: Instant, now_ms: u64) {
        self.snap.description = decl.description.clone();
        self.decl = decl;
        self.settle(now, now_ms, None);
    }

    /// When the registry must next look at this external: the end of a
    /// confirmation's grace, else the next liveness deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.confirm_by.or_else(|| self.liveness_deadline())
    }

    /// When the liveness level next changes, by the last beat seen.
    pub fn liveness_deadline(&self) -> Option<Instant> {
        if self.known != Known::Beating {
            return None;
        }
        let hb = &self.decl.heartbeat;
        let base = self.alive_at?;
        match self.level {
            Liveness::Fresh => Some(base + hb.stale_after),
            Liveness::Stale => Some(base + hb.hung_after),
            Liveness::Hung => None,
        }
    }

    /// A liveness deadline passed at `now`: wait for a read to confirm it.
    pub fn await_confirmation(&mut self, now: Instant) {
        if self.confirm_by.is_none() {
            self.confirm_by = Some(now + CONFIRM_GRACE);
        }
    }

    /// Its row as read at `at` (`None`: the query covered it and found none).
    pub fn observe(&mut self, row: Option<(&ExternalRow, Duration)>, at: Instant, now_ms: u64) {
        self.confirm_by = None;
        let Some((row, age)) = row else {
            let why = if self.known == Known::Beating || self.row.is_some() {
                "its row was deleted from `heartbeats`"
            } else {
                "no row in `heartbeats` yet"
            };
            self.row = None;
            self.alive_at = None;
            self.known = Known::NoRow;
            self.snap.message = Some(why.into());
            self.settle(at, now_ms, Some(why.into()));
            return;
        };
        let beat_at = at.checked_sub(age).unwrap_or(at);
        let new_beat = self.row.as_ref().map(|r| r.beat_db_ms) != Some(row.beat_db_ms);
        if self.row.as_ref() != Some(row) {
            let hb = &mut self.snap.heartbeat;
            if new_beat {
                hb.beats += 1;
                hb.last_beat_ms = Some(now_ms.saturating_sub(age.as_millis() as u64));
            }
            hb.status = row.status.as_deref().map(clip);
            hb.jobs_processed = row.jobs_processed;
            hb.error_count = row.error_count;
            hb.current_task = row.current_task.as_deref().map(clip);
            hb.last_error = row.last_error.as_deref().map(clip);
            hb.circuit_breaker_open = row.circuit_breaker_open;
            hb.metadata = row.metadata.clone();
            self.snap.worker_host = row.host.clone();
            self.snap.worker_pid = row.pid;
            self.row = Some(row.clone());
        }
        // Only ever forward: an operator's beat may be newer than the row.
        self.alive_at = Some(self.alive_at.map_or(beat_at, |a| a.max(beat_at)));
        if self.known != Known::Beating {
            self.known = Known::Beating;
            self.level = Liveness::Fresh;
        }
        self.settle(at, now_ms, None);
    }

    /// A beat from the operator (`ward beat NAME`): a sign of life now; its
    /// counters and texts hold until the worker writes its row again.
    pub fn operator_beat(&mut self, beat: &Beat, now: Instant, now_ms: u64) {
        self.snap.heartbeat.apply(beat, now_ms);
        self.alive_at = Some(now);
        if matches!(self.known, Known::NotRead | Known::NoRow | Known::Blind) {
            self.known = Known::Beating;
        }
        if let Some(record) = &beat.record {
            self.push(now_ms, self.snap.health, self.snap.health, record.clone());
        }
        self.settle(now, now_ms, None);
    }

    /// The table cannot be read: the last known state stands until a
    /// deadline passes that ward cannot check, then the health is `unknown`.
    pub fn outage(&mut self, error: &str, now: Instant, now_ms: u64) {
        if self.known == Known::NotRead {
            self.snap.message = Some(format!("cannot read the `heartbeats` table: {error}"));
            return;
        }
        if self.known == Known::Beating && self.liveness_deadline().is_some_and(|d| d <= now) {
            self.known = Known::Blind;
            self.confirm_by = None;
            let silent = self.alive_at.map(|a| now.saturating_duration_since(a));
            let why = format!(
                "cannot read the `heartbeats` table: {error}; the last beat seen was {} ago",
                silent.map_or_else(|| "?".into(), human)
            );
            self.snap.message = Some(why.clone());
            self.settle(now, now_ms, Some(why));
        }
    }

    /// Re-evaluate after time passed or something changed; record a health change.
    pub fn settle(&mut self, now: Instant, now_ms: u64, why: Option<String>) {
        if self.known == Known::Beating {
            let silent = self
                .alive_at
                .map_or(Duration::ZERO, |a| now.saturating_duration_since(a));
            self.level = liveness(&self.decl.heartbeat, silent);
        }
        let health = evaluate(
            self.known,
            self.level,
            self.snap.heartbeat.circuit_breaker_open,
        );
        let before = self.snap.health;
        if health == before {
            return;
        }
        let silent = self
            .alive_at
            .map(|a| human(now.saturating_duration_since(a)));
        let why = why.unwrap_or_else(|| match (before, health) {
            (_, Health::Stale | Health::Hung) => {
                format!("no beat for {}", silent.clone().unwrap_or_default())
            }
            (Health::CircuitOpen, _) => "circuit breaker closed (reported by the worker)".into(),
            (_, Health::CircuitOpen) => "circuit breaker open (reported by the worker)".into(),
            (Health::Stale | Health::Hung, _) => "heartbeat recovered".into(),
            _ => "its heartbeat row is fresh".into(),
        });
        self.snap.message = match health {
            Health::Healthy => None,
            Health::Stale | Health::Hung | Health::CircuitOpen | Health::Stopped => {
                Some(why.clone())
            }
            _ => self.snap.message.take(),
        };
        if health == Health::Hung {
            match self.decl.heartbeat.on_hung {
                OnHung::Alert => tracing::error!(
                    external = %self.decl.name,
                    "hung: no heartbeat row for {} (on_hung = alert)",
                    silent.unwrap_or_default()
                ),
                OnHung::None | OnHung::Restart => {}
            }
        }
        self.push(now_ms, before, health, why);
        self.snap.health = health;
        self.snap.since_ms = now_ms;
    }

    fn push(&mut self, at_ms: u64, from: Health, to: Health, detail: String) {
        tracing::info!(external = %self.decl.name, "health: {} -> {}; {detail}", from.as_str(), to.as_str());
        if self.snap.history.len() == HISTORY {
            self.snap.history.pop_front();
        }
        self.snap.history.push_back(HealthChange {
            at_ms,
            from,
            to,
            detail,
        });
    }
}

/// Something to tell the reader task.
enum Msg {
    Read(ReadResult),
    Configure(Vec<External>, oneshot::Sender<()>),
    Beat(String, Beat, oneshot::Sender<Result<(), BeatRefused>>),
}

/// Cloneable handle to the registry actor.
#[derive(Clone)]
pub struct Externals {
    tx: mpsc::Sender<Msg>,
    state: watch::Receiver<Arc<Vec<ExternalSnapshot>>>,
    /// Poked when a deadline passed: the reader reads the table at once.
    confirm: Arc<tokio::sync::Notify>,
}

impl Externals {
    /// Start the registry for `externals`; `changed` is poked on every publish.
    pub fn spawn(externals: &[External], changed: Arc<tokio::sync::Notify>) -> Externals {
        let now = now_ms();
        let tracked: Vec<Tracked> = externals
            .iter()
            .map(|x| Tracked::new(x.clone(), now))
            .collect();
        let (snap_tx, state) = watch::channel(Arc::new(
            tracked.iter().map(|t| t.snap.clone()).collect::<Vec<_>>(),
        ));
        let (tx, rx) = mpsc::channel(INBOX);
        let confirm = Arc::new(tokio::sync::Notify::new());
        let actor = Registry {
            tracked,
            outage: None,
            snap_tx,
            changed,
            confirm: confirm.clone(),
        };
        tokio::spawn(tracing::Instrument::instrument(
            actor.run(rx),
            tracing::info_span!("externals"),
        ));
        Externals { tx, state, confirm }
    }

    /// Notified when the registry needs a fresh read (a deadline passed).
    pub fn confirm_requests(&self) -> Arc<tokio::sync::Notify> {
        self.confirm.clone()
    }

    /// Every external, in config order.
    pub fn snapshot(&self) -> Arc<Vec<ExternalSnapshot>> {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<ExternalSnapshot>>> {
        self.state.clone()
    }

    /// The reader's news. Waits only for room in the actor's inbox.
    pub async fn read(&self, result: ReadResult) {
        let _ = self.tx.send(Msg::Read(result)).await;
    }

    /// Apply a reload's set of externals; returns once it is in place.
    pub async fn configure(&self, externals: Vec<External>) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Configure(externals, done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// An operator's beat for external `name`.
    pub async fn beat(&self, name: &str, beat: Beat) -> Result<(), BeatRefused> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Beat(name.to_string(), beat, reply))
            .await
            .map_err(|_| BeatRefused::Gone)?;
        rx.await.unwrap_or(Err(BeatRefused::Gone))
    }
}

struct Registry {
    tracked: Vec<Tracked>,
    /// The reader's last error, while it cannot read the table.
    outage: Option<String>,
    snap_tx: watch::Sender<Arc<Vec<ExternalSnapshot>>>,
    changed: Arc<tokio::sync::Notify>,
    confirm: Arc<tokio::sync::Notify>,
}

impl Registry {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            let deadline = self.tracked.iter().filter_map(Tracked::deadline).min();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.on_msg(m),
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    self.on_deadline();
                }
            }
            self.publish();
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        let (now, now_ms) = (Instant::now(), now_ms());
        match msg {
            Msg::Read(ReadResult::Rows { names, rows, at }) => {
                self.outage = None;
                for t in &mut self.tracked {
                    let covered = names.as_ref().map_or(true, |n| n.contains(&t.decl.name));
                    let row = rows.iter().find(|o| o.name == t.decl.name);
                    match row {
                        Some(o) => t.observe(Some((&o.row, o.age)), at, now_ms),
                        None if covered => t.observe(None, at, now_ms),
                        None => {}
                    }
                }
            }
            Msg::Read(ReadResult::Failed(error)) => {
                for t in &mut self.tracked {
                    t.outage(&error, now, now_ms);
                }
                self.outage = Some(error);
            }
            Msg::Configure(externals, done) => {
                let mut old = std::mem::take(&mut self.tracked);
                for x in externals {
                    match old.iter().position(|t| t.decl.name == x.name) {
                        Some(i) => {
                            let mut t = old.swap_remove(i);
                            t.redeclare(x, now, now_ms);
                            self.tracked.push(t);
                        }
                        None => self.tracked.push(Tracked::new(x, now_ms)),
                    }
                }
                let _ = done.send(());
            }
            Msg::Beat(name, beat, reply) => {
                let result = match self.tracked.iter_mut().find(|t| t.decl.name == name) {
                    Some(t) => {
                        t.operator_beat(&beat, now, now_ms);
                        Ok(())
                    }
                    None => Err(BeatRefused::Gone),
                };
                let _ = reply.send(result);
            }
        }
    }

    fn on_deadline(&mut self) {
        let (now, now_ms) = (Instant::now(), now_ms());
        let mut ask = false;
        for t in &mut self.tracked {
            if !t.deadline().is_some_and(|d| d <= now) {
                continue;
            }
            match (&self.outage, t.confirm_by) {
                (Some(error), _) => t.outage(error, now, now_ms),
                (None, Some(_)) => t.outage(
                    &format!(
                        "no read came back within {} of a deadline",
                        human(CONFIRM_GRACE)
                    ),
                    now,
                    now_ms,
                ),
                (None, None) => {
                    t.await_confirmation(now);
                    ask = true;
                }
            }
        }
        if ask {
            self.confirm.notify_one();
        }
    }

    fn publish(&mut self) {
        let snaps: Vec<ExternalSnapshot> = self.tracked.iter().map(|t| t.snap.clone()).collect();
        if **self.snap_tx.borrow() != snaps {
            self.snap_tx.send_replace(Arc::new(snaps));
            self.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeartbeatPolicy;

    fn decl(on_hung: OnHung) -> External {
        External {
            name: "billing".into(),
            description: None,
            heartbeat: HeartbeatPolicy {
                interval: Some(Duration::from_secs(10)),
                stale_after: Duration::from_secs(30),
                hung_after: Duration::from_secs(100),
                on_hung,
                watchdog_signal: nix::sys::signal::Signal::SIGABRT,
                cadence: None,
                grace: crate::config::defaults::GRACE,
            },
        }
    }

    fn row(beat: i64, jobs: u64) -> ExternalRow {
        ExternalRow {
            jobs_processed: jobs,
            beat_db_ms: beat,
            host: Some("app-1".into()),
            ..ExternalRow::default()
        }
    }

    fn healths(t: &Tracked) -> Vec<(Health, Health)> {
        t.snap.history.iter().map(|c| (c.from, c.to)).collect()
    }

    #[test]
    fn health_table() {
        use Health as H;
        use Liveness as L;
        let cases = [
            (Known::NotRead, L::Fresh, false, H::Unknown),
            (Known::Blind, L::Hung, false, H::Unknown),
            (Known::NoRow, L::Fresh, true, H::Stopped),
            (Known::Beating, L::Fresh, false, H::Healthy),
            (Known::Beating, L::Fresh, true, H::CircuitOpen),
            (Known::Beating, L::Stale, true, H::Stale),
            (Known::Beating, L::Hung, false, H::Hung),
        ];
        for (known, live, circuit, want) in cases {
            assert_eq!(evaluate(known, live, circuit), want, "{known:?} {live:?}");
        }
    }

    #[test]
    fn the_age_from_the_database_sets_the_deadlines() {
        let t0 = Instant::now();
        let mut t = Tracked::new(decl(OnHung::Alert), 1_000_000);
        assert_eq!(t.snap.health, Health::Unknown);
        // A beat 20s old when read: stale 10s later, hung 80s later.
        t.observe(Some((&row(5, 7), Duration::from_secs(20))), t0, 1_000_000);
        assert_eq!(t.snap.health, Health::Healthy);
        assert_eq!(t.snap.heartbeat.last_beat_ms, Some(980_000));
        assert_eq!(t.snap.heartbeat.jobs_processed, 7);
        assert_eq!(t.snap.worker_host.as_deref(), Some("app-1"));
        assert_eq!(t.deadline(), Some(t0 + Duration::from_secs(10)));
        t.settle(t0 + Duration::from_secs(10), 1_010_000, None);
        assert_eq!(t.snap.health, Health::Stale);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_secs(80)));
        t.settle(t0 + Duration::from_secs(80), 1_080_000, None);
        assert_eq!(t.snap.health, Health::Hung);
        assert_eq!(t.deadline(), None);
        // The same row again is no new beat; a new one recovers.
        t.observe(
            Some((&row(5, 7), Duration::from_secs(101))),
            t0 + Duration::from_secs(81),
            1_081_000,
        );
        assert_eq!((t.snap.health, t.snap.heartbeat.beats), (Health::Hung, 1));
        t.observe(
            Some((&row(6, 8), Duration::ZERO)),
            t0 + Duration::from_secs(82),
            1_082_000,
        );
        assert_eq!(
            (t.snap.health, t.snap.heartbeat.beats),
            (Health::Healthy, 2)
        );
        assert_eq!(
            healths(&t),
            [
                (Health::Unknown, Health::Healthy),
                (Health::Healthy, Health::Stale),
                (Health::Stale, Health::Hung),
                (Health::Hung, Health::Healthy),
            ]
        );
        assert_eq!(t.snap.history[3].detail, "heartbeat recovered");
    }

    #[test]
    fn circuit_and_deleted_rows() {
        let t0 = Instant::now();
        let mut t = Tracked::new(decl(OnHung::None), 0);
        t.observe(None, t0, 0);
        assert_eq!(t.snap.health, Health::Stopped);
        assert_eq!(
            t.snap.message.as_deref(),
            Some("no row in `heartbeats` yet")
        );
        let mut open = row(1, 0);
        open.circuit_breaker_open = true;
        t.observe(Some((&open, Duration::ZERO)), t0, 0);
        assert_eq!(t.snap.health, Health::CircuitOpen);
        t.observe(Some((&row(2, 0), Duration::ZERO)), t0, 0);
        assert_eq!(t.snap.health, Health::Healthy);
        assert_eq!(
            t.snap.history.back().map(|c| c.detail.as_str()),
            Some("circuit breaker closed (reported by the worker)")
        );
        t.observe(None, t0, 0);
        assert_eq!(t.snap.health, Health::Stopped);
        assert_eq!(
            t.snap.message.as_deref(),
            Some("its row was deleted from `heartbeats`")
        );
    }

    #[test]
    fn an_outage_holds_the_last_state_until_a_deadline_it_cannot_check() {
        let t0 = Instant::now();
        let mut t = Tracked::new(decl(OnHung::Alert), 0);
        t.outage("connection refused", t0, 0);
        assert_eq!(t.snap.health, Health::Unknown);
        assert!(t
            .snap
            .message
            .as_deref()
            .unwrap_or("")
            .contains("connection refused"));
        t.observe(Some((&row(1, 3), Duration::ZERO)), t0, 0);
        // Within the deadlines: still healthy, as far as anyone can know.
        t.outage("connection refused", t0 + Duration::from_secs(5), 5_000);
        assert_eq!(t.snap.health, Health::Healthy);
        // Past stale_after: ward cannot tell stale from healthy.
        t.outage("connection refused", t0 + Duration::from_secs(31), 31_000);
        assert_eq!(t.snap.health, Health::Unknown);
        assert_eq!(t.deadline(), None);
        assert_eq!(t.snap.heartbeat.jobs_processed, 3, "counters are kept");
        // Back: the database says how old the beat is.
        t.observe(
            Some((&row(1, 3), Duration::from_secs(40))),
            t0 + Duration::from_secs(40),
            40_000,
        );
        assert_eq!(t.snap.health, Health::Stale);
    }

    #[test]
    fn a_deadline_waits_for_a_read_to_confirm_it() {
        let t0 = Instant::now();
        let mut t = Tracked::new(decl(OnHung::Alert), 0);
        t.observe(Some((&row(1, 3), Duration::ZERO)), t0, 0);
        let stale_at = t0 + Duration::from_secs(30);
        assert_eq!(t.deadline(), Some(stale_at));
        t.await_confirmation(stale_at);
        assert_eq!(t.deadline(), Some(stale_at + CONFIRM_GRACE));
        assert_eq!(t.snap.health, Health::Healthy, "not stale on a timer alone");
        // The read made after the deadline shows a beat written meanwhile.
        t.observe(Some((&row(2, 4), Duration::from_secs(1))), stale_at, 30_000);
        assert_eq!(t.snap.health, Health::Healthy);
        assert_eq!(t.deadline(), Some(t0 + Duration::from_secs(59)));
        // A read showing the old beat confirms it.
        t.await_confirmation(t0 + Duration::from_secs(59));
        t.observe(
            Some((&row(2, 4), Duration::from_secs(30))),
            t0 + Duration::from_secs(59),
            59_000,
        );
        assert_eq!(t.snap.health, Health::Stale);
        // No read within the grace: ward cannot tell.
        let hung_at = t0 + Duration::from_secs(129);
        t.await_confirmation(hung_at);
        t.outage("no read came back", hung_at + CONFIRM_GRACE, 135_000);
        assert_eq!(t.snap.health, Health::Unknown);
    }

    #[test]
    fn operator_beats_are_signs_of_life() {
        let t0 = Instant::now();
        let mut t = Tracked::new(decl(OnHung::Alert), 0);
        t.observe(Some((&row(1, 3), Duration::from_secs(200))), t0, 0);
        assert_eq!(t.snap.health, Health::Hung);
        let beat = Beat {
            jobs: Some(super::super::Counter::Add(1)),
            ..Beat::default()
        };
        t.operator_beat(&beat, t0 + Duration::from_secs(1), 1_000);
        assert_eq!(t.snap.health, Health::Healthy);
        assert_eq!(t.snap.heartbeat.jobs_processed, 4);
        // A later read of the same old row does not move the last sign of life back.
        t.observe(
            Some((&row(1, 3), Duration::from_secs(202))),
            t0 + Duration::from_secs(2),
            2_000,
        );
        assert_eq!(t.snap.health, Health::Healthy);
    }
}
