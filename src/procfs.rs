//! Facts about live processes read from `/proc`: start time, CPU time, RSS.
//!
//! Read-only: never signals or waits on anything.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::time::{Duration, Instant};

/// The fields of `/proc/<pid>/stat` that ward uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Process state letter (`R`, `S`, `Z`, ...).
    pub state: char,
    pub pgrp: i32,
    /// user + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks: with the pid, identifies a process.
    pub start_ticks: u64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Parse `/proc/<pid>/stat`; `None` when the process does not exist.
pub fn stat(pid: i32) -> Option<ProcStat> {
    read_stat(&open_stat(pid).ok()??).ok()?
}

/// `Ok(None)` when there is no such process.
fn open_stat(pid: i32) -> io::Result<Option<fs::File>> {
    match fs::File::open(format!("/proc/{pid}/stat")) {
        Ok(f) => Ok(Some(f)),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One read at offset 0 of an open `/proc/<pid>/stat`: the kernel writes the
/// line afresh on each read from the start, so an open file can be re-read.
/// Once the process is gone (reaped), the read fails, even if its pid has
/// been reused: the file stays bound to the process it was opened for.
/// `Ok(None)` when the process is gone.
fn read_stat(f: &fs::File) -> io::Result<Option<ProcStat>> {
    use std::os::unix::fs::FileExt;
    // The line is at most ~700 bytes (52 numeric fields and a 16-byte name).
    let mut buf = [0u8; 2048];
    match f.read_at(&mut buf, 0) {
        Ok(n) => Ok(std::str::from_utf8(&buf[..n]).ok().and_then(parse_stat)),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

/// A process's stat and its CPU use since the previous sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub stat: ProcStat,
    pub cpu_percent: f64,
}

/// CPU % and RSS of the processes ward started, sampled again and again
/// (`ward status`, the status tables' refresh). Each process's stat file
/// stays open between samples: re-reading an open file costs about half of
/// an open, read and close (the path lookup and the permission check are
/// the other half), which matters with 1,000 programs sampled every 10 s.
/// At most `cap` files are kept open (an eighth of the descriptor limit, and
/// none under a limit of 4,096, where the programs' pipes need them all);
/// beyond it, processes are read by path each time.
pub struct Sampler {
    procs: HashMap<i32, Entry>,
    cap: usize,
    ticks: f64,
    pass: u64,
}

struct Entry {
    file: Option<fs::File>,
    start_ticks: u64,
    cpu_ticks: u64,
    at: Instant,
    pass: u64,
}

/// A CPU % needs two samples at least this far apart; a closer pair
/// reports the average since the process started.
const MIN_CPU_WINDOW: Duration = Duration::from_millis(200);

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Sampler {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        Sampler {
            procs: HashMap::new(),
            cap: if soft < 4096 {
                0
            } else {
                usize::try_from(soft / 8).unwrap_or(usize::MAX)
            },
            ticks: ticks_per_second() as f64,
            pass: 0,
        }
    }

    /// Start a pass over every process: [`Sampler::end_pass`] forgets the
    /// ones the pass did not sample.
    pub fn begin_pass(&mut self) {
        self.pass += 1;
    }

    /// Forget (and close) what the current pass did not sample.
    pub fn end_pass(&mut self) {
        let pass = self.pass;
        self.procs.retain(|_, p| p.pass == pass);
    }

    /// Sample `pid` if it is still the live process that started at
    /// `start_ticks` (`Ok(None)` when it is not); `ran_ms` is how long it
    /// has run, for a first sample. An error says `/proc` could not be read
    /// (out of descriptors, say): nothing is known of the process then.
    pub fn sample(
        &mut self,
        pid: i32,
        start_ticks: u64,
        ran_ms: u64,
    ) -> io::Result<Option<Sample>> {
        let now = Instant::now();
        let keep_open = self.procs.len() < self.cap;
        let ticks = self.ticks;
        let pass = self.pass;
        // Only an entry for this very process (same start) is ours to use.
        let prev = self
            .procs
            .get_mut(&pid)
            .filter(|e| e.start_ticks == start_ticks);
        let (stat, opened) = match prev.as_ref().and_then(|e| e.file.as_ref()) {
            Some(f) => (read_stat(f)?, None),
            None => match open_stat(pid)? {
                Some(f) => (read_stat(&f)?, Some(f)),
                None => (None, None),
            },
        };
        let Some(stat) = stat.filter(|s| s.start_ticks == start_ticks && s.state != 'Z') else {
            self.procs.remove(&pid);
            return Ok(None);
        };
        let since_start = || {
            if ran_ms == 0 {
                0.0
            } else {
                (stat.cpu_ticks as f64 / ticks) / (ran_ms as f64 / 1000.0) * 100.0
            }
        };
        let cpu_percent = match prev {
            Some(e) => {
                let waited = now.duration_since(e.at);
                let cpu = if waited >= MIN_CPU_WINDOW {
                    let used = stat.cpu_ticks.saturating_sub(e.cpu_ticks) as f64 / ticks;
                    // A pair closer than the window keeps the older sample as its base.
                    e.cpu_ticks = stat.cpu_ticks;
                    e.at = now;
                    used / waited.as_secs_f64() * 100.0
                } else {
                    since_start()
                };
                if e.file.is_none() && keep_open {
                    e.file = opened;
                }
                e.pass = pass;
                cpu
            }
            None => {
                // First sample, or the pid was reused: start afresh.
                self.procs.insert(
                    pid,
                    Entry {
                        file: opened.filter(|_| keep_open),
                        start_ticks,
                        cpu_ticks: stat.cpu_ticks,
                        at: now,
                        pass,
                    },
                );
                since_start()
            }
        };
        Ok(Some(Sample { stat, cpu_percent }))
    }

    /// How many stat files are open.
    pub fn open_files(&self) -> usize {
        self.procs.values().filter(|p| p.file.is_some()).count()
    }
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    // One pass, no allocation: this runs for every process on every sample.
    // Field 3 (state) is the first after the name; field N is at N - 3.
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    let mut num = |skip: usize| f.nth(skip).and_then(|s| s.parse::<u64>().ok());
    let pgrp = num(1)?; // field 5
    let utime = num(8)?; // field 14
    let stime = num(0)?; // field 15
    let start_ticks = num(6)?; // field 22
    let rss_pages = num(1)?; // field 24
    Some(ProcStat {
        state,
        pgrp: i32::try_from(pgrp).ok()?,
        cpu_ticks: utime + stime,
        start_ticks,
        rss_bytes: rss_pages * page_size(),
    })
}

/// Whether `pid` is alive and is still the process that started at `start_ticks`.
pub fn is_same_process(pid: i32, start_ticks: u64) -> bool {
    matches!(stat(pid), Some(s) if s.start_ticks == start_ticks && s.state != 'Z')
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Pids of every live process whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(stat(pid), Some(s) if s.pgrp == pgid && s.state != 'Z'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5555 1000000 25 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.pgrp, 1234);
        assert_eq!(s.cpu_ticks, 10);
        assert_eq!(s.start_ticks, 5555);
        assert_eq!(s.rss_bytes, 25 * page_size());
    }

    #[test]
    fn sampler_rereads_a_kept_file_and_notices_the_end() {
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = stat(pid).unwrap().start_ticks;
        let mut s = Sampler::new();
        s.cap = 16;
        s.begin_pass();
        let first = s.sample(pid, start, 0).unwrap().unwrap();
        assert_eq!(first.stat.start_ticks, start);
        assert_eq!(first.cpu_percent, 0.0);
        assert_eq!(s.open_files(), 1);
        // A second sample reads the kept file again.
        assert!(s.sample(pid, start, 10).unwrap().is_some());
        assert_eq!(s.open_files(), 1);
        // Another start time: not the process ward started.
        assert!(s.sample(pid, start + 1, 10).unwrap().is_none());
        assert!(s.sample(pid, start, 10).unwrap().is_some());
        child.kill().unwrap();
        child.wait().unwrap();
        // Reaped: the kept file says so, whatever now has the pid.
        assert!(s.sample(pid, start, 10).unwrap().is_none());
        assert_eq!(s.open_files(), 0);
    }

    #[test]
    fn sampler_forgets_what_a_pass_did_not_see_and_respects_its_cap() {
        let me = std::process::id() as i32;
        let start = stat(me).unwrap().start_ticks;
        let mut s = Sampler::new();
        s.cap = 0;
        s.begin_pass();
        assert!(s.sample(me, start, 1000).unwrap().is_some());
        assert_eq!(s.open_files(), 0, "cap 0: read by path each time");
        s.end_pass();
        assert_eq!(s.procs.len(), 1);
        s.begin_pass();
        s.end_pass();
        assert!(s.procs.is_empty());
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert!(is_same_process(me, s.start_ticks));
        assert!(!is_same_process(me, s.start_ticks + 1));
        assert!(s.rss_bytes > 0);
    }
}
