//! `InstanceLogs`: the log files of one supervised instance and the pump
//! task that drains its stdout/stderr pipes.
//!
//! Owns the line framing (whole lines, long-line splitting, timestamps): a
//! pump reads a pipe and hands chunks of whole lines to the log writer
//! thread (`writer`), which does every file write. Must never stop draining
//! a pipe because of a stalled disk (the pipe is read to EOF whatever
//! happens; a full backlog pauses reading for at most `writer::STALL`, so a
//! child never blocks on a full pipe for longer), never wait on file I/O,
//! and never hand over a partial line, so that another stream's line in a
//! merged file only ever comes between two lines.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::unix::pipe::Receiver;
use tokio::task::JoinHandle;

use crate::config::{LogPaths, LogPolicy};

use super::rotate::{RotatingFile, RotationPolicy};
use super::time::{format_rfc3339, TIMESTAMP_LEN};
use super::writer::{Files, Which, Writer};
use super::LogStats;

/// Longest line written whole; a longer line is cut every `MAX_LINE` bytes,
/// each cut piece ending in [`LINE_CONTINUES_MARKER`]. Also the read size.
pub const MAX_LINE: usize = 64 * 1024;

/// Appended (before the `\n`) to each piece of a line longer than [`MAX_LINE`]
/// that is continued on the next line.
pub const LINE_CONTINUES_MARKER: &[u8] = b" [ward: line continues]";

/// The log files of one instance. Cheap to clone; lives across restarts.
///
/// No method waits on the disk: output goes through the log writer thread,
/// and [`InstanceLogs::stats`] reads counters the thread publishes.
#[derive(Clone, Debug)]
pub struct InstanceLogs {
    files: Arc<Files>,
    timestamps: bool,
}

impl InstanceLogs {
    /// Open (creating) the files of one instance. Never fails: errors become
    /// [`LogStats`] and writes are retried.
    pub fn open(paths: LogPaths, policy: &LogPolicy) -> InstanceLogs {
        InstanceLogs::open_on(paths, policy, Writer::global())
    }

    /// [`InstanceLogs::open`] on a given writer thread (tests use their own).
    fn open_on(paths: LogPaths, policy: &LogPolicy, writer: Writer) -> InstanceLogs {
        let rot = RotationPolicy::from(policy);
        // Both streams configured to the same file: one writer, like a merge.
        let paths = match paths.stderr {
            Some(ref err) if *err == paths.stdout => LogPaths {
                stderr: None,
                ..paths
            },
            _ => paths,
        };
        let out = RotatingFile::open(paths.stdout.clone(), rot);
        let err = paths.stderr.clone().map(|p| RotatingFile::open(p, rot));
        InstanceLogs {
            files: Arc::new(Files::new(paths, out, err, writer)),
            timestamps: policy.timestamps,
        }
    }

    /// Drain the read ends of a new run's pipes into the files until EOF.
    ///
    /// Must be called inside a tokio runtime. The pump of an earlier run
    /// finishes by itself at its EOF. The caller must have closed its copies
    /// of the write ends, or EOF never comes.
    pub fn attach(&self, stdout: OwnedFd, stderr: Option<OwnedFd>) {
        // Detached: the pump ends by itself at EOF.
        drop(self.spawn_pump(stdout, stderr));
    }

    /// [`InstanceLogs::attach`], returning the pump task (for tests and for a
    /// caller that wants to wait until output is drained). One task drains
    /// both pipes: they share the instance's backlog, so a full backlog
    /// would pause both anyway, and a task per pipe cost about 0.8 KiB per
    /// program. The pump finishes once both pipes are at EOF and everything
    /// it read is written (or dropped and counted).
    pub(crate) fn spawn_pump(&self, stdout: OwnedFd, stderr: Option<OwnedFd>) -> JoinHandle<()> {
        let out = self.stream(Which::Out, Some(stdout));
        let err = self.stream(Which::Err, stderr);
        tokio::spawn(pump(self.clone(), [out, err]))
    }

    fn stream(&self, which: Which, fd: Option<OwnedFd>) -> Option<Stream> {
        match Receiver::from_owned_fd(fd?) {
            Ok(rx) => Some(Stream {
                which,
                rx,
                framer: Framer {
                    timestamps: self.timestamps,
                    ..Framer::default()
                },
            }),
            Err(e) => {
                self.read_failed(which, e);
                None
            }
        }
    }

