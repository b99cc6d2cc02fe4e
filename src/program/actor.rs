//! The program actor: one task per instance that owns its child.
//!
//! It spawns through the [`Reaper`](crate::reaper::Reaper), learns of exits
//! from it, applies the pure decisions of [`state`](super::state), and
//! publishes a [`Snapshot`] after every change. It never blocks on the
//! database or on log files (the pumps run as their own tasks).

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::sleep_until;

use super::state::{after_exit, AfterExit, Phase, RunEnd};
use super::{Context, LastExit, Outcome, Request, Snapshot, Transition};
use crate::backoff::Jitter;
use crate::config::Instance;
use crate::exit::Exit;
use crate::logs::InstanceLogs;
use crate::reaper::{Creds, SpawnRequest};

const HISTORY: usize = 16;
/// How long to keep waiting for a process group after SIGKILL before giving up on it.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Poll interval while waiting for the rest of a process group to exit.
const GROUP_POLL: Duration = Duration::from_millis(10);

pub(super) fn initial_snapshot(inst: &Instance) -> Snapshot {
    Snapshot {
        name: inst.id.clone(),
        program: inst.program.name.clone(),
        instance: inst.index.unwrap_or(0),
        state: Phase::Stopped,
        pid: None,
        start_ticks: None,
        started_at_ms: None,
        since_ms: now_ms(),
        restarts: 0,
        streak: 0,
        last_exit: None,
        next_start_ms: None,
        message: None,
        history: VecDeque::new(),
    }
}

pub(super) fn spawn(
    instance: Instance,
    ctx: Arc<Context>,
    logs: InstanceLogs,
    rx: mpsc::Receiver<(Request, oneshot::Sender<Outcome>)>,
    snap_tx: watch::Sender<Snapshot>,
) {
    let epoch = ctx.epoch.subscribe();
    let snap = snap_tx.borrow().clone();
    let actor = Actor {
        jitter: Jitter::from_entropy(&instance.id),
        snap,
        inst: instance,
        ctx,
        epoch,
        logs,
        rx,
        snap_tx,
        child: None,
        exit_rx: None,
        deadline: None,
        killed: false,
        then_start: false,
        spawns: 0,
        start_waiters: Vec::new(),
        stop_waiters: Vec::new(),
    };
    let span = tracing::info_span!("program", program = %actor.inst.id);
    tokio::spawn(tracing::Instrument::instrument(actor.run(), span));
}

struct Child {
    pid: i32,
    started: Instant,
}

struct Actor {
    inst: Instance,
    ctx: Arc<Context>,
    epoch: watch::Receiver<u64>,
    logs: InstanceLogs,
    rx: mpsc::Receiver<(Request, oneshot::Sender<Outcome>)>,
    snap_tx: watch::Sender<Snapshot>,
    /// The published state; `snap.state` is the phase.
    snap: Snapshot,
    child: Option<Child>,
    exit_rx: Option<oneshot::Receiver<Exit>>,
    /// Starting: end of min_uptime. Stopping: SIGKILL time. Backoff/Fatal: next start.
    deadline: Option<Instant>,
    /// SIGKILL already sent in this stop.
    killed: bool,
    /// Start again once the current stop completes (a restart).
    then_start: bool,
    spawns: u32,
    start_waiters: Vec<oneshot::Sender<Outcome>>,
    stop_waiters: Vec<oneshot::Sender<Outcome>>,
    jitter: Jitter,
}

enum Event {
    Request(Request, oneshot::Sender<Outcome>),
    Exit(Exit),
    Deadline,
    Epoch,
    Closed,
}

impl Actor {
    fn phase(&self) -> Phase {
        self.snap.state
    }

