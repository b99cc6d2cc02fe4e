//! One actor per program instance, and the cloneable handle to it.
//!
//! The actor alone owns its child, its process group, its backoff and its
//! log pumps. Everyone else sends it requests through a [`ProgramHandle`] and
//! reads its state from a `watch` snapshot.

mod actor;
pub mod state;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Instance, Program};
use crate::exit::Exit;
use crate::logs::InstanceLogs;
use crate::reaper::Reaper;
pub use actor::{human, now_ms};
pub use state::Phase;

/// A user's request to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Start,
    Stop,
    Restart,
}

/// Messages queued per instance before new heartbeats are coalesced away.
const INBOX: usize = 256;
/// Room in the inbox that heartbeats never take, so a flood of them cannot
/// crowd out a start, stop or restart.
const REQUEST_ROOM: usize = 16;

/// What an actor's inbox carries: requests and heartbeats share one channel
/// (a channel costs ~0.8 KiB per instance).
pub(crate) enum Msg {
    Request(Request, oneshot::Sender<Outcome>),
    Beat(Box<BeatMsg>),
}

/// The result of a request, once it has taken effect: a message either way.
pub type Outcome = Result<String, String>;

/// The last way a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastExit {
    pub exit: Exit,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub ran_for_ms: u64,
}

/// What a history entry records, set by the actor where it records it. The
/// store names `worker_events` rows by this alone, never by `detail` (which
/// may quote a job's output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    /// A change of phase, `from` -> `to` (the default: what entries without
    /// a `kind` are read as).
    #[default]
    Phase,
    /// The heartbeat health changed: stale, hung (also `WATCHDOG=trigger`),
    /// recovered; a job turned late, or is on time again.
    Health {
        from: crate::heartbeat::Health,
        to: crate::heartbeat::Health,
    },
    /// The worker reported its circuit breaker open or closed.
    Circuit { open: bool },
    /// `ward run` reported a run of the job: started, succeeded or failed.
    Job { run: crate::heartbeat::RunReport },
    /// A note an operator's beat asked to keep, about nothing above.
    Note,
}

/// One kept transition, or (with `from` = `to`) a record of something else
/// that happened in that phase; `kind` says which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub at_ms: u64,
    pub from: Phase,
    pub to: Phase,
    #[serde(default)]
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit: Option<Exit>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

/// What an instance looks like right now; published on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Instance id: `name`, or `name:i` for multi-instance programs.
    pub name: String,
    pub program: String,
    pub instance: u32,
    pub state: Phase,
    pub pid: Option<i32>,
    /// `/proc` start time of `pid`, used to check the pid is still ours.
    #[serde(skip)]
    pub start_ticks: Option<u64>,
    /// The run's process group (its leader was `pid`) until it is empty. It
    /// outlives `pid` while the rest of the group is stopped after the main
    /// process exited.
    #[serde(skip)]
    pub pgid: Option<i32>,
    /// Unix ms when the current run started.
    pub started_at_ms: Option<u64>,
    /// Unix ms when the current state was entered.
    pub since_ms: u64,
    /// Times the program was started again after its first start.
    pub restarts: u32,
    /// Consecutive runs shorter than `stable_after`.
    pub streak: u32,
    pub last_exit: Option<LastExit>,
    /// Unix ms of the next automatic start (backoff or `fatal_retry`).
    pub next_start_ms: Option<u64>,
    /// Why the instance is in this state, when that needs saying.
    pub message: Option<String>,
    /// The most recent transitions, oldest first.
    pub history: VecDeque<Transition>,
    /// From process state and heartbeats together.
    pub health: crate::heartbeat::Health,
    /// What the worker's heartbeats said.
    pub heartbeat: crate::heartbeat::HeartbeatView,
    /// A job with `period`/`schedule`: when it turns late, since when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<crate::heartbeat::JobView>,
}

/// Who vouches for a heartbeat.
#[derive(Debug, Clone)]
pub enum BeatAuth {
    /// Arrived on the notify socket (or IPC channel) of run N.
    Run(u64),
    /// Carries a `WARD_HEARTBEAT_TOKEN`; must be the current run's.
    Token(String),
    /// From the control socket (already checked with SO_PEERCRED).
    Operator,
}

/// Why a heartbeat was refused. Nothing in the registry changes but the
/// instance's `rejected` count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeatRefused {
    /// The token is no run's of this instance (or none was given).
    #[error("the token is not this program's WARD_HEARTBEAT_TOKEN")]
    BadToken,
    /// The token or socket of an earlier run: the program was restarted since.
    #[error("the token or socket belongs to an earlier run of this program (it was restarted or stopped since); use the current run's WARD_HEARTBEAT_TOKEN")]
    OldRun,
    #[error("the program is not running")]
    NotRunning,
    #[error("{0}")]
    Malformed(String),
    #[error("the program's actor is gone")]
    Gone,
}

/// A heartbeat on its way to the actor; `Err` is a malformed one (counted).
#[derive(Debug)]
pub struct BeatMsg {
    pub beat: Result<crate::heartbeat::Beat, String>,
    pub auth: BeatAuth,
    pub reply: Option<oneshot::Sender<Result<(), BeatRefused>>>,
}

