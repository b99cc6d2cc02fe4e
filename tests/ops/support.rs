//! Helpers for the ops tests: run the real `ward` binary with a deadline,
//! keep a foreground daemon that is stopped (then killed) on drop, and wait
//! on conditions instead of sleeping.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The generous deadline for anything that should take well under a second.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn ward_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ward")
}

/// `ward ARGS…` with a clean, predictable environment (no WARD_CONFIG).
pub fn ward(args: &[&str], cwd: &Path) -> Command {
    let mut c = Command::new(ward_bin());
    c.args(args)
        .current_dir(cwd)
        .env_remove("WARD_CONFIG")
        .env_remove("WARD_SOCKET")
        .env_remove("NOTIFY_SOCKET");
    c
}

/// What a finished command printed.
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
        writeln!(f, "$ {}\nexit: {}", self.cmd, self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        writeln!(f, "--- stderr ---\n{}", self.stderr)
    }
}

/// Run to completion (killed after 60 s), capturing both streams.
pub fn run(mut cmd: Command) -> Output {
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
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{desc} did not finish within 60s; killed it");
        }
        std::thread::sleep(Duration::from_millis(5)); // poll interval of the deadline loop
    };
    Output {
        cmd: desc,
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Poll `f` until it returns `Some`, or panic with `what` after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {DEADLINE:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10)); // poll interval of the deadline loop
    }
}

/// A foreground `ward up`; SIGTERMed, then SIGKILLed, on drop.
pub struct Daemon {
    pub child: Child,
}

impl Daemon {
    pub fn spawn(mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Daemon {
            child: cmd.spawn().expect("spawn ward up"),
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Wait for the exit (deadline), returning the status and stderr.
    pub fn wait(&mut self) -> (ExitStatus, String) {
        let status = wait_for("ward to exit", || self.child.try_wait().expect("try_wait"));
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10)); // poll interval of the deadline loop
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
