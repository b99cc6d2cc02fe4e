//! `TestEnv`: one temp dir, one config, one daemon per test, driven through
//! the real `ward` binary.
//!
//! Everything waits on conditions with deadlines (never fixed sleeps), and
//! every failure prints what is needed to debug it: the commands run, the
//! daemon's stderr, `ward status`, ward's own log and the state dir listing.
//! Dropping a `TestEnv` stops the daemon and SIGKILLs every process it
//! started, even when the test panicked.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The generous deadline for anything that should take well under a second.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Any single CLI invocation must finish within this.
const CMD_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(15);
/// Set in the environment of every process a test starts, so that `Drop`
/// can find and kill whatever is left (the daemon passes its environment on).
const TAG_VAR: &str = "WARD_IT_TAG";

pub fn ward_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ward")
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmd)?;
        writeln!(f, "exit: {}", self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        writeln!(f, "--- stderr ---\n{}", self.stderr)
    }
}

/// Run `cmd` to completion, killing it after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let st = child.wait().expect("wait");
            let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
            let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
            panic!(
                "{desc} did not finish within {timeout:?}; killed it\n{}",
                Output {
                    cmd: desc.clone(),
                    status: st,
                    stdout,
                    stderr
                }
            );
        }
        std::thread::sleep(Duration::from_millis(5)); // poll interval of the deadline loop
    };
    Output {
        cmd: desc,
        status,
        stdout: String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned(),
    }
}

