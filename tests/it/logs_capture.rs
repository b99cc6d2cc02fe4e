//! Log capture end to end (docs/LOGS.md): numbered lines across dozens of
//! rotations, line framing (partial, long, binary, merged streams), a full
//! disk, a stalled disk, `ward logs -f` across rotations, and SIGUSR1
//! reopening.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{has_open, read_rotated, rotated_files, TestEnv, Tmpfs, DEADLINE};

/// Deadline for work proportional to the 2,000,000 lines (a debug daemon).
const BIG_DEADLINE: Duration = Duration::from_secs(120);
const COUNT: u64 = 2_000_000;

/// Check that `data` is exactly the lines `1..=last` in order (each line
/// optionally starting with a timestamp prefix, checked and stripped).
fn check_numbered(data: &[u8], last: u64, timestamps: bool) -> Result<(), String> {
    let mut expect = 1u64;
    let mut prev_ts: &[u8] = b"";
    let body = data
        .strip_suffix(b"\n")
        .ok_or_else(|| "the log does not end with a newline".to_string())?;
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let mut line = line;
        if timestamps {
            // `2026-11-28T22:39:52.123Z ` (RFC 3339, milliseconds, UTC).
            let ok = line.len() > 25
                && line[4] == b'-'
                && line[10] == b'T'
                && line[19] == b'.'
                && line[23] == b'Z'
                && line[24] == b' ';
            if !ok {
                return Err(format!(
                    "line {} has no timestamp prefix: {:?}",
                    i + 1,
                    String::from_utf8_lossy(line)
                ));
            }
            let ts = &line[..24];
            if ts < prev_ts {
                return Err(format!("line {}: time goes backwards", i + 1));
            }
            prev_ts = ts;
            line = &line[25..];
        }
        let n = std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        if n != Some(expect) {
            return Err(format!(
                "line {} is {:?}, expected {expect}",
                i + 1,
                String::from_utf8_lossy(line)
            ));
        }
        expect += 1;
    }
    if expect != last + 1 {
        return Err(format!("the log ends at {}, expected {last}", expect - 1));
    }
    Ok(())
}

/// The last complete line of a file, without its `\n`.
fn last_line(path: &std::path::Path) -> Vec<u8> {
    let data = fs::read(path).unwrap_or_default();
    let body = data.strip_suffix(b"\n").unwrap_or(&[]);
    body.rsplit(|b| *b == b'\n')
        .next()
        .unwrap_or_default()
        .to_vec()
}

fn numbered_lines_survive_dozens_of_rotations(timestamps: bool, max_size: &str) {
    let env = TestEnv::with_config(&format!(
        r#"
[[program]]
name = "counter"
command = "seq 1 {COUNT}"
min_uptime = "0s"
restart = "never"
log = {{ max_size = "{max_size}", keep = 1000, timestamps = {timestamps} }}
"#
    ));
    let log = env.log_path("counter.out.log");
    let t0 = Instant::now();
    env.up();
    let want_end = format!("{COUNT}");
    env.wait_until("the last number reached the log", BIG_DEADLINE, || {
        last_line(&log).ends_with(want_end.as_bytes())
    });
    let took = t0.elapsed();
    let p = env.wait_state("counter", "exited");
    let files = rotated_files(&log);
    eprintln!(
        "{COUNT} lines (timestamps = {timestamps}) captured in {took:?} into {} files",
        files.len()
    );
    env.check(
        files.len() > 24,
        format!("expected dozens of rotations, got {} files", files.len()),
    );
    env.check(
        !log.with_file_name("counter.out.log.1000").exists(),
        "keep = 1000 was reached: the test would lose files",
    );
    let all = read_rotated(&log);
    if let Err(e) = check_numbered(&all, COUNT, timestamps) {
        env.fail(&format!("oldest-to-newest concatenation is wrong: {e}"));
    }
    env.check(
        p["log"]["bytes_dropped"] == 0 && p["log"]["bytes_written"] == all.len() as u64,
        format!("log stats ({} bytes in the files): {p}", all.len()),
    );
}

#[test]
fn two_million_numbered_lines_survive_dozens_of_rotations() {
    numbered_lines_survive_dozens_of_rotations(false, "256KiB");
}

