//! `ward up`: the daemon's life from lock to exit.
//!
//! Takes the state-dir lock, kills what a SIGKILLed predecessor left, starts
//! the process thread, the control socket and one actor per instance, then
//! waits for a signal or `ward down`, and stops everything in reverse
//! dependency order before exiting. A second SIGINT/SIGTERM during that stop
//! escalates to SIGKILL of every process group.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::control::server;
use crate::logs::OwnLogWriter;
use crate::program::{Context, Phase, Request};
use crate::reaper::{self, Reaper};
use crate::sdnotify::{self, Notifier};
use crate::supervisor::Supervisor;

/// How long the final write to the status tables may delay the exit.
const STORE_FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long the log writer may take to write the programs' last output.
const LOG_FLUSH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create the state dir `{}`", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ward is already running for state dir `{}` (pid {pid})", state_dir.display())]
    AlreadyRunning { state_dir: PathBuf, pid: String },
    #[error("cannot bind the control socket `{}`", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the process thread")]
    Reaper(#[source] io::Error),
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),
}

impl DaemonError {
    pub fn hint(&self) -> Option<String> {
        match self {
            DaemonError::StateDir { .. } => Some("set `state_dir` in [supervisor] to a directory you can write".into()),
            DaemonError::AlreadyRunning { .. } => {
                Some("use `ward status`, or `ward down` to stop it; a second daemon needs another `state_dir`".into())
            }
            DaemonError::Socket { .. } => Some("set `socket` in [supervisor] to a short path in a writable directory".into()),
            _ => None,
        }
    }
}

/// Paths under the state dir.
pub fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ward.lock")
}
pub fn own_log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ward.log")
}
fn pid_journal(state_dir: &Path) -> PathBuf {
    state_dir.join("pids.journal")
}

/// Create the state dir (owner-only when ward creates it) and take its lock.
pub fn prepare_state_dir(state_dir: &Path) -> Result<Flock<File>, DaemonError> {
    let err = |source| DaemonError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    };
    if !state_dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(err)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path(state_dir))
        .map_err(err)?;
    let _ = file.set_permissions(fs::Permissions::from_mode(0o600));
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0).map_err(err)?;
            lock.rewind().map_err(err)?;
            write!(lock, "{}", std::process::id()).map_err(err)?;
            Ok(lock)
        }
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(DaemonError::AlreadyRunning {
                state_dir: state_dir.to_path_buf(),
                pid: pid.trim().to_string(),
            })
        }
    }
}

