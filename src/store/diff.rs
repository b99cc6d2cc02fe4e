//! The pure half of the store: snapshots in, rows and events out, and the
//! coalescing buffer between the observer and the writer.
//!
//! No I/O and no clock (callers pass `now_ms`), so every rule here is tested
//! by the unit tests below: which transitions are new, what a gap in the
//! 16-entry history ring means, and how repeated updates of a row coalesce.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::exit::Exit;
use crate::heartbeat::external::{ExternalSnapshot, HealthChange};
use crate::heartbeat::{Health, HeartbeatView};
use crate::program::{Kind, Phase, Snapshot, Transition};

/// A worker row's key within one host: (program, instance index).
pub type WorkerKey = (String, i64);

/// One `worker_status` row (the host is the writer's).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerRow {
    pub program: String,
    pub instance: i64,
    pub name: String,
    pub state: String,
    pub pid: Option<i64>,
    pub started_at_ms: Option<u64>,
    pub state_since_ms: u64,
    pub uptime_ms: Option<i64>,
    pub restarts: i64,
    pub last_exit_code: Option<i64>,
    pub last_exit_signal: Option<i64>,
    pub last_exit_at_ms: Option<u64>,
    pub next_start_at_ms: Option<u64>,
    pub message: Option<String>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<i64>,
    pub log_bytes_dropped: i64,
    pub updated_at_ms: u64,
    /// From the heartbeat registry (null until a worker beats).
    pub last_heartbeat_at_ms: Option<u64>,
    pub health: String,
    pub status_text: Option<String>,
    pub jobs_processed: Option<i64>,
    pub error_count: Option<i64>,
    pub circuit_breaker_open: Option<bool>,
    pub current_task: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
}

impl WorkerRow {
    pub fn key(&self) -> WorkerKey {
        (self.program.clone(), self.instance)
    }

    /// Equal apart from what changes by itself with time.
    fn same_content(&self, other: &WorkerRow) -> bool {
        let strip = |r: &WorkerRow| WorkerRow {
            uptime_ms: None,
            updated_at_ms: 0,
            ..r.clone()
        };
        strip(self) == strip(other)
    }
}

/// One `worker_events` row.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub at_ms: u64,
    pub program: String,
    pub instance: i64,
    pub name: String,
    /// `started`, `restarted`, `running`, `exited`, `backoff`, `fatal`,
    /// `stopping`, `stopped`, `drained`, `waiting`, `unknown`, `removed`,
    /// `events_dropped`;
    /// from heartbeats `heartbeat_stale`, `heartbeat_hung`, `late`, `on_time`
    /// and `health`.
    pub event: &'static str,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub pid: Option<i64>,
    pub exit_code: Option<i64>,
    pub exit_signal: Option<i64>,
    pub delay_ms: Option<i64>,
    pub detail: Option<String>,
}

/// Figures only a sample of `/proc` measures (refreshed every `[store] refresh`).
pub use crate::supervisor::Metrics;

/// What the observer remembers of one instance between two looks.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The newest transition already turned into events.
    last: Option<Transition>,
    /// The last row sent.
    row: Option<WorkerRow>,
    pub metrics: Metrics,
}

impl Seen {
    /// The instance got a new actor (a reload changed it): its history
    /// starts afresh, so the old marker must not count as a gap.
    pub fn new_actor(&mut self) {
        self.last = None;
    }

    /// No row was sent for this instance yet.
    pub fn never_sent(&self) -> bool {
        self.row.is_none()
    }
}

/// What changed in one instance since the last look.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    pub row: Option<WorkerRow>,
    pub events: Vec<EventRow>,
    /// The history ring overflowed between two looks: some transitions were
    /// never seen (at least one).
    pub gap: bool,
}

