//! The log writer thread (`ward-logs`): every write, rotation and reopen of
//! a program's log files happens on it, off the async runtime.
//!
//! Owns the thread (one per process, started by the first
//! [`Writer::global`]), its channel, and each instance's [`Files`]: the
//! rotated files, the backlog of bytes handed over but not yet written, and
//! the counters the runtime reads. Must never make the runtime wait on file
//! I/O: a pump hands a chunk over without blocking while the instance's
//! backlog has room; when it is full, the pump (a task, not the runtime)
//! waits for the writer as long as it makes progress, and drops output once
//! it has made too little for [`STALL`]. The counters sit in a small mutex the
//! thread updates after each write and never holds during one; a reopen is
//! a message. Must never hold anything for an idle instance: a message
//! carries its instance, and is freed once handled.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use crate::config::LogPaths;

use super::rotate::RotatingFile;
use super::LogStats;

/// Bytes of one instance's output that may wait for the writer (counted as
/// buffer capacity, i.e. memory). 8 MiB is several seconds of a chatty
/// program and 128 full reads, so a disk that pauses for a moment (a sync, a
/// rotation with compression, a busy NFS server) neither slows the program
/// nor loses a line; and it bounds what a stalled disk costs: at most 8 MiB
/// per instance that keeps writing, none for a quiet one.
pub(super) const MAX_BACKLOG: usize = 8 << 20;

/// With a full backlog, a pump waits until the writer has written
/// [`RESUME_ROOM`] of the instance's output (the program is then paced by
/// the disk, as with `program > file`: a disk that is merely slower than the
/// program loses nothing), at most this long; then the disk counts as
/// stalled and output that does not fit is dropped until the writer has
/// caught up. So a stalled disk blocks a program for at most this long, and
/// a disk that writes less than 1 MiB a second counts as stalled.
pub(super) const STALL: Duration = Duration::from_secs(1);

/// A pump waiting for room is woken once this much is free: one wake-up
/// (from the writer thread to the runtime) per 16 full reads, not per read.
const RESUME_ROOM: usize = MAX_BACKLOG / 8;

/// While a backlog stays full, at most one warning in ward's log per this.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    Out,
    Err,
}

/// The files of one instance, shared by its pumps and the writer thread.
#[derive(Debug)]
pub(super) struct Files {
    paths: LogPaths,
    /// Locked by the writer thread only (it holds the lock during I/O).
    out: Mutex<RotatingFile>,
    /// `None` when stderr is merged into the stdout file.
    err: Option<Mutex<RotatingFile>>,
    /// What the runtime reads; never held during I/O.
    shared: Mutex<Shared>,
    /// Poked by the writer after a write that leaves [`RESUME_ROOM`] free.
    room: Notify,
    writer: Writer,
}

#[derive(Debug, Default)]
struct Shared {
    /// Capacity of the buffers handed to the writer and not yet written.
    queued: usize,
    /// The files' stats, copied by the writer after each message.
    out: Published,
    err: Published,
    /// The pumps' own drops (backlog full) and errors (reading a pipe).
    pumps: Published,
    behind: Behind,
}

#[derive(Debug, Default)]
struct Published {
    stats: LogStats,
    /// When `stats.last_error` was recorded, to pick the latest.
    at: Option<Instant>,
}

/// A backlog-full episode: from the first dropped chunk until the writer has
/// written everything it was handed for the instance.
#[derive(Debug, Default)]
struct Behind {
    active: bool,
    /// Bytes dropped since the episode began.
    dropped: u64,
    warned_at: Option<Instant>,
}

/// A warning for ward's log about a backlog-full episode, logged once the
/// lock is released.
struct Warning {
    dropped: u64,
    first: bool,
}

enum Msg {
    Write {
        files: Arc<Files>,
        which: Which,
        data: Vec<u8>,
    },
    Reopen(Arc<Files>),
    /// Acknowledged once every message sent before it is handled.
    Flush(oneshot::Sender<()>),
    /// Run on the writer thread (tests: a stalled disk).
    #[cfg(test)]
    Run(Box<dyn FnOnce() + Send>),
}

/// A handle to a writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    /// `None` if the thread could not be started: messages are then handled
    /// by the caller, as before the thread existed.
    tx: Option<mpsc::Sender<Msg>>,
}

static GLOBAL: OnceLock<Writer> = OnceLock::new();

impl Writer {
    /// The process's writer thread, started at the first call.
    pub(super) fn global() -> Writer {
        GLOBAL.get_or_init(Writer::start).clone()
    }

    /// Start a writer thread; it ends when the last handle is dropped.
    pub(super) fn start() -> Writer {
        let (tx, rx) = mpsc::channel::<Msg>();
        let spawned = std::thread::Builder::new()
            .name("ward-logs".into())
            .spawn(move || run(&rx));
        match spawned {
            Ok(_) => Writer { tx: Some(tx) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the log writer thread; program logs are written on the runtime");
                Writer { tx: None }
            }
        }
    }

