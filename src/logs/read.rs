//! Reading logs back for `ward logs`: the last lines of a file and its
//! rotations, following files across rotations, and printing.
//!
//! Owns the on-disk reading side only. Must never write to, rotate or lock
//! the log files (the daemon may be writing them), and never read a whole
//! current file to find its last lines.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::LogPaths;

use super::rotate::rotated_path;
use super::time::{format_rfc3339, parse_prefix};
use super::LogsError;

/// Block size when reading a file backwards or following it.
const BLOCK: usize = 64 * 1024;
/// How often `--follow` polls the files.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);
/// Highest rotated index looked at when collecting old lines.
const MAX_ROTATED: u32 = 10_000;

/// Which output stream of a program a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Out,
    Err,
}

/// One file to read: a program instance's stdout or stderr log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSource {
    /// Instance id, e.g. `web` or `web:1`.
    pub program: String,
    pub stream: Stream,
    pub path: PathBuf,
}

impl LogSource {
    /// The sources of one instance: stdout, then stderr unless merged.
    pub fn from_paths(program: &str, paths: &LogPaths) -> Vec<LogSource> {
        let mut v = vec![LogSource {
            program: program.to_string(),
            stream: Stream::Out,
            path: paths.stdout.clone(),
        }];
        if let Some(err) = &paths.stderr {
            v.push(LogSource {
                program: program.to_string(),
                stream: Stream::Err,
                path: err.clone(),
            });
        }
        v
    }

    /// The label printed before each line with `prefix`: `web`, or
    /// `web[err]` for the stderr file.
    fn label(&self) -> String {
        match self.stream {
            Stream::Out => self.program.clone(),
            Stream::Err => format!("{}[err]", self.program),
        }
    }
}

/// What `ward logs` prints. The CLI maps its flags onto this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsOptions {
    /// Print the last this many lines (over all sources together) first.
    pub lines: usize,
    /// Keep printing new lines until interrupted or stdout closes.
    pub follow: bool,
    /// Only lines with a timestamp newer than now minus this; lines without a
    /// timestamp are always kept.
    pub since: Option<Duration>,
    /// Only lines containing this plain substring (no regex; case-sensitive,
    /// matched against the line without its timestamp).
    pub grep: Option<String>,
    /// One JSON object per line.
    pub json: bool,
    /// Print `name | ` before each line.
    pub prefix: bool,
    /// Colour the prefix (by a hash of the name).
    pub color: bool,
}

impl Default for LogsOptions {
    fn default() -> Self {
        LogsOptions {
            lines: 100,
            follow: false,
            since: None,
            grep: None,
            json: false,
            prefix: false,
            color: false,
        }
    }
}

/// Line selection from `--since` and `--grep`.
#[derive(Debug, Clone, Default)]
struct Filter {
    cutoff: Option<SystemTime>,
    grep: Option<Vec<u8>>,
}

impl Filter {
    fn new(opts: &LogsOptions, now: SystemTime) -> Filter {
        Filter {
            cutoff: opts.since.and_then(|d| now.checked_sub(d)),
            grep: opts.grep.as_ref().map(|g| g.as_bytes().to_vec()),
        }
    }

