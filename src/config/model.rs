//! The validated, typed configuration: what the rest of ward consumes.
//!
//! Everything here is already checked: names are unique and well formed,
//! durations parsed, users resolved, dependencies acyclic. Nothing in this
//! file reads files or the environment; `config::load` builds these values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

/// A whole `supervisor.toml`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Absolute path of the file this came from.
    pub path: PathBuf,
    pub supervisor: SupervisorSettings,
    /// Programs in file order (not yet expanded into instances).
    pub programs: Vec<Program>,
    /// The `[store]` table: the SQL status tables.
    pub store: StoreSettings,
    /// `[[external]]` workers, in file order: ward does not run them; they
    /// report through the `heartbeats` table of the status database.
    pub externals: Vec<External>,
}

/// One `[[external]]` entry: a worker on another machine, or not started by
/// ward, that upserts its heartbeat row into the `heartbeats` table.
#[derive(Debug, Clone, PartialEq)]
pub struct External {
    /// Unique among programs and externals.
    pub name: String,
    pub description: Option<String>,
    /// `interval` is always set; `on_hung` is `Alert` or `None` (ward
    /// cannot restart what it does not run).
    pub heartbeat: HeartbeatPolicy,
}

/// The `[store]` table: how ward writes its status tables.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// Write the status tables at all.
    pub enabled: bool,
    /// `worker_events` rows older than this are deleted.
    pub events_retention: Duration,
    /// How often CPU %, RSS, uptime and `supervisors.last_seen_at` are refreshed.
    pub refresh: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            enabled: defaults::STORE_ENABLED,
            events_retention: defaults::STORE_EVENTS_RETENTION,
            refresh: defaults::STORE_REFRESH,
        }
    }
}

/// The `[supervisor]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorSettings {
    /// Where the socket, logs, pid records and the embedded database live.
    pub state_dir: PathBuf,
    /// Control socket path (default `<state_dir>/ward.sock`).
    pub socket: PathBuf,
    /// Group allowed to use the socket besides its owner (mode becomes 0660).
    pub socket_group: Option<Group>,
    /// This machine's name in status output and tables.
    pub host: String,
    /// Rotation policy for ward's own log, `<state_dir>/ward.log`.
    pub log: LogPolicy,
    /// Database URL for the status tables: `sqlite://...` (default
    /// `sqlite://<state_dir>/ward.db`) or `postgres://...`. Relative SQLite
    /// paths are already resolved against the config file's directory.
    pub database: String,
    /// An environment variable whose value, when set and not empty, is used
    /// instead of `database` (keeps passwords out of the file). Read when the
    /// database is opened, not at load time.
    pub database_url_env: Option<String>,
    /// Reload by itself when the config file changes on disk.
    pub watch_config: bool,
    /// Loopback address of the heartbeat HTTP endpoint; off when `None`.
    pub http: Option<std::net::SocketAddr>,
}

/// One `[[program]]` table with `[defaults]` applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub name: String,
    pub command: CommandSpec,
    /// Working directory; `None` means the config file's directory.
    pub cwd: Option<PathBuf>,
    /// Environment added to ward's own: `env_file` entries, then `env` on top.
    pub env: BTreeMap<String, String>,
    pub user: Option<User>,
    pub group: Option<Group>,
    pub autostart: bool,
    /// Number of copies; 1 means a single instance named `name`.
    pub instances: u32,
    pub depends_on: Vec<String>,
    pub restart: RestartPolicy,
    /// Exit codes that count as success (default `[0]`).
    pub exit_codes: Vec<i32>,
    /// A run that ends before this is a failed start.
    pub min_uptime: Duration,
    pub backoff: BackoffPolicy,
    /// A run that lasts this long resets the backoff and the failure count.
    pub stable_after: Duration,
    /// Consecutive short runs before `fatal`; 0 = never give up.
    pub max_restarts: u32,
    /// Leave `fatal` by itself after this long.
    pub fatal_retry: Option<Duration>,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub log: LogPolicy,
    /// Paths (relative to `cwd`) or globs whose change restarts the program.
    pub watch: Vec<String>,
    /// Paths or globs whose changes are ignored (on top of `.git`,
    /// `node_modules` and ward's state dir).
    pub watch_ignore: Vec<String>,
    /// Quiet time after a change before the restart.
    pub watch_delay: Duration,
    /// What makes the program ready (running, and `depends_on` satisfied).
    pub ready: ReadyMode,
    /// Not ready within this long: a failed start.
    pub ready_timeout: Duration,
    pub heartbeat: HeartbeatPolicy,
}

