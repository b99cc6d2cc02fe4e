//! The log layer: capturing program output into rotated files, ward's own
//! log file, and reading logs back for `ward logs`.
//!
//! Owns every byte between a child's pipes and the disk, and the reading of
//! those files. Must never block or kill a child because of a disk problem
//! (a failed write is counted as dropped and retried; output is dropped and
//! counted while the disk is stalled), never make the async runtime wait on
//! a program log file, never lose or duplicate a line across a rotation, and
//! never start or stop processes.
//!
//! Files:
//! - `rotate`: [`RotatingFile`], size-based rotation, gzip, age limit.
//! - `capture`: [`InstanceLogs`], the pipe pumps of one instance.
//! - `writer`: the `ward-logs` thread that writes every program log, and
//!   the per-instance backlog.
//! - `own`: [`own_log_writer`], ward's own `ward.log` for `tracing`.
//! - `read`: tail, follow and [`run_logs`] for `ward logs`.
//! - `time`: the RFC 3339 timestamp prefix.
//!
//! See `docs/LOGS.md` for the behaviour users see.

mod capture;
mod own;
mod read;
mod rotate;
mod time;
mod writer;

pub use capture::{InstanceLogs, LINE_CONTINUES_MARKER, MAX_LINE};
pub use own::{own_log_writer, OwnLogGuard, OwnLogWriter};
pub use read::{run_logs, tail_lines, Follower, LogSource, LogsOptions, Stream};
pub use rotate::{rotated_path, RotatingFile, RotationPolicy};
pub use time::{format_rfc3339, parse_prefix as parse_timestamp_prefix};
pub use writer::flush;

use std::path::PathBuf;

/// Counters of one instance's (or one file's) log writing.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogStats {
    /// Bytes that reached the file (including timestamp prefixes and markers).
    pub bytes_written: u64,
    /// Bytes read from the program that could not be written.
    pub bytes_dropped: u64,
    /// The most recent error, e.g. "cannot write `/var/log/x.log`: No space left on device".
    pub last_error: Option<String>,
}

/// Errors of `ward logs` (reading side). The writing side never fails: its
/// errors become [`LogStats`].
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("cannot read log file `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
}

impl LogsError {
    /// What the user can do about it, for the `hint:` line.
    pub fn hint(&self) -> Option<String> {
        match self {
            LogsError::Read { .. } => Some(
                "`ward logs` reads the files directly: run it as a user that can read them".into(),
            ),
            LogsError::Stdout(_) => None,
        }
    }
}
