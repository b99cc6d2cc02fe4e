//! `InstanceLogs`: the log files of one supervised instance and the pump
//! tasks that drain its stdout/stderr pipes into them.
//!
//! Owns the line framing (whole lines, long-line splitting, timestamps) and
//! the per-instance files, across restarts. Must never stop draining a pipe
//! because of a disk error (the pipe is read to EOF whatever happens, so the
//! child never blocks on a full pipe), and never write a partial line next to
//! another stream's line in a merged file.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::net::unix::pipe::Receiver;
use tokio::task::JoinHandle;

use crate::config::{LogPaths, LogPolicy};

use super::rotate::{RotatingFile, RotationPolicy};
use super::time::format_rfc3339;
use super::LogStats;

/// Longest line written whole; a longer line is cut every `MAX_LINE` bytes,
/// each cut piece ending in [`LINE_CONTINUES_MARKER`]. Also the read size.
pub const MAX_LINE: usize = 64 * 1024;

/// Appended (before the `\n`) to each piece of a line longer than [`MAX_LINE`]
/// that is continued on the next line.
pub const LINE_CONTINUES_MARKER: &[u8] = b" [ward: line continues]";

/// The log files of one instance. Cheap to clone; lives across restarts.
#[derive(Clone, Debug)]
pub struct InstanceLogs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    paths: LogPaths,
    timestamps: bool,
    out: Mutex<RotatingFile>,
    /// `None` when stderr is merged into the stdout file.
    err: Option<Mutex<RotatingFile>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Out,
    Err,
}

fn lock(m: &Mutex<RotatingFile>) -> MutexGuard<'_, RotatingFile> {
    // A panic while holding the lock cannot leave the file inconsistent in a
    // way that matters more than losing the log: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl InstanceLogs {
    /// Open (creating) the files of one instance. Never fails: errors become
    /// [`LogStats`] and writes are retried.
    pub fn open(paths: LogPaths, policy: &LogPolicy) -> InstanceLogs {
        let rot = RotationPolicy::from(policy);
        // Both streams configured to the same file: one writer, like a merge.
        let paths = match paths.stderr {
            Some(ref err) if *err == paths.stdout => LogPaths {
                stderr: None,
                ..paths
            },
            _ => paths,
        };
        let out = Mutex::new(RotatingFile::open(paths.stdout.clone(), rot));
        let err = paths
            .stderr
            .clone()
            .map(|p| Mutex::new(RotatingFile::open(p, rot)));
        InstanceLogs {
            inner: Arc::new(Inner {
                paths,
                timestamps: policy.timestamps,
                out,
                err,
            }),
        }
    }

    /// Drain the read ends of a new run's pipes into the files until EOF.
    ///
    /// Must be called inside a tokio runtime. Pumps of an earlier run finish
    /// by themselves at their EOF. The caller must have closed its copies of
    /// the write ends, or EOF never comes.
    pub fn attach(&self, stdout: OwnedFd, stderr: Option<OwnedFd>) {
        let _ = self.spawn_pumps(stdout, stderr);
    }

    /// [`InstanceLogs::attach`], returning the pump tasks (for tests and for
    /// a caller that wants to wait until output is drained).
    pub(crate) fn spawn_pumps(
        &self,
        stdout: OwnedFd,
        stderr: Option<OwnedFd>,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        for (fd, which) in [(Some(stdout), Which::Out), (stderr, Which::Err)] {
            let Some(fd) = fd else { continue };
            match Receiver::from_owned_fd(fd) {
                Ok(rx) => tasks.push(tokio::spawn(pump(self.inner.clone(), which, rx))),
                Err(e) => {
                    let mut f = lock(self.inner.file(which));
                    let msg = format!("cannot read pipe for `{}`: {e}", f.path().display());
                    f.record_error(msg);
                }
            }
        }
        tasks
    }

    /// Bytes dropped so far on both streams.
    pub fn bytes_dropped(&self) -> u64 {
        let err = self
            .inner
            .err
            .as_ref()
            .map_or(0, |e| lock(e).bytes_dropped());
        lock(&self.inner.out).bytes_dropped() + err
    }

    /// Bytes written and dropped over both files, and the latest error.
    pub fn stats(&self) -> LogStats {
        let mut files = vec![lock(&self.inner.out)];
        if let Some(err) = &self.inner.err {
            files.push(lock(err));
        }
        let mut total = LogStats::default();
        let mut latest = None;
        for f in &files {
            let s = f.stats();
            total.bytes_written += s.bytes_written;
            total.bytes_dropped += s.bytes_dropped;
            if s.last_error.is_some() && f.last_error_at() >= latest {
                latest = f.last_error_at();
                total.last_error = s.last_error;
            }
        }
        total
    }

    /// Reopen both files (SIGUSR1, after an external `logrotate`).
    pub fn reopen(&self) {
        lock(&self.inner.out).reopen();
        if let Some(err) = &self.inner.err {
            lock(err).reopen();
        }
    }

    pub fn paths(&self) -> &LogPaths {
        &self.inner.paths
    }
}