    async fn run(mut self) {
        loop {
            let event = {
                let waiting = self.phase() == Phase::Waiting;
                let deadline = self.deadline;
                let exit_rx = &mut self.exit_rx;
                let has_child = exit_rx.is_some();
                let rx = &mut self.rx;
                let epoch = &mut self.epoch;
                tokio::select! {
                    req = rx.recv() => match req {
                        Some((r, reply)) => Event::Request(r, reply),
                        None => Event::Closed,
                    },
                    exit = async { exit_rx.as_mut().expect("guarded").await }, if has_child => {
                        // The reaper only drops the sender when it is shutting down.
                        Event::Exit(exit.unwrap_or(Exit::Signal(libc::SIGKILL)))
                    }
                    _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => Event::Deadline,
                    _ = epoch.changed(), if waiting => Event::Epoch,
                }
            };
            match event {
                Event::Request(r, reply) => self.on_request(r, reply).await,
                Event::Exit(exit) => {
                    self.exit_rx = None;
                    self.on_exit(exit).await;
                }
                Event::Deadline => self.on_deadline().await,
                Event::Epoch => {
                    if self.deps_ready() {
                        self.spawn().await;
                    }
                }
                Event::Closed => break,
            }
        }
    }

    async fn on_request(&mut self, req: Request, reply: oneshot::Sender<Outcome>) {
        match (req, self.phase()) {
            (Request::Start, Phase::Running) => {
                let pid = self.snap.pid.unwrap_or(0);
                let _ = reply.send(Ok(format!("already running (pid {pid})")));
            }
            (Request::Start, Phase::Starting | Phase::Waiting) => self.start_waiters.push(reply),
            (Request::Start | Request::Restart, Phase::Stopping) => {
                self.then_start = true;
                self.start_waiters.push(reply);
            }
            (
                Request::Start | Request::Restart,
                Phase::Stopped | Phase::Exited | Phase::Fatal | Phase::Backoff,
            ) => {
                self.start_waiters.push(reply);
                self.snap.streak = 0;
                self.begin_start().await;
            }
            (Request::Restart, Phase::Waiting) => self.start_waiters.push(reply),
            (Request::Restart, Phase::Starting | Phase::Running) => {
                self.then_start = true;
                self.start_waiters.push(reply);
                self.begin_stop("restart requested");
            }
            (Request::Stop, Phase::Starting | Phase::Running) => {
                self.then_start = false;
                self.stop_waiters.push(reply);
                self.fail_start_waiters("stopped before it was running");
                self.begin_stop("stop requested");
            }
            (Request::Stop, Phase::Stopping) => {
                self.then_start = false;
                self.fail_start_waiters("stopped before it was running");
                self.stop_waiters.push(reply);
            }
            (Request::Stop, Phase::Stopped) => {
                let _ = reply.send(Ok("already stopped".into()));
            }
            (_, Phase::Unknown) => {
                let _ = reply.send(Err("the instance is in an unknown state".into()));
            }
            (Request::Stop, Phase::Waiting | Phase::Backoff | Phase::Exited | Phase::Fatal) => {
                self.deadline = None;
                self.fail_start_waiters("stopped before it was running");
                self.transition(Phase::Stopped, Some("stop requested".into()), None);
                let _ = reply.send(Ok("stopped".into()));
            }
        }
    }

    /// Spawn now if the dependencies allow, else wait for them.
    async fn begin_start(&mut self) {
        self.deadline = None;
        if self.deps_ready() {
            self.spawn().await;
        } else {
            let missing = self.missing_deps();
            self.transition(Phase::Waiting, Some(format!("waiting for {missing}")), None);
        }
    }

    /// Every instance of every program in `depends_on` is satisfied. Looked
    /// up by name at each check, so a reload that replaces a dependency's
    /// actor is seen at once.
    fn deps_ready(&self) -> bool {
        self.unmet_deps().is_empty()
    }

    fn unmet_deps(&self) -> Vec<String> {
        let registry = self.ctx.registry.read().unwrap_or_else(|e| e.into_inner());
        self.inst
            .program
            .depends_on
            .iter()
            .filter(|name| match registry.get(name.as_str()) {
                Some(instances) => !instances.iter().all(|d| dep_satisfied(&d.borrow())),
                None => true,
            })
            .map(|name| format!("`{name}`"))
            .collect()
    }

    fn missing_deps(&self) -> String {
        self.unmet_deps().join(", ")
    }