/// When a started program counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// As soon as it is spawned.
    Started,
    /// Once it has stayed up for `min_uptime` (the default).
    Uptime,
    /// When it sends `READY=1` on its `NOTIFY_SOCKET` (systemd's protocol).
    Notify,
    /// At its first heartbeat, from any source.
    Heartbeat,
    /// When it calls `process.send('ready')` on its IPC channel (PM2 style).
    Ipc,
}

/// What to do when a program's heartbeats stop for `hung_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHung {
    /// Stop it with `watchdog_signal` (then SIGKILL) and let the restart policy act.
    Restart,
    /// Record and show it; do nothing to the process.
    Alert,
    None,
}

/// `[program.heartbeat]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatPolicy {
    /// Expected time between beats; `None` = no liveness deadlines.
    pub interval: Option<Duration>,
    /// No beat for this long: `stale` (a warning). Zero without an interval.
    pub stale_after: Duration,
    /// No beat for this long: `hung`, and `on_hung` acts.
    pub hung_after: Duration,
    pub on_hung: OnHung,
    pub watchdog_signal: Signal,
    /// How often a finished run must be reported (`period` or `schedule`);
    /// `None` = runs are not expected.
    pub cadence: Option<Cadence>,
    /// Slack after each expected run before the instance is `late`, and the
    /// longest a reported run may take.
    pub grace: Duration,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        HeartbeatPolicy {
            interval: None,
            stale_after: Duration::ZERO,
            hung_after: Duration::ZERO,
            on_hung: defaults::ON_HUNG,
            watchdog_signal: defaults::WATCHDOG_SIGNAL,
            cadence: None,
            grace: defaults::GRACE,
        }
    }
}

/// When runs of a job are expected (`heartbeat.period` / `heartbeat.schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// At most this long between two runs.
    Period(Duration),
    /// At the times of a cron schedule, read in a zone (`heartbeat.tz`).
    Schedule(crate::cron::Cron, crate::cron::Zone),
}

/// How to run a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// A string, run by `/bin/sh -c`.
    Shell(String),
    /// An argv array, run directly (argv\[0\] looked up in `PATH`).
    Argv(Vec<String>),
}

impl CommandSpec {
    /// The argv ward executes.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandSpec::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            CommandSpec::Argv(v) => v.clone(),
        }
    }

    /// A one-line rendering for status output.
    pub fn display(&self) -> String {
        match self {
            CommandSpec::Shell(s) => s.clone(),
            CommandSpec::Argv(v) => v.join(" "),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// Exponential, capped, jittered backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// Fraction in `[0, 1]`: each delay is scaled by a random factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
}

/// A resolved system user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// The user's primary group.
    pub gid: u32,
    pub home: PathBuf,
}

/// A resolved system group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

/// Where a program's stderr goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StderrTarget {
    /// Its own file; `None` means the default `<state_dir>/logs/<instance>.err.log`.
    File(Option<PathBuf>),
    /// Merged into the stdout file (`stderr = "stdout"`).
    Stdout,
}

/// The `[program.log]` / `[defaults.log]` / `[supervisor.log]` tables.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPolicy {
    /// `None` means the default `<state_dir>/logs/<instance>.out.log`.
    pub stdout: Option<PathBuf>,
    pub stderr: StderrTarget,
    /// Rotate when a file would grow past this many bytes.
    pub max_size: u64,
    /// Rotated files kept.
    pub keep: u32,
    pub compress: bool,
    pub timestamps: bool,
    pub max_age: Option<Duration>,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            stdout: None,
            stderr: StderrTarget::File(None),
            max_size: defaults::LOG_MAX_SIZE,
            keep: defaults::LOG_KEEP,
            compress: false,
            timestamps: false,
            max_age: None,
        }
    }
}

/// The log files of one instance, with defaults resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPaths {
    pub stdout: PathBuf,
    /// `None` when stderr is merged into stdout.
    pub stderr: Option<PathBuf>,
}