    /// Bytes dropped so far on both streams.
    pub fn bytes_dropped(&self) -> u64 {
        self.files.bytes_dropped()
    }

    /// Bytes written and dropped over both files, and the latest error.
    pub fn stats(&self) -> LogStats {
        self.files.stats()
    }

    /// Reopen both files (SIGUSR1, after an external `logrotate`). Output
    /// read before the call goes to the old files, output read after to the
    /// new ones; returns at once.
    pub fn reopen(&self) {
        self.files.reopen();
    }

    pub fn paths(&self) -> &LogPaths {
        self.files.paths()
    }

    fn read_failed(&self, which: Which, e: io::Error) {
        let path = self.files.path(which).display();
        self.files
            .record_error(format!("cannot read pipe for `{path}`: {e}"));
    }
}

/// Turns a byte stream into chunks of whole lines for the writer. Keeps the
/// unfinished last line between reads.
#[derive(Default)]
struct Framer {
    /// Bytes read but not yet handed over: always the start of one
    /// unfinished line.
    buf: Vec<u8>,
    timestamps: bool,
}

impl Framer {
    /// The next chunk to hand over: every complete line in `buf`, else a
    /// cut piece of an over-long line, else nothing.
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if let Some(p) = self.buf.iter().rposition(|b| *b == b'\n') {
            return Some(self.take(p + 1, false));
        }
        if self.buf.len() >= MAX_LINE {
            return Some(self.take(MAX_LINE, true));
        }
        None
    }

    /// At EOF: end an unfinished last line with `\n`, so the next writer of
    /// a shared file starts on its own line.
    fn end_line(&mut self) {
        if self.buf.last().is_some_and(|b| *b != b'\n') {
            self.buf.push(b'\n');
        }
    }

    /// Take `buf[..end]` (whole lines, or a cut piece when `cut`) as one
    /// chunk, written in one call, and keep the rest at the front of `buf`.
    fn take(&mut self, end: usize, cut: bool) -> Vec<u8> {
        let plain = !self.timestamps && !cut;
        if plain && end >= MAX_LINE / 2 {
            // Mostly whole lines: hand over the read buffer itself (at
            // least half full, so the backlog counts at most twice the
            // bytes) and copy only the unfinished line after them.
            let rest = self.buf.split_off(end);
            return std::mem::replace(&mut self.buf, rest);
        }
        let data = &self.buf[..end];
        let chunk = if plain {
            data.to_vec()
        } else {
            let ts = self.timestamps.then(|| format_rfc3339(SystemTime::now()));
            let lines = match ts {
                Some(_) => data.split_inclusive(|b| *b == b'\n').count(),
                None => 0,
            };
            let marker = if cut {
                LINE_CONTINUES_MARKER.len() + 1
            } else {
                0
            };
            let mut chunk = Vec::with_capacity(end + lines * (TIMESTAMP_LEN + 1) + marker);
            for line in data.split_inclusive(|b| *b == b'\n') {
                if let Some(ts) = &ts {
                    chunk.extend_from_slice(ts);
                    chunk.push(b' ');
                }
                chunk.extend_from_slice(line);
            }
            if cut {
                chunk.extend_from_slice(LINE_CONTINUES_MARKER);
                chunk.push(b'\n');
            }
            chunk
        };
        self.buf.copy_within(end.., 0);
        self.buf.truncate(self.buf.len() - end);
        chunk
    }

    /// Give memory back while the program is quiet.
    fn shrink_when_idle(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        } else {
            self.buf.shrink_to_fit();
        }
    }
}

/// One pipe of a run and the line framing of what was read from it.
struct Stream {
    which: Which,
    rx: Receiver,
    framer: Framer,
}

/// Drain both pipes of a run (stderr may be absent) until both are at EOF.
async fn pump(logs: InstanceLogs, mut streams: [Option<Stream>; 2]) {
    loop {
        let (i, readable) = {
            let [out, err] = &streams;
            if out.is_none() && err.is_none() {
                break;
            }
            tokio::select! {
                r = readable(out) => (0, r),
                r = readable(err) => (1, r),
            }
        };
        // A finished stream's `readable` never resolves.
        let Some(s) = &mut streams[i] else { continue };
        let eof = match readable.and_then(|()| read_into(&s.rx, &mut s.framer.buf)) {
            Ok(0) => true,
            Ok(n) => {
                hand_over(&logs, s.which, &mut s.framer).await;
                if n < MAX_LINE / 2 {
                    // The pipe is drained: do not keep 64 KiB per idle program.
                    s.framer.shrink_when_idle();
                }
                false
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                false
            }
            Err(e) => {
                logs.read_failed(s.which, e);
                true
            }
        };
        if eof {
            s.framer.end_line();
            hand_over(&logs, s.which, &mut s.framer).await;
            // Nothing of this pipe is held while the other drains: it is
            // closed and its buffer freed.
            streams[i] = None;
        }
    }
    // The flush comes after this pump's chunks, so when it is acknowledged
    // they are in the file.
    logs.files.writer().flush().await;
}