#[test]
fn two_million_timestamped_lines_survive_dozens_of_rotations() {
    numbered_lines_survive_dozens_of_rotations(true, "1MiB");
}

const FRAMING_SCRIPT: &str = r#"
export LC_ALL=C
wait_for() { until grep -qxF -- "$1" "$LOG" 2>/dev/null; do sleep 0.01; done; }
long() { head -c "$1" /dev/zero | tr '\0' "$2"; }
printf 'par'; sleep 0.05; printf 'tial '; sleep 0.05; printf 'line\n'
wait_for 'partial line'
printf 'hold'
sleep 0.05
printf 'err one\n' >&2
wait_for 'err one'
printf 'ing\n'
wait_for 'holding'
long 65535 a; printf '\n'
long 65536 b; printf '\n'
long 150000 c; printf '\n'
printf '\377\376\000\r\200 bin\n'
printf 'after-bin\n'
wait_for 'after-bin'
printf 'err \377 two\n' >&2
wait_for "$(printf 'err \377 two')"
printf 'no newline at eof'
"#;

#[test]
fn partial_long_binary_and_merged_lines_are_written_as_documented() {
    let env = TestEnv::new();
    fs::write(env.root.join("framing.sh"), FRAMING_SCRIPT).unwrap();
    let log = env.log_path("framing.out.log");
    env.config(&format!(
        r#"
[[program]]
name = "framing"
command = ["sh", "framing.sh"]
min_uptime = "0s"
restart = "never"
env = {{ LOG = "{}" }}
log = {{ stderr = "stdout" }}
"#,
        log.display()
    ));
    env.up();
    env.wait_state("framing", "exited");
    env.wait_until("the last line reached the file", DEADLINE, || {
        fs::read(&log).is_ok_and(|d| d.ends_with(b"no newline at eof\n"))
    });
    let marker = b" [ward: line continues]\n";
    let mut want = b"partial line\nerr one\nholding\n".to_vec();
    want.extend(vec![b'a'; 65535]);
    want.push(b'\n');
    // Exactly 64 KiB: cut, and the line goes on (empty) on the next line.
    want.extend(vec![b'b'; 65536]);
    want.extend_from_slice(marker);
    want.push(b'\n');
    for _ in 0..2 {
        want.extend(vec![b'c'; 65536]);
        want.extend_from_slice(marker);
    }
    want.extend(vec![b'c'; 150_000 - 2 * 65536]);
    want.push(b'\n');
    want.extend_from_slice(b"\xff\xfe\x00\r\x80 bin\nafter-bin\nerr \xff two\nno newline at eof\n");
    let got = fs::read(&log).unwrap();
    if got != want {
        let at = got.iter().zip(&want).position(|(a, b)| a != b);
        let at = at.unwrap_or(got.len().min(want.len()));
        let show = |d: &[u8]| {
            String::from_utf8_lossy(&d[at.saturating_sub(40)..(at + 40).min(d.len())]).into_owned()
        };
        env.fail(&format!(
            "file differs from docs/LOGS.md at byte {at} (got {} bytes, want {})\ngot:  {:?}\nwant: {:?}",
            got.len(),
            want.len(),
            show(&got),
            show(&want)
        ));
    }
    env.check(
        !env.log_path("framing.err.log").exists(),
        "merged stderr must not have its own file",
    );
}

/// Where a full-disk test puts its log, and how it frees the space again.
enum FullDisk {
    /// A small tmpfs holding the log and a filler file.
    Tmpfs {
        fs: Tmpfs,
        filler: std::path::PathBuf,
    },
    /// Fallback without mount permission: the log path is a symlink to /dev/full.
    DevFull,
}

