//! `RotatingFile`: an append-only log file rotated by size, with numbered
//! backups (`.1` newest), optional gzip and age limit.
//!
//! Owns one path and its rotated siblings. Must never panic or return a
//! write error to its caller: a failed write is counted as dropped bytes and
//! recorded, and the next write tries again (reopening the file). Must never
//! cut a line across files: callers hand it whole lines, and it rotates only
//! between them.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::config::LogPolicy;

use super::LogStats;

/// The rotation part of a [`LogPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Rotate when a write would grow the file past this many bytes
    /// (a single line longer than this still goes whole into a fresh file).
    pub max_size: u64,
    /// Rotated files kept (`.1` … `.keep`); 0 = the file is replaced in place.
    pub keep: u32,
    /// Gzip rotated files in a background thread (`.1.gz` …).
    pub compress: bool,
    /// Delete rotated files older than this, checked at each rotation.
    pub max_age: Option<Duration>,
}

impl From<&LogPolicy> for RotationPolicy {
    fn from(p: &LogPolicy) -> Self {
        RotationPolicy {
            max_size: p.max_size.max(1),
            keep: p.keep,
            compress: p.compress,
            max_age: p.max_age,
        }
    }
}

/// The path of rotated file number `i` (`app.log.3`, or `app.log.3.gz`).
pub fn rotated_path(path: &Path, i: u32, gz: bool) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    if gz {
        name.push(".gz");
    }
    PathBuf::from(name)
}

/// Name of a gzip file still being written; never read as a rotated file.
fn gz_tmp_path(path: &Path, i: u32) -> PathBuf {
    let mut name: OsString = rotated_path(path, i, true).into_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

/// An append-only file rotated by size. See the module docs for guarantees.
///
/// `Write::write` always reports the whole buffer as taken: bytes that could
/// not be written are counted in [`LogStats::bytes_dropped`].
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    policy: RotationPolicy,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// The last failed write stopped inside a line: start the next with `\n`.
    mid_line: bool,
    stats: LogStats,
    last_error_at: Option<Instant>,
    /// An error episode is in progress (first error logged, rest counted).
    failing: bool,
    /// Report errors through `tracing` (false for ward's own log, which would
    /// re-enter itself).
    report: bool,
    compressor: Option<JoinHandle<io::Result<()>>>,
}

impl RotatingFile {
    /// Prepare to append to `path`. The file (and its directory) is created
    /// at the first write, so a program that never prints costs no inode.
    ///
    /// Never fails: an error is recorded in [`RotatingFile::stats`] and the
    /// next write tries again.
    pub fn open(path: PathBuf, policy: RotationPolicy) -> RotatingFile {
        RotatingFile {
            path,
            policy,
            file: None,
            size: 0,
            mid_line: false,
            stats: LogStats::default(),
            last_error_at: None,
            failing: false,
            report: true,
            compressor: None,
        }
    }

