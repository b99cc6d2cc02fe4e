//! Heartbeats: one normalised record from every source (sd_notify
//! datagrams, HTTP, `ward beat`, IPC), and the pure rules that turn process
//! state and heartbeats into a health.
//!
//! The per-instance liveness state lives in the program actor that owns the
//! instance (one owner for the process and its liveness, so readiness and
//! hang detection act on the child without a second actor in between).
//! Nothing here does I/O except `notify`, which receives datagrams. `due`
//! is the clock of jobs that must report runs on time (`period`/`schedule`).
//! `[[external]]` workers, which have no actor of ours, have their own
//! registry actor in `external`.

pub mod due;
pub mod external;
pub mod http;
pub mod listener;
pub mod notify;

#[cfg(test)]
mod fuzz;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::HeartbeatPolicy;
use crate::program::Phase;
pub use due::{JobClock, JobState, JobView, Now, RunReport};

/// The largest heartbeat accepted from any source, in bytes.
pub const MAX_BEAT: usize = 64 * 1024;
/// The largest `metadata` object, serialised, in bytes.
pub const MAX_METADATA: usize = 8 * 1024;
/// The longest text field (`status`, `current_task`, `last_error`) kept.
pub const MAX_TEXT: usize = 1024;

/// A counter update: an absolute value, or an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Counter {
    Set(u64),
    Add(u64),
}

impl Counter {
    /// `N` or `+N`; negative numbers are refused.
    pub fn parse(s: &str) -> Result<Counter, String> {
        let s = s.trim();
        let (add, digits) = match s.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if digits.starts_with('-') {
            return Err(format!("`{s}`: counters cannot be negative"));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a count (use N or +N)"))?;
        Ok(if add {
            Counter::Add(n)
        } else {
            Counter::Set(n)
        })
    }

    pub fn apply(self, value: &mut u64) {
        match self {
            Counter::Set(n) => *value = n,
            Counter::Add(n) => *value = value.saturating_add(n),
        }
    }
}

/// One heartbeat, whatever its source. Every beat is a sign of life.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Beat {
    /// The worker says it is ready (`READY=1`, `/ready`, `--ready`, IPC `ready`).
    pub ready: bool,
    /// The worker says it is shutting down (`STOPPING=1`).
    pub stopping: bool,
    /// The worker says it is reloading (`RELOADING=1`).
    pub reloading: bool,
    /// The worker asks to be treated as hung now (`WATCHDOG=trigger`).
    pub trigger: bool,
    pub status: Option<String>,
    pub jobs: Option<Counter>,
    pub errors: Option<Counter>,
    pub task: Option<String>,
    pub last_error: Option<String>,
    pub circuit_open: Option<bool>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Push the ready (or stop) deadline this far from now (`EXTEND_TIMEOUT_USEC`).
    pub extend: Option<Duration>,
    /// The worker's new main pid (`MAINPID=`), recorded only.
    pub main_pid: Option<i32>,
    /// Kept in the instance's history (a job run reported by `ward run`).
    /// Only the operator's beats set it.
    pub record: Option<String>,
    /// A run of a job started or finished (`ward run`, `/ping/...`): what
    /// `period`/`schedule` judge. Other beats are signs of life only.
    pub run: Option<RunReport>,
}

impl Counter {
    /// `self` followed by `next`, as one update.
    pub fn then(self, next: Counter) -> Counter {
        match (self, next) {
            (_, Counter::Set(n)) => Counter::Set(n),
            (Counter::Set(a), Counter::Add(b)) => Counter::Set(a.saturating_add(b)),
            (Counter::Add(a), Counter::Add(b)) => Counter::Add(a.saturating_add(b)),
        }
    }
}