#[test]
fn a_full_disk_drops_and_counts_lines_without_blocking_the_child() {
    // Declared before the env, so it is unmounted after the daemon is down.
    // WARD_IT_NO_TMPFS=1 exercises the fallback on a machine that could mount.
    let mounted = match std::env::var_os("WARD_IT_NO_TMPFS") {
        Some(_) => Err("WARD_IT_NO_TMPFS is set".to_string()),
        None => Tmpfs::mount("512k"),
    };
    let disk = match mounted {
        Ok(fs) => {
            let filler = fs.path.join("filler");
            FullDisk::Tmpfs { fs, filler }
        }
        Err(e) => {
            eprintln!("cannot mount a tmpfs ({e}); using the /dev/full symlink fallback");
            FullDisk::DevFull
        }
    };
    let env = TestEnv::new();
    let log = match &disk {
        FullDisk::Tmpfs { fs, .. } => fs.path.join("disk.out.log"),
        FullDisk::DevFull => {
            let dir = env.root.join("full");
            fs::create_dir_all(&dir).unwrap();
            let log = dir.join("disk.out.log");
            std::os::unix::fs::symlink("/dev/full", &log).unwrap();
            log
        }
    };
    eprintln!("full-disk log path: {}", log.display());
    let heartbeat = env.root.join("heartbeat");
    env.config(&format!(
        r#"
[[program]]
name = "disk"
command = 'i=0; while :; do i=$((i+1)); echo "line $i 0123456789012345678901234567890123456789012345678901234567890123456789"; echo $i >> "{}"; sleep 0.01; done'
min_uptime = "100ms"
log = {{ stdout = "{}", stderr = "stdout" }}
"#,
        heartbeat.display(),
        log.display()
    ));
    env.up();
    let pid = env.running_pid("disk");
    let beats = || {
        fs::read_to_string(&heartbeat)
            .ok()
            .and_then(|t| t.lines().last().and_then(|l| l.parse::<u64>().ok()))
            .unwrap_or(0)
    };
    let dropped = |p: &Value| p["log"]["bytes_dropped"].as_u64().unwrap_or(0);

    let mut before_full = 0;
    if let FullDisk::Tmpfs { filler, .. } = &disk {
        env.wait_until("the first lines are in the log", DEADLINE, || {
            fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 5)
        });
        fill(filler);
        before_full = max_number(&fs::read(&log).unwrap());
    }
    let mut p = Value::Null;
    env.wait_until("ward counts dropped bytes", DEADLINE, || {
        p = env.prog("disk");
        dropped(&p) > 0
    });
    let err = p["log"]["last_error"].as_str().unwrap_or("").to_string();
    env.check(
        err.contains("disk.out.log"),
        format!("last_error names the file: {p}"),
    );
    if matches!(disk, FullDisk::Tmpfs { .. }) {
        env.check(
            err.contains("No space left on device"),
            format!("last_error says why: {p}"),
        );
    }
    // The child is not blocked: its heartbeat (outside the full disk) keeps
    // growing, and ward keeps dropping (the disk is still full) and answering.
    let (beats0, dropped0) = (beats(), dropped(&p));
    env.wait_until(
        "the heartbeat grows by 30 more writes while the disk is full",
        DEADLINE,
        || {
            p = env.prog("disk");
            beats() >= beats0 + 30 && dropped(&p) > dropped0
        },
    );
    env.check(
        p["state"] == "running" && p["pid"] == pid,
        format!("the child was restarted or stopped while the disk was full: {p}"),
    );
    let full_at = match &disk {
        FullDisk::Tmpfs { filler, .. } => {
            let n = max_number(&fs::read(&log).unwrap());
            fs::remove_file(filler).unwrap();
            n
        }
        FullDisk::DevFull => {
            fs::remove_file(&log).unwrap();
            0
        }
    };
    env.check(
        full_at >= before_full,
        format!("numbers went backwards: {before_full} then {full_at}"),
    );
    env.wait_until("new lines appear after space was freed", DEADLINE, || {
        max_number(&fs::read(&log).unwrap_or_default()) > full_at + 10
    });
    // What was written after the resume is whole, numbered lines in order.
    let text = fs::read(&log).unwrap();
    let resumed: Vec<u64> = text
        .split(|b| *b == b'\n')
        .filter_map(number_of)
        .filter(|n| *n > full_at)
        .collect();
    env.check(
        resumed.windows(2).all(|w| w[1] == w[0] + 1),
        format!("lines after the resume are not consecutive: {resumed:?}"),
    );
    env.check(
        env.prog("disk")["pid"] == pid,
        "the child was restarted after space was freed",
    );
    // One warning per episode in ward.log, and one line when it resumed.
    let own = fs::read_to_string(env.state_dir.join("ward.log")).unwrap_or_default();
    let count = |what: &str| {
        own.lines()
            .filter(|l| l.contains(what) && l.contains("disk.out.log"))
            .count()
    };
    env.check(
        count("log write failed") == 1 && count("log writing resumed") == 1,
        format!("ward.log should say once that writing failed and once that it resumed:\n{own}"),
    );
}