    /// Like [`RotatingFile::open`] but never reports through `tracing`
    /// (for the file that `tracing` itself writes to).
    pub(crate) fn open_quiet(path: PathBuf, policy: RotationPolicy) -> RotatingFile {
        let mut f = RotatingFile::open(path, policy);
        f.report = false;
        f
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> LogStats {
        self.stats.clone()
    }

    pub fn bytes_dropped(&self) -> u64 {
        self.stats.bytes_dropped
    }

    pub fn bytes_written(&self) -> u64 {
        self.stats.bytes_written
    }

    pub fn last_error(&self) -> Option<&str> {
        self.stats.last_error.as_deref()
    }

    /// When the last error was recorded, to pick the latest of several files.
    pub(crate) fn last_error_at(&self) -> Option<Instant> {
        self.last_error_at
    }

    /// Close and reopen the path (after an external `logrotate` moved it).
    pub fn reopen(&mut self) {
        self.file = None;
        self.ensure_open();
    }

    /// Wait for a background compression to finish (tests, shutdown).
    pub fn wait_background(&mut self) {
        if let Some(handle) = self.compressor.take() {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let msg = format!("cannot compress `{}.1`: {e}", self.path.display());
                    self.record_error(msg);
                }
                Err(_) => self.record_error("log compression thread panicked".into()),
            }
        }
    }

    /// Record an error and report it once per episode.
    fn record_error(&mut self, msg: String) {
        if !self.failing {
            self.failing = true;
            if self.report {
                tracing::warn!(path = %self.path.display(), error = %msg, "log write failed");
            } else {
                eprintln!("ward: {msg}");
            }
        }
        self.stats.last_error = Some(msg);
        self.last_error_at = Some(Instant::now());
    }

    /// Append whole lines, rotating between lines when the size limit would
    /// be crossed. A trailing fragment without `\n` is treated as a line.
    pub fn write_lines(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            if self.file.is_none() && !self.ensure_open() {
                self.stats.bytes_dropped += buf.len() as u64;
                return;
            }
            let room = self.policy.max_size.saturating_sub(self.size);
            let take = if buf.len() as u64 <= room {
                buf.len()
            } else {
                match buf[..room as usize].iter().rposition(|b| *b == b'\n') {
                    Some(p) => p + 1,
                    // An empty file takes one line even if it is too long.
                    None if self.size == 0 => first_line_len(buf),
                    None => {
                        if !self.rotate() {
                            // Could not start a fresh file: keep writing
                            // here rather than lose lines.
                            buf.len()
                        } else {
                            continue;
                        }
                    }
                }
            };
            self.write_raw(&buf[..take]);
            buf = &buf[take..];
        }
    }

    /// Append several chunks of whole lines, in order: in one `writev` when
    /// they all fit in the current file (the usual case), else each as
    /// [`RotatingFile::write_lines`] does.
    pub fn write_chunks(&mut self, chunks: &[Vec<u8>]) {
        let total: usize = chunks.iter().map(Vec::len).sum();
        let room = self.policy.max_size.saturating_sub(self.size);
        let file = match self.file.as_mut() {
            Some(f) if chunks.len() > 1 && !self.mid_line && total as u64 <= room => f,
            _ => {
                for c in chunks {
                    self.write_lines(c);
                }
                return;
            }
        };
        let slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
        let written = loop {
            match file.write_vectored(&slices) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r.unwrap_or(0),
            }
        };
        self.size += written as u64;
        self.stats.bytes_written += written as u64;
        if written == total {
            return self.note_success();
        }
        // A short write or an error: the rest as single writes, which retry,
        // and count and report a failure as usual.
        let mut skip = written;
        for c in chunks {
            let done = skip.min(c.len());
            skip -= done;
            if done < c.len() {
                self.write_lines(&c[done..]);
            }
        }
    }

    /// Open the path for appending if it is not open. Returns whether it is.
    fn ensure_open(&mut self) -> bool {
        if self.file.is_some() {
            return true;
        }
        let result = (|| {
            if let Some(parent) = self.path.parent() {
                if !parent.as_os_str().is_empty() {
                    fs::create_dir_all(parent)?;
                }
            }
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&self.path)?;
            let mut size = file.metadata()?.len();
            // A file left cut mid-line (a SIGKILLed ward, a full disk) gets
            // its line ended, so the next line does not glue onto it.
            if size > 0 {
                use std::io::{Read, Seek, SeekFrom};
                let mut last = [0u8; 1];
                file.seek(SeekFrom::End(-1))?;
                file.read_exact(&mut last)?;
                if last[0] != b'\n' {
                    file.write_all(b"\n")?;
                    size += 1;
                }
            }
            Ok::<_, io::Error>((file, size))
        })();
        match result {
            Ok((file, size)) => {
                self.file = Some(file);
                self.size = size;
                true
            }
            Err(e) => {
                self.record_error(format!("cannot open `{}`: {e}", self.path.display()));
                false
            }
        }
    }

    fn write_raw(&mut self, data: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            self.stats.bytes_dropped += data.len() as u64;
            return;
        };
        if self.mid_line {
            if file.write_all(b"\n").is_ok() {
                self.size += 1;
            }
            self.mid_line = false;
        }
        let mut off = 0;
        while off < data.len() {
            match file.write(&data[off..]) {
                Ok(0) => {
                    self.fail_write(data, off, io::ErrorKind::WriteZero.into());
                    return;
                }
                Ok(n) => {
                    off += n;
                    self.size += n as u64;
                    self.stats.bytes_written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail_write(data, off, e);
                    return;
                }
            }
        }
        self.note_success();
    }

    /// A write went through: end an error episode, if any.
    fn note_success(&mut self) {
        if self.failing {
            self.failing = false;
            if self.report {
                tracing::info!(path = %self.path.display(), dropped = self.stats.bytes_dropped, "log writing resumed");
            }
        }
    }

    fn fail_write(&mut self, data: &[u8], written: usize, e: io::Error) {
        self.stats.bytes_dropped += (data.len() - written) as u64;
        self.mid_line = written > 0 && data[written - 1] != b'\n';
        self.file = None;
        self.record_error(format!("cannot write `{}`: {e}", self.path.display()));
    }

    /// Move the current file aside and open a fresh one. Returns whether the
    /// open file is now empty.
    fn rotate(&mut self) -> bool {
        self.wait_background();
        self.file = None;
        let keep = self.policy.keep;
        if keep == 0 {
            if let Err(e) = remove_if_exists(&self.path) {
                self.record_error(format!("cannot replace `{}`: {e}", self.path.display()));
            }
        } else {
            let _ = remove_if_exists(&rotated_path(&self.path, keep, false));
            let _ = remove_if_exists(&rotated_path(&self.path, keep, true));
            let _ = remove_if_exists(&gz_tmp_path(&self.path, 1));
            for i in (1..keep).rev() {
                for gz in [false, true] {
                    let from = rotated_path(&self.path, i, gz);
                    if from.exists() {
                        let _ = fs::rename(&from, rotated_path(&self.path, i + 1, gz));
                    }
                }
            }
            let first = rotated_path(&self.path, 1, false);
            match fs::rename(&self.path, &first) {
                Ok(()) if self.policy.compress => {
                    let spawned = std::thread::Builder::new()
                        .name("ward-log-gzip".into())
                        .spawn(move || compress_file(&first));
                    match spawned {
                        Ok(handle) => self.compressor = Some(handle),
                        Err(e) => self.record_error(format!("cannot start log compression: {e}")),
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    let msg = format!("cannot rotate `{}`: {e}", self.path.display());
                    self.record_error(msg);
                }
            }
            if let Some(max_age) = self.policy.max_age {
                self.remove_older_than(max_age);
            }
        }
        self.ensure_open() && self.size == 0
    }

    fn remove_older_than(&self, max_age: Duration) {
        let now = SystemTime::now();
        for i in 1..=self.policy.keep {
            for gz in [false, true] {
                let p = rotated_path(&self.path, i, gz);
                let Ok(modified) = fs::metadata(&p).and_then(|m| m.modified()) else {
                    continue;
                };
                if now.duration_since(modified).unwrap_or_default() > max_age {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_lines(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn first_line_len(buf: &[u8]) -> usize {
    buf.iter()
        .position(|b| *b == b'\n')
        .map_or(buf.len(), |p| p + 1)
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Gzip `src` (`x.1`) to `x.1.gz`: written as `x.1.gz.tmp`, synced, renamed,
/// then `src` removed. On failure the plain file stays and the tmp is removed.
fn compress_file(src: &Path) -> io::Result<()> {
    let mut tmp: OsString = src.as_os_str().to_owned();
    tmp.push(".gz.tmp");
    let tmp = PathBuf::from(tmp);
    let mut dst: OsString = src.as_os_str().to_owned();
    dst.push(".gz");
    let result = (|| {
        let mut input = File::open(src)?;
        let out = File::create(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut enc)?;
        let out = enc.finish()?;
        out.sync_all()?;
        fs::rename(&tmp, &dst)?;
        fs::remove_file(src)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn policy(max_size: u64, keep: u32) -> RotationPolicy {
        RotationPolicy {
            max_size,
            keep,
            compress: false,
            max_age: None,
        }
    }

    fn read_plain_or_gz(p: &Path) -> Option<String> {
        if let Ok(s) = fs::read_to_string(p) {
            return Some(s);
        }
        let gz = PathBuf::from(format!("{}.gz", p.display()));
        let f = File::open(gz).ok()?;
        let mut s = String::new();
        flate2::read::GzDecoder::new(f)
            .read_to_string(&mut s)
            .unwrap();
        Some(s)
    }

    /// All lines of the rotated files (oldest first) then the current file.
    fn all_lines(path: &Path, keep: u32) -> Vec<String> {
        let mut out = Vec::new();
        for i in (1..=keep).rev() {
            if let Some(s) = read_plain_or_gz(&rotated_path(path, i, false)) {
                assert!(s.ends_with('\n') || s.is_empty(), "file .{i} ends mid-line");
                out.extend(s.lines().map(String::from));
            }
        }
        out.extend(fs::read_to_string(path).unwrap().lines().map(String::from));
        out
    }

    #[test]
    fn every_line_exactly_once_in_order_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/app.log");
        let mut f = RotatingFile::open(path.clone(), policy(100, 1000));
        // Mix single lines and multi-line chunks, like a pump does.
        let mut n = 0;
        while n < 500 {
            let mut chunk = String::new();
            for _ in 0..(n % 4 + 1) {
                chunk.push_str(&format!("line {n}\n"));
                n += 1;
            }
            f.write_all(chunk.as_bytes()).unwrap();
        }
        let lines = all_lines(&path, 1000);
        let want: Vec<String> = (0..n).map(|i| format!("line {i}")).collect();
        assert_eq!(lines, want);
        assert!(rotated_path(&path, 10, false).exists());
        for i in 1..=10 {
            let len = fs::metadata(rotated_path(&path, i, false)).unwrap().len();
            assert!(len <= 100, "file .{i} is {len} bytes");
        }
        assert_eq!(f.stats().bytes_dropped, 0);
        assert!(f.stats().last_error.is_none());
    }

    #[test]
    fn keep_limit_and_shift_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut f = RotatingFile::open(path.clone(), policy(8, 3));
        for i in 0..10 {
            // Each line is 7 bytes: one per file.
            f.write_all(format!("line-{i}\n").as_bytes()).unwrap();
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), "line-9\n");
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 1, false)).unwrap(),
            "line-8\n"
        );
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 2, false)).unwrap(),
            "line-7\n"
        );
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 3, false)).unwrap(),
            "line-6\n"
        );
        assert!(!rotated_path(&path, 4, false).exists());
    }

    #[test]
    fn keep_zero_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut f = RotatingFile::open(path.clone(), policy(10, 0));
        f.write_all(b"aaaa\nbbbb\n").unwrap();
        f.write_all(b"cccc\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "cccc\n");
        assert!(!rotated_path(&path, 1, false).exists());
    }

    #[test]
    fn long_line_goes_whole_into_a_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut f = RotatingFile::open(path.clone(), policy(10, 5));
        f.write_all(b"ab\n").unwrap();
        let long = format!("{}\n", "x".repeat(50));
        f.write_all(long.as_bytes()).unwrap();
        f.write_all(b"cd\n").unwrap();
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 2, false)).unwrap(),
            "ab\n"
        );
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 1, false)).unwrap(),
            long
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "cd\n");
    }

    #[test]
    fn compressed_rotations_are_readable_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let pol = RotationPolicy {
            compress: true,
            ..policy(64, 100)
        };
        let mut f = RotatingFile::open(path.clone(), pol);
        for i in 0..100 {
            f.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        f.wait_background();
        assert!(rotated_path(&path, 1, true).exists());
        assert!(!rotated_path(&path, 1, false).exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let want: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        assert_eq!(all_lines(&path, 100), want);
        assert!(f.stats().last_error.is_none());
    }

    #[test]
    fn max_age_removes_old_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let pol = RotationPolicy {
            max_age: Some(Duration::from_secs(3600)),
            ..policy(8, 5)
        };
        let mut f = RotatingFile::open(path.clone(), pol);
        f.write_all(b"line-0\n").unwrap();
        f.write_all(b"line-1\n").unwrap();
        f.write_all(b"line-2\n").unwrap();
        // Age `.2` (line-0) by two hours; the next rotation shifts it to `.3` and deletes it.
        let old = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(rotated_path(&path, 2, false))
            .unwrap()
            .set_modified(old)
            .unwrap();
        f.write_all(b"line-3\n").unwrap();
        assert!(!rotated_path(&path, 3, false).exists());
        assert_eq!(
            fs::read_to_string(rotated_path(&path, 2, false)).unwrap(),
            "line-1\n"
        );
    }

    #[test]
    fn enospc_is_counted_and_writing_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        // A path that resolves to /dev/full: every write fails with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let mut f = RotatingFile::open(path.clone(), policy(1 << 20, 3));
        f.write_all(b"lost 1\n").unwrap();
        f.write_all(b"lost 2\n").unwrap();
        let s = f.stats();
        assert_eq!(s.bytes_dropped, 14);
        assert_eq!(s.bytes_written, 0);
        let err = s.last_error.unwrap();
        assert!(err.contains("app.log"), "{err}");
        // "Space is freed": the path becomes a writable file again.
        fs::remove_file(&path).unwrap();
        f.write_all(b"kept\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "kept\n");
        assert_eq!(f.stats().bytes_written, 5);
        assert_eq!(f.stats().bytes_dropped, 14);
    }

    #[test]
    fn write_chunks_writes_what_write_lines_would() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        let mut batched = RotatingFile::open(a.clone(), policy(300, 100));
        let mut single = RotatingFile::open(b.clone(), policy(300, 100));
        let mut n = 0;
        for round in 0..40 {
            // Batches of 1 to 4 chunks of 1 to 3 lines: some fit in the
            // current file, some cross a rotation.
            let chunks: Vec<Vec<u8>> = (0..round % 4 + 1)
                .map(|c| {
                    (0..(round + c) % 3 + 1)
                        .map(|_| {
                            n += 1;
                            format!("line {n}\n")
                        })
                        .collect::<String>()
                        .into_bytes()
                })
                .collect();
            batched.write_chunks(&chunks);
            for c in &chunks {
                single.write_lines(c);
            }
        }
        assert_eq!(all_lines(&a, 100), all_lines(&b, 100));
        assert_eq!(all_lines(&a, 100).len(), n);
        assert!(rotated_path(&a, 5, false).exists());
        assert_eq!(batched.stats(), single.stats());

        // Every chunk of a failed `writev` is retried, then counted, and
        // the error kept.
        let full = dir.path().join("full.log");
        std::os::unix::fs::symlink("/dev/full", &full).unwrap();
        let mut f = RotatingFile::open(full, policy(1 << 20, 3));
        f.reopen();
        f.write_chunks(&[b"one\n".to_vec(), b"two\n".to_vec()]);
        assert_eq!(f.stats().bytes_dropped, 8);
        assert!(f.stats().last_error.unwrap().contains("full.log"));
    }

    #[test]
    fn parent_is_a_file_then_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("logs");
        fs::write(&parent, b"not a dir").unwrap();
        let path = parent.join("app.log");
        let mut f = RotatingFile::open(path.clone(), policy(1 << 20, 3));
        f.write_all(b"lost\n").unwrap();
        assert_eq!(f.stats().bytes_dropped, 5);
        assert!(f.stats().last_error.unwrap().contains("cannot open"));
        fs::remove_file(&parent).unwrap();
        f.write_all(b"kept\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "kept\n");
    }

    #[test]
    fn reopen_follows_an_external_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut f = RotatingFile::open(path.clone(), policy(1 << 20, 3));
        f.write_all(b"before\n").unwrap();
        fs::rename(&path, dir.path().join("moved.log")).unwrap();
        f.reopen();
        f.write_all(b"after\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("moved.log")).unwrap(),
            "before\n"
        );
    }
}