/// Wait until `stream`'s pipe is readable; never, for a finished stream.
async fn readable(stream: &Option<Stream>) -> io::Result<()> {
    match stream {
        Some(s) => s.rx.readable().await,
        None => std::future::pending().await,
    }
}

async fn hand_over(logs: &InstanceLogs, which: Which, framer: &mut Framer) {
    while let Some(chunk) = framer.next_chunk() {
        logs.files.submit(which, chunk).await;
    }
}

/// Read once into the uninitialised spare capacity of `buf` (never touching
/// memory it does not fill), growing it to at most [`MAX_LINE`] bytes.
fn read_into(rx: &Receiver, buf: &mut Vec<u8>) -> io::Result<usize> {
    // `emit_complete` leaves less than `MAX_LINE` bytes, and the capacity
    // only ever grows through this exact reservation, so it stays
    // `MAX_LINE`: a read never exceeds the space up to it.
    debug_assert!(buf.len() < MAX_LINE);
    buf.reserve_exact(MAX_LINE - buf.len());
    rx.try_read_buf(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;
    use std::time::Duration;

    use crate::config::StderrTarget;

    use super::super::writer::MAX_BACKLOG;

    fn policy(timestamps: bool) -> LogPolicy {
        LogPolicy {
            timestamps,
            ..LogPolicy::default()
        }
    }

    fn pipe() -> (OwnedFd, std::fs::File) {
        let (r, w) = nix::unistd::pipe().unwrap();
        (r, std::fs::File::from(w))
    }

    /// Write `pieces` to `w` from a thread, one `write` each, then close it.
    fn feed(mut w: std::fs::File, pieces: Vec<Vec<u8>>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for p in pieces {
                w.write_all(&p).unwrap();
            }
        })
    }

    async fn join(pump: JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(30), pump)
            .await
            .expect("pump finished in time")
            .unwrap();
    }

    fn read(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pump_keeps_lines_whole_splits_long_ones_and_passes_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LogPaths {
            stdout: dir.path().join("a.out.log"),
            stderr: Some(dir.path().join("a.err.log")),
        };
        let logs = InstanceLogs::open(paths.clone(), &policy(false));
        let long = vec![b'x'; MAX_LINE * 2 + 100];
        let binary = vec![0xff, 0x00, 0xfe, b'\r', 0x80];
        let mut pieces = vec![b"hel".to_vec(), b"lo\nwor".to_vec(), b"ld\n".to_vec()];
        pieces.push(long.clone());
        pieces.push(b"\n".to_vec());
        pieces.push([&binary[..], b"\n"].concat());
        pieces.push(b"no newline at eof".to_vec());
        let (r_out, w_out) = pipe();
        let (r_err, w_err) = pipe();
        let tasks = logs.spawn_pump(r_out, Some(r_err));
        let a = feed(w_out, pieces);
        let b = feed(w_err, vec![b"err line\n".to_vec()]);
        join(tasks).await;
        a.join().unwrap();
        b.join().unwrap();

        let mut want = b"hello\nworld\n".to_vec();
        for _ in 0..2 {
            want.extend_from_slice(&[b'x'; MAX_LINE]);
            want.extend_from_slice(LINE_CONTINUES_MARKER);
            want.push(b'\n');
        }
        want.extend_from_slice(&[b'x'; 100]);
        want.push(b'\n');
        want.extend_from_slice(&binary);
        want.extend_from_slice(b"\nno newline at eof\n");
        let got = read(&paths.stdout);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "stdout file differs");
        assert_eq!(read(paths.stderr.as_ref().unwrap()), b"err line\n");
        let s = logs.stats();
        assert_eq!(s.bytes_written, (want.len() + 9) as u64);
        assert_eq!(s.bytes_dropped, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn merged_streams_interleave_only_at_line_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let pol = LogPolicy {
            stderr: StderrTarget::Stdout,
            max_size: 4096,
            keep: 1000,
            ..policy(false)
        };
        let paths = pol.paths(dir.path(), "m", None);
        assert!(paths.stderr.is_none());
        let logs = InstanceLogs::open(paths.clone(), &pol);
        // Each stream writes its lines in odd-sized pieces that cut lines.
        let stream = |tag: &str| -> Vec<Vec<u8>> {
            let all: Vec<u8> = (0..3000)
                .flat_map(|i| format!("{tag} {i} {}\n", "y".repeat(i % 50)).into_bytes())
                .collect();
            all.chunks(37).map(<[u8]>::to_vec).collect()
        };
        let (r_out, w_out) = pipe();
        let (r_err, w_err) = pipe();
        let tasks = logs.spawn_pump(r_out, Some(r_err));
        let a = feed(w_out, stream("out"));
        let b = feed(w_err, stream("err"));
        join(tasks).await;
        a.join().unwrap();
        b.join().unwrap();

        let mut text = String::new();
        for i in (1..=1000).rev() {
            if let Ok(s) =
                std::fs::read_to_string(super::super::rotated_path(&paths.stdout, i, false))
            {
                text.push_str(&s);
            }
        }
        text.push_str(&std::fs::read_to_string(&paths.stdout).unwrap());
        let (mut next_out, mut next_err) = (0, 0);
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            let (tag, n) = (
                parts.next().unwrap(),
                parts.next().unwrap().parse::<usize>().unwrap(),
            );
            assert_eq!(
                parts.next().unwrap_or(""),
                "y".repeat(n % 50),
                "torn line {line:?}"
            );
            let next = if tag == "out" {
                &mut next_out
            } else {
                &mut next_err
            };
            assert_eq!(n, *next, "{tag} out of order");
            *next += 1;
        }
        assert_eq!((next_out, next_err), (3000, 3000));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timestamps_prefix_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LogPaths {
            stdout: dir.path().join("t.log"),
            stderr: None,
        };
        let logs = InstanceLogs::open(paths.clone(), &policy(true));
        let (r, w) = pipe();
        let tasks = logs.spawn_pump(r, None);
        feed(w, vec![b"one\ntw".to_vec(), b"o\n".to_vec()])
            .join()
            .unwrap();
        join(tasks).await;
        let text = String::from_utf8(read(&paths.stdout)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for (line, want) in lines.iter().zip(["one", "two"]) {
            let (_, rest) = crate::logs::time::parse_prefix(line.as_bytes()).expect("timestamped");
            assert_eq!(rest, want.as_bytes());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disk_full_is_counted_pipe_keeps_draining_and_writing_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LogPaths {
            stdout: dir.path().join("full.log"),
            stderr: None,
        };
        std::os::unix::fs::symlink("/dev/full", &paths.stdout).unwrap();
        let logs = InstanceLogs::open(paths.clone(), &policy(false));
        // Far more than a pipe buffer: the writer only finishes if the pump
        // keeps reading while every write fails.
        let line = format!("{}\n", "z".repeat(999));
        let (r, w) = pipe();
        let tasks = logs.spawn_pump(r, None);
        let writer = feed(w, vec![line.repeat(1000).into_bytes()]);
        join(tasks).await;
        writer.join().unwrap();
        let s = logs.stats();
        assert_eq!(s.bytes_dropped, 1_000_000);
        assert_eq!(s.bytes_written, 0);
        assert!(s.last_error.unwrap().contains("full.log"));

        // Space freed; the next run of the program attaches new pipes.
        std::fs::remove_file(&paths.stdout).unwrap();
        let (r, w) = pipe();
        let tasks = logs.spawn_pump(r, None);
        feed(w, vec![b"back\n".to_vec()]).join().unwrap();
        join(tasks).await;
        assert_eq!(read(&paths.stdout), b"back\n");
        assert_eq!(logs.stats().bytes_dropped, 1_000_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attach_spawns_a_pump_that_finishes_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LogPaths {
            stdout: dir.path().join("x.log"),
            stderr: None,
        };
        let logs = InstanceLogs::open(paths.clone(), &policy(false));
        let (r, w) = pipe();
        logs.clone().attach(r, None);
        feed(w, vec![b"hi\n".to_vec()]).join().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while logs.stats().bytes_written < 3 {
            assert!(std::time::Instant::now() < deadline, "pump never wrote");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(read(&paths.stdout), b"hi\n");
        assert_eq!(logs.paths(), &paths);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn same_path_for_both_streams_is_one_merged_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("both.log");
        let logs = InstanceLogs::open(
            LogPaths {
                stdout: p.clone(),
                stderr: Some(p.clone()),
            },
            &policy(false),
        );
        assert_eq!(logs.paths().stderr, None);
        let (r_out, w_out) = pipe();
        let (r_err, w_err) = pipe();
        let tasks = logs.spawn_pump(r_out, Some(r_err));
        feed(w_out, vec![b"out\n".to_vec()]).join().unwrap();
        feed(w_err, vec![b"err\n".to_vec()]).join().unwrap();
        join(tasks).await;
        let text = String::from_utf8(read(&p)).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        assert_eq!(lines, ["err", "out"]);
    }

    #[test]
    fn idle_framer_holds_no_read_buffer() {
        let mut chunks = Vec::new();
        let mut framer = Framer {
            timestamps: true,
            ..Framer::default()
        };
        framer.buf.reserve_exact(MAX_LINE);
        framer.buf.extend_from_slice(b"done\npartial");
        chunks.extend(std::iter::from_fn(|| framer.next_chunk()));
        framer.shrink_when_idle();
        assert_eq!(framer.buf, b"partial");
        assert!(framer.buf.capacity() < 64, "{}", framer.buf.capacity());
        framer.buf.extend_from_slice(b" line\n");
        chunks.extend(std::iter::from_fn(|| framer.next_chunk()));
        framer.shrink_when_idle();
        assert_eq!(framer.buf.capacity(), 0);
        assert_eq!(chunks.len(), 2);
        // A timestamped chunk is allocated to its exact size.
        assert!(chunks.iter().all(|c| c.len() == c.capacity()));
    }

    #[test]
    fn framer_hands_over_its_read_buffer_when_it_is_mostly_whole_lines() {
        let mut chunks = Vec::new();
        let mut framer = Framer::default();
        framer.buf.reserve_exact(MAX_LINE);
        let lines = "x".repeat(99) + "\n";
        framer.buf.extend_from_slice(lines.repeat(400).as_bytes());
        framer.buf.extend_from_slice(b"unfinished");
        let read_buffer = framer.buf.as_ptr();
        chunks.extend(std::iter::from_fn(|| framer.next_chunk()));
        assert_eq!(framer.buf, b"unfinished");
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            chunks[0].as_ptr(),
            read_buffer,
            "the buffer itself, not a copy"
        );
        assert_eq!(chunks[0], lines.repeat(400).as_bytes());
        // A few short lines are copied out instead: a 64 KiB buffer is not
        // queued for them.
        framer.buf.reserve_exact(MAX_LINE - framer.buf.len());
        framer.buf.extend_from_slice(b" line\nnext");
        chunks.extend(std::iter::from_fn(|| framer.next_chunk()));
        assert_eq!(chunks[1], b"unfinished line\n");
        assert_eq!(chunks[1].capacity(), chunks[1].len());
        assert_eq!(framer.buf, b"next");
    }

    /// Lines of every length (some cut) in pieces of every size, through the
    /// pump and the writer thread: the file, with timestamps stripped and cut
    /// pieces joined, is exactly the input. On a current-thread runtime, as
    /// the daemon's.
    async fn lines_survive_the_handoff(timestamps: bool) {
        let dir = tempfile::tempdir().unwrap();
        let paths = LogPaths {
            stdout: dir.path().join("h.log"),
            stderr: None,
        };
        let pol = LogPolicy {
            max_size: 1 << 30,
            ..policy(timestamps)
        };
        let logs = InstanceLogs::open_on(paths.clone(), &pol, Writer::start());
        let mut input = Vec::new();
        let mut lens = [0usize, 1, 57, 4000, MAX_LINE - 1, MAX_LINE, 150_000]
            .iter()
            .cycle();
        for i in 0..600 {
            input.extend_from_slice(format!("{i} ").as_bytes());
            input.extend(std::iter::repeat(b'a' + (i % 26) as u8).take(*lens.next().unwrap()));
            input.push(b'\n');
        }
        let mut sizes = [1usize, 37, 4096, 40_000, MAX_LINE, 100_000, 3]
            .iter()
            .cycle();
        let mut pieces = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            pieces.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        let (r, w) = pipe();
        let tasks = logs.spawn_pump(r, None);
        let feeder = feed(w, pieces);
        join(tasks).await;
        feeder.join().unwrap();

        let mut got = Vec::new();
        for line in read(&paths.stdout).split_inclusive(|b| *b == b'\n') {
            let line = if timestamps {
                crate::logs::time::parse_prefix(line)
                    .expect("timestamped")
                    .1
            } else {
                line
            };
            let body = &line[..line.len() - 1];
            match body.strip_suffix(LINE_CONTINUES_MARKER) {
                Some(piece) => got.extend_from_slice(piece),
                None => got.extend_from_slice(line),
            }
        }
        assert_eq!(got.len(), input.len());
        assert!(
            got == input,
            "the file is not the input (timestamps = {timestamps})"
        );
        assert_eq!(logs.stats().bytes_dropped, 0);
    }

    #[tokio::test]
    async fn lines_survive_the_handoff_to_the_writer() {
        lines_survive_the_handoff(false).await;
    }

    #[tokio::test]
    async fn timestamped_lines_survive_the_handoff_to_the_writer() {
        lines_survive_the_handoff(true).await;
    }

    /// Run `f` on a thread; fail if it has not returned within 5 s.
    fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{what} waited on the stalled writer"))
    }

    /// Wait (at most 30 s) until `cond` holds.
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// An instance with a writer thread of its own, stalled, being fed 1.5
    /// backlogs of numbered 64-byte lines into `<dir>/stalled.log`.
    struct Stalled {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        logs: InstanceLogs,
        pump: JoinHandle<()>,
        feeder: std::thread::JoinHandle<()>,
        /// Dropping it lets the writer go on.
        release: std::sync::mpsc::Sender<()>,
        input: Vec<u8>,
    }

    fn stalled_instance() -> Stalled {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stalled.log");
        let paths = LogPaths {
            stdout: path.clone(),
            stderr: None,
        };
        let pol = LogPolicy {
            max_size: 1 << 30,
            ..policy(false)
        };
        let logs = InstanceLogs::open_on(paths, &pol, Writer::start());
        let release = logs.files.stall();
        let input: Vec<u8> = (0..MAX_BACKLOG * 3 / 2 / 64)
            .flat_map(|i| format!("{i:063}\n").into_bytes())
            .collect();
        let (r, w) = pipe();
        let pump = logs.spawn_pump(r, None);
        let feeder = feed(w, input.chunks(MAX_LINE).map(<[u8]>::to_vec).collect());
        Stalled {
            _dir: dir,
            path,
            logs,
            pump,
            feeder,
            release,
            input,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_behind_but_moving_paces_the_program_and_loses_nothing() {
        let st = stalled_instance();
        until("the backlog is full", || {
            st.logs.files.backlog() > MAX_BACKLOG - MAX_LINE
        })
        .await;
        // The pump waits for room: the program is blocked on its pipe.
        assert!(!st.feeder.is_finished());
        // The disk moves again well within `STALL`.
        drop(st.release);
        join(st.pump).await;
        st.feeder.join().unwrap();
        assert!(read(&st.path) == st.input, "the file is not the input");
        let s = st.logs.stats();
        assert_eq!((s.bytes_dropped, s.last_error), (0, None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_writer_drops_over_the_backlog_counts_reports_and_recovers() {
        let st = stalled_instance();
        let (logs, total) = (st.logs.clone(), st.input.len());
        // After `STALL` without progress, the pump drains the pipe although
        // nothing can be written.
        until("the program wrote everything", || st.feeder.is_finished()).await;
        st.feeder.join().unwrap();
        until("the pump dropped what did not fit", || {
            logs.bytes_dropped() as usize + logs.files.backlog() >= total
        })
        .await;

        // Nothing the runtime calls waits for the writer.
        let l = logs.clone();
        let s = within("stats()", move || l.stats());
        let l = logs.clone();
        within("bytes_dropped(), paths() and reopen()", move || {
            let _ = (l.bytes_dropped(), l.paths());
            l.reopen();
        });
        assert!(logs.files.is_behind());
        assert!(s.bytes_dropped as usize >= total - MAX_BACKLOG, "{s:?}");
        assert_eq!(s.bytes_written, 0);
        let err = s.last_error.unwrap();
        assert!(
            err.starts_with("log writer is 8 MiB behind writing `")
                && err.contains("stalled.log")
                && err.ends_with(&format!("dropped {} bytes", s.bytes_dropped)),
            "{err}"
        );

        // The disk comes back: the backlog is written, whole lines in order.
        drop(st.release);
        join(st.pump).await;
        assert!(!logs.files.is_behind());
        assert_eq!(logs.files.backlog(), 0);
        let s = logs.stats();
        let file = read(&st.path);
        assert_eq!(s.bytes_written, file.len() as u64);
        assert_eq!(s.bytes_written + s.bytes_dropped, st.input.len() as u64);
        let mut last = None;
        for line in file.split_inclusive(|b| *b == b'\n') {
            assert_eq!(
                line.len(),
                64,
                "torn line {:?}",
                String::from_utf8_lossy(line)
            );
            let n: u64 = std::str::from_utf8(&line[..63]).unwrap().parse().unwrap();
            assert!(last < Some(n), "{n} after {last:?}");
            last = Some(n);
        }

        // The next run's output is written again and nothing more is dropped.
        let (r, w) = pipe();
        let tasks = logs.spawn_pump(r, None);
        feed(w, vec![b"back\n".to_vec()]).join().unwrap();
        join(tasks).await;
        assert!(read(&st.path).ends_with(b"\nback\n"));
        assert_eq!(logs.stats().bytes_dropped, s.bytes_dropped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_is_ordered_with_output_handed_over_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LogPaths {
            stdout: dir.path().join("r.log"),
            stderr: None,
        };
        let moved = dir.path().join("r.log.moved");
        let logs = InstanceLogs::open_on(paths.clone(), &policy(false), Writer::start());
        let run = |text: &'static [u8]| {
            let (r, w) = pipe();
            let tasks = logs.spawn_pump(r, None);
            feed(w, vec![text.to_vec()]).join().unwrap();
            tasks
        };
        join(run(b"old\n")).await;
        let release = logs.files.stall();
        let before = run(b"before the reopen\n");
        until("the line is queued", || logs.files.backlog() > 0).await;
        // What logrotate does, then SIGUSR1; the writer is still stalled.
        std::fs::rename(&paths.stdout, &moved).unwrap();
        logs.reopen();
        let queued = logs.files.backlog();
        let after = run(b"after the reopen\n");
        until("the next line is queued", || logs.files.backlog() > queued).await;
        drop(release);
        join(before).await;
        join(after).await;
        assert_eq!(read(&moved), b"old\nbefore the reopen\n");
        assert_eq!(read(&paths.stdout), b"after the reopen\n");
    }

    /// Compares `writer | ward pump > file` with `writer | cat > file`.
    /// Run with `cargo test --release --lib -- --ignored throughput --nocapture`.
    #[test]
    #[ignore = "benchmark; run in release"]
    fn throughput_close_to_cat() {
        use std::process::{Command, Stdio};
        use std::time::Instant;

        let dir = tempfile::tempdir().unwrap();
        let bytes = 512 << 20;
        let gen = format!(
            "yes 'the quick brown fox jumps over the lazy dog 0123456789' | head -c {bytes}"
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (mut best_cat, mut best_ward) = (f64::MAX, f64::MAX);
        for round in 0..3 {
            let out = dir.path().join(format!("cat{round}.log"));
            let t = Instant::now();
            let ok = Command::new("sh")
                .arg("-c")
                .arg(format!("{gen} | cat > {}", out.display()))
                .status()
                .unwrap();
            assert!(ok.success());
            best_cat = best_cat.min(t.elapsed().as_secs_f64());
            std::fs::remove_file(out).unwrap();

            let paths = LogPaths {
                stdout: dir.path().join(format!("ward{round}.log")),
                stderr: None,
            };
            let logs = InstanceLogs::open(paths, &LogPolicy::default());
            let (r, w) = pipe();
            let t = Instant::now();
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(&gen)
                .stdout(Stdio::from(w))
                .spawn()
                .unwrap();
            rt.block_on(async { join(logs.spawn_pump(r, None)).await });
            child.wait().unwrap();
            best_ward = best_ward.min(t.elapsed().as_secs_f64());
            // `head -c` cuts the last line; ward ends it with `\n` at EOF.
            assert_eq!(logs.stats().bytes_written, bytes + 1);
        }
        let ratio = best_cat / best_ward;
        println!("cat {best_cat:.3}s, ward {best_ward:.3}s, ratio {ratio:.2}");
        assert!(ratio >= 0.9, "ward reached only {ratio:.2}x of cat");
    }
}