/// Fill the file system of `path` by writing it until ENOSPC.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Also the last partial page.
    let _ = f.write_all(&[0u8; 1]);
}

/// The number of a whole `line N 0123…` line.
fn number_of(line: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(line).ok()?;
    let rest = s.strip_prefix("line ")?;
    let (n, pad) = rest.split_once(' ')?;
    (pad == "0123456789012345678901234567890123456789012345678901234567890123456789")
        .then(|| n.parse().ok())
        .flatten()
}

fn max_number(text: &[u8]) -> u64 {
    text.split(|b| *b == b'\n')
        .filter_map(number_of)
        .max()
        .unwrap_or(0)
}

/// A FIFO standing in for a stalled disk: ward's writes to it block once
/// 64 KiB are unread. Its read end is opened at once (so no open waits for
/// it) and read only after [`StalledDisk::release`], by a thread, until the
/// value is dropped.
struct StalledDisk {
    reader: Option<fs::File>,
    got: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    drainer: Option<std::thread::JoinHandle<()>>,
}

impl StalledDisk {
    fn create(path: &std::path::Path) -> StalledDisk {
        use std::os::unix::fs::OpenOptionsExt;
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
        let reader = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap_or_else(|e| panic!("open {} for reading: {e}", path.display()));
        StalledDisk {
            reader: Some(reader),
            got: Arc::default(),
            stop: Arc::default(),
            drainer: None,
        }
    }

    /// The disk works again: read everything written to the FIFO.
    fn release(&mut self) {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let mut reader = self.reader.take().expect("released once");
        let (got, stop) = (self.got.clone(), self.stop.clone());
        self.drainer = Some(std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let stopping = stop.load(Ordering::SeqCst);
                match reader.read(&mut buf) {
                    Ok(n) if n > 0 => got.lock().unwrap().extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    _ if stopping => break,
                    // No writer has it open (ward is gone), so poll(2) would
                    // not wait: poll the FIFO every 10 ms until `stop` is set.
                    Ok(_) => std::thread::sleep(Duration::from_millis(10)), // poll interval until stop
                    Err(_) => {
                        let mut fd = libc::pollfd {
                            fd: reader.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: poll on one valid descriptor.
                        unsafe { libc::poll(&mut fd, 1, 50) };
                    }
                }
            }
        }));
    }

    /// What was read from the FIFO so far.
    fn read(&self) -> Vec<u8> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for StalledDisk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.drainer.take() {
            let _ = t.join();
        }
    }
}

const FLOOD_LINE: &str = "flood 0123456789012345678901234567890123456789";
const FLOOD_LINES: u64 = 600_000;

