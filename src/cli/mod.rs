//! The `ward` command line: flags, config/socket discovery, dispatch.
//!
//! Thin: each verb maps its flags onto the library and prints. Exit codes
//! are the named constants below.

mod db;
mod status;

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{self, Config, ConfigError};
use crate::control::client::{Client, ClientError};
use crate::control::protocol::{Actions, LogSources, Pong, Request, StatusReport};
use crate::daemon;

/// Exit codes of every `ward` command.
pub mod exit_codes {
    /// Everything asked for took effect.
    pub const OK: u8 = 0;
    /// An action failed (a program did not start, the daemon is not running, ...).
    pub const FAILED: u8 = 1;
    /// Bad usage or an invalid config.
    pub const USAGE: u8 = 2;
}

#[derive(Debug, Parser)]
#[command(
    name = "ward",
    version,
    about = "A process supervisor with a built-in heartbeat registry",
    propagate_version = true
)]
pub struct Cli {
    /// Config file [default: $WARD_CONFIG, ./supervisor.toml, /etc/ward/supervisor.toml]
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Control socket of the daemon to talk to [default: from the config]
    #[arg(long, global = true, env = "WARD_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Apply the schema migrations that are missing (ward up does this too)
    Migrate,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the supervisor (in the foreground unless --detach)
    Up {
        /// Start in the background and return once the daemon answers
        #[arg(short, long)]
        detach: bool,
    },
    /// Validate a config and print every problem in it
    Check,
    /// Show the state of programs
    #[command(visible_alias = "ps")]
    Status {
        /// Programs or instances (`web`, `web:1`); all when empty
        names: Vec<String>,
        /// Print the documented JSON schema instead of a table
        #[arg(long)]
        json: bool,
        /// Read the status tables (see docs/SCHEMA.md) instead of asking the daemon
        #[arg(long)]
        db: bool,
        /// With --db: every host in the database (a shared PostgreSQL), stale ones marked
        #[arg(long, requires = "db")]
        all_hosts: bool,
    },
    /// Show the history of state changes, from the status tables
    Events {
        /// A program or instance; all when absent
        name: Option<String>,
        /// Only events newer than this (e.g. 1h, 30m)
        #[arg(long, value_parser = parse_duration_arg)]
        since: Option<Duration>,
        /// At most this many (the newest)
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
        /// Events of every host in the database, not only this one
        #[arg(long)]
        all_hosts: bool,
    },
    /// Manage the status-table database
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Start programs (and what they depend on); waits until they run
    Start {
        #[arg(required = true, value_name = "NAME|all")]
        names: Vec<String>,
    },
    /// Stop programs (their whole process group); waits until they stopped
    Stop {
        #[arg(required = true, value_name = "NAME|all")]
        names: Vec<String>,
    },
    /// Stop then start programs; waits until they run again
    Restart {
        #[arg(required = true, value_name = "NAME|all")]
        names: Vec<String>,
    },
    /// Stop every program and exit the daemon
    Down,
    /// Re-read the config and apply only what changed (as SIGHUP does)
    Reload,
    /// Send a heartbeat: from inside a program (NOTIFY_SOCKET, else WARD_HEARTBEAT_URL), or for NAME
    Beat(BeatArgs),
    /// Run a job (e.g. from cron) and report it to ward: start, exit code, duration, last lines
    #[command(name = "run")]
    RunJob {
        /// The job's program, declared in the config (e.g. with `autostart = false`)
        name: String,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Show program output: the last lines, then new ones with -f
    Logs {
        /// A program or instance; all programs merged when absent
        name: Option<String>,
        /// Lines to show from the end
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Keep printing new lines as they arrive (across rotations)
        #[arg(short, long)]
        follow: bool,
        /// Only stderr
        #[arg(long, conflicts_with = "out")]
        err: bool,
        /// Only stdout
        #[arg(long)]
        out: bool,
        /// Only lines newer than this (e.g. 10m); needs `timestamps = true`
        #[arg(long, value_parser = parse_duration_arg)]
        since: Option<Duration>,
        /// Only lines containing this text
        #[arg(long)]
        grep: Option<String>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Write a commented starter supervisor.toml
    Init {
        /// Where to write it
        #[arg(short, long, value_name = "FILE", default_value = "supervisor.toml")]
        output: PathBuf,
        /// Replace an existing file
        #[arg(long)]
        force: bool,
    },
    /// Start ward at boot: write and enable a systemd unit running `ward up -c <config>`
    Startup {
        /// A unit for your user's systemd (~/.config/systemd/user) instead of the system's
        #[arg(long)]
        user: bool,
        /// Only print the unit
        #[arg(long)]
        print: bool,
    },
    /// Undo `ward startup`: disable, stop and remove the unit
    Unstartup {
        /// The user unit (as written by `ward startup --user`)
        #[arg(long)]
        user: bool,
    },
    /// Convert a PM2, supervisord, systemd or Procfile setup into a supervisor.toml
    Import {
        #[arg(value_enum)]
        from: crate::import::Source,
        /// Files to convert (several supervisord .conf or systemd units are merged)
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write here instead of stdout
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing output file
        #[arg(long)]
        force: bool,
    },
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct BeatArgs {
    /// The program (through the control socket); inside a program, omit it
    name: Option<String>,
    /// The worker is ready (READY=1)
    #[arg(long)]
    ready: bool,
    /// The worker is shutting down (STOPPING=1)
    #[arg(long)]
    stopping: bool,
    /// Free status text, e.g. idle or processing
    #[arg(long)]
    status: Option<String>,
    /// Jobs processed: N (absolute) or +N (increment)
    #[arg(long, allow_hyphen_values = true)]
    jobs: Option<String>,
    /// Errors: N (absolute) or +N (increment)
    #[arg(long, allow_hyphen_values = true)]
    errors: Option<String>,
    /// What the worker is doing now
    #[arg(long)]
    task: Option<String>,
    /// The last error, as text
    #[arg(long = "error")]
    last_error: Option<String>,
    /// The worker's circuit breaker: open or closed
    #[arg(long, value_parser = ["open", "closed"])]
    circuit: Option<String>,
    /// Metadata entries, KEY=VALUE (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

/// Run the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(run(cli))
}

fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Up { detach } => up(cli.config.as_deref(), detach),
        Command::Check => check(cli.config.as_deref()),
        Command::Init { ref output, force } => crate::init::init(output, force),
        Command::Startup { user, print } => match load_config(cli.config.as_deref()) {
            Ok(c) => crate::startup::startup(&c, user, print),
            Err(code) => code,
        },
        Command::Unstartup { user } => crate::startup::unstartup(user),
        Command::Import {
            from,
            ref files,
            ref output,
            force,
        } => crate::import::cli(from, files, output.as_deref(), force),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ward", &mut io::stdout());
            exit_codes::OK
        }
        Command::Status {
            ref names,
            json,
            db: true,
            all_hosts,
        } => match load_config(cli.config.as_deref()) {
            Ok(config) => db::status(&config, names, all_hosts, json),
            Err(code) => code,
        },
        Command::Events {
            ref name,
            since,
            lines,
            json,
            all_hosts,
        } => match load_config(cli.config.as_deref()) {
            Ok(config) => db::events(&config, name.clone(), since, lines, json, all_hosts),
            Err(code) => code,
        },
        Command::Db {
            command: DbCommand::Migrate,
        } => match load_config(cli.config.as_deref()) {
            Ok(config) => db::migrate(&config),
            Err(code) => code,
        },
        Command::Status {
            ref names, json, ..
        } => {
            let socket = socket_path(&cli);
            client_call(&socket, |c| {
                let report: StatusReport = c.call(&Request::Status {
                    names: names.clone(),
                    history: names.len() == 1,
                })?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
                } else {
                    status::print(&report, io::stdout().is_terminal(), names.len() == 1);
                }
                Ok(exit_codes::OK)
            })
        }
        Command::Start { ref names } => action(
            &cli,
            Request::Start {
                names: names.clone(),
            },
        ),
        Command::Stop { ref names } => action(
            &cli,
            Request::Stop {
                names: names.clone(),
            },
        ),
        Command::Restart { ref names } => action(
            &cli,
            Request::Restart {
                names: names.clone(),
            },
        ),
        Command::Down => {
            let socket = socket_path(&cli);
            client_call(&socket, |c| {
                let daemon: Pong = c.call(&Request::Ping)?;
                let actions: Actions = c.call(&Request::Down)?;
                let code = print_actions(&actions);
                // Return once the daemon is gone (it flushes the status
                // tables after replying), so `ward down && ward up` works.
                let deadline = Instant::now() + Duration::from_secs(10);
                let alive =
                    || crate::procfs::stat(daemon.pid as i32).is_some_and(|s| s.state != 'Z');
                while alive() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                println!("ward stopped");
                Ok(code)
            })
        }
        Command::Reload => reload(&cli),
        Command::Beat(ref args) => beat(&cli, args),
        Command::RunJob {
            ref name,
            ref command,
        } => run_job(&cli, name, command),
        Command::Logs {
            ref name,
            lines,
            follow,
            err,
            out,
            since,
            ref grep,
            json,
        } => {
            let opts = crate::logs::LogsOptions {
                lines,
                follow,
                since,
                grep: grep.clone(),
                json,
                prefix: name.is_none(),
                color: io::stdout().is_terminal(),
            };
            logs(&cli, name.clone(), (out, err), opts)
        }
    }
}