pub struct TestEnv {
    dir: Option<tempfile::TempDir>,
    pub root: PathBuf,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    tag: String,
    daemon: RefCell<Option<Child>>,
    ups: RefCell<u32>,
    /// Every command run, for the failure dump.
    commands: RefCell<Vec<String>>,
    /// Process groups seen in status output: pgid -> start ticks of the leader.
    pgids: RefCell<BTreeMap<i32, u64>>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        // Under /tmp explicitly: the socket path must stay short.
        let dir = tempfile::Builder::new()
            .prefix("ward-it.")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        let state_dir = root.join("state");
        let tag = format!("{}", root.display());
        TestEnv {
            config_path: root.join("supervisor.toml"),
            state_dir,
            root,
            dir: Some(dir),
            tag,
            daemon: RefCell::new(None),
            ups: RefCell::new(0),
            commands: RefCell::new(Vec::new()),
            pgids: RefCell::new(BTreeMap::new()),
        }
    }

    /// A new env whose config has `[supervisor] state_dir` and then `programs`.
    pub fn with_config(programs: &str) -> TestEnv {
        let env = TestEnv::new();
        env.config(programs);
        env
    }

    /// The header every config starts with.
    pub fn header(&self) -> String {
        format!(
            "[supervisor]\nstate_dir = \"{}\"\n\n",
            self.state_dir.display()
        )
    }

    /// Write `supervisor.toml`: the header, then `programs`.
    pub fn config(&self, programs: &str) {
        self.write_config(&format!("{}{}", self.header(), programs));
    }

    /// Write `supervisor.toml` exactly as given.
    pub fn write_config(&self, text: &str) {
        fs::write(&self.config_path, text).expect("write config");
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("ward.sock")
    }

    pub fn log_path(&self, file: &str) -> PathBuf {
        self.state_dir.join("logs").join(file)
    }

    /// A `Command` for the `ward` binary with `-c FILE` and a clean environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ward_bin());
        cmd.arg("-c")
            .arg(&self.config_path)
            .args(args)
            .current_dir(&self.root);
        cmd.env_remove("WARD_SOCKET")
            .env_remove("WARD_CONFIG")
            .env_remove("WARD_LOG")
            .env(TAG_VAR, &self.tag);
        cmd
    }

    /// Run `ward -c FILE ARGS...` to completion.
    pub fn ward(&self, args: &[&str]) -> Output {
        self.run(self.command(args))
    }

    /// Run a command to completion, remembering it for the failure dump.
    pub fn run(&self, cmd: Command) -> Output {
        let out = run(cmd, CMD_TIMEOUT);
        let mut cmds = self.commands.borrow_mut();
        cmds.push(format!("{} -> {}", out.cmd, out.status));
        if cmds.len() > 40 {
            cmds.remove(0);
        }
        out
    }

    /// Run `ward ARGS...` and fail the test unless it exits 0.
    pub fn ward_ok(&self, args: &[&str]) -> Output {
        let out = self.ward(args);
        if !out.status.success() {
            self.fail(&format!(
                "expected success from `ward {}`\n{out}",
                args.join(" ")
            ));
        }
        out
    }

    /// Start `ward up -c FILE` in the foreground and wait until it answers.
    pub fn up(&self) {
        self.up_env(&[]);
    }

    /// [`TestEnv::up`] with extra environment variables for the daemon.
    pub fn up_env(&self, env: &[(&str, &str)]) {
        self.up_with(|cmd| {
            cmd.envs(env.iter().copied());
        });
    }

    /// [`TestEnv::up`] with the daemon's command adjusted by `adjust`.
    pub fn up_with(&self, adjust: impl FnOnce(&mut Command)) {
        let n = {
            let mut ups = self.ups.borrow_mut();
            *ups += 1;
            *ups
        };
        let stdout =
            File::create(self.root.join(format!("daemon-{n}.stdout"))).expect("daemon stdout");
        let stderr =
            File::create(self.root.join(format!("daemon-{n}.stderr"))).expect("daemon stderr");
        let mut cmd = self.command(&["up"]);
        adjust(&mut cmd);
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        self.commands
            .borrow_mut()
            .push(format!("{cmd:?} (daemon #{n})"));
        let child = cmd.spawn().expect("spawn ward up");
        let previous = self.daemon.borrow_mut().replace(child);
        assert!(
            previous.is_none(),
            "up() while a daemon child is still recorded; call wait_daemon_exit first"
        );
        self.wait_until(
            "the daemon answers `ward status`",
            Duration::from_secs(10),
            || {
                if let Some(st) = self.daemon_try_wait() {
                    self.fail(&format!("`ward up` exited during startup ({st})"));
                }
                self.ward(&["status"]).status.success()
            },
        );
    }

    /// The pid of the foreground daemon this env started.
    pub fn daemon_pid(&self) -> i32 {
        self.daemon
            .borrow()
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("no daemon started")
    }

    /// Whether the daemon child has exited; reaps it if so (and forgets it).
    fn daemon_try_wait(&self) -> Option<ExitStatus> {
        let mut d = self.daemon.borrow_mut();
        let st = d.as_mut()?.try_wait().expect("try_wait")?;
        *d = None;
        Some(st)
    }

    /// Wait for the foreground daemon to exit and return how it ended.
    pub fn wait_daemon_exit(&self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if self.daemon.borrow().is_none() {
                self.fail("wait_daemon_exit: no daemon running");
            }
            if let Some(st) = self.daemon_try_wait() {
                return st;
            }
            if Instant::now() >= end {
                self.fail(&format!("the daemon did not exit within {deadline:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Send a signal to the foreground daemon.
    pub fn signal_daemon(&self, sig: i32) {
        let pid = self.daemon_pid();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, sig) };
    }

    /// `ward status --json`, parsed.
    pub fn status_json(&self) -> Value {
        self.status_of(&[])
    }

    fn status_of(&self, names: &[&str]) -> Value {
        let mut args = vec!["status", "--json"];
        args.extend_from_slice(names);
        let out = self.ward(&args);
        if !out.status.success() {
            self.fail(&format!("`ward status --json` failed\n{out}"));
        }
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| self.fail(&format!("bad JSON from status: {e}\n{out}")));
        self.record_pids(&v);
        v
    }

    /// One instance's status (with its history), by instance name.
    pub fn prog(&self, name: &str) -> Value {
        let v = self.status_of(&[name]);
        v["programs"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| self.fail(&format!("no instance `{name}` in status: {v}")))
    }

    pub fn state(&self, name: &str) -> String {
        self.prog(name)["state"].as_str().unwrap_or("?").to_string()
    }

    /// Wait until `name` is in `state`; returns its status then.
    pub fn wait_state(&self, name: &str, state: &str) -> Value {
        let mut last = Value::Null;
        self.wait_until(&format!("`{name}` is {state}"), DEADLINE, || {
            last = self.prog(name);
            last["state"] == state
        });
        last
    }

    /// The pid of a running instance (waits until it runs).
    pub fn running_pid(&self, name: &str) -> i32 {
        let p = self.wait_state(name, "running");
        p["pid"]
            .as_i64()
            .unwrap_or_else(|| self.fail(&format!("running without a pid: {p}"))) as i32
    }

    fn record_pids(&self, status: &Value) {
        for p in status["programs"].as_array().into_iter().flatten() {
            if let Some(pid) = p["pid"].as_i64() {
                let pid = pid as i32;
                if let Some(st) = proc_stat(pid) {
                    self.pgids.borrow_mut().entry(pid).or_insert(st.start_ticks);
                }
            }
        }
    }

    /// Send one raw line to the control socket and read one reply line.
    pub fn raw_request(&self, line: &str) -> String {
        let mut s = UnixStream::connect(self.socket())
            .unwrap_or_else(|e| self.fail(&format!("connect: {e}")));
        s.set_read_timeout(Some(CMD_TIMEOUT)).expect("timeout");
        s.write_all(line.as_bytes()).expect("write request");
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = s.read(&mut byte) {
            if byte[0] == b'\n' {
                break;
            }
            buf.push(byte[0]);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Poll `cond` every few ms until it holds; fail with a full dump after `deadline`.
    pub fn wait_until(&self, desc: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if cond() {
                return;
            }
            if start.elapsed() >= deadline {
                self.fail(&format!(
                    "timed out after {deadline:?} waiting until {desc}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Fail the test unless `cond`, with the full dump.
    #[track_caller]
    pub fn check(&self, cond: bool, what: impl fmt::Display) {
        if !cond {
            self.fail(&format!("check failed: {what}"));
        }
    }

    /// Panic with everything needed to debug: commands, daemon stderr,
    /// `ward status`, ward.log and the state dir.
    #[track_caller]
    pub fn fail(&self, why: &str) -> ! {
        panic!("{why}\n{}", self.dump())
    }

    pub fn dump(&self) -> String {
        let mut s = String::new();
        s.push_str("\n======== ward test dump ========\n");
        s.push_str(&format!("dir: {}\n", self.root.display()));
        s.push_str("--- commands (latest last) ---\n");
        for c in self.commands.borrow().iter() {
            s.push_str(&format!("{c}\n"));
        }
        s.push_str(&format!("--- config {} ---\n", self.config_path.display()));
        s.push_str(&fs::read_to_string(&self.config_path).unwrap_or_else(|e| format!("<{e}>\n")));
        let ups = *self.ups.borrow();
        for n in 1..=ups {
            s.push_str(&format!("--- daemon #{n} stderr ---\n"));
            s.push_str(&tail(&self.root.join(format!("daemon-{n}.stderr")), 60));
        }
        s.push_str("--- ward status ---\n");
        if self.socket().exists() {
            let out = run(self.command(&["status"]), Duration::from_secs(5));
            s.push_str(&format!("{out}"));
        } else {
            s.push_str("<no socket>\n");
        }
        s.push_str("--- ward.log (tail) ---\n");
        s.push_str(&tail(&self.state_dir.join("ward.log"), 60));
        s.push_str(&format!("--- listing of {} ---\n", self.root.display()));
        list_dir(&self.root, &self.root, &mut s);
        s.push_str("================================\n");
        s
    }

    /// Kill every process still carrying this env's tag, and every process
    /// group recorded by this env or by the daemon.
    fn kill_leftovers(&self) {
        let mut groups: BTreeMap<i32, u64> = self.pgids.borrow().clone();
        // The daemon's journal: `+ pgid start label` / `- pgid` lines.
        if let Ok(text) = fs::read_to_string(self.state_dir.join("pids.journal")) {
            for line in text.lines() {
                let f: Vec<&str> = line.split(' ').collect();
                if let ["+", pgid, ticks, ..] = f.as_slice() {
                    if let (Ok(pgid), Ok(ticks)) = (pgid.parse::<i32>(), ticks.parse::<u64>()) {
                        groups.entry(pgid).or_insert(ticks);
                    }
                }
            }
        }
        for (pgid, ticks) in groups {
            let ours = match proc_stat(pgid) {
                Some(st) => st.start_ticks == ticks,
                // A pgid is not reused while its group has members.
                None => !group_members(pgid).is_empty(),
            };
            if ours && pgid > 1 {
                // SAFETY: plain killpg(2).
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
        }
        let me = std::process::id() as i32;
        for pid in tagged_processes(&self.tag) {
            if pid != me {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv::new()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if self.daemon.borrow().is_some() || self.socket().exists() {
            // Best effort: a daemon that answers stops its programs in order.
            if self.socket().exists() {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(self.command(&["down"]), Duration::from_secs(20))
                }));
            }
            if let Some(mut child) = self.daemon.borrow_mut().take() {
                let end = Instant::now() + Duration::from_secs(20);
                let mut termed = false;
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) => {}
                    }
                    if Instant::now() >= end {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    if !termed && Instant::now() + Duration::from_secs(10) >= end {
                        // SAFETY: plain kill(2) on our own child.
                        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                        termed = true;
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
        self.kill_leftovers();
        if panicking || std::env::var_os("WARD_IT_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("ward test dir kept: {}", kept.display());
            }
        }
    }
}

/// A long-running `ward` command (such as `ward logs -f`) whose stdout is
/// read line by line by a thread. Killed and reaped on drop.
pub struct Streaming {
    child: Child,
    lines: std::sync::mpsc::Receiver<Vec<u8>>,
    pub cmd: String,
}

impl Streaming {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line (without its `\n`), or `None` after `timeout` or at EOF.
    pub fn next_line(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Collect lines until `done(line)` holds for one of them (included), or
    /// until `deadline` passes; returns the lines and whether `done` was met.
    pub fn lines_until(
        &self,
        deadline: Duration,
        mut done: impl FnMut(&[u8]) -> bool,
    ) -> (Vec<Vec<u8>>, bool) {
        let end = Instant::now() + deadline;
        let mut got = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (got, false);
            }
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let finished = done(&line);
                    got.push(line);
                    if finished {
                        return (got, true);
                    }
                }
                Err(_) => return (got, false),
            }
        }
    }

    /// Kill the command and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestEnv {
    /// Start `ward ARGS...` with stdout piped into [`Streaming`]; stderr goes
    /// to a file in the test dir.
    pub fn spawn_streaming(&self, args: &[&str]) -> Streaming {
        let mut cmd = self.command(args);
        let n = self.commands.borrow().len();
        let err = File::create(self.root.join(format!("streaming-{n}.stderr"))).expect("stderr");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let desc = format!("{cmd:?} (streaming)");
        self.commands.borrow_mut().push(desc.clone());
        let mut child = cmd.spawn().expect("spawn streaming ward");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            loop {
                let mut line = Vec::new();
                match out.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Streaming {
            child,
            lines: rx,
            cmd: desc,
        }
    }
}

/// The fields of `/proc/<pid>/stat` the tests use.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub utime: u64,
    pub stime: u64,
    pub start_ticks: u64,
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// Alive and not a zombie (PID 1 in a container may never reap orphans).
pub fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z')
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (non-zombie) members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|s| s.pgrp == pgid && s.state != 'Z'))
        .collect()
}

fn tagged_processes(tag: &str) -> Vec<i32> {
    processes_with_env(&format!("{TAG_VAR}={tag}"))
}

/// Live (non-zombie) processes whose environment holds exactly `key=value`.
pub fn processes_with_env(key_value: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| {
            alive(p)
                && fs::read(format!("/proc/{p}/environ"))
                    .map(|env| env.split(|b| *b == 0).any(|kv| kv == key_value.as_bytes()))
                    .unwrap_or(false)
        })
        .collect()
}

/// Zombie processes whose parent is `ppid` (exited, not yet reaped by it).
pub fn zombie_children(ppid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| proc_stat(p).is_some_and(|s| s.state == 'Z' && s.ppid == ppid))
        .collect()
}