    fn keeps(&self, line: &[u8]) -> bool {
        let (time, text) = match parse_prefix(line) {
            Some((t, rest)) => (Some(t), rest),
            None => (None, line),
        };
        if let (Some(cutoff), Some(t)) = (self.cutoff, time) {
            if t < cutoff {
                return false;
            }
        }
        match &self.grep {
            Some(g) => contains(text, g),
            None => true,
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> LogsError + '_ {
    move |source| LogsError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The last `n` lines (without `\n`) of `path`, oldest first, continuing
/// into `path.1`, `path.2`… (plain or `.gz`) when the current file has fewer.
/// An empty or absent file gives no lines.
pub fn tail_lines(path: &Path, n: usize) -> Result<Vec<Vec<u8>>, LogsError> {
    Ok(tail_source(path, n, &Filter::default())?.0)
}

/// The current file's open handle and how far its lines were read.
type Position = Option<(File, u64)>;

/// [`tail_lines`] with a filter, also returning the open current file and the
/// offset read up to, so that following continues exactly there.
fn tail_source(
    path: &Path,
    n: usize,
    filter: &Filter,
) -> Result<(Vec<Vec<u8>>, Position), LogsError> {
    let mut newest_first = Vec::new();
    let (current, end) = match File::open(path) {
        Ok(f) => {
            let meta = f.metadata().map_err(read_err(path))?;
            let end = meta.len();
            (Some((f, (meta.dev(), meta.ino()))), end)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (None, 0),
        Err(e) => return Err(read_err(path)(e)),
    };
    if let Some((f, _)) = &current {
        lines_backwards(&FileSrc(f), end, n, filter, &mut newest_first).map_err(read_err(path))?;
    }
    let current_id = current.as_ref().map(|(_, id)| *id);
    let mut i = 1;
    while newest_first.len() < n && i <= MAX_ROTATED {
        let plain = rotated_path(path, i, false);
        i += 1;
        match File::open(&plain) {
            Ok(f) => {
                let meta = f.metadata().map_err(read_err(&plain))?;
                // Rotated since we opened the current file: same lines.
                if Some((meta.dev(), meta.ino())) == current_id {
                    continue;
                }
                let len = meta.len();
                lines_backwards(&FileSrc(&f), len, n, filter, &mut newest_first)
                    .map_err(read_err(&plain))?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_err(&plain)(e)),
        }
        let gz = rotated_path(path, i - 1, true);
        match read_gz(&gz).map_err(read_err(&gz))? {
            Some(bytes) => {
                let len = bytes.len() as u64;
                lines_backwards(&MemSrc(&bytes), len, n, filter, &mut newest_first)
                    .map_err(read_err(&gz))?;
            }
            None => break,
        }
    }
    newest_first.reverse();
    Ok((newest_first, current.map(|(f, _)| (f, end))))
}

trait ReadAt {
    fn read_at_exact(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
}

struct FileSrc<'a>(&'a File);
struct MemSrc<'a>(&'a [u8]);

impl ReadAt for FileSrc<'_> {
    fn read_at_exact(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, pos)
    }
}

impl ReadAt for MemSrc<'_> {
    fn read_at_exact(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let start = pos as usize;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }
}

/// Push lines of `src[..len]` that pass `filter`, newest first, until `out`
/// holds `n`. Reads backwards in blocks; a final `\n` ends the last line.
fn lines_backwards(
    src: &dyn ReadAt,
    len: u64,
    n: usize,
    filter: &Filter,
    out: &mut Vec<Vec<u8>>,
) -> io::Result<()> {
    if len == 0 || out.len() >= n {
        return Ok(());
    }
    let mut end = len;
    let mut last = [0u8];
    src.read_at_exact(&mut last, len - 1)?;
    if last[0] == b'\n' {
        end -= 1;
    }
    // Bytes after the newest newline seen, in file order: the end part of a
    // line whose start is further back.
    let mut carry: Vec<u8> = Vec::new();
    let mut pos = end;
    let push = |line: &[u8], out: &mut Vec<Vec<u8>>| {
        if filter.keeps(line) {
            out.push(line.to_vec());
        }
    };
    while pos > 0 {
        let size = BLOCK.min(pos as usize);
        pos -= size as u64;
        let mut chunk = vec![0u8; size];
        src.read_at_exact(&mut chunk, pos)?;
        chunk.extend_from_slice(&carry);
        let mut line_end = chunk.len();
        while let Some(nl) = chunk[..line_end].iter().rposition(|b| *b == b'\n') {
            push(&chunk[nl + 1..line_end], out);
            if out.len() >= n {
                return Ok(());
            }
            line_end = nl;
        }
        chunk.truncate(line_end);
        carry = chunk;
    }
    // The first line of the file.
    push(&carry, out);
    Ok(())
}

/// Follows one file across rotations: each [`Follower::poll`] returns the
/// complete lines added since the last call.
///
/// When the path starts naming a new file (rotation), the old file, still
/// open, is read to its end first, then the new one from its start: no line
/// is missed or repeated. A truncated file is read again from its start.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<(File, (u64, u64))>,
    pos: u64,
    /// An unfinished last line, completed by a later read.
    partial: Vec<u8>,
}

impl Follower {
    /// Follow `path` from its current end (or from the start of the file
    /// that appears there, if it does not exist yet).
    pub fn new(path: PathBuf) -> Follower {
        let file = File::open(&path).ok();
        let end = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Follower::at(path, file.map(|f| (f, end)))
    }