/// What [`ProgramHandle::offer`] did with a beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The first of a batch: call [`ProgramHandle::wake_for_beats`] after
    /// [`BEAT_BATCH`].
    First,
    /// Merged into a batch whose wake-up is already due.
    Merged,
    /// Queued on its own (a job's run report).
    Queued,
}

/// How long HTTP beats are merged before the actor takes them: at 50,000
/// beats/s the runtime thread then wakes 500 times a second instead of
/// 50,000, and liveness is a matter of seconds.
pub const BEAT_BATCH: std::time::Duration = std::time::Duration::from_millis(2);

/// Tokens of the last runs kept to tell "an old run" from "not a token".
const OLD_TOKENS: usize = 8;

/// The per-run tokens of one instance, shared by its actor and handles, so
/// that a beat with a wrong token is refused before it reaches the actor's
/// queue (a flood of bad tokens cannot crowd out good beats).
#[derive(Default)]
pub struct BeatGate {
    tokens: std::sync::Mutex<Tokens>,
    /// Beats refused before reaching the actor.
    refused: std::sync::atomic::AtomicU64,
    /// HTTP beats not yet taken by the actor, merged, with their token.
    pending: std::sync::Mutex<Option<(String, crate::heartbeat::Beat)>>,
    /// Wakes the actor to take `pending`.
    pending_ready: tokio::sync::Notify,
}

#[derive(Default)]
struct Tokens {
    current: Option<String>,
    old: VecDeque<String>,
}

