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

/// Heartbeats queued per instance before new ones are coalesced away.
const BEAT_QUEUE: usize = 256;

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

/// One kept transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub at_ms: u64,
    pub from: Phase,
    pub to: Phase,
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

/// A heartbeat on its way to the actor; `Err` is a malformed one (counted).
#[derive(Debug)]
pub struct BeatMsg {
    pub beat: Result<crate::heartbeat::Beat, String>,
    pub auth: BeatAuth,
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
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
    tx: mpsc::Sender<(Request, oneshot::Sender<Outcome>)>,
    beats: mpsc::Sender<BeatMsg>,
    state: watch::Receiver<Snapshot>,
}

impl ProgramHandle {
    /// Start the actor for `instance`. Its dependencies are looked up by
    /// name in `ctx.registry`.
    pub fn spawn(instance: Instance, ctx: Arc<Context>, logs: InstanceLogs) -> ProgramHandle {
        let (tx, rx) = mpsc::channel(16);
        let (beats, beats_rx) = mpsc::channel(BEAT_QUEUE);
        let (snap_tx, state) = watch::channel(actor::initial_snapshot(&instance));
        let handle = ProgramHandle {
            id: instance.id.clone(),
            program: instance.program.clone(),
            logs: logs.clone(),
            tx,
            beats: beats.clone(),
            state,
        };
        actor::spawn(instance, ctx, logs, rx, snap_tx, beats_rx, beats);
        handle
    }

    /// Send a request and wait until it has taken effect.
    pub async fn request(&self, req: Request) -> Outcome {
        let (reply, rx) = oneshot::channel();
        if self.tx.send((req, reply)).await.is_err() {
            return Err("the program's actor is gone".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the program's actor dropped the request".into()))
    }

    /// Send a request without waiting for its outcome.
    pub fn send(&self, req: Request) {
        let (reply, _) = oneshot::channel();
        let _ = self.tx.try_send((req, reply));
    }

    /// Hand a heartbeat to the actor and wait for its verdict. A full inbox
    /// (a flood) answers at once: the beat is coalesced away.
    pub async fn beat(&self, beat: crate::heartbeat::Beat, auth: BeatAuth) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        match self.beats.try_send(BeatMsg {
            beat: Ok(beat),
            auth,
            reply: Some(reply),
        }) {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| Err("the program's actor is gone".into())),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err("the program's actor is gone".into()),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.state.clone()
    }
}
