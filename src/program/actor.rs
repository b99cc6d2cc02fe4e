//! The program actor: one task per instance that owns its child.
//!
//! It spawns through the [`Reaper`](crate::reaper::Reaper), learns of exits
//! from it, applies the pure decisions of [`state`](super::state), and
//! publishes a [`Snapshot`] after every change. It never blocks on the
//! database or on log files (each run's log pump is a task of its own).

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
use super::{
    constant_time_eq, BeatAuth, BeatGate, BeatMsg, BeatRefused, Context, Kind, LastExit, Msg,
    Outcome, Request, Snapshot, Transition,
};
use crate::backoff::Jitter;
use crate::config::Instance;
use crate::config::{OnHung, ReadyMode};
use crate::exit::Exit;
use crate::heartbeat::notify::{NotifySocket, RateLimitedLog};
use crate::heartbeat::{Beat, Health, JobClock, Liveness, Now, RunReport};
use crate::logs::InstanceLogs;
use crate::reaper::{Creds, SpawnRequest};
use std::os::fd::AsRawFd;

const HISTORY: usize = 16;
/// Heartbeat-only snapshot updates are coalesced to this rate.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
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
        pgid: None,
        started_at_ms: None,
        since_ms: now_ms(),
        restarts: 0,
        streak: 0,
        last_exit: None,
        next_start_ms: None,
        message: None,
        history: VecDeque::new(),
        health: match inst.program.heartbeat.cadence {
            // A job that has not run yet, and is not due.
            Some(_) => crate::heartbeat::Health::Ready,
            None => crate::heartbeat::Health::Stopped,
        },
        heartbeat: Default::default(),
        job: None,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    instance: Instance,
    ctx: Arc<Context>,
    logs: InstanceLogs,
    rx: mpsc::Receiver<Msg>,
    snap_tx: watch::Sender<Snapshot>,
    inbox: mpsc::WeakSender<Msg>,
    gate: Arc<BeatGate>,
) {
    let epoch = ctx.epoch.subscribe();
    let hb = instance.program.heartbeat;
    let job = hb.cadence.map(|c| JobClock::new(c, hb.grace, clock_now()));
    if let Some(j) = &job {
        // Status shows when the job is due from the start.
        snap_tx.send_modify(|s| s.job = Some(j.view()));
    }
    let snap = snap_tx.borrow().clone();
    let mut actor = Actor {
        job,
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
        inbox,
        gate,
        live: Live::default(),
    };
    let span = tracing::info_span!("program", program = %actor.inst.id);
    // `run` borrows the captured actor: an `async fn run(mut self)` would
    // hold the 1 KiB actor twice in its future (its argument and the moved
    // local), about 0.1 MiB of ward's memory per 100 programs.
    tokio::spawn(tracing::Instrument::instrument(
        async move { actor.run().await },
        span,
    ));
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
    rx: mpsc::Receiver<Msg>,
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
    /// The own inbox, for the IPC listener; weak, so that the inbox closes
    /// (and the actor ends) once every handle is gone.
    inbox: mpsc::WeakSender<Msg>,
    /// This instance's run tokens, shared with its handles.
    gate: Arc<BeatGate>,
    live: Live,
    /// The lateness clock of a program with `period`/`schedule`; it runs
    /// whatever the process does (a cron job has none of its own).
    job: Option<JobClock>,
}

/// Readiness and heartbeat state of the current run.
#[derive(Default)]
struct Live {
    /// Counts spawns; a beat must carry the current run's id or token.
    run: u64,
    token: String,
    /// Receives this run's IPC messages (`ready = "ipc"`).
    listeners: Vec<tokio::task::JoinHandle<()>>,
    /// This run's sd_notify socket, read by the actor itself (a task per
    /// program would cost ~1.5 KiB each, for a socket most never use).
    notify: Option<NotifySocket>,
    /// The uid allowed to send on it (the program's; root always is).
    notify_uid: u32,
    /// Malformed datagrams are logged at most this often.
    notify_log: Option<RateLimitedLog>,
    /// Not ready by then: a failed start.
    ready_deadline: Option<Instant>,
    /// SIGKILL the group then (after a watchdog or ready-timeout signal).
    kill_at: Option<Instant>,
    /// Why `kill_at` was set, for the exit message.
    kill_reason: Option<String>,
    /// Last sign of life in this run: the last beat, or becoming ready.
    alive_at: Option<Instant>,
    /// Any beat arrived in this run.
    beaten: bool,
    level: Option<Liveness>,
    last_publish: Option<Instant>,
    publish_at: Option<Instant>,
}