impl Inner {
    fn file(&self, which: Which) -> &Mutex<RotatingFile> {
        match (which, &self.err) {
            (Which::Err, Some(err)) => err,
            _ => &self.out,
        }
    }
}

/// Turns a byte stream into whole lines for the file. Keeps the unfinished
/// last line between reads; owns a reusable staging buffer for prefixes.
#[derive(Default)]
struct Framer {
    /// Bytes read but not yet written: always the start of one unfinished line.
    buf: Vec<u8>,
    /// Staging for timestamped or marked output; reused, freed when idle.
    staging: Vec<u8>,
    timestamps: bool,
}

impl Framer {
    /// Write every complete line in `buf` (and cut an over-long line).
    fn emit_complete(&mut self, file: &Mutex<RotatingFile>) {
        if let Some(p) = self.buf.iter().rposition(|b| *b == b'\n') {
            self.write(file, p + 1, false);
        }
        while self.buf.len() >= MAX_LINE {
            self.write(file, MAX_LINE, true);
        }
    }

    /// Write what is left at EOF, ending it with `\n` so the next writer of a
    /// shared file starts on its own line.
    fn emit_rest(&mut self, file: &Mutex<RotatingFile>) {
        while !self.buf.is_empty() {
            self.emit_complete(file);
            if !self.buf.is_empty() {
                self.buf.push(b'\n');
            }
        }
    }

    /// Write `buf[..end]` (whole lines, or a cut piece when `cut`) in one call
    /// and keep the rest at the front of `buf`.
    fn write(&mut self, file: &Mutex<RotatingFile>, end: usize, cut: bool) {
        let data = &self.buf[..end];
        if !self.timestamps && !cut {
            lock(file).write_lines(data);
        } else {
            self.staging.clear();
            if self.timestamps {
                let ts = format_rfc3339(SystemTime::now());
                for line in data.split_inclusive(|b| *b == b'\n') {
                    self.staging.extend_from_slice(&ts);
                    self.staging.push(b' ');
                    self.staging.extend_from_slice(line);
                }
            } else {
                self.staging.extend_from_slice(data);
            }
            if cut {
                self.staging.extend_from_slice(LINE_CONTINUES_MARKER);
                self.staging.push(b'\n');
            }
            lock(file).write_lines(&self.staging);
        }
        self.buf.copy_within(end.., 0);
        self.buf.truncate(self.buf.len() - end);
    }

    /// Give memory back while the program is quiet.
    fn shrink_when_idle(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        } else {
            self.buf.shrink_to_fit();
        }
        self.staging = Vec::new();
    }
}