/// CPU time (utime + stime) of `pid` in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|s| s.utime + s.stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf with a constant argument.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Resident set size of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Number of open file descriptors of `pid`.
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether `pid` has `path` open (some `/proc/<pid>/fd/*` links to it).
pub fn has_open(pid: i32, path: &Path) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
        d.flatten()
            .any(|e| fs::read_link(e.path()).is_ok_and(|l| l == path))
    })
}

/// The kept files of a rotated log, oldest first: `.N` … `.1`, then the
/// current file (those that exist; a gap in the numbers is skipped).
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let name = path
        .file_name()
        .expect("log path has a file name")
        .to_string_lossy()
        .into_owned();
    let mut numbered: Vec<(u32, PathBuf)> = fs::read_dir(path.parent().expect("parent"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e
                        .file_name()
                        .to_str()?
                        .strip_prefix(&name)?
                        .strip_prefix('.')?
                        .parse()
                        .ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    numbered.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// The contents of [`rotated_files`], concatenated.
pub fn read_rotated(path: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for f in rotated_files(path) {
        all.extend(fs::read(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display())));
    }
    all
}

/// A tmpfs mounted on a fresh directory, unmounted (lazily, so it never
/// fails on a busy mount) and removed on drop, even when the test panicked.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `mount -t tmpfs -o size=SIZE tmpfs DIR`; an error when not permitted.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::Builder::new()
            .prefix("ward-tmpfs.")
            .tempdir_in("/tmp")
            .map_err(|e| format!("temp dir: {e}"))?;
        let target = CString::new(dir.path().as_os_str().as_bytes()).expect("no NUL");
        let opts = CString::new(format!("size={size},mode=0755")).expect("no NUL");
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "mount tmpfs on {}: {}",
                dir.path().display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Tmpfs {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let target = CString::new(self.path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: umount2(2) on the path we mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let mut s = all[all.len().saturating_sub(lines)..].join("\n");
            s.push('\n');
            s
        }
        Err(e) => format!("<{}: {e}>\n", path.display()),
    }
}

fn list_dir(base: &Path, dir: &Path, out: &mut String) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(base).unwrap_or(&path);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                out.push_str(&format!("{:o}  {}/\n", m.mode() & 0o7777, rel.display()));
                list_dir(base, &path, out);
            }
            Ok(m) => out.push_str(&format!(
                "{:o}  {}  ({} bytes)\n",
                m.mode() & 0o7777,
                rel.display(),
                m.len()
            )),
            Err(err) => out.push_str(&format!("?  {}  <{err}>\n", rel.display())),
        }
    }
}

/// Line number (1-based) of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in:\n{text}"))
        + 1
}