enum Event {
    Request(Request, oneshot::Sender<Outcome>),
    Exit(Exit),
    Deadline,
    Epoch,
    Beat(Box<BeatMsg>),
    Notify(Vec<Result<crate::heartbeat::Beat, crate::heartbeat::notify::DatagramError>>),
    /// HTTP beats merged in the gate (`ProgramHandle::offer`).
    PendingBeats,
    Closed,
}

impl Actor {
    fn phase(&self) -> Phase {
        self.snap.state
    }

    async fn run(&mut self) {
        loop {
            let event = {
                let waiting = self.phase() == Phase::Waiting;
                let deadline = self.next_deadline();
                let exit_rx = &mut self.exit_rx;
                let has_child = exit_rx.is_some();
                let rx = &mut self.rx;
                let epoch = &mut self.epoch;
                let notify = self.live.notify.as_ref();
                let notify_uid = self.live.notify_uid;
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(Msg::Request(r, reply)) => Event::Request(r, reply),
                        Some(Msg::Beat(b)) => Event::Beat(b),
                        None => Event::Closed,
                    },
                    got = async { notify.expect("guarded").next(notify_uid).await }, if notify.is_some() => Event::Notify(got),
                    exit = async { exit_rx.as_mut().expect("guarded").await }, if has_child => {
                        // The reaper only drops the sender when it is shutting down.
                        Event::Exit(exit.unwrap_or(Exit::Signal(libc::SIGKILL)))
                    }
                    _ = sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => Event::Deadline,
                    _ = epoch.changed(), if waiting => Event::Epoch,
                    () = self.gate.pending_ready() => Event::PendingBeats,
                }
            };
            match event {
                Event::Request(r, reply) => self.on_request(r, reply).await,
                Event::Exit(exit) => {
                    self.exit_rx = None;
                    self.on_exit(exit).await;
                }
                Event::Deadline => self.on_timers().await,
                Event::Beat(b) => self.on_beat(*b),
                Event::PendingBeats => {
                    if let Some((token, beat)) = self.gate.take_pending() {
                        self.on_beat(BeatMsg {
                            beat: Ok(beat),
                            auth: BeatAuth::Token(token),
                            reply: None,
                        });
                    }
                }
                Event::Notify(got) => {
                    for r in got {
                        let beat = r.map_err(|e| {
                            if let Some(log) = &mut self.live.notify_log {
                                log.warn(&e);
                            }
                            e.to_string()
                        });
                        let auth = BeatAuth::Run(self.live.run);
                        self.on_beat(BeatMsg {
                            beat,
                            auth,
                            reply: None,
                        });
                    }
                }
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
            (req, Phase::Stopping) => self.request_while_stopping(req, reply),
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

    /// While `stopping` (a stop, or the rest of a group after its main
    /// process exited): note what is asked, done once the group is empty.
    fn request_while_stopping(&mut self, req: Request, reply: oneshot::Sender<Outcome>) {
        match req {
            Request::Start | Request::Restart => {
                self.then_start = true;
                self.start_waiters.push(reply);
            }
            Request::Stop => {
                self.then_start = false;
                self.fail_start_waiters("stopped before it was running");
                self.stop_waiters.push(reply);
            }
        }
    }

    /// [`drain_group`], taking requests meanwhile: a stop or a start sent
    /// during a drain is noted and acted on once the group is empty, instead
    /// of waiting behind the drain and then undoing what the restart policy
    /// did (with a zero backoff: a restart, then the stop of that restart).
    async fn drain_serving(&mut self, pgid: i32, signal: Option<Signal>, deadline: Instant) {
        let drain = drain_group(pgid, signal, deadline);
        tokio::pin!(drain);
        loop {
            tokio::select! {
                () = &mut drain => return,
                msg = self.rx.recv() => match msg {
                    Some(Msg::Request(r, reply)) => self.request_while_stopping(r, reply),
                    Some(Msg::Beat(b)) => self.on_beat(*b),
                    None => {
                        drain.as_mut().await;
                        return;
                    }
                },
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
            Err(e) => return self.spawn_failed(pipe_error(e)),
        };
        let (err_r, err_w) = match pipe() {
            Ok(p) => p,
            Err(e) => return self.spawn_failed(pipe_error(e)),
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
        self.live.run += 1;
        self.live.token = new_token();
        self.gate.open(self.live.token.clone());
        let run = self.live.run;
        env.push(("WARD_RUN_ID".into(), run.to_string()));
        env.push(("WARD_HEARTBEAT_TOKEN".into(), self.live.token.clone()));
        if let Some(addr) = self.ctx.http {
            env.push((
                "WARD_HEARTBEAT_URL".into(),
                format!("http://{addr}/v1/heartbeat/{}", self.inst.id),
            ));
        }
        let uid = p.user.as_ref().map(|u| u.uid).filter(|_| self.ctx.is_root);
        let sock_path = self
            .ctx
            .notify_dir
            .join(format!("{}.{run}.sock", self.inst.id.replace(':', "-")));
        match NotifySocket::bind(&sock_path, uid) {
            Ok(sock) => {
                env.push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));
                self.live.notify_uid = uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
                self.live.notify = Some(sock);
                if self.live.notify_log.is_none() {
                    self.live.notify_log = Some(RateLimitedLog::new(Duration::from_secs(10)));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the notify socket; sd_notify is off for this run")
            }
        }
        let mut ipc = None;
        if p.ready == ReadyMode::Ipc {
            match ipc_channel() {
                Ok((parent, child)) => {
                    env.push(("NODE_CHANNEL_FD".into(), child.as_raw_fd().to_string()));
                    env.push(("NODE_CHANNEL_SERIALIZATION_MODE".into(), "json".into()));
                    self.live.listeners.push(tokio::spawn(ipc_listener(
                        parent,
                        self.inbox.clone(),
                        run,
                    )));
                    ipc = Some(child);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the IPC channel for `ready = \"ipc\"`")
                }
            }
        }
        let mut argv = p.command.argv();
        if let Some(interval) = p.heartbeat.interval {
            env.push(("WATCHDOG_USEC".into(), interval.as_micros().to_string()));
            // WATCHDOG_PID must be the child's own pid, known only after fork:
            // a shell sets it and execs the program in place (same pid).
            let mut wrapped = vec![
                "/bin/sh".to_string(),
                "-c".into(),
                "WATCHDOG_PID=$$ exec \"$@\"".into(),
                "ward-watchdog".into(),
            ];
            wrapped.extend(argv);
            argv = wrapped;
        }
        let req = SpawnRequest {
            argv,
            ipc,
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
                self.snap.start_ticks = spawned.start_ticks;
                self.snap.pgid = Some(spawned.pid);
                self.snap.started_at_ms = Some(now_ms());
                self.snap.restarts = self.spawns.saturating_sub(1);
                self.snap.next_start_ms = None;
                self.killed = false;
                self.live.beaten = false;
                self.live.level = None;
                self.live.alive_at = None;
                match p.ready {
                    ReadyMode::Started => {
                        self.deadline = None;
                        self.become_ready(spawned.pid);
                    }
                    ReadyMode::Uptime if p.min_uptime.is_zero() => {
                        self.deadline = None;
                        self.become_ready(spawned.pid);
                    }
                    ReadyMode::Uptime => {
                        self.deadline = Some(now + p.min_uptime);
                        self.transition(Phase::Starting, None, Some(spawned.pid));
                    }
                    ReadyMode::Notify | ReadyMode::Heartbeat | ReadyMode::Ipc => {
                        self.deadline = None;
                        self.live.ready_deadline = Some(now + p.ready_timeout);
                        let what = match p.ready {
                            ReadyMode::Notify => "READY=1",
                            ReadyMode::Heartbeat => "a first heartbeat",
                            _ => "process.send('ready')",
                        };
                        self.transition(
                            Phase::Starting,
                            Some(format!("waiting for {what}")),
                            Some(spawned.pid),
                        );
                    }
                }
            }
            Err(e) => {
                self.stop_listeners();
                let msg = format!("{e}: {}; hint: {}", error_chain(&e), e.hint());
                self.spawn_failed(msg);
            }
        }
    }

    fn spawn_failed(&mut self, msg: String) {
        tracing::error!(error = %msg, "cannot start");
        self.snap.message = Some(msg.clone());
        self.fail_start_waiters(&msg);
        self.decide(RunEnd::SpawnFailed, Duration::ZERO, Some(msg), None);
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

    /// The earliest of every pending timer.
    fn next_deadline(&self) -> Option<Instant> {
        let liveness = self.liveness_deadline();
        [
            self.deadline,
            self.live.ready_deadline,
            self.live.kill_at,
            liveness,
            self.live.publish_at,
            self.job.as_ref().and_then(JobClock::deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the liveness level next changes, if the program expects beats.
    fn liveness_deadline(&self) -> Option<Instant> {
        let hb = &self.inst.program.heartbeat;
        hb.interval?;
        if self.phase() != Phase::Running {
            return None;
        }
        let base = self.live.alive_at?;
        match self.live.level.unwrap_or(Liveness::Fresh) {
            Liveness::Fresh => Some(base + hb.stale_after),
            Liveness::Stale => Some(base + hb.hung_after),
            Liveness::Hung => None,
        }
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        if self.live.publish_at.is_some_and(|t| t <= now) {
            self.live.publish_at = None;
            self.publish();
        }
        if self.live.kill_at.is_some_and(|t| t <= now) {
            self.live.kill_at = None;
            if let Some(child) = &self.child {
                tracing::warn!(
                    pid = child.pid,
                    "still running; sending SIGKILL to its process group"
                );
                let _ = killpg(Pid::from_raw(child.pid), Signal::SIGKILL);
            }
        }
        if self.live.ready_deadline.is_some_and(|t| t <= now) {
            self.live.ready_deadline = None;
            if self.phase() == Phase::Starting {
                let p = self.inst.program.clone();
                let why = format!(
                    "not ready within ready_timeout ({})",
                    human(p.ready_timeout)
                );
                tracing::error!("{why}; stopping it as a failed start");
                self.fail_start_waiters(&why);
                self.force_stop(p.stop_signal, why);
            }
        }
        if self.liveness_deadline().is_some_and(|t| t <= now) {
            self.check_liveness();
        }
        if self
            .job
            .as_ref()
            .and_then(JobClock::deadline)
            .is_some_and(|t| t <= now)
        {
            self.check_job();
        }
        if self.deadline.is_some_and(|t| t <= now) {
            self.on_deadline().await;
        }
    }

    /// Signal the group as a failure (the exit then goes through the restart
    /// policy like a crash), and SIGKILL it after `stop_timeout`.
    fn force_stop(&mut self, sig: Signal, reason: String) {
        let Some(child) = &self.child else { return };
        signal_group(child.pid, sig);
        self.live.kill_at = Some(Instant::now() + self.inst.program.stop_timeout);
        self.snap.message = Some(format!("{reason}; sent {}", sig.as_str()));
        self.live.kill_reason = Some(reason);
        self.publish();
    }

    /// Re-evaluate stale/hung; record changes and act on a hang.
    fn check_liveness(&mut self) {
        let hb = self.inst.program.heartbeat;
        let Some(alive_at) = self.live.alive_at else {
            return;
        };
        if self.phase() != Phase::Running {
            return;
        }
        let silent = alive_at.elapsed();
        let level = crate::heartbeat::liveness(&hb, silent);
        let before = self.live.level.unwrap_or(Liveness::Fresh);
        if level == before {
            return;
        }
        self.live.level = Some(level);
        let (from, to) = (liveness_health(before), liveness_health(level));
        let detail = match level {
            Liveness::Fresh => "heartbeat recovered".to_string(),
            _ => format!("heartbeat {}: no beat for {}", to.as_str(), human(silent)),
        };
        self.record(
            Kind::Health { from, to },
            format!("health: {} -> {}; {detail}", from.as_str(), to.as_str()),
        );
        if level == Liveness::Hung {
            match hb.on_hung {
                OnHung::Restart => {
                    tracing::error!(
                        "hung: no heartbeat for {}; stopping it with {}",
                        human(silent),
                        hb.watchdog_signal.as_str()
                    );
                    self.force_stop(
                        hb.watchdog_signal,
                        format!("hung: no heartbeat for {}", human(silent)),
                    );
                }
                OnHung::Alert => {
                    tracing::error!("hung: no heartbeat for {} (on_hung = alert)", human(silent))
                }
                OnHung::None => {}
            }
        }
    }

    /// At the job's deadline: record that it is late.
    fn check_job(&mut self) {
        let before = self.health();
        let Some(job) = &mut self.job else { return };
        if !job.check(clock_now()) {
            // Re-armed (the wall clock was set back): show the new time.
            self.publish_soon();
            return;
        }
        let why = job.why_late().unwrap_or_default();
        tracing::warn!("late: {why}");
        let after = self.health();
        self.record(
            Kind::Health {
                from: before,
                to: after,
            },
            format!("health: {} -> {}; {why}", before.as_str(), after.as_str()),
        );
    }

    /// A run of the job started or finished; a finished one ends lateness.
    /// A change of health is published at once, not coalesced.
    fn job_run(&mut self, report: RunReport) {
        let before = self.health();
        let Some(job) = &mut self.job else { return };
        let late_since = job.view().late_since_ms;
        let now = clock_now();
        job.report(report, now);
        let still_late = job.is_late();
        let after = self.health();
        if let (Some(since), false) = (late_since, still_late) {
            let how = if report == RunReport::Succeeded {
                "succeeded"
            } else {
                "failed"
            };
            let late_for = Duration::from_millis(now.wall_ms.saturating_sub(since));
            self.record(
                Kind::Health {
                    from: before,
                    to: after,
                },
                format!(
                    "health: {} -> {}; on time again: a run {how}, {} after it turned late",
                    before.as_str(),
                    after.as_str(),
                    human(late_for)
                ),
            );
        } else if after != self.snap.health {
            self.publish();
        }
    }

    fn on_beat(&mut self, msg: BeatMsg) {
        let BeatMsg { beat, auth, reply } = msg;
        let live_run = self.child.is_some();
        let verdict = match &auth {
            BeatAuth::Run(run) if live_run && *run == self.live.run => Ok(()),
            BeatAuth::Run(_) if live_run => Err(BeatRefused::OldRun),
            BeatAuth::Run(_) => Err(BeatRefused::NotRunning),
            BeatAuth::Token(t)
                if live_run
                    && !self.live.token.is_empty()
                    && constant_time_eq(t, &self.live.token) =>
            {
                Ok(())
            }
            // Not the current run's: an earlier run's, or no token at all.
            BeatAuth::Token(t) => Err(match self.gate.check(t) {
                Err(BeatRefused::BadToken) => BeatRefused::BadToken,
                _ => BeatRefused::OldRun,
            }),
            BeatAuth::Operator => Ok(()),
        };
        let result = match (verdict, beat) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(why)) => Err(BeatRefused::Malformed(why)),
            (Ok(()), Ok(beat)) => {
                self.accept_beat(beat);
                Ok(())
            }
        };
        if result.is_err() {
            self.snap.heartbeat.rejected += 1;
            self.publish_soon();
        }
        if let Some(r) = reply {
            let _ = r.send(result);
        }
    }

    fn accept_beat(&mut self, beat: Beat) {
        let now = Instant::now();
        let was_circuit = self.snap.heartbeat.circuit_breaker_open;
        self.snap.heartbeat.apply(&beat, now_ms());
        if let Some(detail) = &beat.record {
            let kind = match beat.run {
                Some(run) => Kind::Job { run },
                None => Kind::Note,
            };
            self.record(kind, detail.clone());
        }
        if let Some(report) = beat.run {
            self.job_run(report);
        }
        if self.child.is_some() {
            self.live.alive_at = Some(now);
            self.live.beaten = true;
        }
        if let Some(extend) = beat.extend {
            match self.phase() {
                Phase::Starting if self.live.ready_deadline.is_some() => {
                    self.live.ready_deadline = Some(now + extend)
                }
                Phase::Stopping => self.deadline = Some(now + extend),
                _ => {}
            }
        }
        if self.phase() == Phase::Starting {
            let ready = match self.inst.program.ready {
                ReadyMode::Heartbeat => true,
                ReadyMode::Notify | ReadyMode::Ipc => beat.ready,
                ReadyMode::Started | ReadyMode::Uptime => false,
            };
            if ready {
                if let Some(pid) = self.snap.pid {
                    self.live.ready_deadline = None;
                    self.deadline = None;
                    self.become_ready(pid);
                }
            }
        }
        if self.snap.heartbeat.circuit_breaker_open != was_circuit {
            let open = self.snap.heartbeat.circuit_breaker_open;
            let state = if open { "open" } else { "closed" };
            self.record(
                Kind::Circuit { open },
                format!("circuit breaker {state} (reported by the worker)"),
            );
        }
        if self.live.level.is_some_and(|l| l != Liveness::Fresh) && self.phase() == Phase::Running {
            self.check_liveness();
        }
        if beat.trigger && self.phase() == Phase::Running {
            let hb = self.inst.program.heartbeat;
            let from = liveness_health(self.live.level.unwrap_or(Liveness::Fresh));
            self.record(
                Kind::Health {
                    from,
                    to: Health::Hung,
                },
                "health: hung (WATCHDOG=trigger from the worker)".into(),
            );
            self.live.level = Some(Liveness::Hung);
            if hb.on_hung == OnHung::Restart {
                self.force_stop(
                    hb.watchdog_signal,
                    "the worker asked for a watchdog restart".into(),
                );
            }
        }
        self.publish_soon();
    }

    /// Starting -> Running: deadlines of liveness count from now.
    fn become_ready(&mut self, pid: i32) {
        self.live.alive_at = Some(Instant::now());
        self.live.level = Some(Liveness::Fresh);
        self.transition(Phase::Running, None, Some(pid));
        self.resolve_start_waiters();
    }

    fn stop_listeners(&mut self) {
        for t in self.live.listeners.drain(..) {
            t.abort();
        }
        self.live.notify = None;
        self.live.token.clear();
        self.gate.close();
    }

    /// Keep a non-phase event (health, circuit, a job's run) in the history.
    fn record(&mut self, kind: Kind, detail: String) {
        tracing::info!("{detail}");
        let phase = self.phase();
        if self.snap.history.len() == HISTORY {
            self.snap.history.pop_front();
        }
        self.snap.history.push_back(Transition {
            at_ms: now_ms(),
            from: phase,
            to: phase,
            kind,
            pid: self.snap.pid,
            exit: None,
            detail: Some(detail),
        });
        self.publish();
    }

    /// Publish at most ten times a second for heartbeat-only changes.
    fn publish_soon(&mut self) {
        let now = Instant::now();
        match self.live.last_publish {
            Some(t) if now.duration_since(t) < PUBLISH_EVERY => {
                if self.live.publish_at.is_none() {
                    self.live.publish_at = Some(t + PUBLISH_EVERY);
                }
            }
            _ => self.publish(),
        }
    }

    /// The health to show now, from the process, its beats and its job runs.
    fn health(&self) -> Health {
        let crashed = self
            .snap
            .last_exit
            .as_ref()
            .is_some_and(|e| !e.exit.is_success(&self.inst.program.exit_codes));
        let process = crate::heartbeat::evaluate(
            self.phase(),
            crashed,
            self.live.level.unwrap_or(Liveness::Fresh),
            self.live.beaten,
            self.snap.heartbeat.circuit_breaker_open,
        );
        match &self.job {
            Some(job) => crate::heartbeat::job_health(process, self.phase(), job.state()),
            None => process,
        }
    }

    fn publish(&mut self) {
        self.snap.health = self.health();
        self.snap.job = self.job.as_ref().map(JobClock::view);
        self.live.last_publish = Some(Instant::now());
        self.live.publish_at = None;
        self.snap_tx.send_replace(self.snap.clone());
        self.ctx.changed.notify_one();
    }

    async fn on_deadline(&mut self) {
        self.deadline = None;
        match self.phase() {
            Phase::Starting => {
                if let Some(pid) = self.snap.pid {
                    self.become_ready(pid);
                }
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
        self.stop_listeners();
        self.live.ready_deadline = None;
        self.live.kill_at = None;
        let forced = self.live.kill_reason.take();
        let ran_for = child.started.elapsed();
        let p = self.inst.program.clone();
        let stopping = self.phase() == Phase::Stopping;
        // Recorded at once, before the rest of the group is waited for: the
        // pid is gone, and no snapshot may show it any more.
        self.snap.pid = None;
        self.snap.start_ticks = None;
        self.snap.last_exit = Some(LastExit {
            exit,
            at_ms: now_ms(),
            ran_for_ms: ran_for.as_millis() as u64,
        });
        // Whatever remains of the group goes too, as systemd does for a
        // unit's cgroup. An empty group (the usual case) costs one kill(2).
        let leftovers = group_alive(child.pid);
        if stopping {
            if leftovers {
                // The whole group already has the stop signal; keep its deadline.
                let deadline = if self.killed {
                    Instant::now()
                } else {
                    self.deadline.unwrap_or_else(Instant::now)
                };
                let why = format!(
                    "main process exited ({exit}); waiting for the rest of its process group"
                );
                tracing::info!(pgid = child.pid, "{why}");
                self.snap.message = Some(match self.snap.message.take() {
                    Some(m) => format!("{m}; {why}"),
                    None => why,
                });
                self.publish();
                self.drain_serving(child.pid, None, deadline).await;
            }
            self.release_group(child.pid);
            self.stopped_then(exit, child.pid).await;
            return;
        }
        let failed_start = ran_for < p.min_uptime;
        let detail = if let Some(reason) = forced {
            format!("{exit} after {}: {reason}", human(ran_for))
        } else if failed_start {
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
        if leftovers {
            // `stopping` while they go (systemd's "deactivating"), then the
            // restart policy as if the group had been empty.
            let why = format!(
                "main process exited: {detail}; stopping what is left of its process group \
                 (sent {}, SIGKILL after {})",
                p.stop_signal.as_str(),
                human(p.stop_timeout)
            );
            self.transition_exit(Phase::Stopping, Some(why), Some(child.pid), Some(exit));
            self.drain_serving(
                child.pid,
                Some(p.stop_signal),
                Instant::now() + p.stop_timeout,
            )
            .await;
            if !self.stop_waiters.is_empty() || self.then_start {
                // A stop or a start asked for during the drain replaces the
                // restart policy.
                self.release_group(child.pid);
                self.stopped_then(exit, child.pid).await;
                return;
            }
        }
        self.release_group(child.pid);
        self.decide(RunEnd::Exited(exit), ran_for, Some(detail), Some(child.pid));
        // A zero backoff restarts now, not on the timer's next tick (up to 1 ms later).
        if self.phase() == Phase::Backoff && self.deadline.is_some_and(|d| d <= Instant::now()) {
            self.on_deadline().await;
        }
    }

    /// The end of a stop: `stopped`, the stop requests answered, then the
    /// start a restart asked for.
    async fn stopped_then(&mut self, exit: Exit, pid: i32) {
        self.transition(Phase::Stopped, Some(format!("stopped ({exit})")), Some(pid));
        for w in self.stop_waiters.drain(..) {
            let _ = w.send(Ok(format!("stopped ({exit})")));
        }
        if std::mem::take(&mut self.then_start) {
            self.snap.streak = 0;
            self.begin_start().await;
        }
    }

    /// The run's process group is empty (or given up on): forget it.
    fn release_group(&mut self, pgid: i32) {
        self.ctx.reaper.release(pgid);
        self.snap.pgid = None;
        self.deadline = None;
    }

    /// Apply the restart policy after a run ended on its own; `pid` is the
    /// run's (none when the spawn failed), kept in the transition.
    fn decide(&mut self, end: RunEnd, ran_for: Duration, detail: Option<String>, pid: Option<i32>) {
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
                self.transition(Phase::Backoff, Some(why), pid);
            }
            AfterExit::Exited { streak } => {
                self.snap.streak = streak;
                self.transition(Phase::Exited, detail, pid);
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
                self.transition(Phase::Fatal, Some(why), pid);
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

    /// Enter `to` and keep it in the history. `pid` is the process started,
    /// or the one whose run ended (into backoff, exited, fatal, stopped; and
    /// stopping, through [`Actor::transition_exit`]).
    fn transition(&mut self, to: Phase, detail: Option<String>, pid: Option<i32>) {
        let exit = if matches!(
            to,
            Phase::Backoff | Phase::Exited | Phase::Fatal | Phase::Stopped
        ) {
            self.snap.last_exit.as_ref().map(|e| e.exit)
        } else {
            None
        };
        self.transition_exit(to, detail, pid, exit);
    }

    /// [`Actor::transition`] with the exit it records given: a transition to
    /// `stopping` carries one when the main process exited on its own and
    /// the rest of its group is being stopped (the store names its events by
    /// that).
    fn transition_exit(
        &mut self,
        to: Phase,
        detail: Option<String>,
        pid: Option<i32>,
        exit: Option<Exit>,
    ) {
        let from = self.phase();
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
            kind: Kind::Phase,
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
        self.publish();
        if from != to {
            self.ctx.epoch.send_modify(|e| *e = e.wrapping_add(1));
        }
    }
}

/// The health a liveness level stands for in a heartbeat health record.
fn liveness_health(level: Liveness) -> Health {
    match level {
        Liveness::Fresh => Health::Healthy,
        Liveness::Stale => Health::Stale,
        Liveness::Hung => Health::Hung,
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

/// Descriptors a program's pipes may not take: ward keeps them for its own
/// work (control connections, the status tables, log rotation, `/proc`), so
/// that `ward status` still answers when programs have used up the limit.
const FD_RESERVE: u64 = 64;

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    // New descriptors take the lowest free numbers: a number this high means
    // the table is full below it.
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::MAX, |(soft, _)| soft);
    if (r.as_raw_fd().max(w.as_raw_fd()) as u64).saturating_add(FD_RESERVE) >= limit {
        return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
    }
    Ok((r, w))
}

fn signal_group(pgid: i32, sig: Signal) {
    let pg = Pid::from_raw(pgid);
    let _ = killpg(pg, sig);
    // Stopped processes cannot act on the signal until continued.
    if !matches!(sig, Signal::SIGKILL | Signal::SIGCONT) {
        let _ = killpg(pg, Signal::SIGCONT);
    }
}

/// Whether process group `pgid` still has a member (maybe a zombie not
/// reaped yet); one kill(2) with no signal.
fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None) != Err(nix::errno::Errno::ESRCH)
}

/// Wait until the process group `pgid` is empty: send `signal` to it first
/// (if any), SIGKILL it at `deadline`, and give up `KILL_GRACE` later.
async fn drain_group(pgid: i32, signal: Option<Signal>, deadline: Instant) {
    let pg = Pid::from_raw(pgid);
    if !group_alive(pgid) {
        return;
    }
    if let Some(sig) = signal {
        signal_group(pgid, sig);
    }
    let mut killed = false;
    loop {
        if !group_alive(pgid) {
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

/// Both clocks, for the job clock.
fn clock_now() -> Now {
    Now {
        mono: Instant::now(),
        wall_ms: now_ms(),
    }
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

/// A fresh per-run secret for `WARD_HEARTBEAT_TOKEN` (128 bits, hex).
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `len` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Fall back to the jitter source seeded from time and pid.
        let mut j = Jitter::from_entropy("token");
        for b in &mut bytes {
            *b = (j.next_unit() * 256.0) as u8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A socketpair for Node's IPC channel: ward's end, and the child's (its fd
/// number becomes `NODE_CHANNEL_FD`; the reaper clears its close-on-exec).
fn ipc_channel() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((a, b))
}

/// Read Node IPC messages (JSON lines); `"ready"` (from `process.send('ready')`)
/// is a ready beat, anything else a plain sign of life.
async fn ipc_listener(fd: OwnedFd, inbox: mpsc::WeakSender<Msg>, run: u64) {
    use tokio::io::AsyncBufReadExt;
    let std = std::os::unix::net::UnixStream::from(fd);
    if std.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(stream) = tokio::net::UnixStream::from_std(std) else {
        return;
    };
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let ready = match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::String(s)) => s == "ready",
            Ok(v) => v.get("data").and_then(|d| d.as_str()) == Some("ready"),
            Err(_) => false,
        };
        let beat = Beat {
            ready,
            ..Beat::default()
        };
        let Some(tx) = inbox.upgrade() else { return };
        let _ = tx.try_send(Msg::Beat(Box::new(BeatMsg {
            beat: Ok(beat),
            auth: BeatAuth::Run(run),
            reply: None,
        })));
    }
}

/// Why a log pipe could not be made, with the fix when descriptors ran out.
fn pipe_error(e: std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) => format!(
            "cannot create a pipe: {e}: ward has used up its open-file limit \
             (each program takes about three descriptors, and ward keeps {FD_RESERVE} \
             for itself); raise the hard limit \
             (`LimitNOFILE=` in the unit, `ulimit -Hn` in the shell that starts ward)"
        ),
        Some(libc::ENFILE) => {
            format!("cannot create a pipe: {e}: the system-wide file table is full (fs.file-max)")
        }
        _ => format!("cannot create a pipe: {e}"),
    }
}
