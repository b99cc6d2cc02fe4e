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
//! Every process group ward starts is recorded in an append-only journal
//! (`+ pgid start label` when spawned, `- pgid` when its owner releases it),
//! so that a ward that was SIGKILLed can kill the leftovers of its previous
//! run on the next start. One append per spawn, not one file: creating an
//! inode per child was the most expensive step of a spawn.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

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
    /// `None` when `/proc` could not be read (out of descriptors): the
    /// process cannot be told from a later one with its pid then.
    pub start_ticks: Option<u64>,
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
    Release(i32),
}

/// Variables of ward's own environment that its children do not inherit
/// (they describe ward's place under systemd, not theirs).
const INHERITED_NOT: [&str; 5] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// Cloneable handle to the process thread.
#[derive(Clone)]
pub struct Reaper {
    tx: mpsc::Sender<Msg>,
    /// Written after each message: the process thread polls it beside SIGCHLD.
    wake: Arc<OwnedFd>,
}

impl Reaper {
    /// Become a subreaper and start the process thread. SIGCHLD must have
    /// been blocked in every thread ([`block_sigchld`] before any started).
    pub fn start(journal_path: PathBuf) -> io::Result<Reaper> {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot become a child subreaper; orphaned grandchildren will be reaped by init");
        }
        let journal = Journal::open(journal_path)?;
        let dev_null = fs::File::open("/dev/null")?;
        let sigchld = sigchld_fd()?;
        // SAFETY: eventfd with constant flags; the result is checked.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(wake) });
        let (tx, rx) = mpsc::channel();
        let thread_wake = wake.clone();
        std::thread::Builder::new()
            .name("ward-proc".into())
            .spawn(move || {
                ProcessThread {
                    journal,
                    waiting: HashMap::new(),
                    dev_null,
                }
                .run(rx, &sigchld, &thread_wake)
            })?;
        Ok(Reaper { tx, wake })
    }

    fn send(&self, msg: Msg) -> Result<(), SpawnError> {
        self.tx.send(msg).map_err(|_| SpawnError::Gone)?;
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our eventfd; a full counter (EAGAIN)
        // still leaves the thread woken.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        Ok(())
    }

    /// Start a child in its own session and process group.
    pub async fn spawn(&self, req: SpawnRequest) -> Result<Spawned, SpawnError> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Spawn(Box::new(req), reply))?;
        rx.await.map_err(|_| SpawnError::Gone)?
    }

    /// The process group `pgid` is known to be empty: forget its record.
    pub fn release(&self, pgid: i32) {
        let _ = self.send(Msg::Release(pgid));
    }
}

struct ProcessThread {
    journal: Journal,
    waiting: HashMap<i32, oneshot::Sender<Exit>>,
    /// Every child's stdin, opened once.
    dev_null: fs::File,
}

/// The append-only record of live process groups.
struct Journal {
    path: PathBuf,
    file: fs::File,
    /// Live groups: pgid -> its `+` line.
    live: HashMap<i32, String>,
    /// Lines in the file; compacted when mostly dead.
    lines: usize,
}

impl Journal {
    /// Start a fresh journal (the caller has already dealt with the old one).
    fn open(path: PathBuf) -> io::Result<Journal> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        Ok(Journal {
            path,
            file,
            live: HashMap::new(),
            lines: 0,
        })
    }

    fn append(&mut self, line: &str) {
        use std::io::Write;
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot record child pids; they may survive a SIGKILL of ward");
        }
        self.lines += 1;
    }

    fn add(&mut self, pgid: i32, start_ticks: u64, label: &str) {
        let line = format!("+ {pgid} {start_ticks} {label}\n");
        self.append(&line);
        self.live.insert(pgid, line);
    }

    fn remove(&mut self, pgid: i32) {
        if self.live.remove(&pgid).is_some() {
            self.append(&format!("- {pgid}\n"));
        }
        if self.lines > 1024 && self.lines > 4 * self.live.len() {
            self.compact();
        }
    }

    /// Rewrite the journal with the live groups only (atomically, by rename).
    fn compact(&mut self) {
        let tmp = self.path.with_extension("tmp");
        let text: String = self.live.values().map(String::as_str).collect();
        let result = fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &self.path))
            .and_then(|()| fs::OpenOptions::new().append(true).open(&self.path));
        match result {
            Ok(f) => {
                self.file = f;
                self.lines = self.live.len();
            }
            Err(e) => tracing::warn!(error = %e, "cannot compact the pid journal"),
        }
    }
}