    async fn spawn(&mut self) {
        let p = self.inst.program.clone();
        let (out_r, out_w) = match pipe() {
            Ok(p) => p,
            Err(e) => return self.spawn_failed(format!("cannot create a pipe: {e}")),
        };
        let (err_r, err_w) = match pipe() {
            Ok(p) => p,
            Err(e) => return self.spawn_failed(format!("cannot create a pipe: {e}")),
        };
        self.logs.attach(out_r, Some(err_r));
        let mut env: Vec<(String, String)> = Vec::with_capacity(p.env.len() + 6);
        if let Some(u) = &p.user {
            env.push(("HOME".into(), u.home.display().to_string()));
            env.push(("USER".into(), u.name.clone()));
            env.push(("LOGNAME".into(), u.name.clone()));
        }
        env.extend(p.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push(("WARD_NAME".into(), self.inst.id.clone()));
        env.push(("WARD_PROGRAM".into(), p.name.clone()));
        env.push((
            "WARD_INSTANCE".into(),
            self.inst.index.unwrap_or(0).to_string(),
        ));
        let req = SpawnRequest {
            argv: p.command.argv(),
            env,
            cwd: p.cwd.clone().unwrap_or_else(|| self.ctx.config_dir.clone()),
            creds: creds(&self.inst, self.ctx.is_root),
            stdout: out_w,
            stderr: err_w,
            label: self.inst.id.clone(),
        };
        match self.ctx.reaper.spawn(req).await {
            Ok(spawned) => {
                self.spawns += 1;
                let now = Instant::now();
                self.child = Some(Child {
                    pid: spawned.pid,
                    started: now,
                });
                self.exit_rx = Some(spawned.exit);
                self.snap.pid = Some(spawned.pid);
                self.snap.start_ticks = Some(spawned.start_ticks);
                self.snap.started_at_ms = Some(now_ms());
                self.snap.restarts = self.spawns.saturating_sub(1);
                self.snap.next_start_ms = None;
                self.killed = false;
                if p.min_uptime.is_zero() {
                    self.deadline = None;
                    self.transition(Phase::Running, None, Some(spawned.pid));
                    self.resolve_start_waiters();
                } else {
                    self.deadline = Some(now + p.min_uptime);
                    self.transition(Phase::Starting, None, Some(spawned.pid));
                }
            }
            Err(e) => {
                let msg = format!("{e}: {}; hint: {}", error_chain(&e), e.hint());
                self.spawn_failed(msg);
            }
        }
    }

    fn spawn_failed(&mut self, msg: String) {
        tracing::error!(error = %msg, "cannot start");
        self.snap.message = Some(msg.clone());
        self.fail_start_waiters(&msg);
        self.decide(RunEnd::SpawnFailed, Duration::ZERO, Some(msg));
    }

    fn begin_stop(&mut self, why: &str) {
        let Some(child) = &self.child else { return };
        let p = &self.inst.program;
        let pid = child.pid;
        signal_group(pid, p.stop_signal);
        self.killed = false;
        self.deadline = Some(Instant::now() + p.stop_timeout);
        self.transition(
            Phase::Stopping,
            Some(format!("{why}: sent {}", p.stop_signal.as_str())),
            Some(pid),
        );
    }

    async fn on_deadline(&mut self) {
        self.deadline = None;
        match self.phase() {
            Phase::Starting => {
                let pid = self.snap.pid;
                self.transition(Phase::Running, None, pid);
                self.resolve_start_waiters();
            }
            Phase::Stopping => {
                if let Some(child) = &self.child {
                    tracing::warn!(pid = child.pid, timeout = ?self.inst.program.stop_timeout, "did not stop in time; sending SIGKILL to its process group");
                    let _ = killpg(Pid::from_raw(child.pid), Signal::SIGKILL);
                    self.killed = true;
                }
            }
            Phase::Backoff => self.begin_start().await,
            Phase::Fatal => {
                tracing::info!("fatal_retry elapsed; starting again");
                self.snap.streak = 0;
                self.begin_start().await;
            }
            _ => {}
        }
    }

    async fn on_exit(&mut self, exit: Exit) {
        let Some(child) = self.child.take() else {
            return;
        };
        let ran_for = child.started.elapsed();
        let p = self.inst.program.clone();
        let stopping = self.phase() == Phase::Stopping;
        // Whatever remains of the group goes too, as systemd does for a unit's cgroup.
        let (signal, deadline) = if stopping {
            // The whole group already has the stop signal; keep its deadline.
            let deadline = if self.killed {
                Instant::now()
            } else {
                self.deadline.unwrap_or_else(Instant::now)
            };
            (None, deadline)
        } else {
            (Some(p.stop_signal), Instant::now() + p.stop_timeout)
        };
        drain_group(child.pid, signal, deadline).await;
        self.ctx.reaper.release(child.pid);
        self.deadline = None;
        self.snap.pid = None;
        self.snap.start_ticks = None;
        self.snap.last_exit = Some(LastExit {
            exit,
            at_ms: now_ms(),
            ran_for_ms: ran_for.as_millis() as u64,
        });
        if stopping {
            self.transition(Phase::Stopped, Some(format!("stopped ({exit})")), None);
            for w in self.stop_waiters.drain(..) {
                let _ = w.send(Ok(format!("stopped ({exit})")));
            }
            if std::mem::take(&mut self.then_start) {
                self.snap.streak = 0;
                self.begin_start().await;
            }
            return;
        }
        let failed_start = ran_for < p.min_uptime;
        let detail = if failed_start {
            format!(
                "{exit} after {}, before min_uptime ({}): failed start",
                human(ran_for),
                human(p.min_uptime)
            )
        } else {
            format!("{exit} after {}", human(ran_for))
        };
        if !self.start_waiters.is_empty() {
            self.fail_start_waiters(&format!("{detail}; see `ward logs {}`", self.inst.id));
        }
        tracing::warn!(%exit, ran_for = ?ran_for, "exited");
        self.decide(RunEnd::Exited(exit), ran_for, Some(detail));
    }

    /// Apply the restart policy after a run ended on its own.
    fn decide(&mut self, end: RunEnd, ran_for: Duration, detail: Option<String>) {
        let p = self.inst.program.clone();
        match after_exit(&p, end, ran_for, self.snap.streak, self.jitter.next_unit()) {
            AfterExit::Restart { delay, streak } => {
                self.snap.streak = streak;
                // The run loop starts it when the deadline fires (at once for a zero delay).
                self.deadline = Some(Instant::now() + delay);
                self.snap.next_start_ms = Some(now_ms() + delay.as_millis() as u64);
                let why = format!(
                    "{}; restarting in {}",
                    detail.unwrap_or_default(),
                    human(delay)
                );
                self.transition(Phase::Backoff, Some(why), None);
            }
            AfterExit::Exited { streak } => {
                self.snap.streak = streak;
                self.transition(Phase::Exited, detail, None);
            }
            AfterExit::Fatal { streak } => {
                self.snap.streak = streak;
                let mut why = format!(
                    "{}; gave up after {} consecutive short runs (max_restarts = {})",
                    detail.unwrap_or_default(),
                    streak,
                    p.max_restarts
                );
                if let Some(retry) = p.fatal_retry {
                    self.deadline = Some(Instant::now() + retry);
                    self.snap.next_start_ms = Some(now_ms() + retry.as_millis() as u64);
                    why.push_str(&format!("; retrying in {}", human(retry)));
                }
                tracing::error!(reason = %why, "fatal");
                self.transition(Phase::Fatal, Some(why), None);
            }
        }
    }

    fn resolve_start_waiters(&mut self) {
        let pid = self.snap.pid.unwrap_or(0);
        for w in self.start_waiters.drain(..) {
            let _ = w.send(Ok(format!("running (pid {pid})")));
        }
    }

    fn fail_start_waiters(&mut self, why: &str) {
        for w in self.start_waiters.drain(..) {
            let _ = w.send(Err(why.to_string()));
        }
    }

    fn transition(&mut self, to: Phase, detail: Option<String>, pid: Option<i32>) {
        let from = self.phase();
        let exit = if matches!(
            to,
            Phase::Backoff | Phase::Exited | Phase::Fatal | Phase::Stopped
        ) {
            self.snap.last_exit.as_ref().map(|e| e.exit)
        } else {
            None
        };
        let at_ms = now_ms();
        match (&detail, pid) {
            (Some(d), Some(pid)) => {
                tracing::info!(from = from.as_str(), to = to.as_str(), pid, "{d}")
            }
            (Some(d), None) => tracing::info!(from = from.as_str(), to = to.as_str(), "{d}"),
            (None, Some(pid)) => {
                tracing::info!(from = from.as_str(), to = to.as_str(), pid, "state change")
            }
            (None, None) => tracing::info!(from = from.as_str(), to = to.as_str(), "state change"),
        }
        if self.snap.history.len() == HISTORY {
            self.snap.history.pop_front();
        }
        self.snap.history.push_back(Transition {
            at_ms,
            from,
            to,
            pid,
            exit,
            detail: detail.clone(),
        });
        self.snap.state = to;
        self.snap.since_ms = at_ms;
        if to != Phase::Backoff && to != Phase::Fatal {
            self.snap.next_start_ms = None;
        }
        self.snap.message = detail;
        self.snap_tx.send_replace(self.snap.clone());
        if from != to {
            self.ctx.epoch.send_modify(|e| *e = e.wrapping_add(1));
        }
    }
}

/// A dependency counts as satisfied when it is running, or when it is a
/// one-shot job that exited successfully and will not be restarted.
fn dep_satisfied(s: &Snapshot) -> bool {
    match s.state {
        Phase::Running => true,
        Phase::Exited => matches!(
            &s.last_exit,
            Some(LastExit {
                exit: Exit::Code(0),
                ..
            })
        ),
        _ => false,
    }
}

fn creds(inst: &Instance, is_root: bool) -> Option<Creds> {
    let p = &inst.program;
    if !is_root || (p.user.is_none() && p.group.is_none()) {
        return None;
    }
    let uid = p.user.as_ref().map(|u| u.uid).unwrap_or(0);
    let gid = p
        .group
        .as_ref()
        .map(|g| g.gid)
        .or_else(|| p.user.as_ref().map(|u| u.gid))
        .unwrap_or(0);
    let mut groups = vec![gid];
    if let Some(u) = &p.user {
        if let Ok(name) = std::ffi::CString::new(u.name.clone()) {
            if let Ok(list) = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)) {
                groups = list.into_iter().map(|g| g.as_raw()).collect();
            }
        }
    }
    Some(Creds { uid, gid, groups })
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