impl Beat {
    /// Fold a later beat into this one: flags add up, counters compose,
    /// texts and metadata take the later value.
    pub fn merge(&mut self, later: Beat) {
        self.ready |= later.ready;
        self.stopping |= later.stopping;
        self.reloading |= later.reloading;
        self.trigger |= later.trigger;
        let counter = |a: Option<Counter>, b: Option<Counter>| match (a, b) {
            (Some(a), Some(b)) => Some(a.then(b)),
            (a, b) => b.or(a),
        };
        self.jobs = counter(self.jobs, later.jobs);
        self.errors = counter(self.errors, later.errors);
        if later.status.is_some() {
            self.status = later.status;
        }
        if later.task.is_some() {
            self.task = later.task;
        }
        if later.last_error.is_some() {
            self.last_error = later.last_error;
        }
        if later.circuit_open.is_some() {
            self.circuit_open = later.circuit_open;
        }
        if later.metadata.is_some() {
            self.metadata = later.metadata;
        }
        if later.extend.is_some() {
            self.extend = later.extend;
        }
        if later.main_pid.is_some() {
            self.main_pid = later.main_pid;
        }
        if later.run.is_some() {
            self.run = later.run;
        }
    }
}

/// Health, from process state and heartbeats together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Unknown,
    Starting,
    /// Up; no heartbeat expected, or none yet.
    Ready,
    Healthy,
    Stale,
    Hung,
    /// A job (`period`/`schedule`) did not report a run on time.
    Late,
    /// The worker reports its circuit breaker open: shown, never a reason to restart.
    CircuitOpen,
    /// The process died (whatever its last beat said).
    Crashed,
    Backoff,
    Stopped,
    Fatal,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Starting => "starting",
            Health::Ready => "ready",
            Health::Healthy => "healthy",
            Health::Stale => "stale",
            Health::Hung => "hung",
            Health::Late => "late",
            Health::CircuitOpen => "circuit_open",
            Health::Crashed => "crashed",
            Health::Backoff => "backoff",
            Health::Stopped => "stopped",
            Health::Fatal => "fatal",
        }
    }
}

/// How long since the worker last showed life, by its heartbeat deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// No deadlines, or within `stale_after`.
    Fresh,
    Stale,
    Hung,
}

/// Where `silent_for` (time since the last beat, or since ready when there
/// was none) falls under `policy`.
pub fn liveness(policy: &HeartbeatPolicy, silent_for: Duration) -> Liveness {
    if policy.interval.is_none() {
        Liveness::Fresh
    } else if silent_for >= policy.hung_after {
        Liveness::Hung
    } else if silent_for >= policy.stale_after {
        Liveness::Stale
    } else {
        Liveness::Fresh
    }
}

/// The health shown everywhere. `beaten` says whether any beat arrived in
/// this run; `crashed` whether the last run ended in failure.
pub fn evaluate(
    phase: Phase,
    crashed: bool,
    live: Liveness,
    beaten: bool,
    circuit_open: bool,
) -> Health {
    match phase {
        Phase::Unknown => Health::Unknown,
        Phase::Waiting | Phase::Starting => Health::Starting,
        Phase::Stopping | Phase::Stopped => Health::Stopped,
        Phase::Backoff => Health::Backoff,
        Phase::Fatal => Health::Fatal,
        Phase::Exited if crashed => Health::Crashed,
        Phase::Exited => Health::Stopped,
        Phase::Running => match live {
            Liveness::Hung => Health::Hung,
            Liveness::Stale => Health::Stale,
            Liveness::Fresh if circuit_open => Health::CircuitOpen,
            Liveness::Fresh if beaten => Health::Healthy,
            Liveness::Fresh => Health::Ready,
        },
    }
}

/// The health of a program with `period`/`schedule`, from its process
/// health and its runs: `late` above all (the job is not getting done);
/// otherwise, where no process of its own is up (a job run by cron through
/// `ward run`) or its process is fine, the last run decides: `healthy`,
/// `crashed` when it failed, `ready` before the first. A process in trouble
/// or on its way (starting, backoff, stale, ...) keeps its own health.
pub fn job_health(process: Health, phase: Phase, job: JobState) -> Health {
    let idle = matches!(phase, Phase::Stopped | Phase::Exited);
    let fine = matches!(
        process,
        Health::Ready | Health::Healthy | Health::CircuitOpen
    );
    match job {
        JobState::Late => Health::Late,
        _ if !(idle || (phase == Phase::Running && fine)) => process,
        JobState::Failed => Health::Crashed,
        JobState::Succeeded if idle => Health::Healthy,
        JobState::NotYet if idle && process != Health::Crashed => Health::Ready,
        _ => process,
    }
}