impl BeatGate {
    fn tokens(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new run begins with this token.
    pub(crate) fn open(&self, token: String) {
        let mut t = self.tokens();
        if let Some(prev) = t.current.replace(token) {
            t.old.push_back(prev);
        }
        while t.old.len() > OLD_TOKENS {
            t.old.pop_front();
        }
    }

    /// The current run ended: its token is an old run's from now on.
    pub(crate) fn close(&self) {
        let mut t = self.tokens();
        if let Some(prev) = t.current.take() {
            t.old.push_back(prev);
        }
        while t.old.len() > OLD_TOKENS {
            t.old.pop_front();
        }
    }

    /// Is `token` the current run's?
    pub fn check(&self, token: &str) -> Result<(), BeatRefused> {
        let t = self.tokens();
        if t.current
            .as_deref()
            .is_some_and(|c| constant_time_eq(c, token))
        {
            Ok(())
        } else if t.old.iter().any(|o| constant_time_eq(o, token)) {
            Err(BeatRefused::OldRun)
        } else {
            Err(BeatRefused::BadToken)
        }
    }

    /// The merged HTTP beats waiting for the actor, with their token.
    pub(crate) fn take_pending(&self) -> Option<(String, crate::heartbeat::Beat)> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Resolves when [`BeatGate::take_pending`] has something (or had, if a
    /// wake-up was not consumed: taking then finds `None`).
    pub(crate) async fn pending_ready(&self) {
        self.pending_ready.notified().await;
    }

    /// Count a beat refused outside the actor.
    pub fn refuse(&self) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Compare without an early exit on the first differing byte.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Shared by all actors.
pub struct Context {
    pub reaper: Reaper,
    /// Bumped on every phase change, so waiters on dependencies can recheck.
    pub epoch: watch::Sender<u64>,
    /// Working directory for programs without `cwd`.
    pub config_dir: PathBuf,
    /// Credentials are only dropped when ward runs as root.
    pub is_root: bool,
    /// Notified on every snapshot publish (phase or heartbeat), so observers
    /// such as the store wake only when something changed.
    pub changed: Arc<tokio::sync::Notify>,
    /// Where per-run notify sockets are created.
    pub notify_dir: PathBuf,
    /// The heartbeat HTTP endpoint, exported to children as `WARD_HEARTBEAT_URL`.
    pub http: Option<std::net::SocketAddr>,
    /// Program name → the snapshots of its instances, for `depends_on`.
    /// Replaced whole by the supervisor when the set of actors changes.
    pub registry:
        std::sync::RwLock<std::collections::HashMap<String, Vec<watch::Receiver<Snapshot>>>>,
}

/// Cloneable handle to one instance's actor.
#[derive(Clone)]
pub struct ProgramHandle {
    pub id: String,
    pub program: Arc<Program>,
    pub logs: InstanceLogs,
    tx: mpsc::Sender<Msg>,
    gate: Arc<BeatGate>,
    state: watch::Receiver<Snapshot>,
}

impl ProgramHandle {
    /// Start the actor for `instance`. Its dependencies are looked up by
    /// name in `ctx.registry`.
    pub fn spawn(instance: Instance, ctx: Arc<Context>, logs: InstanceLogs) -> ProgramHandle {
        let (tx, rx) = mpsc::channel(INBOX);
        let (snap_tx, state) = watch::channel(actor::initial_snapshot(&instance));
        let gate = Arc::new(BeatGate::default());
        let handle = ProgramHandle {
            id: instance.id.clone(),
            program: instance.program.clone(),
            logs: logs.clone(),
            tx: tx.clone(),
            gate: gate.clone(),
            state,
        };
        actor::spawn(instance, ctx, logs, rx, snap_tx, tx.downgrade(), gate);
        handle
    }

    /// Send a request and wait until it has taken effect.
    pub async fn request(&self, req: Request) -> Outcome {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Request(req, reply)).await.is_err() {
            return Err("the program's actor is gone".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the program's actor dropped the request".into()))
    }

    /// Send a request without waiting for its outcome.
    pub fn send(&self, req: Request) {
        let (reply, _) = oneshot::channel();
        let _ = self.tx.try_send(Msg::Request(req, reply));
    }

    /// Hand an operator's heartbeat (`ward beat`) to the actor and wait for
    /// its verdict. A full inbox (a flood) answers at once: the beat is
    /// coalesced away.
    pub async fn beat(&self, beat: crate::heartbeat::Beat) -> Result<(), BeatRefused> {
        let (reply, rx) = oneshot::channel();
        match self.queue_beat(beat, BeatAuth::Operator, Some(reply)) {
            Ok(true) => rx.await.unwrap_or(Err(BeatRefused::Gone)),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Hand a heartbeat that carries a run's token (HTTP) to the actor,
    /// without waiting for it: `Ok` once the token is the current run's and
    /// the beat is on its way. The token is checked first, so a refused beat
    /// never takes a place in the queue. A beat that races the end of its
    /// run is answered `Ok` and then counted rejected by the actor.
    ///
    /// Beats are merged into one pending beat that the actor takes when
    /// [`ProgramHandle::wake_for_beats`] is called: the caller does so
    /// [`BEAT_BATCH`] after an [`Offer::First`]. Handing over each beat
    /// woke the runtime thread for each one (the endpoint runs on a thread
    /// of its own), which was about a third of the cost of a beat. A job's
    /// run report (`/ping/...`) is never merged: it goes through the inbox,
    /// and a full inbox (a flood) drops it, as it drops any beat.
    pub fn offer(&self, beat: crate::heartbeat::Beat, token: String) -> Result<Offer, BeatRefused> {
        self.check_token(&token)?;
        if self.tx.is_closed() {
            return Err(BeatRefused::Gone);
        }
        if beat.run.is_some() || beat.record.is_some() {
            return self
                .queue_beat(beat, BeatAuth::Token(token), None)
                .map(|_| Offer::Queued);
        }
        let mut pending = self.gate.pending.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *pending {
            Some((t, merged)) if *t == token => {
                merged.merge(beat);
                Ok(Offer::Merged)
            }
            Some(other) => {
                // An earlier run's beat, not taken before its run ended: the
                // actor would refuse it.
                *other = (token, beat);
                self.gate.refuse();
                Ok(Offer::Merged)
            }
            None => {
                *pending = Some((token, beat));
                Ok(Offer::First)
            }
        }
    }

    /// Let the actor take the beats merged by [`ProgramHandle::offer`].
    pub fn wake_for_beats(&self) {
        self.gate.pending_ready.notify_one();
    }

    /// Queue a beat unless the inbox is nearly full (the last
    /// [`REQUEST_ROOM`] places are for requests); `Ok(false)`: coalesced away.
    fn queue_beat(
        &self,
        beat: crate::heartbeat::Beat,
        auth: BeatAuth,
        reply: Option<oneshot::Sender<Result<(), BeatRefused>>>,
    ) -> Result<bool, BeatRefused> {
        if self.tx.capacity() <= REQUEST_ROOM {
            return Ok(false);
        }
        let msg = BeatMsg {
            beat: Ok(beat),
            auth,
            reply,
        };
        match self.tx.try_send(Msg::Beat(Box::new(msg))) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(BeatRefused::Gone),
        }
    }

    /// Is `token` the current run's? A refusal is counted.
    pub fn check_token(&self, token: &str) -> Result<(), BeatRefused> {
        self.gate.check(token).inspect_err(|_| self.gate.refuse())
    }

    /// Count a beat refused before it reached the actor (malformed, ...).
    pub fn refuse(&self) {
        self.gate.refuse();
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.state.borrow().clone();
        s.heartbeat.rejected += self.gate.refused();
        s
    }

    /// The snapshot without its history (most callers do not need the
    /// transitions, and cloning them is most of the cost of a copy).
    pub fn snapshot_brief(&self) -> Snapshot {
        let b = self.state.borrow();
        let mut s = Snapshot {
            name: b.name.clone(),
            program: b.program.clone(),
            last_exit: b.last_exit.clone(),
            message: b.message.clone(),
            history: VecDeque::new(),
            heartbeat: b.heartbeat.clone(),
            job: b.job.clone(),
            ..*b
        };
        s.heartbeat.rejected += self.gate.refused();
        s
    }

    /// The current state alone.
    /// The current run's pid, start time (clock ticks) and start (ms).
    pub fn process(&self) -> (Option<i32>, Option<u64>, Option<u64>) {
        let b = self.state.borrow();
        (b.pid, b.start_ticks, b.started_at_ms)
    }

    pub fn phase(&self) -> Phase {
        self.state.borrow().state
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.state.clone()
    }
}