/// Compare `snap` with what was seen before. `force` sends the row even if
/// only its time-dependent columns changed (the periodic refresh).
pub fn observe(seen: &mut Seen, snap: &Snapshot, now_ms: u64, force: bool) -> Diff {
    let mut diff = Diff::default();
    let history: Vec<&Transition> = snap.history.iter().collect();
    let (new_from, gap) = new_since(seen.last.as_ref(), &history);
    diff.gap = gap;
    let count = history.len();
    for (i, t) in history.iter().enumerate().skip(new_from) {
        let is_last = i + 1 == count;
        events_for(snap, t, is_last, &mut diff.events);
    }
    if let Some(t) = history.last() {
        seen.last = Some((*t).clone());
    }
    diff.row = changed_row(&mut seen.row, row_for(snap, seen.metrics, now_ms), force);
    diff
}

/// Where the entries of a history ring not seen yet start, given the last
/// one seen; and whether some were lost (the last seen left the ring).
fn new_since<T: PartialEq>(last: Option<&T>, history: &[&T]) -> (usize, bool) {
    match last {
        None => (0, false),
        Some(last) => match history.iter().rposition(|t| *t == last) {
            Some(i) => (i + 1, false),
            // Everything in the ring is new, and whatever fell out before it is lost.
            None => (0, !history.is_empty()),
        },
    }
}

/// `row` when its content differs from the last one sent (or `force`).
fn changed_row(sent: &mut Option<WorkerRow>, row: WorkerRow, force: bool) -> Option<WorkerRow> {
    let changed = sent.as_ref().map_or(true, |prev| !prev.same_content(&row));
    if changed || force {
        *sent = Some(row.clone());
        Some(row)
    } else {
        None
    }
}

/// What the observer remembers of one `[[external]]` between two looks.
#[derive(Debug, Clone, Default)]
pub struct SeenExternal {
    last: Option<HealthChange>,
    row: Option<WorkerRow>,
}

/// Compare an external's snapshot with what was seen before: its row, and
/// an event per new health change.
pub fn observe_external(
    seen: &mut SeenExternal,
    snap: &ExternalSnapshot,
    now_ms: u64,
    force: bool,
) -> Diff {
    let history: Vec<&HealthChange> = snap.history.iter().collect();
    let (new_from, gap) = new_since(seen.last.as_ref(), &history);
    let events = history[new_from..]
        .iter()
        .map(|c| EventRow {
            at_ms: c.at_ms,
            program: snap.name.clone(),
            instance: 0,
            name: snap.name.clone(),
            // A record without a change (a job run reported for it) is `health`.
            event: if c.from == c.to {
                "health"
            } else {
                health_event(c.from, c.to)
            },
            from_state: Some(snap.state.clone()),
            to_state: Some(snap.state.clone()),
            pid: None,
            exit_code: None,
            exit_signal: None,
            delay_ms: None,
            detail: Some(format!(
                "health: {} -> {}; {}",
                c.from.as_str(),
                c.to.as_str(),
                c.detail
            )),
        })
        .collect();
    if let Some(c) = history.last() {
        seen.last = Some((*c).clone());
    }
    Diff {
        row: changed_row(&mut seen.row, external_row(snap, now_ms), force),
        events,
        gap,
    }
}

/// The `worker_status` row of an external: state `external`, no process
/// columns; `state_since` is when its health last changed.
pub fn external_row(snap: &ExternalSnapshot, now_ms: u64) -> WorkerRow {
    let where_ = match (&snap.worker_host, snap.worker_pid) {
        (Some(h), Some(p)) => Some(format!("on host {h}, pid {p}")),
        (Some(h), None) => Some(format!("on host {h}")),
        (None, Some(p)) => Some(format!("pid {p}")),
        (None, None) => None,
    };
    WorkerRow {
        program: snap.name.clone(),
        instance: 0,
        name: snap.name.clone(),
        state: snap.state.clone(),
        pid: None,
        started_at_ms: None,
        state_since_ms: snap.since_ms,
        uptime_ms: None,
        restarts: 0,
        last_exit_code: None,
        last_exit_signal: None,
        last_exit_at_ms: None,
        next_start_at_ms: None,
        message: snap.message.clone().or(where_),
        cpu_percent: None,
        rss_bytes: None,
        log_bytes_dropped: 0,
        ..heartbeat_columns(&snap.heartbeat, snap.health, now_ms)
    }
}