/// What an instance's heartbeats have said; shown in status and the tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatView {
    /// Unix ms of the last accepted beat.
    pub last_beat_ms: Option<u64>,
    /// Beats accepted since ward started.
    pub beats: u64,
    /// Beats refused (wrong token, an old run's socket, malformed, ...).
    pub rejected: u64,
    pub status: Option<String>,
    pub jobs_processed: u64,
    pub error_count: u64,
    pub current_task: Option<String>,
    pub last_error: Option<String>,
    pub circuit_breaker_open: bool,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl HeartbeatView {
    /// Fold a beat into the view.
    pub fn apply(&mut self, beat: &Beat, now_ms: u64) {
        self.last_beat_ms = Some(now_ms);
        self.beats += 1;
        if let Some(s) = &beat.status {
            self.status = Some(clip(s));
        }
        if beat.stopping && beat.status.is_none() {
            self.status = Some("stopping".into());
        }
        if let Some(c) = beat.jobs {
            c.apply(&mut self.jobs_processed);
        }
        if let Some(c) = beat.errors {
            c.apply(&mut self.error_count);
        }
        if let Some(t) = &beat.task {
            self.current_task = if t.is_empty() { None } else { Some(clip(t)) };
        }
        if let Some(e) = &beat.last_error {
            self.last_error = Some(clip(e));
        }
        if let Some(open) = beat.circuit_open {
            self.circuit_breaker_open = open;
        }
        if let Some(m) = &beat.metadata {
            self.metadata = Some(m.clone());
        }
    }
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_string();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Parse a `metadata` JSON object, at most [`MAX_METADATA`] bytes.
pub fn parse_metadata(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if text.len() > MAX_METADATA {
        return Err(format!(
            "metadata is {} bytes; the limit is {MAX_METADATA}",
            text.len()
        ));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("metadata must be a JSON object".into()),
        Err(e) => Err(format!("metadata is not valid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnHung;
    use nix::sys::signal::Signal;

    fn policy(interval: Option<u64>) -> HeartbeatPolicy {
        HeartbeatPolicy {
            interval: interval.map(Duration::from_secs),
            stale_after: Duration::from_secs(interval.unwrap_or(0) * 3),
            hung_after: Duration::from_secs(interval.unwrap_or(0) * 10),
            on_hung: OnHung::Restart,
            watchdog_signal: Signal::SIGABRT,
            ..HeartbeatPolicy::default()
        }
    }

    #[test]
    fn liveness_table() {
        let p = policy(Some(10));
        assert_eq!(liveness(&p, Duration::from_secs(29)), Liveness::Fresh);
        assert_eq!(liveness(&p, Duration::from_secs(30)), Liveness::Stale);
        assert_eq!(liveness(&p, Duration::from_secs(100)), Liveness::Hung);
        assert_eq!(
            liveness(&policy(None), Duration::from_secs(10_000)),
            Liveness::Fresh
        );
    }

    #[test]
    fn health_table() {
        use Health as H;
        use Liveness as L;
        let cases = [
            (Phase::Running, false, L::Fresh, false, false, H::Ready),
            (Phase::Running, false, L::Fresh, true, false, H::Healthy),
            (Phase::Running, false, L::Stale, true, false, H::Stale),
            (Phase::Running, false, L::Hung, true, true, H::Hung),
            (Phase::Running, false, L::Fresh, true, true, H::CircuitOpen),
            // A dead process is crashed, whatever its last beat said.
            (Phase::Exited, true, L::Fresh, true, false, H::Crashed),
            (Phase::Exited, false, L::Fresh, true, false, H::Stopped),
            (Phase::Backoff, true, L::Fresh, true, false, H::Backoff),
            (Phase::Starting, false, L::Fresh, false, false, H::Starting),
            (Phase::Fatal, true, L::Hung, true, false, H::Fatal),
        ];
        for (phase, crashed, live, beaten, circuit, want) in cases {
            assert_eq!(
                evaluate(phase, crashed, live, beaten, circuit),
                want,
                "{phase:?} {live:?}"
            );
        }
    }

    #[test]
    fn job_health_table() {
        use Health as H;
        use JobState as J;
        let cases = [
            // Late wins over everything.
            (H::Backoff, Phase::Backoff, J::Late, H::Late),
            (H::Stopped, Phase::Stopped, J::Late, H::Late),
            (H::Healthy, Phase::Running, J::Late, H::Late),
            // A job ward never starts: its runs decide.
            (H::Stopped, Phase::Stopped, J::NotYet, H::Ready),
            (H::Stopped, Phase::Stopped, J::Succeeded, H::Healthy),
            (H::Stopped, Phase::Stopped, J::Failed, H::Crashed),
            (H::Crashed, Phase::Exited, J::NotYet, H::Crashed),
            (H::Crashed, Phase::Exited, J::Succeeded, H::Healthy),
            // A worker ward runs that pings after each job.
            (H::Healthy, Phase::Running, J::Failed, H::Crashed),
            (H::Healthy, Phase::Running, J::Succeeded, H::Healthy),
            (H::CircuitOpen, Phase::Running, J::Succeeded, H::CircuitOpen),
            (H::Ready, Phase::Running, J::NotYet, H::Ready),
            (H::Stale, Phase::Running, J::Failed, H::Stale),
            (H::Hung, Phase::Running, J::Succeeded, H::Hung),
            // A process on its way keeps its own health.
            (H::Starting, Phase::Starting, J::Failed, H::Starting),
            (H::Stopped, Phase::Stopping, J::Succeeded, H::Stopped),
            (H::Fatal, Phase::Fatal, J::Succeeded, H::Fatal),
        ];
        for (process, phase, job, want) in cases {
            assert_eq!(
                job_health(process, phase, job),
                want,
                "{process:?} {phase:?} {job:?}"
            );
        }
    }

    #[test]
    fn counters() {
        assert_eq!(Counter::parse("5"), Ok(Counter::Set(5)));
        assert_eq!(Counter::parse("+3"), Ok(Counter::Add(3)));
        assert!(Counter::parse("-1").is_err());
        assert!(Counter::parse("+-1").is_err());
        assert!(Counter::parse("x").is_err());
        let mut v = 10;
        Counter::Add(5).apply(&mut v);
        assert_eq!(v, 15);
        Counter::Set(2).apply(&mut v);
        assert_eq!(v, 2);
    }

    #[test]
    fn merged_beats_keep_every_signal_and_count() {
        let mut a = Beat {
            ready: true,
            jobs: Some(Counter::Add(2)),
            status: Some("a".into()),
            ..Beat::default()
        };
        a.merge(Beat {
            jobs: Some(Counter::Add(3)),
            errors: Some(Counter::Set(1)),
            ..Beat::default()
        });
        a.merge(Beat {
            trigger: true,
            status: Some("b".into()),
            errors: Some(Counter::Add(4)),
            ..Beat::default()
        });
        assert!(a.ready && a.trigger);
        assert_eq!(a.jobs, Some(Counter::Add(5)));
        assert_eq!(a.errors, Some(Counter::Set(5)));
        assert_eq!(a.status.as_deref(), Some("b"));
        assert_eq!(Counter::Add(1).then(Counter::Set(7)), Counter::Set(7));
    }

    #[test]
    fn view_folds_beats() {
        let mut v = HeartbeatView::default();
        let beat = Beat {
            status: Some("processing".into()),
            jobs: Some(Counter::Add(2)),
            task: Some("job-7".into()),
            circuit_open: Some(true),
            ..Beat::default()
        };
        v.apply(&beat, 1000);
        v.apply(&beat, 2000);
        assert_eq!(v.jobs_processed, 4);
        assert_eq!(v.beats, 2);
        assert_eq!(v.last_beat_ms, Some(2000));
        assert!(v.circuit_breaker_open);
        assert_eq!(v.current_task.as_deref(), Some("job-7"));
    }

    #[test]
    fn metadata_limits() {
        assert!(parse_metadata(r#"{"a":1}"#).is_ok());
        assert!(parse_metadata("[1]").is_err());
        assert!(parse_metadata("{").is_err());
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_METADATA));
        assert!(parse_metadata(&big).is_err());
    }
}