    fn send(&self, msg: Msg) {
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(msg)) = tx.send(msg) {
                    handle(msg);
                }
            }
            None => handle(msg),
        }
    }

    /// Wait until every message sent before this call is handled.
    pub(super) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Flush(tx));
        let _ = rx.await;
    }
}

/// Wait (at most `deadline`) until the log writer has written everything
/// handed to it so far. Returns whether it did. For shutdown, once the
/// programs are stopped; a pump still reading a pipe is not waited for.
pub async fn flush(deadline: Duration) -> bool {
    match GLOBAL.get() {
        Some(w) => tokio::time::timeout(deadline, w.flush()).await.is_ok(),
        None => true,
    }
}

/// Consecutive chunks for one file are written together, up to this much...
const MAX_BATCH: usize = 256 << 10;
/// ...or this many (a `writev` takes at most 1024).
const MAX_BATCH_CHUNKS: usize = 64;

/// The writer thread: handle messages in order until every sender is gone.
fn run(rx: &mpsc::Receiver<Msg>) {
    let mut batch = Vec::new();
    let mut pending = None;
    loop {
        let msg = match pending.take() {
            Some(msg) => msg,
            None => match rx.recv() {
                Ok(msg) => msg,
                Err(_) => return,
            },
        };
        let Msg::Write { files, which, data } = msg else {
            handle(msg);
            continue;
        };
        // A busy program's reads queue up while a write is in progress:
        // one write for all of them, not one each.
        let mut size = data.len();
        batch.push(data);
        while size < MAX_BATCH && batch.len() < MAX_BATCH_CHUNKS {
            match rx.try_recv() {
                Ok(Msg::Write {
                    files: f,
                    which: w,
                    data,
                }) if Arc::ptr_eq(&f, &files) && w == which => {
                    size += data.len();
                    batch.push(data);
                }
                Ok(other) => {
                    pending = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        write(&files, which, &mut batch);
    }
}

fn handle(msg: Msg) {
    match msg {
        Msg::Write { files, which, data } => write(&files, which, &mut vec![data]),
        Msg::Reopen(files) => {
            for which in [Which::Out, Which::Err] {
                if which == Which::Err && files.err.is_none() {
                    continue;
                }
                let mut f = lock(files.file(which));
                f.reopen();
                lock(&files.shared).published(which).update(&f);
            }
        }
        Msg::Flush(ack) => {
            let _ = ack.send(());
        }
        #[cfg(test)]
        Msg::Run(f) => f(),
    }
}

/// Write `chunks` (and free them), then publish the file's counters.
fn write(files: &Files, which: Which, chunks: &mut Vec<Vec<u8>>) {
    let mut f = lock(files.file(which));
    f.write_chunks(chunks);
    let cost: usize = chunks.iter().map(Vec::capacity).sum();
    chunks.clear();
    let (room, caught_up) = {
        let mut s = lock(&files.shared);
        s.queued -= cost;
        let room = s.queued <= MAX_BACKLOG - RESUME_ROOM;
        s.published(which).update(&f);
        let end = s.queued == 0 && s.behind.active;
        if end {
            s.behind.active = false;
        }
        (room, end.then_some(s.behind.dropped))
    };
    drop(f);
    if room {
        files.room.notify_one();
    }
    if let Some(dropped) = caught_up {
        let path = files.path(which).display();
        tracing::info!(path = %path, dropped, "log writer caught up; writing resumed");
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the data inconsistent in a
    // way that matters more than losing the log: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Files {
    /// `paths.stderr` is `None` exactly when `err` is.
    pub(super) fn new(
        paths: LogPaths,
        out: RotatingFile,
        err: Option<RotatingFile>,
        writer: Writer,
    ) -> Files {
        Files {
            paths,
            out: Mutex::new(out),
            err: err.map(Mutex::new),
            shared: Mutex::default(),
            room: Notify::new(),
            writer,
        }
    }

    pub(super) fn paths(&self) -> &LogPaths {
        &self.paths
    }

    pub(super) fn writer(&self) -> &Writer {
        &self.writer
    }

    fn file(&self, which: Which) -> &Mutex<RotatingFile> {
        match (which, &self.err) {
            (Which::Err, Some(err)) => err,
            _ => &self.out,
        }
    }

    pub(super) fn path(&self, which: Which) -> &Path {
        match (which, &self.paths.stderr) {
            (Which::Err, Some(err)) => err,
            _ => &self.paths.stdout,
        }
    }

    /// Queue whole lines for the writer. With a full backlog, wait until the
    /// writer makes room, or drop them (counted and reported) when it has
    /// not within [`STALL`] or the disk already counts as stalled.
    pub(super) async fn submit(self: &Arc<Self>, which: Which, mut data: Vec<u8>) {
        let mut stalled = false;
        loop {
            match self.queue_or_drop(which, data, stalled) {
                Some(back) => data = back,
                None => return,
            }
            // A write since the check left a permit: no wake-up is missed.
            stalled = tokio::time::timeout(STALL, self.room.notified())
                .await
                .is_err();
        }
    }

    /// Queue `data` if the backlog has room, or drop it if the disk counts
    /// as stalled; else give it back, to wait for room.
    fn queue_or_drop(
        self: &Arc<Self>,
        which: Which,
        data: Vec<u8>,
        stalled: bool,
    ) -> Option<Vec<u8>> {
        let mut s = lock(&self.shared);
        let cost = data.capacity();
        if s.queued + cost <= MAX_BACKLOG {
            s.queued += cost;
            drop(s);
            let files = self.clone();
            self.writer.send(Msg::Write { files, which, data });
        } else if stalled || s.behind.active {
            let warning = s.drop_chunk(data.len() as u64, self.path(which));
            drop(s);
            if let Some(w) = warning {
                self.warn_behind(which, w);
            }
        } else {
            return Some(data);
        }
        None
    }

    fn warn_behind(&self, which: Which, w: Warning) {
        let path = self.path(which).display();
        let backlog_mib = MAX_BACKLOG >> 20;
        if w.first {
            let stall_ms = STALL.as_millis() as u64;
            tracing::warn!(path = %path, backlog_mib, stall_ms, "log writer is behind and not catching up (slow or stalled disk?); dropping program output until it does");
        } else {
            tracing::warn!(path = %path, backlog_mib, dropped = w.dropped, "log writer is still behind; dropping program output");
        }
    }

    /// Reopen the files (SIGUSR1), after what was handed over before.
    pub(super) fn reopen(self: &Arc<Self>) {
        self.writer.send(Msg::Reopen(self.clone()));
    }

    /// Record an error of a pump (not of a file), e.g. reading a pipe.
    pub(super) fn record_error(&self, msg: String) {
        tracing::warn!(error = %msg, "log capture failed");
        let mut s = lock(&self.shared);
        s.pumps.stats.last_error = Some(msg);
        s.pumps.at = Some(Instant::now());
    }

    /// Bytes written and dropped over both files, and the latest error.
    pub(super) fn stats(&self) -> LogStats {
        let s = lock(&self.shared);
        let mut total = LogStats::default();
        let mut latest = None;
        for p in [&s.out, &s.err, &s.pumps] {
            total.bytes_written += p.stats.bytes_written;
            total.bytes_dropped += p.stats.bytes_dropped;
            if p.stats.last_error.is_some() && p.at >= latest {
                latest = p.at;
                total.last_error.clone_from(&p.stats.last_error);
            }
        }
        total
    }

    pub(super) fn bytes_dropped(&self) -> u64 {
        let s = lock(&self.shared);
        s.out.stats.bytes_dropped + s.err.stats.bytes_dropped + s.pumps.stats.bytes_dropped
    }

    /// Whether a backlog-full episode is in progress (tests).
    #[cfg(test)]
    pub(super) fn is_behind(&self) -> bool {
        lock(&self.shared).behind.active
    }

    /// Bytes waiting for the writer (tests).
    #[cfg(test)]
    pub(super) fn backlog(&self) -> usize {
        lock(&self.shared).queued
    }

    /// Block the writer thread inside a write to the stdout file, as a
    /// stalled disk does, until the returned sender is dropped (tests).
    /// Returns once the thread is blocked.
    #[cfg(test)]
    pub(super) fn stall(self: &Arc<Self>) -> mpsc::Sender<()> {
        let (release, released) = mpsc::channel::<()>();
        let (inside, is_inside) = mpsc::channel::<()>();
        let files = self.clone();
        self.writer.send(Msg::Run(Box::new(move || {
            let _file = lock(&files.out);
            let _ = inside.send(());
            let _ = released.recv();
        })));
        is_inside.recv().expect("the writer thread runs");
        release
    }
}

impl Shared {
    fn published(&mut self, which: Which) -> &mut Published {
        match which {
            Which::Out => &mut self.out,
            Which::Err => &mut self.err,
        }
    }

    /// Count a chunk dropped because the backlog is full; returns what to
    /// tell ward's log, if anything (rate-limited).
    fn drop_chunk(&mut self, len: u64, path: &Path) -> Option<Warning> {
        let now = Instant::now();
        let first = !self.behind.active;
        if first {
            self.behind = Behind {
                active: true,
                dropped: 0,
                warned_at: None,
            };
        }
        self.behind.dropped += len;
        self.pumps.stats.bytes_dropped += len;
        self.pumps.stats.last_error = Some(format!(
            "log writer is {} MiB behind writing `{}` (slow or stalled disk?); dropped {} bytes",
            MAX_BACKLOG >> 20,
            path.display(),
            self.behind.dropped
        ));
        self.pumps.at = Some(now);
        let due = self
            .behind
            .warned_at
            .map_or(true, |t| now.duration_since(t) >= WARN_EVERY);
        if !due {
            return None;
        }
        self.behind.warned_at = Some(now);
        Some(Warning {
            dropped: self.behind.dropped,
            first,
        })
    }
}

impl Published {
    /// Copy `f`'s counters (and its error, only when it is a new one).
    fn update(&mut self, f: &RotatingFile) {
        self.stats.bytes_written = f.bytes_written();
        self.stats.bytes_dropped = f.bytes_dropped();
        if self.at != f.last_error_at() {
            self.at = f.last_error_at();
            self.stats.last_error = f.last_error().map(str::to_owned);
        }
    }
}