fn signal_group(pgid: i32, sig: Signal) {
    let pg = Pid::from_raw(pgid);
    let _ = killpg(pg, sig);
    // Stopped processes cannot act on the signal until continued.
    if !matches!(sig, Signal::SIGKILL | Signal::SIGCONT) {
        let _ = killpg(pg, Signal::SIGCONT);
    }
}

/// Wait until the process group `pgid` is empty: send `signal` to it first
/// (if any), SIGKILL it at `deadline`, and give up `KILL_GRACE` later.
async fn drain_group(pgid: i32, signal: Option<Signal>, deadline: Instant) {
    let pg = Pid::from_raw(pgid);
    if killpg(pg, None) == Err(nix::errno::Errno::ESRCH) {
        return;
    }
    if let Some(sig) = signal {
        tracing::info!(
            pgid,
            signal = sig.as_str(),
            "main process exited; stopping the rest of its process group"
        );
        signal_group(pgid, sig);
    }
    let mut killed = false;
    loop {
        if killpg(pg, None) == Err(nix::errno::Errno::ESRCH) {
            return;
        }
        let now = Instant::now();
        if !killed && now >= deadline {
            tracing::warn!(pgid, "process group still alive; sending SIGKILL");
            let _ = killpg(pg, Signal::SIGKILL);
            killed = true;
        }
        if now >= deadline + KILL_GRACE {
            tracing::error!(pgid, "process group survived SIGKILL; giving up on it");
            return;
        }
        tokio::time::sleep(GROUP_POLL).await;
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut src = e.source();
    while let Some(s) = src {
        out.push(s.to_string());
        src = s.source();
    }
    out.join(": ")
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `1.5s`, `250ms`, `3m20s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = d.as_secs_f64();
        if (s - s.round()).abs() < 0.05 {
            format!("{}s", s.round())
        } else {
            format!("{s:.1}s")
        }
    } else if ms < 3_600_000 {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}h{}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}