impl ProcessThread {
    /// Wait on SIGCHLD (a signalfd) and on messages (an eventfd) together, so
    /// an exit is reaped by this thread directly, with no other thread in
    /// between. A poll timeout reaps anyway now and then (every 10 s),
    /// should a SIGCHLD ever be consumed elsewhere.
    fn run(mut self, rx: mpsc::Receiver<Msg>, sigchld: &OwnedFd, wake: &OwnedFd) {
        // Children may have exited before the signalfd existed.
        self.reap();
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: sigchld.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: poll on two valid descriptors in a local array.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, SAFETY_REAP_MS) };
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %io::Error::last_os_error(), "the process thread cannot poll");
            }
            // `waitpid(-1)` looks at every child: only after a SIGCHLD (or
            // the timeout), not after every message.
            if drain(sigchld, std::mem::size_of::<libc::signalfd_siginfo>()) || n == 0 {
                self.reap();
            }
            drain(wake, 8);
            loop {
                match rx.try_recv() {
                    Ok(Msg::Spawn(req, reply)) => {
                        let result = self.spawn(*req);
                        let _ = reply.send(result);
                    }
                    Ok(Msg::Release(pgid)) => self.journal.remove(pgid),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
        }
    }

    fn spawn(&mut self, req: SpawnRequest) -> Result<Spawned, SpawnError> {
        let program = req.argv.first().cloned().unwrap_or_default();
        // ward's own supervisor's variables are not for its children; the
        // program's env (set after) may bring its own NOTIFY_SOCKET.
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !INHERITED_NOT.iter().any(|n| k == n))
            .collect();
        for (k, v) in &req.env {
            match env.iter_mut().find(|(ek, _)| ek == k.as_str()) {
                Some(slot) => slot.1 = OsString::from(v),
                None => env.push((OsString::from(k), OsString::from(v))),
            }
        }
        let pid = crate::spawn::spawn(&crate::spawn::Spec {
            argv: &req.argv,
            env,
            cwd: &req.cwd,
            stdin: self.dev_null.as_raw_fd(),
            stdout: req.stdout.as_raw_fd(),
            stderr: req.stderr.as_raw_fd(),
            keep: req.ipc.as_ref().map(AsRawFd::as_raw_fd),
            creds: req.creds.as_ref(),
        })
        .map_err(|source| SpawnError::Exec { program, source })?;
        let start_ticks = procfs::stat(pid).map(|s| s.start_ticks);
        // 0 never matches: a leftover of unknown start time is not killed.
        self.journal.add(pid, start_ticks.unwrap_or(0), &req.label);
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

/// The process thread reaps at least this often, SIGCHLD or not (a safety
/// net: each reap looks at every child, so not too often).
const SAFETY_REAP_MS: libc::c_int = 10_000;

/// Block SIGCHLD in the calling thread (and so in every thread it starts
/// afterwards): it is received through a signalfd by the process thread
/// only. Call first thing, before any thread exists. Children get an empty
/// mask (`spawn.rs`, and std's `Command`).
pub fn block_sigchld() {
    let set = sigchld_set();
    // SAFETY: an initialised signal set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// A non-blocking signalfd for SIGCHLD (which `block_sigchld` blocked).
fn sigchld_fd() -> io::Result<OwnedFd> {
    let set = sigchld_set();
    // SAFETY: an initialised signal set; the result is checked.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The signal set holding SIGCHLD alone.
fn sigchld_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set before sigaddset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Read a non-blocking descriptor until it is empty; whether it had anything.
fn drain(fd: &OwnedFd, record: usize) -> bool {
    let mut buf = [0u8; 512];
    let len = buf.len() - buf.len() % record;
    let mut any = false;
    // SAFETY: reads into a local buffer of `len` bytes.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len) } > 0 {
        any = true;
    }
    any
}

/// Kill what a previous ward (SIGKILLed, so it could not clean up) left running.
///
/// Returns `(label, pgid)` of each group that was killed. Only groups that
/// are provably ours are touched: the leader is the same process (same start
/// time), or the leader is gone but members remain (a pgid cannot be reused
/// while its group has members).
pub fn kill_leftovers(journal: &Path) -> Vec<(String, i32)> {
    let mut killed = Vec::new();
    let Ok(text) = fs::read_to_string(journal) else {
        return killed;
    };
    for (pgid, start, label) in live_records(&text) {
        let ours = match procfs::stat(pgid) {
            Some(s) => s.start_ticks == start,
            None => !procfs::group_members(pgid).is_empty(),
        };
        if ours && pgid > 1 && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
            killed.push((label, pgid));
        }
    }
    let _ = fs::remove_file(journal);
    killed
}

/// The groups a journal still holds: `(pgid, start ticks, label)`.
fn live_records(text: &str) -> Vec<(i32, u64, String)> {
    let mut live: Vec<(i32, u64, String)> = Vec::new();
    // A torn last line (ward killed mid-write) has no newline: skip it.
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let mut f = line.trim_end().splitn(4, ' ');
        match (f.next(), f.next().and_then(|p| p.parse::<i32>().ok())) {
            (Some("+"), Some(pgid)) => {
                let start = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let label = f.next().unwrap_or("?").to_string();
                live.retain(|(p, _, _)| *p != pgid);
                live.push((pgid, start, label));
            }
            (Some("-"), Some(pgid)) => live.retain(|(p, _, _)| *p != pgid),
            _ => {}
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_replays_to_the_live_groups() {
        let text = "+ 10 100 a\n+ 11 110 b:0\n- 10\n+ 12 120 c\n+ 1";
        assert_eq!(
            live_records(text),
            vec![(11, 110, "b:0".to_string()), (12, 120, "c".to_string())]
        );
    }

    #[test]
    fn journal_compacts_to_the_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pids.journal");
        let mut j = Journal::open(path.clone()).unwrap();
        for pgid in 2..2000 {
            j.add(pgid, 7, "x");
            if pgid != 1999 {
                j.remove(pgid);
            }
        }
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(live_records(&text), vec![(1999, 7, "x".to_string())]);
        assert!(
            text.lines().count() < 1100,
            "compacted: {} lines",
            text.lines().count()
        );
    }
}