/// The HTTP heartbeat endpoint runs on a thread with a runtime of its own:
/// parsing a flood of requests then has a core to itself, as it had on a
/// multi-thread runtime (~42k beats/s on the supervision thread, 50k+ on its
/// own), and the actors' thread stays free. Beats reach the actors through
/// their channels, which work across runtimes. Only started when `http` is
/// set; it ends with the process.
fn spawn_http(addr: std::net::SocketAddr, sup: Arc<Supervisor>) {
    const WITHOUT: &str =
        "ward goes on without it (sd_notify, IPC and `ward beat NAME` still work)";
    let spawned = std::thread::Builder::new()
        .name("ward-http".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(crate::heartbeat::http::serve(addr, sup)),
                Err(e) => tracing::error!(error = %e, "cannot start the heartbeat HTTP endpoint's runtime; {WITHOUT}"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the heartbeat HTTP endpoint's thread; {WITHOUT}");
    }
}

/// Run the daemon until it is told to stop. The lock must be held.
pub fn run(config: Config, _lock: Flock<File>, own_log: OwnLogWriter) -> Result<(), DaemonError> {
    // Before any thread starts, so that every thread inherits the mask.
    crate::reaper::block_sigchld();
    // One malloc arena: the daemon's allocations are small and few, and
    // per-thread arenas would cost resident memory for nothing.
    // SAFETY: mallopt only tunes glibc's allocator; called before threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    match crate::spawn::raise_nofile_limit() {
        Ok(Some((old, new))) => tracing::debug!(
            from = old,
            to = new,
            "raised the open-file limit (programs keep the one ward was started with)"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    // One thread runs every task. The work that may block runs on threads of
    // its own: spawning and reaping (`ward-proc`), program-log file I/O
    // (`ward-logs`) and SQLite (sqlx's worker). tokio's multi-thread
    // scheduler would add two workers, its code and libm (~0.7 MiB RSS) for
    // work that is a few microseconds per event.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(run_async(config, own_log))
}

async fn run_async(config: Config, own_log: OwnLogWriter) -> Result<(), DaemonError> {
    // Handlers first: once the socket answers or READY=1 is sent, a signal
    // must find them (the default action of SIGTERM would kill ward outright).
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Reaper)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Reaper)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Reaper)?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(DaemonError::Reaper)?;
    let state_dir = config.supervisor.state_dir.clone();
    let records = pid_journal(&state_dir);
    for (label, pgid) in reaper::kill_leftovers(&records) {
        tracing::warn!(program = %label, pgid, "killed a process group left by a previous ward that did not stop cleanly");
    }
    let _ = fs::remove_dir_all(state_dir.join("notify"));
    let reaper = Reaper::start(records).map_err(DaemonError::Reaper)?;
    let socket_path = config.supervisor.socket.clone();
    let sup_http = config.supervisor.http;
    let listener =
        server::bind(&socket_path, config.supervisor.socket_group.as_ref()).map_err(|source| {
            DaemonError::Socket {
                path: socket_path.clone(),
                source,
            }
        })?;

    let socket_inode = socket_file_inode(&socket_path);
    let (epoch, _) = watch::channel(0u64);
    let ctx = Arc::new(Context {
        reaper,
        epoch,
        config_dir: config
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/")),
        is_root: nix::unistd::geteuid().is_root(),
        registry: Default::default(),
        notify_dir: state_dir.join("notify"),
        changed: Default::default(),
        http: sup_http,
    });
    let sup = Arc::new(Supervisor::new(config, ctx));
    let count = sup.handles().len();
    // Off the supervision path: never fails, retries an unreachable database.
    let store = crate::store::spawn(&sup.config(), sup.clone());
    let epoch_rx = sup.subscribe_epoch();
    let (down, mut down_rx) = watch::channel(false);
    tokio::spawn(server::serve(listener, sup.clone(), down.clone()));
    if let Some(addr) = sup_http {
        spawn_http(addr, sup.clone());
    }
    crate::watch::spawn(sup.clone());

    for h in sup.handles().iter().filter(|h| h.program.autostart) {
        h.send(Request::Start);
    }
    tracing::info!(programs = count, socket = %socket_path.display(), config = %sup.config().path.display(), "ward is up");
    let notifier = start_systemd_notify(&sup, epoch_rx);
    tokio::spawn(trim_after_start(sup.clone(), sup.subscribe_epoch()));

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping every program"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping every program"); break; }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let sup = sup.clone();
                tokio::spawn(async move {
                    if let Err(e) = sup.reload().await {
                        tracing::error!("reload refused: {e}");
                    }
                });
            }
            _ = sigusr1.recv() => {
                tracing::info!("SIGUSR1: reopening log files");
                own_log.reopen();
                sup.reopen_logs();
            }
            _ = down_rx.changed() => { tracing::info!("stopped by `ward down`"); break; }
        }
    }

    if let Some(n) = &notifier {
        n.notify("STOPPING=1\nSTATUS=stopping every program");
    }
    // Stop everything; a second signal escalates to SIGKILL.
    let all = sup.handles();
    let stop = sup.stop_ordered(&all);
    tokio::pin!(stop);
    tokio::select! {
        _ = &mut stop => {}
        _ = sigterm.recv() => kill_everything(&sup),
        _ = sigint.recv() => kill_everything(&sup),
    }
    if !crate::logs::flush(LOG_FLUSH_DEADLINE).await {
        tracing::warn!(
            "the log writer is still behind after {}s (slow or stalled disk?); program output not yet written is lost",
            LOG_FLUSH_DEADLINE.as_secs()
        );
    }
    if let Some(store) = store {
        store.shutdown(STORE_FLUSH_DEADLINE).await;
    }
    // Only our own socket: after `rm -rf` of the state dir another daemon may own the path.
    if socket_inode.is_some() && socket_file_inode(&socket_path) == socket_inode {
        let _ = fs::remove_file(&socket_path);
    }
    tracing::info!("ward stopped");
    Ok(())
}