#[test]
fn a_stalled_disk_is_buffered_then_dropped_and_reported_while_ward_keeps_supervising() {
    let env = TestEnv::new();
    let dir = env.root.join("stalled");
    fs::create_dir_all(&dir).unwrap();
    let log = dir.join("flood.out.log");
    // Dropped before the env: the daemon's exit does not wait for it (its
    // last flush has a deadline), and after the release nothing is left.
    let mut disk = StalledDisk::create(&log);
    env.config(&format!(
        r#"
[[program]]
name = "flood"
command = 'yes "{FLOOD_LINE}" | head -n {FLOOD_LINES}; echo > flooded; until [ -e go ]; do sleep 0.01; done; echo after-the-stall; exec sleep 1000'
min_uptime = "0s"
restart = "never"
log = {{ stdout = "{}", max_size = "1GiB" }}

[[program]]
name = "crasher"
command = "sleep 0.1; exit 1"
min_uptime = "0s"
backoff = {{ initial = "50ms", max = "50ms", jitter = 0.0 }}
max_restarts = 0
"#,
        log.display()
    ));
    env.up();
    // 28 MB through a log that takes 64 KiB: the program is paced for at
    // most a second, then its output is dropped and it runs on.
    env.wait_until(
        "the flood ends although its log is stalled",
        DEADLINE,
        || env.root.join("flooded").exists(),
    );
    let mut p = Value::Null;
    env.wait_until("ward counts the dropped bytes", DEADLINE, || {
        p = env.prog("flood");
        p["log"]["bytes_dropped"].as_u64() > Some(10_000_000)
    });
    let err = p["log"]["last_error"].as_str().unwrap_or("");
    env.check(
        err.starts_with("log writer is 8 MiB behind writing `")
            && err.contains("flood.out.log")
            && err.contains("(slow or stalled disk?); dropped "),
        format!("last_error says what happened and why: {p}"),
    );
    env.check(
        p["log"]["bytes_written"].as_u64() <= Some(1 << 17),
        format!("the FIFO takes 64 KiB: the disk is not stalled? {p}"),
    );

    // The writer thread is blocked in a write; the rest of ward is not.
    let restarts = |env: &TestEnv| env.prog("crasher")["restarts"].as_u64().unwrap_or(0);
    let r0 = restarts(&env);
    env.wait_until("the crashing program is restarted", DEADLINE, || {
        restarts(&env) >= r0 + 3
    });
    for _ in 0..3 {
        let t = Instant::now();
        let out = env.ward(&["status"]);
        let took = t.elapsed();
        env.check(
            out.status.success() && took < Duration::from_secs(2),
            format!("`ward status` took {took:?} while the log disk is stalled\n{out}"),
        );
    }
    let own = || fs::read_to_string(env.state_dir.join("ward.log")).unwrap_or_default();
    let count = |text: &str, what: &str| {
        text.lines()
            .filter(|l| l.contains(what) && l.contains("flood.out.log"))
            .count()
    };
    let text = own();
    env.check(
        count(&text, "log writer is behind") == 1 && count(&text, "caught up") == 0,
        format!("ward.log should warn once while the disk is stalled:\n{text}"),
    );

    // The disk works again: the backlog is written, then new output.
    disk.release();
    env.wait_until("ward.log says the writer caught up", DEADLINE, || {
        count(&own(), "log writer caught up") == 1
    });
    let dropped = env.prog("flood")["log"]["bytes_dropped"].clone();
    fs::write(env.root.join("go"), "").unwrap();
    env.wait_until("the next line reaches the log", DEADLINE, || {
        disk.read().ends_with(b"after-the-stall\n")
    });
    let got = disk.read();
    let whole = got
        .strip_suffix(b"after-the-stall\n")
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .all(|l| l == FLOOD_LINE.as_bytes());
    env.check(whole, "the log holds whole flood lines, then the last line");
    let p = env.prog("flood");
    let total = FLOOD_LINES * (FLOOD_LINE.len() as u64 + 1) + 16;
    env.check(
        p["log"]["bytes_dropped"] == dropped
            && p["log"]["bytes_written"] == got.len() as u64
            && p["log"]["bytes_dropped"].as_u64().unwrap_or(0) + got.len() as u64 == total,
        format!(
            "every byte is written or counted as dropped once ({} read from the log, {total} printed): {p}",
            got.len()
        ),
    );
    let r1 = restarts(&env);
    env.wait_until("the crashing program is still restarted", DEADLINE, || {
        restarts(&env) >= r1 + 2
    });
    drop(env);
    drop(disk);
}

const SLOW_WRITER: &str = r#"
echo ready
until [ -e go ]; do sleep 0.01; done
i=0
while [ $i -lt 600 ]; do
  i=$((i+1))
  echo "line $i ........................................................."
  sleep 0.005
done
exec sleep 1000
"#;