fn print_error(what: &dyn std::fmt::Display, hint: Option<&str>) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "error: {what}");
    if let Some(h) = hint {
        let _ = writeln!(e, "  hint: {h}");
    }
}

fn print_config_error(e: &ConfigError) {
    match e {
        ConfigError::Invalid(d) => {
            let text = d.to_string();
            eprint!("{text}");
            if !text.ends_with('\n') {
                eprintln!();
            }
        }
        other => {
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            print_error(&msg, config_hint(other).as_deref());
        }
    }
}

fn config_hint(e: &ConfigError) -> Option<String> {
    match e {
        // The message already says how to create one (`ward init`).
        ConfigError::NotFound { .. } => None,
        ConfigError::Read { .. } => Some("check the path and its permissions".into()),
        ConfigError::Invalid(_) => None,
    }
}

fn load_config(explicit: Option<&Path>) -> Result<Config, u8> {
    let path = config::find_config(explicit).map_err(|e| {
        print_config_error(&e);
        exit_codes::USAGE
    })?;
    config::load(&path).map_err(|e| {
        print_config_error(&e);
        exit_codes::USAGE
    })
}

fn check(explicit: Option<&Path>) -> u8 {
    match load_config(explicit) {
        Ok(c) => {
            let instances = c.instances().len();
            println!(
                "{}: ok ({} programs, {} instances; state dir {})",
                c.path.display(),
                c.programs.len(),
                instances,
                c.supervisor.state_dir.display()
            );
            exit_codes::OK
        }
        Err(code) => code,
    }
}