/// How long `READY=1` waits for the autostart programs to have started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// At most one `STATUS=` per this interval (bursts of changes coalesce).
const STATUS_INTERVAL: Duration = Duration::from_millis(250);

/// When run by systemd with `Type=notify` (`$NOTIFY_SOCKET` set): tell it
/// `READY=1` once every autostart program has started (or failed), a
/// `STATUS=` summary when it changes, and `WATCHDOG=1` every half
/// `$WATCHDOG_USEC`. Returns the notifier for `STOPPING=1`.
fn start_systemd_notify(
    sup: &Arc<Supervisor>,
    epoch: watch::Receiver<u64>,
) -> Option<Arc<Notifier>> {
    let notifier = match Notifier::from_env()? {
        Ok(n) => Arc::new(n),
        Err(e) => {
            tracing::warn!(error = %e, "NOTIFY_SOCKET is set but unusable; not reporting to systemd");
            return None;
        }
    };
    tokio::spawn(report_state(notifier.clone(), sup.clone(), epoch));
    if let Some(every) = sdnotify::watchdog_interval() {
        tracing::info!(every = %crate::program::human(every), "sending WATCHDOG=1 to systemd");
        let n = notifier.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                n.notify("WATCHDOG=1");
            }
        });
    }
    Some(notifier)
}

fn systemd_summary(sup: &Supervisor) -> String {
    crate::program::state::summary(sup.handles().iter().map(|h| h.phase()))
}

/// Whether every autostart program has started (or failed to).
fn autostart_done(sup: &Supervisor) -> bool {
    sup.handles()
        .iter()
        .filter(|h| h.program.autostart)
        .all(|h| !matches!(h.phase(), Phase::Stopped | Phase::Waiting))
}

/// Wait until every autostart program has started, at most `READY_TIMEOUT`:
/// `Some(true)` when they have, `Some(false)` at the timeout, `None` when
/// the daemon is going away.
async fn until_started(sup: &Supervisor, epoch: &mut watch::Receiver<u64>) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while !autostart_done(sup) {
        tokio::select! {
            changed = epoch.changed() => changed.ok()?,
            _ = tokio::time::sleep_until(deadline) => return Some(false),
        }
        // A start is a burst of changes, and each look reads every
        // instance: look again once the burst has settled, not per change
        // (with 1,000 programs, per change was a million reads).
        tokio::time::sleep(STATUS_INTERVAL).await;
    }
    Some(true)
}

/// Start-up (config, migrations, a spawn per program) frees much of what it
/// allocated, scattered through the heap: once it is over, hand the free
/// pages back (about 0.2 MiB with 100 programs).
async fn trim_after_start(sup: Arc<Supervisor>, mut epoch: watch::Receiver<u64>) {
    if until_started(&sup, &mut epoch).await.is_some() {
        // The status tables' first write follows the start burst.
        tokio::time::sleep(Duration::from_secs(2)).await;
        release_free_memory();
    }
}

/// Give glibc's free heap pages back to the system (`malloc_trim`).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's heap to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn report_state(n: Arc<Notifier>, sup: Arc<Supervisor>, mut epoch: watch::Receiver<u64>) {
    match until_started(&sup, &mut epoch).await {
        None => return,
        Some(true) => {}
        Some(false) => tracing::warn!(
            "some programs have not started after {}s; telling systemd that ward is ready anyway",
            READY_TIMEOUT.as_secs()
        ),
    }
    let mut last = systemd_summary(&sup);
    n.notify(&format!("READY=1\nSTATUS={last}"));
    loop {
        if epoch.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(STATUS_INTERVAL).await;
        let now = systemd_summary(&sup);
        if now != last {
            n.notify(&format!("STATUS={now}"));
            last = now;
        }
    }
}

fn kill_everything(sup: &Supervisor) {
    tracing::warn!("second stop signal: sending SIGKILL to every program's process group");
    for h in &sup.handles() {
        let s = h.snapshot();
        // The group, not the pid: it outlives the main process while the
        // rest of the group is stopped.
        if let (true, Some(pgid)) = (s.state.has_process() || s.state == Phase::Unknown, s.pgid) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn socket_file_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| m.ino())
}