/// The `worker_status` row of a snapshot.
pub fn row_for(snap: &Snapshot, m: Metrics, now_ms: u64) -> WorkerRow {
    // Not while the rest of a group is stopped after its main process exited.
    let live = snap.state.has_process() && snap.pid.is_some();
    let (code, signal) = exit_parts(snap.last_exit.as_ref().map(|e| e.exit));
    WorkerRow {
        program: snap.program.clone(),
        instance: i64::from(snap.instance),
        name: snap.name.clone(),
        state: snap.state.as_str().to_string(),
        pid: snap.pid.map(i64::from),
        started_at_ms: snap.started_at_ms,
        state_since_ms: snap.since_ms,
        uptime_ms: if live {
            snap.started_at_ms.map(|s| now_ms.saturating_sub(s) as i64)
        } else {
            None
        },
        restarts: i64::from(snap.restarts),
        last_exit_code: code,
        last_exit_signal: signal,
        last_exit_at_ms: snap.last_exit.as_ref().map(|e| e.at_ms),
        next_start_at_ms: snap.next_start_ms,
        message: snap.message.clone(),
        cpu_percent: if live { m.cpu_percent } else { None },
        rss_bytes: if live {
            m.rss_bytes.map(|b| b as i64)
        } else {
            None
        },
        log_bytes_dropped: m.log_bytes_dropped as i64,
        ..heartbeat_columns(&snap.heartbeat, snap.health, now_ms)
    }
}

/// A row with only the heartbeat columns (and `updated_at`) filled in.
fn heartbeat_columns(hb: &HeartbeatView, health: Health, now_ms: u64) -> WorkerRow {
    let beating = hb.last_beat_ms.is_some() || hb.beats > 0;
    WorkerRow {
        updated_at_ms: now_ms,
        last_heartbeat_at_ms: hb.last_beat_ms,
        health: health.as_str().to_string(),
        status_text: hb.status.clone(),
        jobs_processed: beating.then_some(hb.jobs_processed as i64),
        error_count: beating.then_some(hb.error_count as i64),
        circuit_breaker_open: beating.then_some(hb.circuit_breaker_open),
        current_task: hb.current_task.clone(),
        metadata: hb
            .metadata
            .as_ref()
            .and_then(|m| serde_json::to_string(m).ok()),
        ..WorkerRow::default()
    }
}

fn exit_parts(exit: Option<Exit>) -> (Option<i64>, Option<i64>) {
    match exit {
        Some(Exit::Code(c)) => (Some(i64::from(c)), None),
        Some(Exit::Signal(s)) => (None, Some(i64::from(s))),
        None => (None, None),
    }
}

/// The event a change of heartbeat health is (the names of docs/SCHEMA.md).
fn health_event(from: Health, to: Health) -> &'static str {
    match (from, to) {
        (_, Health::Late) => "late",
        (Health::Late, _) => "on_time",
        (_, Health::Stale) => "heartbeat_stale",
        (_, Health::Hung) => "heartbeat_hung",
        _ => "health",
    }
}