    /// Follow from an already open file and offset (after a tail).
    fn at(path: PathBuf, position: Position) -> Follower {
        let (file, pos) = match position {
            Some((f, pos)) => match f.metadata() {
                Ok(m) => (Some((f, (m.dev(), m.ino()))), pos),
                Err(_) => (None, 0),
            },
            None => (None, 0),
        };
        Follower {
            path,
            file,
            pos,
            partial: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// New complete lines (without `\n`), oldest first.
    pub fn poll(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut lines = Vec::new();
        if self.file.is_none() && !self.open_new() {
            return Ok(lines);
        }
        self.drain(&mut lines)?;
        match fs::metadata(&self.path) {
            Ok(m) if Some((m.dev(), m.ino())) != self.file.as_ref().map(|(_, id)| *id) => {
                // Rotated: everything the writer put in the old file was
                // written before the rename we now see. Finish it.
                self.drain(&mut lines)?;
                if !self.partial.is_empty() {
                    lines.push(std::mem::take(&mut self.partial));
                }
                if let Some((old, old_id)) = self.file.take() {
                    self.read_skipped_rotations(&old, old_id, &mut lines)?;
                }
                if self.open_new() {
                    self.drain(&mut lines)?;
                }
            }
            Ok(m) if m.len() < self.pos => {
                // Truncated in place (copytruncate).
                self.pos = 0;
                self.partial.clear();
                self.drain(&mut lines)?;
            }
            // Same file, or the path is gone for now: keep the old one.
            _ => {}
        }
        Ok(lines)
    }

    /// The file we had open is now `path.k`; if `k > 1`, the files `.k-1`
    /// … `.1` were written and rotated between two polls: read them whole,
    /// oldest first (plain or `.gz`). The old file is recognised by its inode
    /// while plain, and once compressed by its length and last bytes. If it
    /// is not found at all (deleted), nothing can be told apart and those
    /// lines are not shown.
    fn read_skipped_rotations(
        &self,
        old: &File,
        old_id: (u64, u64),
        lines: &mut Vec<Vec<u8>>,
    ) -> io::Result<()> {
        let old_tail = {
            let len = self.pos;
            let n = len.min(4096);
            let mut buf = vec![0u8; n as usize];
            old.read_exact_at(&mut buf, len - n)?;
            buf
        };
        let mut k = None;
        for i in 1..=MAX_ROTATED {
            match fs::metadata(rotated_path(&self.path, i, false)) {
                Ok(m) if (m.dev(), m.ino()) == old_id => {
                    k = Some(i);
                    break;
                }
                Ok(_) => {}
                Err(_) => match read_gz(&rotated_path(&self.path, i, true))? {
                    Some(b) if b.len() as u64 == self.pos && b.ends_with(&old_tail) => {
                        k = Some(i);
                        break;
                    }
                    Some(_) => {}
                    None => break,
                },
            }
        }
        for i in (1..k.unwrap_or(1)).rev() {
            let bytes = match fs::read(rotated_path(&self.path, i, false)) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match read_gz(&rotated_path(&self.path, i, true))? {
                        Some(b) => b,
                        None => continue,
                    }
                }
                Err(e) => return Err(e),
            };
            let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            if !bytes.is_empty() {
                lines.extend(body.split(|b| *b == b'\n').map(<[u8]>::to_vec));
            }
        }
        Ok(())
    }

    fn open_new(&mut self) -> bool {
        let Ok(f) = File::open(&self.path) else {
            return false;
        };
        let Ok(m) = f.metadata() else {
            return false;
        };
        self.file = Some((f, (m.dev(), m.ino())));
        self.pos = 0;
        true
    }

    /// Read the open file from `pos` to its end, splitting complete lines.
    fn drain(&mut self, lines: &mut Vec<Vec<u8>>) -> io::Result<()> {
        let Some((file, _)) = &self.file else {
            return Ok(());
        };
        let mut block = vec![0u8; BLOCK];
        loop {
            let n = match file.read_at(&mut block, self.pos) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(());
            }
            self.pos += n as u64;
            let mut rest = &block[..n];
            while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
                self.partial.extend_from_slice(&rest[..nl]);
                lines.push(std::mem::take(&mut self.partial));
                rest = &rest[nl + 1..];
            }
            self.partial.extend_from_slice(rest);
        }
    }
}