async fn pump(inner: Arc<Inner>, which: Which, rx: Receiver) {
    let file = inner.file(which);
    let mut framer = Framer {
        timestamps: inner.timestamps,
        ..Framer::default()
    };
    loop {
        if let Err(e) = rx.readable().await {
            read_failed(file, e);
            break;
        }
        match read_into(&rx, &mut framer.buf) {
            Ok(0) => break,
            Ok(n) => {
                framer.emit_complete(file);
                if n < MAX_LINE / 2 {
                    // The pipe is drained: do not keep 64 KiB per idle program.
                    framer.shrink_when_idle();
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                read_failed(file, e);
                break;
            }
        }
    }
    framer.emit_rest(file);
}

fn read_failed(file: &Mutex<RotatingFile>, e: io::Error) {
    let mut f = lock(file);
    let msg = format!("cannot read pipe for `{}`: {e}", f.path().display());
    f.record_error(msg);
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

    async fn join_all(tasks: Vec<JoinHandle<()>>) {
        let deadline = Duration::from_secs(30);
        for t in tasks {
            tokio::time::timeout(deadline, t)
                .await
                .expect("pump finished in time")
                .unwrap();
        }
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
        let tasks = logs.spawn_pumps(r_out, Some(r_err));
        let a = feed(w_out, pieces);
        let b = feed(w_err, vec![b"err line\n".to_vec()]);
        join_all(tasks).await;
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
        let tasks = logs.spawn_pumps(r_out, Some(r_err));
        let a = feed(w_out, stream("out"));
        let b = feed(w_err, stream("err"));
        join_all(tasks).await;
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
        let tasks = logs.spawn_pumps(r, None);
        feed(w, vec![b"one\ntw".to_vec(), b"o\n".to_vec()])
            .join()
            .unwrap();
        join_all(tasks).await;
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
        let tasks = logs.spawn_pumps(r, None);
        let writer = feed(w, vec![line.repeat(1000).into_bytes()]);
        join_all(tasks).await;
        writer.join().unwrap();
        let s = logs.stats();
        assert_eq!(s.bytes_dropped, 1_000_000);
        assert_eq!(s.bytes_written, 0);
        assert!(s.last_error.unwrap().contains("full.log"));

        // Space freed; the next run of the program attaches new pipes.
        std::fs::remove_file(&paths.stdout).unwrap();
        let (r, w) = pipe();
        let tasks = logs.spawn_pumps(r, None);
        feed(w, vec![b"back\n".to_vec()]).join().unwrap();
        join_all(tasks).await;
        assert_eq!(read(&paths.stdout), b"back\n");
        assert_eq!(logs.stats().bytes_dropped, 1_000_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attach_spawns_pumps_that_finish_at_eof() {
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
        let tasks = logs.spawn_pumps(r_out, Some(r_err));
        feed(w_out, vec![b"out\n".to_vec()]).join().unwrap();
        feed(w_err, vec![b"err\n".to_vec()]).join().unwrap();
        join_all(tasks).await;
        let text = String::from_utf8(read(&p)).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        assert_eq!(lines, ["err", "out"]);
    }

    #[test]
    fn idle_framer_holds_no_read_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let file = Mutex::new(RotatingFile::open(
            dir.path().join("f.log"),
            RotationPolicy::from(&policy(true)),
        ));
        let mut framer = Framer {
            timestamps: true,
            ..Framer::default()
        };
        framer.buf.reserve_exact(MAX_LINE);
        framer.buf.extend_from_slice(b"done\npartial");
        framer.emit_complete(&file);
        framer.shrink_when_idle();
        assert_eq!(framer.buf, b"partial");
        assert!(framer.buf.capacity() < 64, "{}", framer.buf.capacity());
        assert_eq!(framer.staging.capacity(), 0);
        framer.buf.extend_from_slice(b" line\n");
        framer.emit_complete(&file);
        framer.shrink_when_idle();
        assert_eq!(framer.buf.capacity(), 0);
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
            rt.block_on(async { join_all(logs.spawn_pumps(r, None)).await });
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