fn up(explicit: Option<&Path>, detach: bool) -> u8 {
    let config = match load_config(explicit) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if detach {
        return up_detached(&config);
    }
    let lock = match daemon::prepare_state_dir(&config.supervisor.state_dir) {
        Ok(l) => l,
        Err(e) => {
            print_error(&e, e.hint().as_deref());
            return exit_codes::FAILED;
        }
    };
    let to_stderr = std::env::var_os("WARD_DETACHED").is_none();
    let own_log = crate::telemetry::init(
        &daemon::own_log_path(&config.supervisor.state_dir),
        &config.supervisor.log,
        to_stderr,
    );
    match daemon::run(config, lock, own_log) {
        Ok(()) => exit_codes::OK,
        Err(e) => {
            tracing::error!(error = %e, "ward failed");
            print_error(&e, e.hint().as_deref());
            exit_codes::FAILED
        }
    }
}

/// Start `ward up` in its own session and wait until its socket answers.
fn up_detached(config: &Config) -> u8 {
    use std::os::unix::process::CommandExt;
    let socket = &config.supervisor.socket;
    if let Ok(mut c) = Client::connect(socket) {
        if let Ok(p) = c.call::<Pong>(&Request::Ping) {
            print_error(
                &format!(
                    "ward is already running (pid {}) at `{}`",
                    p.pid,
                    socket.display()
                ),
                Some("use `ward status`, or `ward down` to stop it"),
            );
            return exit_codes::FAILED;
        }
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ward"));
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up")
        .arg("-c")
        .arg(&config.path)
        .env("WARD_DETACHED", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            print_error(&format!("cannot start the daemon: {e}"), None);
            return exit_codes::FAILED;
        }
    };
    let log = daemon::own_log_path(&config.supervisor.state_dir);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            print_error(
                &format!("the daemon exited during startup ({status})"),
                Some(&format!("see its log: {}", log.display())),
            );
            if let Ok(text) = std::fs::read_to_string(&log) {
                let lines: Vec<&str> = text.lines().collect();
                for l in &lines[lines.len().saturating_sub(10)..] {
                    eprintln!("  {l}");
                }
            }
            return exit_codes::FAILED;
        }
        if let Ok(mut c) = Client::connect(socket) {
            if let Ok(p) = c.call::<Pong>(&Request::Ping) {
                println!(
                    "ward is up in the background (pid {}); its log: {}",
                    p.pid,
                    log.display()
                );
                println!("next: `ward status`, `ward logs -f`, `ward down`");
                return exit_codes::OK;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    print_error(
        &"the daemon did not answer within 15s",
        Some(&format!("see its log: {}", log.display())),
    );
    exit_codes::FAILED
}

/// `--socket`/`WARD_SOCKET`, else the config's, else the default state dir's.
///
/// Only `[supervisor]` is read, leniently, so that a config with errors
/// elsewhere (being edited, about to be reloaded) still finds its daemon.
fn socket_path(cli: &Cli) -> PathBuf {
    if let Some(s) = &cli.socket {
        return s.clone();
    }
    match config::find_config(cli.config.as_deref()) {
        Ok(path) => match config::socket_of(&path) {
            Ok(socket) => socket,
            Err(e) => {
                let fallback = config::default_state_dir().join("ward.sock");
                eprintln!(
                    "note: cannot read the socket path from {} ({e}); trying the default socket {}",
                    path.display(),
                    fallback.display()
                );
                fallback
            }
        },
        Err(e) => {
            let fallback = config::default_state_dir().join("ward.sock");
            if cli.config.is_some() {
                eprintln!(
                    "note: {}; trying the default socket {}",
                    first_line(&e.to_string()),
                    fallback.display()
                );
            }
            fallback
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn client_call(socket: &Path, f: impl FnOnce(&mut Client) -> Result<u8, ClientError>) -> u8 {
    let result = Client::connect(socket).and_then(|mut c| f(&mut c));
    match result {
        Ok(code) => code,
        Err(e) => {
            let mut msg = e.to_string();
            if let ClientError::NotRunning { source, .. }
            | ClientError::PermissionDenied { source, .. }
            | ClientError::Io { source, .. } = &e
            {
                msg.push_str(&format!(": {source}"));
            }
            print_error(&msg, e.hint().as_deref());
            exit_codes::FAILED
        }
    }
}

fn action(cli: &Cli, req: Request) -> u8 {
    let socket = socket_path(cli);
    client_call(&socket, |c| {
        let actions: Actions = c.call(&req)?;
        Ok(print_actions(&actions))
    })
}

fn beat(cli: &Cli, args: &BeatArgs) -> u8 {
    use crate::control::protocol::BeatFields;
    let mut metadata = serde_json::Map::new();
    for kv in &args.meta {
        let Some((k, v)) = kv.split_once('=') else {
            print_error(
                &format!("`--meta {kv}` is not KEY=VALUE"),
                Some("e.g. --meta queue=emails"),
            );
            return exit_codes::USAGE;
        };
        let value =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        metadata.insert(k.to_string(), value);
    }
    let fields = BeatFields {
        ready: args.ready,
        stopping: args.stopping,
        status: args.status.clone(),
        jobs: args.jobs.clone(),
        errors: args.errors.clone(),
        task: args.task.clone(),
        last_error: args.last_error.clone(),
        circuit_open: args.circuit.as_deref().map(|c| c == "open"),
        metadata: (!metadata.is_empty()).then_some(metadata),
    };
    if let Err(e) = fields.to_beat() {
        print_error(&e, Some("counters are N or +N, never negative"));
        return exit_codes::USAGE;
    }
    match &args.name {
        Some(name) => action(
            cli,
            Request::Beat {
                name: name.clone(),
                beat: fields,
            },
        ),
        None => match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) => match crate::sdnotify::Notifier::new(&path.to_string_lossy())
                .and_then(|n| n.send(&fields.to_datagram()))
            {
                Ok(()) => exit_codes::OK,
                Err(e) => {
                    print_error(
                        &format!(
                            "cannot send to NOTIFY_SOCKET `{}`: {e}",
                            path.to_string_lossy()
                        ),
                        Some("is the program still running under ward?"),
                    );
                    exit_codes::FAILED
                }
            },
            None => match (
                std::env::var("WARD_HEARTBEAT_URL"),
                std::env::var("WARD_HEARTBEAT_TOKEN"),
            ) {
                (Ok(url), Ok(token)) => beat_http(&url, &token, &fields),
                _ => {
                    print_error(
                        &"no program named, and not inside a program run by ward (NOTIFY_SOCKET and WARD_HEARTBEAT_URL are unset)",
                        Some("name the program (`ward beat worker --jobs +1`), or run this from inside it"),
                    );
                    exit_codes::USAGE
                }
            },
        },
    }
}

/// `ward beat` through the HTTP endpoint (`WARD_HEARTBEAT_URL`).
fn beat_http(url: &str, token: &str, fields: &crate::control::protocol::BeatFields) -> u8 {
    use crate::heartbeat::Counter;
    let mut body = serde_json::Map::new();
    let mut counter = |v: &Option<String>, set: &str, add: &str| {
        match v.as_deref().map(Counter::parse) {
            Some(Ok(Counter::Set(n))) => body.insert(set.into(), n.into()),
            Some(Ok(Counter::Add(n))) => body.insert(add.into(), n.into()),
            _ => None,
        };
    };
    counter(&fields.jobs, "jobs_processed", "jobs_delta");
    counter(&fields.errors, "error_count", "errors_delta");
    let mut put = |k: &str, v: Option<serde_json::Value>| {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    };
    put("status", fields.status.clone().map(Into::into));
    put("current_task", fields.task.clone().map(Into::into));
    put("last_error", fields.last_error.clone().map(Into::into));
    put("circuit_breaker_open", fields.circuit_open.map(Into::into));
    put("metadata", fields.metadata.clone().map(Into::into));
    let url = if fields.ready {
        format!("{url}/ready")
    } else if fields.stopping {
        format!("{url}/stopping")
    } else {
        url.to_string()
    };
    let body = serde_json::Value::Object(body).to_string();
    match crate::heartbeat::http::post_beat(&url, token, &body, Duration::from_secs(10)) {
        Ok((200, _)) => exit_codes::OK,
        Ok((code, reply)) => {
            let why = serde_json::from_str::<serde_json::Value>(&reply)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(reply);
            print_error(&format!("heartbeat refused ({code}): {why}"), None);
            exit_codes::FAILED
        }
        Err(e) => {
            print_error(
                &format!("cannot send to WARD_HEARTBEAT_URL `{url}`: {e}"),
                Some("is ward still running with `[supervisor] http` set?"),
            );
            exit_codes::FAILED
        }
    }
}

/// `ward run NAME -- CMD...`: report the start, run the command with its
/// output passed through (the last lines kept), report how it ended, and
/// exit with its exit code. An unknown NAME is refused before running; an
/// unreachable daemon only warns (the job still runs).
fn run_job(cli: &Cli, name: &str, command: &[String]) -> u8 {
    use crate::control::protocol::{JobEvent, JOB_TAIL_LINES};
    use std::os::unix::process::ExitStatusExt;
    use std::sync::{Arc, Mutex};
    let socket = socket_path(cli);
    let report = |event: JobEvent| -> Result<(), ClientError> {
        let mut c = Client::connect(&socket)?;
        let actions: Actions = c.call(&Request::JobRun {
            name: name.to_string(),
            event,
        })?;
        for r in actions.results.iter().filter(|r| !r.ok) {
            eprintln!("ward run: warning: {}: {}", r.name, r.message);
        }
        Ok(())
    };
    // An unknown job is refused before it runs: the config must declare it.
    let known = Client::connect(&socket).and_then(|mut c| {
        c.call::<StatusReport>(&Request::Status {
            names: vec![name.to_string()],
            history: false,
        })
    });
    let reachable = match known {
        Ok(_) => true,
        Err(ClientError::Refused { error, hint }) => {
            print_error(&error, hint.as_deref());
            return exit_codes::USAGE;
        }
        Err(e) => {
            eprintln!("ward run: warning: cannot reach ward ({e}); running `{name}` unreported");
            false
        }
    };
    let report = |event: JobEvent| -> Result<(), ClientError> {
        if reachable {
            report(event)
        } else {
            Ok(())
        }
    };
    let mut child = match std::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            print_error(&format!("cannot run `{}`: {e}", command[0]), None);
            let _ = report(JobEvent::Finish {
                code: 127,
                signal: None,
                duration_ms: 0,
                tail: vec![format!("cannot run `{}`: {e}", command[0])],
            });
            return 127;
        }
    };
    let started = Instant::now();
    if let Err(e) = report(JobEvent::Start {
        pid: Some(child.id()),
    }) {
        eprintln!("ward run: warning: cannot report the start of `{name}` to ward: {e}");
    }
    let tail: Arc<Mutex<std::collections::VecDeque<String>>> = Arc::default();
    let tee = |src: Box<dyn io::Read + Send>, to_err: bool| {
        let tail = tail.clone();
        std::thread::spawn(move || {
            let mut reader = io::BufReader::new(src);
            let mut line = Vec::new();
            loop {
                line.clear();
                match io::BufRead::read_until(&mut reader, b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let _ = if to_err {
                    io::stderr().write_all(&line)
                } else {
                    io::stdout().write_all(&line)
                };
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == JOB_TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(text);
            }
        })
    };
    let out = child.stdout.take().map(|o| tee(Box::new(o), false));
    let err = child.stderr.take().map(|e| tee(Box::new(e), true));
    let status = child.wait();
    for t in [out, err].into_iter().flatten() {
        let _ = t.join();
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    let (code, signal) = match status {
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => (c, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            _ => (1, None),
        },
        Err(e) => {
            print_error(&format!("cannot wait for the job: {e}"), None);
            (1, None)
        }
    };
    let tail: Vec<String> = tail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    if let Err(e) = report(JobEvent::Finish {
        code,
        signal,
        duration_ms,
        tail,
    }) {
        eprintln!("ward run: warning: cannot report the end of `{name}` to ward: {e}");
    }
    code.clamp(0, 255) as u8
}

fn reload(cli: &Cli) -> u8 {
    let socket = socket_path(cli);
    let result = Client::connect(&socket)
        .and_then(|mut c| c.call::<crate::supervisor::ReloadReport>(&Request::Reload));
    match result {
        Ok(r) => {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join(", ")
                }
            };
            println!("added:     {}", list(&r.added));
            println!("removed:   {}", list(&r.removed));
            println!("changed:   {}", list(&r.changed));
            println!("unchanged: {}", r.unchanged);
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            exit_codes::OK
        }
        Err(ClientError::Refused { error, hint }) => {
            eprintln!("error: {error}");
            if let Some(h) = hint {
                eprintln!("  hint: {h}");
            }
            exit_codes::USAGE
        }
        Err(e) => client_call(&socket, |_| Err(e)),
    }
}

