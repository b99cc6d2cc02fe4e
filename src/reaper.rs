//! The one place that spawns and reaps children.
//!
//! A single long-lived OS thread does both, so that:
//! - `PR_SET_PDEATHSIG` (which fires when the *spawning thread* exits) only
//!   fires when ward itself dies;
//! - a child can never be reaped before its pid is registered: the thread
//!   handles "spawn" and "reap" messages one at a time, so the pid is in the
//!   table before any `waitpid(-1)` can return it.
//!
//! ward is a child subreaper: orphaned grandchildren are reparented to it and
//! reaped here too. Nothing else in ward may call `wait*` (and ward never
//! uses `tokio::process`), or exit statuses would be stolen.
//!
//! Every process group ward starts is recorded as a file in the records dir
//! until its owner releases it, so that a ward that was SIGKILLed can kill
//! the leftovers of its previous run on the next start.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::exit::Exit;
use crate::procfs;

/// Credentials to drop to in the child (ward must be root).
#[derive(Debug, Clone)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Everything needed to start one child.
#[derive(Debug)]
pub struct SpawnRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub creds: Option<Creds>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Kept open across exec under its own number (Node's `NODE_CHANNEL_FD`).
    pub ipc: Option<OwnedFd>,
    /// Instance id, written into the pid record for diagnostics.
    pub label: String,
}

/// A started child. Its pid is also its process group id (it ran `setsid`).
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub start_ticks: u64,
    /// Resolves when the child has been reaped.
    pub exit: oneshot::Receiver<Exit>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot execute `{program}`")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("the process thread is gone (ward is shutting down)")]
    Gone,
}

impl SpawnError {
    pub fn hint(&self) -> &'static str {
        match self {
            SpawnError::Exec { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => {
                    "check `command` (and `PATH`, or use an absolute path) and `cwd`"
                }
                io::ErrorKind::PermissionDenied => {
                    "check the file's execute bit and the program's `user`"
                }
                _ => "check `command`, `cwd` and `user`",
            },
            SpawnError::Gone => "ward is stopping",
        }
    }
}

enum Msg {
    Spawn(
        Box<SpawnRequest>,
        oneshot::Sender<Result<Spawned, SpawnError>>,
    ),
    Reap,
    Release(i32),
}

/// Cloneable handle to the process thread.
#[derive(Clone)]
pub struct Reaper {
    tx: mpsc::Sender<Msg>,
}

impl Reaper {
    /// Become a subreaper, start the process thread and the SIGCHLD listener.
    /// Must be called inside a tokio runtime, before any child is spawned.
    pub fn start(records_dir: PathBuf) -> io::Result<Reaper> {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot become a child subreaper; orphaned grandchildren will be reaped by init");
        }
        fs::create_dir_all(&records_dir)?;
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("ward-proc".into())
            .spawn(move || {
                ProcessThread {
                    records_dir,
                    waiting: HashMap::new(),
                }
                .run(rx)
            })?;
        let reap_tx = tx.clone();
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                if reap_tx.send(Msg::Reap).is_err() {
                    break;
                }
            }
        });
        // Children may have exited before the listener existed (not ours yet, but be safe).
        let _ = tx.send(Msg::Reap);
        Ok(Reaper { tx })
    }

    /// Start a child in its own session and process group.
    pub async fn spawn(&self, req: SpawnRequest) -> Result<Spawned, SpawnError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Spawn(Box::new(req), reply))
            .map_err(|_| SpawnError::Gone)?;
        rx.await.map_err(|_| SpawnError::Gone)?
    }

    /// The process group `pgid` is known to be empty: forget its record.
    pub fn release(&self, pgid: i32) {
        let _ = self.tx.send(Msg::Release(pgid));
    }
}

struct ProcessThread {
    records_dir: PathBuf,
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
}

impl ProcessThread {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Spawn(req, reply) => {
                    let result = self.spawn(*req);
                    let _ = reply.send(result);
                }
                Msg::Reap => self.reap(),
                Msg::Release(pgid) => {
                    let _ = fs::remove_file(self.records_dir.join(pgid.to_string()));
                }
            }
        }
    }

    fn spawn(&mut self, req: SpawnRequest) -> Result<Spawned, SpawnError> {
        let program = req.argv.first().cloned().unwrap_or_default();
        let mut cmd = Command::new(&program);
        // ward's own supervisor's variables are not for its children; the
        // program's env (set after) may bring its own NOTIFY_SOCKET.
        cmd.args(&req.argv[1..])
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .envs(
                req.env
                    .iter()
                    .map(|(k, v)| (OsString::from(k), OsString::from(v))),
            )
            .current_dir(&req.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(req.stdout))
            .stderr(Stdio::from(req.stderr));
        let parent = std::process::id() as libc::pid_t;
        let creds = req.creds.clone();
        let ipc_fd = req.ipc.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(fd) = ipc_fd {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some(c) = &creds {
                    if libc::setgroups(c.groups.len(), c.groups.as_ptr()) != 0
                        || libc::setgid(c.gid) != 0
                        || libc::setuid(c.uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                // After setuid: a credential change clears the death signal.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    // ward died between fork and prctl.
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|source| SpawnError::Exec { program, source })?;
        let pid = child.id() as i32;
        // Dropping a std Child neither waits nor kills; this thread reaps it.
        drop(child);
        let start_ticks = procfs::stat(pid).map(|s| s.start_ticks).unwrap_or(0);
        let record = format!("{start_ticks} {}\n", req.label);
        if let Err(e) = fs::write(self.records_dir.join(pid.to_string()), record) {
            tracing::warn!(error = %e, dir = %self.records_dir.display(), "cannot record child pid; it may survive a SIGKILL of ward");
        }
        let (tx, exit) = oneshot::channel();
        self.waiting.insert(pid, tx);
        Ok(Spawned {
            pid,
            start_ticks,
            exit,
        })
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: plain waitpid on any child, non-blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            let exit = Exit::from_wait_status(status);
            match self.waiting.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => tracing::debug!(pid, %exit, "reaped an orphaned descendant"),
            }
        }
    }
}

/// Kill what a previous ward (SIGKILLed, so it could not clean up) left running.
///
/// Returns `(label, pgid)` of each group that was killed. Only groups that
/// are provably ours are touched: the leader is the same process (same start
/// time), or the leader is gone but members remain (a pgid cannot be reused
/// while its group has members).
pub fn kill_leftovers(records_dir: &Path) -> Vec<(String, i32)> {
    let mut killed = Vec::new();
    let Ok(dir) = fs::read_dir(records_dir) else {
        return killed;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Some(pgid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut parts = text.trim().splitn(2, ' ');
        let start: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let label = parts.next().unwrap_or("?").to_string();
        let ours = match procfs::stat(pgid) {
            Some(s) => s.start_ticks == start,
            None => !procfs::group_members(pgid).is_empty(),
        };
        if ours && pgid > 1 && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
            killed.push((label, pgid));
        }
        let _ = fs::remove_file(&path);
    }
    killed
}