/// The events one transition stands for (an exit into backoff is two: the
/// exit and the delay chosen).
///
/// A main process that exits and leaves members in its process group goes
/// `running -> stopping` with the exit on the transition (`exited`,
/// `stopping`), and once the group is empty `stopping -> backoff|exited|fatal`
/// (`drained`, then `backoff` or `fatal`): the exit is counted once, when it
/// happened. Only such a drain leaves `stopping` for those states; a stop by
/// a user ends in `stopped`.
fn events_for(snap: &Snapshot, t: &Transition, is_last: bool, out: &mut Vec<EventRow>) {
    let (code, signal) = exit_parts(t.exit);
    let base = EventRow {
        at_ms: t.at_ms,
        program: snap.program.clone(),
        instance: i64::from(snap.instance),
        name: snap.name.clone(),
        event: "",
        from_state: Some(t.from.as_str().to_string()),
        to_state: Some(t.to.as_str().to_string()),
        pid: t.pid.map(i64::from),
        exit_code: None,
        exit_signal: None,
        delay_ms: None,
        detail: t.detail.clone(),
    };
    let exited = EventRow {
        event: "exited",
        exit_code: code,
        exit_signal: signal,
        ..base.clone()
    };
    // Only its kind names a record, never its detail (which may quote a
    // job's output).
    let record = match t.kind {
        Kind::Phase if t.from != t.to => None,
        Kind::Health { from, to } => Some(health_event(from, to)),
        // Circuit, a job's run, a note (or a phase entry that changed nothing).
        _ => Some("health"),
    };
    if let Some(event) = record {
        out.push(EventRow { event, ..base });
        return;
    }
    // Leaving a drain: the exit was recorded when it began.
    let drain_end = t.from == Phase::Stopping;
    let drained = |base: &EventRow| EventRow {
        event: "drained",
        ..base.clone()
    };
    match t.to {
        Phase::Running if t.from == Phase::Starting => out.push(EventRow {
            event: "running",
            ..base
        }),
        Phase::Starting | Phase::Running => {
            let event = if t.from == Phase::Backoff || t.from == Phase::Fatal {
                "restarted"
            } else {
                "started"
            };
            out.push(EventRow { event, ..base });
        }
        Phase::Backoff => {
            if drain_end {
                out.push(drained(&base));
            } else if t.from.has_process() {
                out.push(exited);
            }
            // The delay is known only while the snapshot still waits for it.
            let delay_ms = match (is_last && snap.state == Phase::Backoff, snap.next_start_ms) {
                (true, Some(next)) => Some(next.saturating_sub(t.at_ms) as i64),
                _ => None,
            };
            out.push(EventRow {
                event: "backoff",
                delay_ms,
                ..base
            });
        }
        Phase::Exited if drain_end => out.push(drained(&base)),
        Phase::Exited => out.push(exited),
        Phase::Fatal => {
            if drain_end {
                out.push(drained(&base));
            } else if t.from.has_process() {
                out.push(exited);
            }
            out.push(EventRow {
                event: "fatal",
                ..base
            });
        }
        Phase::Stopped => out.push(EventRow {
            event: "stopped",
            exit_code: code,
            exit_signal: signal,
            ..base
        }),
        Phase::Stopping => {
            // The main process exited on its own and left its group.
            if t.exit.is_some() {
                out.push(exited);
            }
            out.push(EventRow {
                event: "stopping",
                ..base
            })
        }
        Phase::Waiting => out.push(EventRow {
            event: "waiting",
            ..base
        }),
        Phase::Unknown => out.push(EventRow {
            event: "unknown",
            ..base
        }),
    }
}

/// The `supervisors` row of this daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorRow {
    pub pid: i64,
    pub version: String,
    pub config_path: String,
    pub started_at_ms: u64,
    pub last_seen_at_ms: u64,
    pub stopped_at_ms: Option<u64>,
    pub refresh_ms: i64,
    pub dropped_events: i64,
}