#[test]
fn logs_follow_crosses_rotations_without_missing_or_repeating_a_line() {
    let env = TestEnv::new();
    fs::write(env.root.join("slow.sh"), SLOW_WRITER).unwrap();
    env.config(
        r#"
[[program]]
name = "slow"
command = ["sh", "slow.sh"]
min_uptime = "0s"
log = { max_size = "4KiB", keep = 1000 }
"#,
    );
    env.up();
    let log = env.log_path("slow.out.log");
    env.wait_until("the writer is ready", DEADLINE, || {
        fs::read_to_string(&log).is_ok_and(|t| t == "ready\n")
    });
    let mut follower = env.spawn_streaming(&["logs", "slow", "-f", "-n", "0", "--out"]);
    // Once it holds the file open, it has taken its starting position.
    env.wait_until("`ward logs -f` has the log open", DEADLINE, || {
        has_open(follower.pid(), &log)
    });
    fs::write(env.root.join("go"), "").unwrap();
    let (lines, done) =
        follower.lines_until(Duration::from_secs(60), |l| l.starts_with(b"line 600 "));
    follower.kill();
    let numbers: Vec<String> = lines
        .iter()
        .map(|l| {
            let s = String::from_utf8_lossy(l);
            s.split(' ').take(2).collect::<Vec<_>>().join(" ")
        })
        .collect();
    let want: Vec<String> = (1..=600).map(|i| format!("line {i}")).collect();
    env.check(
        done && numbers == want,
        format!(
            "follower output ({} lines, last arrived: {done}) is not line 1..600 once each: {numbers:?}",
            numbers.len()
        ),
    );
    let files = rotated_files(&log).len();
    env.check(
        files > 5,
        format!("expected several rotations, got {files} files"),
    );
}

#[test]
fn logs_lines_of_an_empty_or_absent_log_print_nothing() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "quiet"
command = "exec sleep 1000"
min_uptime = "0s"
"#,
    );
    // No daemon has ever run: the files do not exist.
    let out = env.ward(&["logs", "quiet", "-n", "5"]);
    env.check(
        out.code() == Some(0) && out.stdout.is_empty(),
        format!("absent log, daemon down\n{out}"),
    );
    env.up();
    env.running_pid("quiet");
    let log = env.log_path("quiet.out.log");
    // Log files are created at the first output: a quiet program has none yet.
    env.check(
        fs::metadata(&log).map_or(true, |m| m.len() == 0),
        "the quiet program's log is absent or empty",
    );
    for n in ["5", "0"] {
        let out = env.ward(&["logs", "quiet", "-n", n]);
        env.check(
            out.code() == Some(0) && out.stdout.is_empty() && out.stderr.is_empty(),
            format!("empty log, -n {n}\n{out}"),
        );
    }
    let _ = fs::remove_file(&log);
    let _ = fs::remove_file(env.log_path("quiet.err.log"));
    let out = env.ward(&["logs", "quiet", "-n", "5"]);
    env.check(
        out.code() == Some(0) && out.stdout.is_empty() && out.stderr.is_empty(),
        format!("absent log, daemon up\n{out}"),
    );
    // An unknown name is an error even with -f (and does not hang).
    let out = env.ward(&["logs", "nobody", "-f"]);
    env.check(
        out.code() == Some(1)
            && out.stderr.contains("unknown program `nobody`")
            && out.stderr.contains("quiet"),
        format!("unknown program with -f\n{out}"),
    );
}

const TWO_PROGRAMS: &str = r#"
[[program]]
name = "alpha"
command = "echo a1; echo a2; echo aerr >&2; exec sleep 1000"
min_uptime = "0s"

[[program]]
name = "beta"
command = "echo b1; exec sleep 1000"
min_uptime = "0s"
"#;

fn wait_for_two_programs(env: &TestEnv) {
    env.wait_until("both programs wrote their lines", DEADLINE, || {
        let read = |f: &str| fs::read_to_string(env.log_path(f)).unwrap_or_default();
        read("alpha.out.log") == "a1\na2\n"
            && read("alpha.err.log") == "aerr\n"
            && read("beta.out.log") == "b1\n"
    });
}

/// `(label, line)` of each `label   | line` output line.
fn prefixed(env: &TestEnv, text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| match l.split_once(" | ") {
            Some((label, line)) => (label.trim_end().to_string(), line.to_string()),
            None => env.fail(&format!("line without a `name | ` prefix: {l:?}\n{text}")),
        })
        .collect()
}