impl LogPolicy {
    /// Resolve the file paths for `instance` (e.g. `web:1`), given the state dir.
    ///
    /// Explicit paths of a multi-instance program get `.<index>` inserted before
    /// their extension so instances never share a file.
    pub fn paths(&self, state_dir: &Path, instance: &str, index: Option<u32>) -> LogPaths {
        let file_stem = instance.replace(':', "-");
        let logs = state_dir.join("logs");
        let per_instance = |p: &PathBuf| match index {
            None => p.clone(),
            Some(i) => {
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let name = match p.extension() {
                    Some(ext) => format!("{stem}.{i}.{}", ext.to_string_lossy()),
                    None => format!("{stem}.{i}"),
                };
                p.with_file_name(name)
            }
        };
        let stdout = match &self.stdout {
            Some(p) => per_instance(p),
            None => logs.join(format!("{file_stem}.out.log")),
        };
        let stderr = match &self.stderr {
            StderrTarget::Stdout => None,
            StderrTarget::File(Some(p)) => Some(per_instance(p)),
            StderrTarget::File(None) => Some(logs.join(format!("{file_stem}.err.log"))),
        };
        LogPaths { stdout, stderr }
    }
}

/// One running copy of a program: `name` or `name:i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `name` when the program has one instance, else `name:i`.
    pub id: String,
    /// `Some(i)` for multi-instance programs.
    pub index: Option<u32>,
    pub program: std::sync::Arc<Program>,
}

impl Config {
    /// Every instance of every program, in file order.
    pub fn instances(&self) -> Vec<Instance> {
        let mut out = Vec::new();
        for p in &self.programs {
            let program = std::sync::Arc::new(p.clone());
            if p.instances <= 1 {
                out.push(Instance {
                    id: p.name.clone(),
                    index: None,
                    program,
                });
            } else {
                for i in 0..p.instances {
                    out.push(Instance {
                        id: format!("{}:{i}", p.name),
                        index: Some(i),
                        program: program.clone(),
                    });
                }
            }
        }
        out
    }

    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    pub fn external(&self, name: &str) -> Option<&External> {
        self.externals.iter().find(|e| e.name == name)
    }
}

/// Default values, in one place so docs and tests can check them.
pub mod defaults {
    use std::time::Duration;

    use super::RestartPolicy;
    use nix::sys::signal::Signal;

    pub const AUTOSTART: bool = true;
    pub const INSTANCES: u32 = 1;
    pub const EXIT_CODES: &[i32] = &[0];
    pub const MIN_UPTIME: Duration = Duration::from_secs(1);
    pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
    pub const BACKOFF_MULTIPLIER: f64 = 2.0;
    pub const BACKOFF_JITTER: f64 = 0.2;
    pub const STABLE_AFTER: Duration = Duration::from_secs(30);
    pub const MAX_RESTARTS: u32 = 10;
    pub const RESTART: RestartPolicy = RestartPolicy::OnFailure;
    pub const STOP_SIGNAL: Signal = Signal::SIGTERM;
    pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
    pub const LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
    pub const LOG_KEEP: u32 = 5;
    /// The SQLite file under the state dir when `database` is not set.
    pub const DATABASE_FILE: &str = "ward.db";
    pub const STORE_ENABLED: bool = true;
    pub const STORE_EVENTS_RETENTION: Duration = Duration::from_secs(30 * 86_400);
    pub const STORE_REFRESH: Duration = Duration::from_secs(10);
    pub const WATCH_DELAY: Duration = Duration::from_millis(500);
    pub const READY: super::ReadyMode = super::ReadyMode::Uptime;
    pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
    /// `stale_after` = this × `heartbeat.interval` unless set.
    pub const STALE_FACTOR: u32 = 3;
    /// `hung_after` = this × `heartbeat.interval` unless set.
    pub const HUNG_FACTOR: u32 = 10;
    pub const ON_HUNG: super::OnHung = super::OnHung::Restart;
    /// `on_hung` of an `[[external]]`: ward cannot restart it.
    pub const EXTERNAL_ON_HUNG: super::OnHung = super::OnHung::Alert;
    pub const WATCHDOG_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGABRT;
    /// `heartbeat.grace`: healthchecks.io's default.
    pub const GRACE: Duration = Duration::from_secs(3600);
    /// `heartbeat.tz`: schedules read in the server's zone, as cron does.
    pub const TZ: crate::cron::Zone = crate::cron::Zone::Local;
    /// State dir when ward runs as root.
    pub const ROOT_STATE_DIR: &str = "/var/lib/ward";
    /// Config search path after `-c` and `WARD_CONFIG`.
    pub const CONFIG_SEARCH: &[&str] = &["supervisor.toml", "/etc/ward/supervisor.toml"];
}
