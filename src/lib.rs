//! ward: a process supervisor with a built-in heartbeat registry.
//!
//! Module map (see docs/ARCHITECTURE.md for the picture):
//! - [`config`]: find, parse and validate `supervisor.toml` into a typed model.
//! - [`daemon`]: `ward up` from lock to exit; signals; shutdown order.
//! - [`supervisor`]: the set of program handles; status and multi-program actions.
//! - [`program`]: one actor per instance (owns its child) and its pure state machine.
//! - [`reaper`]: the one thread that spawns and reaps children; [`spawn`]: how it starts one.
//! - [`sdnotify`]: ward telling its own systemd it is ready, its status, its watchdog.
//! - [`backoff`]: restart delays (pure).
//! - [`cron`]: cron schedules and their next fire time (for `heartbeat.schedule`).
//! - [`logs`]: capture, rotation and reading of program output.
//! - [`control`]: the control socket protocol, server and client.
//! - [`store`]: the SQL status tables (SQLite or PostgreSQL), written off the supervision path.
//! - [`cli`]: the `ward` command line.
//! - [`init`], [`startup`], [`import`]: `ward init`, `ward startup`/`unstartup`, `ward import`.
//! - [`procfs`], [`exit`], [`telemetry`]: small shared pieces.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod control;
pub mod cron;
pub mod daemon;
pub mod exit;
pub mod heartbeat;
pub mod import;
pub mod init;
pub mod logs;
pub mod procfs;
pub mod program;
pub mod reaper;
pub mod sdnotify;
pub mod spawn;
pub mod startup;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod watch;