#[test]
fn logs_without_a_name_merges_every_program_with_prefixes() {
    let env = TestEnv::with_config(TWO_PROGRAMS);
    env.up();
    wait_for_two_programs(&env);
    let out = env.ward_ok(&["logs", "-n", "100"]);
    let mut got = prefixed(&env, &out.stdout);
    let alpha_out: Vec<&str> = got
        .iter()
        .filter(|(l, _)| l == "alpha")
        .map(|(_, s)| s.as_str())
        .collect();
    env.check(alpha_out == ["a1", "a2"], format!("alpha's order\n{out}"));
    got.sort();
    let want: Vec<(String, String)> = [
        ("alpha", "a1"),
        ("alpha", "a2"),
        ("alpha[err]", "aerr"),
        ("beta", "b1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    env.check(got == want, format!("merged output\n{out}"));

    let out = env.ward_ok(&["logs", "--json", "-n", "100"]);
    let mut got: Vec<(String, String, String)> = out
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| env.fail(&format!("not JSON ({e}): {l:?}\n{out}")));
            env.check(
                v["time"].is_null(),
                format!("no timestamps, time null: {l}"),
            );
            let s = |k: &str| {
                v[k].as_str()
                    .unwrap_or_else(|| env.fail(&format!("`{k}` missing in {l}")))
                    .to_string()
            };
            (s("program"), s("stream"), s("line"))
        })
        .collect();
    got.sort();
    let want: Vec<(String, String, String)> = [
        ("alpha", "err", "aerr"),
        ("alpha", "out", "a1"),
        ("alpha", "out", "a2"),
        ("beta", "out", "b1"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    env.check(got == want, format!("--json output\n{out}"));
}

#[test]
fn logs_of_one_program_with_both_streams_prefixes_each_line() {
    let env = TestEnv::with_config(TWO_PROGRAMS);
    env.up();
    wait_for_two_programs(&env);
    let out = env.ward_ok(&["logs", "alpha", "-n", "100"]);
    let mut got = prefixed(&env, &out.stdout);
    got.sort();
    let want: Vec<(String, String)> = [("alpha", "a1"), ("alpha", "a2"), ("alpha[err]", "aerr")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    env.check(got == want, format!("one program, two files\n{out}"));
}

#[test]
fn sigusr1_reopens_a_log_renamed_away() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "ticker"
command = 'i=0; while :; do i=$((i+1)); echo "n $i"; sleep 0.01; done'
min_uptime = "0s"
"#,
    );
    env.up();
    let log = env.log_path("ticker.out.log");
    let moved = env.log_path("ticker.out.log.moved");
    let count = |p: &std::path::Path| fs::read_to_string(p).map_or(0, |t| t.lines().count());
    env.wait_until("20 lines written", DEADLINE, || count(&log) >= 20);
    // What logrotate does in `create` mode.
    fs::rename(&log, &moved).unwrap();
    let n = count(&moved);
    env.wait_until(
        "ward keeps writing the renamed file until told",
        DEADLINE,
        || count(&moved) > n + 5,
    );
    env.check(!log.exists(), "nothing recreated the path before SIGUSR1");
    env.signal_daemon(libc::SIGUSR1);
    env.wait_until("new lines go to a new file at the path", DEADLINE, || {
        count(&log) >= 5
    });
    let moved_len = fs::metadata(&moved).unwrap().len();
    let n = count(&log);
    env.wait_until("10 more lines in the new file", DEADLINE, || {
        count(&log) >= n + 10
    });
    env.check(
        fs::metadata(&moved).unwrap().len() == moved_len,
        "the renamed file still grows after the reopen",
    );
    let text = fs::read_to_string(&moved).unwrap() + &fs::read_to_string(&log).unwrap();
    let numbers: Vec<u64> = text
        .lines()
        .map(|l| {
            l.strip_prefix("n ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| env.fail(&format!("bad line {l:?}")))
        })
        .collect();
    env.check(
        numbers.iter().copied().eq(1..=numbers.len() as u64),
        format!("renamed + new file is not 1..N once each: {numbers:?}"),
    );
}