/// Changes not yet written, coalesced: one row per worker (the newest),
/// events in order up to a bound (the oldest are dropped and counted).
#[derive(Debug, Default)]
pub struct Pending {
    pub rows: BTreeMap<WorkerKey, WorkerRow>,
    pub events: VecDeque<EventRow>,
    /// The newest supervisor row.
    pub supervisor: Option<SupervisorRow>,
    /// The set of instances the config has now; rows of this host not in
    /// it are marked `removed`.
    pub current: Option<BTreeMap<WorkerKey, String>>,
    /// Delete events older than this (unix ms).
    pub prune_before_ms: Option<u64>,
    /// Events dropped so far by this buffer (overflow or history gaps).
    pub dropped: u64,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.events.is_empty()
            && self.supervisor.is_none()
            && self.current.is_none()
            && self.prune_before_ms.is_none()
    }

    /// Rows and events waiting.
    pub fn len(&self) -> usize {
        self.rows.len() + self.events.len()
    }

    pub fn push_row(&mut self, row: WorkerRow) {
        self.rows.insert(row.key(), row);
    }

    pub fn push_event(&mut self, event: EventRow, max_events: usize) {
        if self.events.len() >= max_events {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Add `newer` on top of this (older) buffer.
    pub fn merge(&mut self, newer: Pending, max_events: usize) {
        self.rows.extend(newer.rows);
        for e in newer.events {
            self.push_event(e, max_events);
        }
        if newer.supervisor.is_some() {
            self.supervisor = newer.supervisor;
        }
        if newer.current.is_some() {
            self.current = newer.current;
        }
        self.prune_before_ms = match (self.prune_before_ms, newer.prune_before_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.dropped += newer.dropped;
    }
}

/// Keys of `existing` (rows of this host not yet `removed`) that are not in `current`.
pub fn removed_keys(
    existing: &[WorkerKey],
    current: &BTreeMap<WorkerKey, String>,
) -> Vec<WorkerKey> {
    let existing: BTreeSet<&WorkerKey> = existing.iter().collect();
    existing
        .into_iter()
        .filter(|k| !current.contains_key(*k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::LastExit;
    use std::collections::VecDeque;

    fn snap() -> Snapshot {
        Snapshot {
            name: "web:1".into(),
            program: "web".into(),
            instance: 1,
            state: Phase::Stopped,
            pid: None,
            start_ticks: None,
            pgid: None,
            started_at_ms: None,
            since_ms: 1000,
            restarts: 0,
            streak: 0,
            last_exit: None,
            next_start_ms: None,
            message: None,
            history: VecDeque::new(),
            health: crate::heartbeat::Health::Stopped,
            heartbeat: Default::default(),
            job: None,
        }
    }

    fn push(s: &mut Snapshot, at_ms: u64, to: Phase, pid: Option<i32>, exit: Option<Exit>) {
        if s.history.len() == 16 {
            s.history.pop_front();
        }
        let from = s.state;
        s.history.push_back(Transition {
            at_ms,
            from,
            to,
            kind: Kind::Phase,
            pid,
            exit,
            detail: None,
        });
        s.state = to;
        s.since_ms = at_ms;
        s.pid = if to.has_process() { pid } else { None };
    }

    fn kinds(d: &Diff) -> Vec<&'static str> {
        d.events.iter().map(|e| e.event).collect()
    }

    #[test]
    fn first_look_sends_the_row_and_every_transition() {
        let mut s = snap();
        push(&mut s, 1, Phase::Starting, Some(10), None);
        push(&mut s, 2, Phase::Running, Some(10), None);
        let mut seen = Seen::default();
        let d = observe(&mut seen, &s, 5, false);
        assert_eq!(kinds(&d), ["started", "running"]);
        let row = d.row.expect("a row on the first look");
        assert_eq!(
            (row.state.as_str(), row.pid, row.instance),
            ("running", Some(10), 1)
        );
        assert!(!d.gap);
    }

    #[test]
    fn unchanged_snapshot_sends_nothing_unless_forced() {
        let mut s = snap();
        push(&mut s, 1, Phase::Running, Some(10), None);
        s.started_at_ms = Some(1);
        let mut seen = Seen::default();
        observe(&mut seen, &s, 5, false);
        // Uptime moved on, nothing else: no row.
        assert_eq!(observe(&mut seen, &s, 900, false), Diff::default());
        let forced = observe(&mut seen, &s, 1000, true);
        assert_eq!(forced.row.map(|r| r.uptime_ms), Some(Some(999)));
        assert!(forced.events.is_empty());
        // New metrics are a change.
        seen.metrics.rss_bytes = Some(4096);
        assert_eq!(
            observe(&mut seen, &s, 1001, false)
                .row
                .and_then(|r| r.rss_bytes),
            Some(4096)
        );
    }

    #[test]
    fn only_new_transitions_become_events_even_with_equal_times() {
        let mut s = snap();
        push(&mut s, 7, Phase::Starting, Some(10), None);
        let mut seen = Seen::default();
        observe(&mut seen, &s, 7, false);
        // Same millisecond: still new.
        push(&mut s, 7, Phase::Running, Some(10), None);
        s.last_exit = Some(LastExit {
            exit: Exit::Code(3),
            at_ms: 9,
            ran_for_ms: 2,
        });
        push(&mut s, 9, Phase::Backoff, Some(10), Some(Exit::Code(3)));
        s.next_start_ms = Some(1009);
        let d = observe(&mut seen, &s, 9, false);
        assert_eq!(kinds(&d), ["running", "exited", "backoff"]);
        assert_eq!(d.events[1].exit_code, Some(3));
        assert_eq!(d.events[2].delay_ms, Some(1000));
        let row = d.row.unwrap();
        assert_eq!(
            (row.last_exit_code, row.last_exit_at_ms, row.pid),
            (Some(3), Some(9), None)
        );
        push(&mut s, 1009, Phase::Starting, Some(11), None);
        assert_eq!(kinds(&observe(&mut seen, &s, 1010, false)), ["restarted"]);
    }

    /// The main process exits and leaves its group: the exit is recorded at
    /// once (no pid, the exit on the row), the drain is `stopping`, and its
    /// end goes on as a plain exit would, counting the exit once.
    #[test]
    fn an_exit_that_leaves_its_group_is_recorded_before_the_drain() {
        for (to, after) in [
            (Phase::Backoff, &["drained", "backoff"][..]),
            (Phase::Exited, &["drained"][..]),
            (Phase::Fatal, &["drained", "fatal"][..]),
        ] {
            let mut s = snap();
            push(&mut s, 1, Phase::Running, Some(10), None);
            s.started_at_ms = Some(1);
            let mut seen = Seen::default();
            observe(&mut seen, &s, 1, false);
            s.last_exit = Some(LastExit {
                exit: Exit::Code(1),
                at_ms: 5,
                ran_for_ms: 4,
            });
            push(&mut s, 5, Phase::Stopping, Some(10), Some(Exit::Code(1)));
            s.pid = None;
            let d = observe(&mut seen, &s, 6, false);
            assert_eq!(kinds(&d), ["exited", "stopping"]);
            assert_eq!(
                (d.events[0].exit_code, d.events[0].pid),
                (Some(1), Some(10))
            );
            assert_eq!(d.events[0].to_state.as_deref(), Some("stopping"));
            let row = d.row.expect("the exit changes the row");
            assert_eq!(
                (
                    row.state.as_str(),
                    row.pid,
                    row.last_exit_code,
                    row.uptime_ms
                ),
                ("stopping", None, Some(1), None)
            );
            push(&mut s, 2005, to, Some(10), Some(Exit::Code(1)));
            if to == Phase::Backoff {
                s.next_start_ms = Some(2105);
            }
            let d = observe(&mut seen, &s, 2005, false);
            assert_eq!(kinds(&d), after, "stopping -> {}", to.as_str());
            assert!(d.events.iter().all(|e| e.exit_code.is_none()));
            if to == Phase::Backoff {
                assert_eq!(d.events[1].delay_ms, Some(100));
            }
        }
        // A stop by a user is unchanged: stopping, then stopped with the exit.
        let mut s = snap();
        push(&mut s, 1, Phase::Running, Some(10), None);
        push(&mut s, 2, Phase::Stopping, Some(10), None);
        push(&mut s, 3, Phase::Stopped, Some(10), Some(Exit::Signal(15)));
        let d = observe(&mut Seen::default(), &s, 4, false);
        assert_eq!(kinds(&d), ["started", "stopping", "stopped"]);
        assert_eq!(d.events[2].exit_signal, Some(15));
    }

    #[test]
    fn a_ring_overflow_between_looks_is_a_gap() {
        let mut s = snap();
        push(&mut s, 1, Phase::Starting, Some(1), None);
        let mut seen = Seen::default();
        observe(&mut seen, &s, 1, false);
        for i in 0..20u64 {
            let to = if i % 2 == 0 {
                Phase::Backoff
            } else {
                Phase::Starting
            };
            push(&mut s, 2 + i, to, Some(1), None);
        }
        let d = observe(&mut seen, &s, 30, false);
        assert!(d.gap);
        // Every transition still in the ring is reported.
        assert_eq!(d.events.iter().filter(|e| e.event == "backoff").count(), 8);
        // A look with nothing new has no gap.
        assert!(!observe(&mut seen, &s, 31, false).gap);
    }

    #[test]
    fn health_records_become_heartbeat_events() {
        let mut s = snap();
        push(&mut s, 1, Phase::Running, Some(5), None);
        s.history.push_back(Transition {
            at_ms: 2,
            from: Phase::Running,
            to: Phase::Running,
            kind: Kind::Health {
                from: Health::Healthy,
                to: Health::Stale,
            },
            pid: Some(5),
            exit: None,
            detail: Some("health: healthy -> stale; no heartbeat for 30s".into()),
        });
        let d = observe(&mut Seen::default(), &s, 3, false);
        assert_eq!(kinds(&d), ["started", "heartbeat_stale"]);
        assert_eq!(d.events[1].pid, Some(5));
    }

    /// A record of the same phase, of `kind`, saying `detail`.
    fn record(s: &mut Snapshot, at_ms: u64, kind: Kind, detail: &str) {
        s.history.push_back(Transition {
            at_ms,
            from: s.state,
            to: s.state,
            kind,
            pid: s.pid,
            exit: None,
            detail: Some(detail.into()),
        });
    }

    #[test]
    fn a_jobs_output_never_names_its_event() {
        use crate::heartbeat::RunReport;
        let mut s = snap();
        // What `ward run` records: its detail ends with the output's last line.
        let lines = [
            "job exited 0 after 3ms: worker hung up the phone",
            "job exited 1 after 3ms: health: ready -> stale; cache",
            "job exited 0 after 3ms: health: late -> healthy; all late orders sent",
            "job killed by signal 9 after 1s: heartbeat_hung late stale",
        ];
        for (i, line) in lines.iter().enumerate() {
            let run = if i % 2 == 0 {
                RunReport::Succeeded
            } else {
                RunReport::Failed
            };
            record(&mut s, i as u64, Kind::Job { run }, line);
        }
        record(
            &mut s,
            9,
            Kind::Job {
                run: RunReport::Started,
            },
            "job started (ward run, pid 7): hung",
        );
        let mut seen = Seen::default();
        let d = observe(&mut seen, &s, 10, false);
        assert_eq!(kinds(&d), ["health"; 5]);
        assert_eq!(d.events[0].detail.as_deref(), Some(lines[0]));
        // Words in a circuit or note record do not count either.
        record(&mut s, 11, Kind::Circuit { open: true }, "hung late stale");
        record(&mut s, 12, Kind::Note, "health: ready -> hung");
        assert_eq!(kinds(&observe(&mut seen, &s, 13, false)), ["health"; 2]);
    }

    #[test]
    fn external_health_changes_become_events() {
        let mut x = ExternalSnapshot {
            name: "billing".into(),
            state: "external".into(),
            description: None,
            health: Health::Stale,
            since_ms: 5,
            message: Some("no beat for 30s".into()),
            heartbeat: Default::default(),
            worker_host: Some("app-1".into()),
            worker_pid: None,
            history: VecDeque::new(),
        };
        let change = |at_ms, from, to| HealthChange {
            at_ms,
            from,
            to,
            detail: "d".into(),
        };
        x.history
            .push_back(change(1, Health::Unknown, Health::Healthy));
        x.history
            .push_back(change(5, Health::Healthy, Health::Stale));
        let mut seen = SeenExternal::default();
        let d = observe_external(&mut seen, &x, 6, false);
        assert_eq!(kinds(&d), ["health", "heartbeat_stale"]);
        assert_eq!(
            d.events[1].detail.as_deref(),
            Some("health: healthy -> stale; d")
        );
        let row = d.row.expect("a first row");
        assert_eq!(
            (
                row.state.as_str(),
                row.health.as_str(),
                row.pid,
                row.jobs_processed
            ),
            ("external", "stale", None, None)
        );
        // Nothing new: nothing sent.
        assert_eq!(observe_external(&mut seen, &x, 7, false), Diff::default());
        x.message = None;
        x.health = Health::Hung;
        x.history.push_back(change(8, Health::Stale, Health::Hung));
        let d = observe_external(&mut seen, &x, 9, false);
        assert_eq!(kinds(&d), ["heartbeat_hung"]);
        assert_eq!(
            d.row.and_then(|r| r.message).as_deref(),
            Some("on host app-1")
        );
        // A record that changes no health (a job run reported for it) is
        // `health`, whatever the health it happened in.
        x.history.push_back(change(10, Health::Hung, Health::Hung));
        assert_eq!(
            kinds(&observe_external(&mut seen, &x, 11, false)),
            ["health"]
        );
    }

    #[test]
    fn a_late_job_and_its_return_are_events() {
        use crate::heartbeat::RunReport;
        use Health as H;
        let mut s = snap();
        let health = |from, to| Kind::Health { from, to };
        for (at_ms, kind) in [
            (1, health(H::Ready, H::Late)),
            (
                2,
                Kind::Job {
                    run: RunReport::Succeeded,
                },
            ),
            (3, health(H::Late, H::Healthy)),
            (4, health(H::Healthy, H::Hung)),
            (5, health(H::Hung, H::Healthy)),
            (6, health(H::Healthy, H::CircuitOpen)),
            (7, health(H::Late, H::Crashed)),
        ] {
            // The detail says nothing: the kind alone decides.
            record(&mut s, at_ms, kind, "");
        }
        let d = observe(&mut Seen::default(), &s, 8, false);
        assert_eq!(
            kinds(&d),
            [
                "late",
                "health",
                "on_time",
                "heartbeat_hung",
                "health",
                "health",
                "on_time"
            ]
        );
    }

    #[test]
    fn signals_and_user_stops() {
        let mut s = snap();
        push(&mut s, 1, Phase::Running, Some(5), None);
        push(&mut s, 2, Phase::Stopping, Some(5), None);
        push(&mut s, 3, Phase::Stopped, None, Some(Exit::Signal(15)));
        let d = observe(&mut Seen::default(), &s, 4, false);
        assert_eq!(kinds(&d), ["started", "stopping", "stopped"]);
        assert_eq!(
            (d.events[2].exit_code, d.events[2].exit_signal),
            (None, Some(15))
        );
    }

    fn row(program: &str, state: &str, at: u64) -> WorkerRow {
        let mut s = snap();
        s.program = program.into();
        let mut r = row_for(&s, Metrics::default(), at);
        r.state = state.into();
        r
    }

    fn event(at_ms: u64) -> EventRow {
        EventRow {
            at_ms,
            program: "p".into(),
            instance: 0,
            name: "p".into(),
            event: "started",
            from_state: None,
            to_state: None,
            pid: None,
            exit_code: None,
            exit_signal: None,
            delay_ms: None,
            detail: None,
        }
    }

    #[test]
    fn pending_coalesces_rows_and_bounds_events() {
        let mut p = Pending::default();
        p.push_row(row("a", "starting", 1));
        p.push_row(row("a", "running", 2));
        p.push_row(row("b", "running", 2));
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.rows[&("a".to_string(), 1)].state, "running");
        for i in 0..5 {
            p.push_event(event(i), 3);
        }
        assert_eq!(
            p.events.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(p.dropped, 2);

        let mut newer = Pending::default();
        newer.push_row(row("a", "backoff", 3));
        newer.push_event(event(9), 3);
        newer.prune_before_ms = Some(5);
        newer.dropped = 1;
        p.prune_before_ms = Some(7);
        p.merge(newer, 3);
        assert_eq!(p.rows[&("a".to_string(), 1)].state, "backoff");
        assert_eq!(
            p.events.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
            [3, 4, 9]
        );
        assert_eq!(p.dropped, 4);
        assert_eq!(p.prune_before_ms, Some(7));
        assert_eq!(p.len(), 5);
    }

    #[test]
    fn removed_are_the_rows_missing_from_the_config() {
        let existing = vec![
            ("a".to_string(), 0),
            ("b".to_string(), 0),
            ("b".to_string(), 1),
        ];
        let current: BTreeMap<WorkerKey, String> = [
            (("a".to_string(), 0), "a".to_string()),
            (("b".to_string(), 0), "b:0".to_string()),
        ]
        .into();
        assert_eq!(removed_keys(&existing, &current), [("b".to_string(), 1)]);
    }
}