/// The decompressed content of a `.gz` file, `None` when it does not exist.
fn read_gz(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(f) => {
            let mut b = Vec::new();
            flate2::read::GzDecoder::new(f).read_to_end(&mut b)?;
            Ok(Some(b))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Merge per-source lines (each oldest first) into one list of
/// `(source index, line)`. Lines are ordered by timestamp; a line without
/// one sorts with the line before it in its source. Order within a source is
/// always kept; ties go to the earlier source.
fn merge(per_source: Vec<Vec<Vec<u8>>>) -> Vec<(usize, Vec<u8>)> {
    let mut queues: Vec<std::iter::Peekable<std::vec::IntoIter<Vec<u8>>>> = per_source
        .into_iter()
        .map(|v| v.into_iter().peekable())
        .collect();
    let mut last_time: Vec<Option<SystemTime>> = vec![None; queues.len()];
    let mut out = Vec::new();
    loop {
        let mut best: Option<(usize, Option<SystemTime>)> = None;
        for (i, q) in queues.iter_mut().enumerate() {
            let Some(line) = q.peek() else { continue };
            let key = parse_prefix(line).map(|(t, _)| t).or(last_time[i]);
            if best.map_or(true, |(_, k)| key < k) {
                best = Some((i, key));
            }
        }
        let Some((i, key)) = best else { break };
        last_time[i] = key;
        out.push((i, queues[i].next().expect("peeked")));
    }
    out
}

/// ANSI colour for a name, from a hash so a name keeps its colour.
fn color_of(name: &str) -> u8 {
    const COLORS: [u8; 6] = [32, 33, 34, 35, 36, 31];
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    COLORS[(hash % COLORS.len() as u64) as usize]
}

/// Formats lines for output.
struct Printer {
    labels: Vec<String>,
    width: usize,
    opts: LogsOptions,
}

impl Printer {
    fn new(sources: &[LogSource], opts: &LogsOptions) -> Printer {
        let labels: Vec<String> = sources.iter().map(LogSource::label).collect();
        let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        Printer {
            labels,
            width,
            opts: opts.clone(),
        }
    }

    fn render(&self, out: &mut Vec<u8>, src: &LogSource, idx: usize, line: &[u8]) {
        if self.opts.json {
            let (time, text) = match parse_prefix(line) {
                Some((t, rest)) => (Some(t), rest),
                None => (None, line),
            };
            let time = time.map(|t| String::from_utf8_lossy(&format_rfc3339(t)).into_owned());
            let obj = serde_json::json!({
                "program": src.program,
                "stream": src.stream,
                "time": time,
                "line": String::from_utf8_lossy(text),
            });
            out.extend_from_slice(obj.to_string().as_bytes());
            out.push(b'\n');
            return;
        }
        if self.opts.prefix {
            let label = &self.labels[idx];
            let pad = " ".repeat(self.width - label.chars().count());
            if self.opts.color {
                let c = color_of(&src.program);
                out.extend_from_slice(format!("\x1b[{c}m{label}{pad}\x1b[0m | ").as_bytes());
            } else {
                out.extend_from_slice(format!("{label}{pad} | ").as_bytes());
            }
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
}

/// Write to stdout; `Ok(false)` when stdout is closed (stop quietly).
fn emit(stdout: &mut impl Write, buf: &[u8]) -> Result<bool, LogsError> {
    match stdout.write_all(buf).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(LogsError::Stdout(e)),
    }
}

/// Everything `ward logs` prints: the last lines of `sources`, merged by
/// time, then (with `follow`) new lines as they arrive, until interrupted
/// or stdout closes.
pub fn run_logs(opts: &LogsOptions, sources: Vec<LogSource>) -> Result<(), LogsError> {
    run_logs_to(opts, sources, &mut io::stdout().lock(), || {
        std::thread::sleep(FOLLOW_INTERVAL);
        true
    })
}

/// [`run_logs`] writing to `stdout`, calling `wait` between follow polls;
/// following stops when `wait` returns false.
fn run_logs_to(
    opts: &LogsOptions,
    sources: Vec<LogSource>,
    stdout: &mut impl Write,
    mut wait: impl FnMut() -> bool,
) -> Result<(), LogsError> {
    let filter = Filter::new(opts, SystemTime::now());
    let printer = Printer::new(&sources, opts);
    let mut per_source = Vec::new();
    let mut followers = Vec::new();
    for src in &sources {
        let (lines, position) = tail_source(&src.path, opts.lines, &filter)?;
        per_source.push(lines);
        followers.push(Follower::at(src.path.clone(), position));
    }
    let merged = merge(per_source);
    let skip = merged.len().saturating_sub(opts.lines);
    let mut buf = Vec::new();
    for (idx, line) in &merged[skip..] {
        printer.render(&mut buf, &sources[*idx], *idx, line);
    }
    if !emit(stdout, &buf)? || !opts.follow {
        return Ok(());
    }
    while wait() {
        buf.clear();
        for (idx, f) in followers.iter_mut().enumerate() {
            let lines = f.poll().map_err(|e| LogsError::Read {
                path: f.path().to_path_buf(),
                source: e,
            })?;
            for line in lines.iter().filter(|l| filter.keeps(l)) {
                printer.render(&mut buf, &sources[idx], idx, line);
            }
        }
        if !buf.is_empty() && !emit(stdout, &buf)? {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::rotate::{RotatingFile, RotationPolicy};

    fn lines_of(v: &[Vec<u8>]) -> Vec<String> {
        v.iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    #[test]
    fn tail_of_empty_and_absent_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(tail_lines(&dir.path().join("absent.log"), 10)
            .unwrap()
            .is_empty());
        let empty = dir.path().join("empty.log");
        fs::write(&empty, b"").unwrap();
        assert!(tail_lines(&empty, 10).unwrap().is_empty());
    }

    #[test]
    fn tail_edge_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        for (content, n, want) in [
            ("a\nb\nc\n", 2, vec!["b", "c"]),
            ("a\nb\nc", 2, vec!["b", "c"]),
            ("a\nb\nc\n", 10, vec!["a", "b", "c"]),
            ("\n", 5, vec![""]),
            ("a\n\nb\n", 5, vec!["a", "", "b"]),
            ("a\nb\n", 0, vec![]),
        ] {
            fs::write(&p, content).unwrap();
            assert_eq!(
                lines_of(&tail_lines(&p, n).unwrap()),
                want,
                "{content:?} n={n}"
            );
        }
    }

    #[test]
    fn tail_reads_big_files_backwards_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.log");
        let mut content = String::new();
        for i in 0..100_000 {
            content.push_str(&format!("line number {i:06}\n"));
        }
        fs::write(&p, &content).unwrap();
        let got = lines_of(&tail_lines(&p, 10_000).unwrap());
        let want: Vec<String> = (90_000..100_000)
            .map(|i| format!("line number {i:06}"))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn tail_continues_into_rotated_files() {
        for compress in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("app.log");
            let pol = RotationPolicy {
                max_size: 100,
                keep: 50,
                compress,
                max_age: None,
            };
            let mut f = RotatingFile::open(p.clone(), pol);
            for i in 0..200 {
                f.write_lines(format!("line {i}\n").as_bytes());
            }
            f.wait_background();
            for n in [1, 5, 30, 150] {
                let got = lines_of(&tail_lines(&p, n).unwrap());
                let want: Vec<String> = (200 - n..200).map(|i| format!("line {i}")).collect();
                assert_eq!(got, want, "n={n} compress={compress}");
            }
        }
    }

    #[test]
    fn follower_crosses_rotations_without_loss_or_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app.log");
        let pol = RotationPolicy {
            max_size: 64,
            keep: 3,
            compress: false,
            max_age: None,
        };
        let mut f = RotatingFile::open(p.clone(), pol);
        f.write_lines(b"before follow\n");
        let mut follower = Follower::new(p.clone());
        let mut seen = Vec::new();
        let mut next = 0;
        while next < 300 {
            // Several rotations between polls (keep=3 is enough: the follower
            // holds the old file open).
            for _ in 0..(next % 7 + 1) {
                f.write_lines(format!("line {next}\n").as_bytes());
                next += 1;
            }
            seen.extend(lines_of(&follower.poll().unwrap()));
        }
        seen.extend(lines_of(&follower.poll().unwrap()));
        let want: Vec<String> = (0..next).map(|i| format!("line {i}")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn follower_reads_files_rotated_between_two_polls() {
        for compress in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("app.log");
            let pol = RotationPolicy {
                max_size: 64,
                keep: 20,
                compress,
                max_age: None,
            };
            let mut f = RotatingFile::open(p.clone(), pol);
            let mut follower = Follower::new(p.clone());
            let mut seen = Vec::new();
            let mut next = 0;
            for burst in [1, 30, 2, 50, 7, 0, 40] {
                for _ in 0..burst {
                    f.write_lines(format!("line {next}\n").as_bytes());
                    next += 1;
                }
                f.wait_background();
                seen.extend(lines_of(&follower.poll().unwrap()));
            }
            let want: Vec<String> = (0..next).map(|i| format!("line {i}")).collect();
            assert_eq!(seen, want, "compress={compress}");
        }
    }

    #[test]
    fn follower_joins_partial_lines_and_waits_for_absent_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("later.log");
        let mut follower = Follower::new(p.clone());
        assert!(follower.poll().unwrap().is_empty());
        fs::write(&p, b"one\ntw").unwrap();
        assert_eq!(lines_of(&follower.poll().unwrap()), vec!["one"]);
        let mut file = fs::OpenOptions::new().append(true).open(&p).unwrap();
        file.write_all(b"o\nthree\n").unwrap();
        assert_eq!(lines_of(&follower.poll().unwrap()), vec!["two", "three"]);
        // Truncation in place starts over.
        fs::write(&p, b"x\n").unwrap();
        assert_eq!(lines_of(&follower.poll().unwrap()), vec!["x"]);
    }

    fn ts_line(secs: u64, text: &str) -> String {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        format!("{} {text}", String::from_utf8_lossy(&format_rfc3339(t)))
    }

    #[test]
    fn merge_orders_by_time_and_keeps_source_order() {
        let a = vec![
            ts_line(10, "a1").into_bytes(),
            b"a1 cont".to_vec(),
            ts_line(30, "a2").into_bytes(),
        ];
        let b = vec![
            ts_line(20, "b1").into_bytes(),
            ts_line(30, "b2").into_bytes(),
        ];
        let merged: Vec<(usize, String)> = merge(vec![a, b])
            .into_iter()
            .map(|(i, l)| (i, String::from_utf8(l).unwrap()))
            .collect();
        let texts: Vec<String> = merged
            .iter()
            .map(|(_, l)| l.rsplit(' ').next().unwrap().to_string())
            .collect();
        assert_eq!(texts, vec!["a1", "cont", "b1", "a2", "b2"]);
    }

    #[test]
    fn run_logs_prints_prefixed_json_filtered_and_follows() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("web.out.log");
        let err = dir.path().join("web.err.log");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        fs::write(
            &out,
            format!(
                "{}\n{}\n",
                ts_line(now - 7200, "old out"),
                ts_line(now - 10, "new out")
            ),
        )
        .unwrap();
        fs::write(
            &err,
            format!("{}\nplain err\n", ts_line(now - 5, "new err")),
        )
        .unwrap();
        let sources = LogSource::from_paths(
            "web",
            &LogPaths {
                stdout: out.clone(),
                stderr: Some(err.clone()),
            },
        );

        let run = |opts: &LogsOptions| {
            let mut buf = Vec::new();
            run_logs_to(opts, sources.clone(), &mut buf, || false).unwrap();
            String::from_utf8(buf).unwrap()
        };

        let text = run(&LogsOptions {
            prefix: true,
            since: Some(Duration::from_secs(3600)),
            ..Default::default()
        });
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), 3, "{text}");
        assert!(
            got[0].starts_with("web      | ") && got[0].ends_with("new out"),
            "{text}"
        );
        assert!(
            got[1].starts_with("web[err] | ") && got[1].ends_with("new err"),
            "{text}"
        );
        assert_eq!(got[2], "web[err] | plain err");

        let json = run(&LogsOptions {
            json: true,
            grep: Some("err".into()),
            lines: 1,
            ..Default::default()
        });
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["program"], "web");
        assert_eq!(v["stream"], "err");
        assert_eq!(v["time"], serde_json::Value::Null);
        assert_eq!(v["line"], "plain err");

        // Follow: lines appended after the tail arrive once.
        let mut buf = Vec::new();
        let mut polls = 0;
        let opts = LogsOptions {
            follow: true,
            lines: 0,
            ..Default::default()
        };
        run_logs_to(&opts, sources.clone(), &mut buf, || {
            polls += 1;
            if polls == 1 {
                let mut f = fs::OpenOptions::new().append(true).open(&out).unwrap();
                f.write_all(b"followed\n").unwrap();
            }
            polls < 3
        })
        .unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "followed\n");
    }

    #[test]
    fn closed_stdout_ends_quietly() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        fs::write(&p, b"x\n").unwrap();
        let src = vec![LogSource {
            program: "a".into(),
            stream: Stream::Out,
            path: p,
        }];
        let opts = LogsOptions {
            follow: true,
            ..Default::default()
        };
        run_logs_to(&opts, src, &mut Closed, || {
            panic!("must stop before following")
        })
        .unwrap();
    }

    #[test]
    fn color_is_stable_per_name() {
        assert_eq!(color_of("web"), color_of("web"));
        let distinct: std::collections::HashSet<u8> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .map(|n| color_of(n))
            .collect();
        assert!(distinct.len() > 1);
    }
}