fn print_actions(actions: &Actions) -> u8 {
    let width = actions
        .results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0);
    let mut code = exit_codes::OK;
    for r in &actions.results {
        if r.ok {
            println!("{:width$}  {}", r.name, r.message);
        } else {
            eprintln!("{:width$}  error: {}", r.name, r.message);
            code = exit_codes::FAILED;
        }
    }
    code
}

fn logs(
    cli: &Cli,
    name: Option<String>,
    (out, err): (bool, bool),
    opts: crate::logs::LogsOptions,
) -> u8 {
    use crate::logs::{LogSource, Stream};
    let names: Vec<String> = name.iter().cloned().collect();
    let socket = socket_path(cli);
    // Ask the daemon where the files are; fall back to the config when it is down.
    let from_daemon = Client::connect(&socket).and_then(|mut c| {
        c.call::<LogSources>(&Request::LogSources {
            names: names.clone(),
        })
    });
    let sources: Vec<LogSource> = match from_daemon {
        Ok(s) => s
            .sources
            .into_iter()
            .map(|s| LogSource {
                program: s.program,
                stream: if s.stream == "err" {
                    Stream::Err
                } else {
                    Stream::Out
                },
                path: PathBuf::from(s.path),
            })
            .collect(),
        Err(ClientError::Refused { error, hint }) => {
            print_error(&error, hint.as_deref());
            return exit_codes::FAILED;
        }
        Err(_) => {
            let config = match load_config(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            eprintln!(
                "note: ward is not running; showing the log files from {}",
                config.path.display()
            );
            match sources_from_config(&config, &names) {
                Ok(s) => s,
                Err(e) => {
                    print_error(&e, Some(&e.hint()));
                    return exit_codes::FAILED;
                }
            }
        }
    };
    let sources: Vec<LogSource> = sources
        .into_iter()
        .filter(|s| match s.stream {
            Stream::Out => !err,
            Stream::Err => !out,
        })
        .collect();
    let mut opts = opts;
    // Several files (programs, or one program's stdout and stderr): say which.
    opts.prefix = opts.prefix || sources.len() > 1;
    match crate::logs::run_logs(&opts, sources) {
        Ok(()) => exit_codes::OK,
        Err(e) => {
            print_error(&e, e.hint().as_deref());
            exit_codes::FAILED
        }
    }
}

fn sources_from_config(
    config: &Config,
    names: &[String],
) -> Result<Vec<crate::logs::LogSource>, crate::supervisor::UnknownName> {
    use crate::logs::{LogSource, Stream};
    let mut out = Vec::new();
    let mut matched = false;
    for inst in config.instances() {
        let wanted = names.is_empty()
            || names
                .iter()
                .any(|n| n == &inst.id || n == &inst.program.name || n == "all");
        if !wanted {
            continue;
        }
        matched = true;
        let paths = inst
            .program
            .log
            .paths(&config.supervisor.state_dir, &inst.id, inst.index);
        out.push(LogSource {
            program: inst.id.clone(),
            stream: Stream::Out,
            path: paths.stdout,
        });
        if let Some(e) = paths.stderr {
            out.push(LogSource {
                program: inst.id.clone(),
                stream: Stream::Err,
                path: e,
            });
        }
    }
    if !matched && !names.is_empty() {
        return Err(crate::supervisor::UnknownName {
            name: names[0].clone(),
            known: config.programs.iter().map(|p| p.name.clone()).collect(),
            external: config.external(&names[0]).is_some(),
        });
    }
    Ok(out)
}
