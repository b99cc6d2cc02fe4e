//! The control protocol: one JSON object per line each way.
//!
//! A request is `{"cmd": "...", ...}`; a reply is `{"ok": true, "data": ...}`
//! or `{"ok": false, "error": "...", "hint": "..."}`. Documented in
//! docs/PROTOCOL.md; keep the two in step. Pure data: no I/O here.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::logs::LogStats;
use crate::program::Snapshot;

/// The longest request line the daemon accepts.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Is the daemon there? Replies with [`Pong`].
    Ping,
    /// Replies with [`StatusReport`]. Empty `names` means every instance.
    Status {
        #[serde(default)]
        names: Vec<String>,
        /// Include each instance's recent transitions.
        #[serde(default)]
        history: bool,
    },
    /// Replies with [`Actions`] once every start has taken effect.
    Start {
        names: Vec<String>,
    },
    Stop {
        names: Vec<String>,
    },
    Restart {
        names: Vec<String>,
    },
    /// Re-read the config file and apply the difference (as SIGHUP does).
    /// Replies with a reload report, or an error holding every diagnostic.
    Reload,
    /// Reopen every log file (as SIGUSR1 does). Replies with [`Actions`].
    ReopenLogs,
    /// Where the log files of these instances are. Replies with [`LogSources`].
    LogSources {
        #[serde(default)]
        names: Vec<String>,
    },
    /// Stop every program, reply, then exit the daemon. Replies with [`Actions`].
    Down,
    /// A heartbeat for every instance of `name`, sent by an operator (or a
    /// script) through the socket. Replies with [`Actions`].
    Beat {
        name: String,
        #[serde(default)]
        beat: BeatFields,
    },
    /// A run of job `name` outside ward (`ward run NAME -- CMD`), reported
    /// by the wrapper as the operator. Replies with [`Actions`].
    JobRun {
        name: String,
        event: JobEvent,
    },
}

/// What `ward run` reports about one run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobEvent {
    /// The command was started (with this pid).
    Start {
        #[serde(default)]
        pid: Option<u32>,
    },
    /// The command ended: its exit code (128+N for signal N), how long it
    /// ran and the last lines of its output.
    Finish {
        code: i32,
        #[serde(default)]
        signal: Option<i32>,
        duration_ms: u64,
        #[serde(default)]
        tail: Vec<String>,
    },
}

/// Lines of a job's output kept in its heartbeat metadata.
pub const JOB_TAIL_LINES: usize = 20;
/// The longest line kept, in bytes.
const JOB_LINE: usize = 200;

impl JobEvent {
    /// The heartbeat that records this event (with a history entry).
    pub fn to_beat(&self) -> crate::heartbeat::Beat {
        use crate::heartbeat::{Beat, Counter, RunReport, MAX_METADATA};
        match self {
            JobEvent::Start { pid } => Beat {
                status: Some("running".into()),
                task: Some("job (ward run)".into()),
                run: Some(RunReport::Started),
                record: Some(match pid {
                    Some(pid) => format!("job started (ward run, pid {pid})"),
                    None => "job started (ward run)".into(),
                }),
                ..Beat::default()
            },
            JobEvent::Finish {
                code,
                signal,
                duration_ms,
                tail,
            } => {
                let took = crate::program::human(std::time::Duration::from_millis(*duration_ms));
                let mut lines: Vec<String> = tail
                    .iter()
                    .rev()
                    .take(JOB_TAIL_LINES)
                    .rev()
                    .map(|l| clip(l, JOB_LINE))
                    .collect();
                let last = lines.iter().rev().find(|l| !l.trim().is_empty()).cloned();
                let how = match signal {
                    Some(sig) => format!("job killed by signal {sig} after {took}"),
                    None => format!("job exited {code} after {took}"),
                };
                let detail = match &last {
                    Some(l) => format!("{how}: {l}"),
                    None => how.clone(),
                };
                let meta = |lines: &[String]| {
                    let mut m = serde_json::Map::new();
                    m.insert("exit_code".into(), (*code).into());
                    m.insert("duration_ms".into(), (*duration_ms).into());
                    m.insert("tail".into(), lines.to_vec().into());
                    m
                };
                let mut metadata = meta(&lines);
                while !lines.is_empty()
                    && serde_json::to_string(&metadata).map_or(0, |s| s.len()) > MAX_METADATA
                {
                    lines.remove(0);
                    metadata = meta(&lines);
                }
                let failed = *code != 0;
                Beat {
                    status: Some(if failed {
                        format!("failed (exit {code})")
                    } else {
                        "ok".into()
                    }),
                    jobs: Some(Counter::Add(1)),
                    errors: failed.then_some(Counter::Add(1)),
                    task: Some(String::new()),
                    last_error: failed.then(|| detail.clone()),
                    metadata: Some(metadata),
                    record: Some(detail),
                    run: Some(if failed {
                        RunReport::Failed
                    } else {
                        RunReport::Succeeded
                    }),
                    ..Beat::default()
                }
            }
        }
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The fields of a heartbeat sent through the control socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeatFields {
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub stopping: bool,
    #[serde(default)]
    pub status: Option<String>,
    /// `N` (absolute) or `+N` (increment).
    #[serde(default)]
    pub jobs: Option<String>,
    #[serde(default)]
    pub errors: Option<String>,
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub circuit_open: Option<bool>,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl BeatFields {
    pub fn to_beat(&self) -> Result<crate::heartbeat::Beat, String> {
        use crate::heartbeat::{Beat, Counter, MAX_METADATA};
        let counter = |v: &Option<String>| v.as_deref().map(Counter::parse).transpose();
        if let Some(m) = &self.metadata {
            let size = serde_json::to_string(m).map(|s| s.len()).unwrap_or(0);
            if size > MAX_METADATA {
                return Err(format!(
                    "metadata is {size} bytes; the limit is {MAX_METADATA}"
                ));
            }
        }
        Ok(Beat {
            ready: self.ready,
            stopping: self.stopping,
            status: self.status.clone(),
            jobs: counter(&self.jobs)?,
            errors: counter(&self.errors)?,
            task: self.task.clone(),
            last_error: self.last_error.clone(),
            circuit_open: self.circuit_open,
            metadata: self.metadata.clone(),
            ..Beat::default()
        })
    }

    /// The same beat as sd_notify assignments (ward's `X_WARD_*` keys).
    pub fn to_datagram(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        let mut put = |k: &str, v: &str| lines.push(format!("{k}={}", v.replace('\n', " ")));
        if self.ready {
            put("READY", "1");
        }
        if self.stopping {
            put("STOPPING", "1");
        }
        if let Some(s) = &self.status {
            put("STATUS", s);
        }
        if let Some(j) = &self.jobs {
            put("X_WARD_JOBS", j);
        }
        if let Some(e) = &self.errors {
            put("X_WARD_ERRORS", e);
        }
        if let Some(t) = &self.task {
            put("X_WARD_TASK", t);
        }
        if let Some(e) = &self.last_error {
            put("X_WARD_ERROR", e);
        }
        if let Some(c) = self.circuit_open {
            put("X_WARD_CIRCUIT_OPEN", if c { "1" } else { "0" });
        }
        if let Some(m) = &self.metadata {
            put("X_WARD_META", &serde_json::to_string(m).unwrap_or_default());
        }
        if lines.is_empty() {
            lines.push("WATCHDOG=1".into());
        }
        lines.join("\n")
    }
}

/// The envelope of every reply. The daemon writes its data as JSON text
/// (`RawValue`) and the CLI decodes it straight into the type it expects:
/// no intermediate `serde_json::Value` on either side.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply<T = Box<RawValue>> {
    pub ok: bool,
    // A missing `data` is `None` without `default` (which would demand `T: Default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Reply {
    pub fn data<T: Serialize>(data: &T) -> Reply {
        // Serialised once, not re-validated (`RawValue::from_string` would
        // parse the tens of kilobytes of a status reply again).
        Reply {
            ok: true,
            data: serde_json::value::to_raw_value(data).ok(),
            error: None,
            hint: None,
        }
    }

    pub fn error(error: impl Into<String>, hint: Option<String>) -> Reply {
        Reply {
            ok: false,
            data: None,
            error: Some(error.into()),
            hint,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub version: String,
    pub pid: u32,
    pub host: String,
    pub config: String,
}

/// `ward status --json` prints exactly this.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub host: String,
    pub version: String,
    /// The daemon's pid.
    pub pid: u32,
    pub config: String,
    /// Unix ms when the daemon started.
    pub started_at_ms: u64,
    pub programs: Vec<ProgramStatus>,
    /// `[[external]]` workers (no process of ward's), in config order.
    #[serde(default)]
    pub externals: Vec<crate::heartbeat::external::ExternalSnapshot>,
    /// The status tables' writer; absent when `[store] enabled = false`
    /// (and from daemons older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreStatus>,
}

/// How the status-table writer is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The database URL, password redacted.
    pub url: String,
    /// The last write worked.
    pub connected: bool,
    /// Rows and events waiting to be written.
    pub pending: usize,
    /// Events lost since the daemon started (buffer overflow during an
    /// outage, or transitions faster than the store looks).
    pub dropped_events: u64,
    pub last_error: Option<String>,
}

/// One instance in a [`StatusReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramStatus {
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// How long the current run has lasted, when there is one.
    pub uptime_ms: Option<u64>,
    /// CPU use of the main process, percent of one core.
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub log: LogStats,
}

/// The outcome of an action on each instance it named.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Actions {
    pub results: Vec<ActionResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionResult {
    pub name: String,
    pub ok: bool,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogSources {
    pub sources: Vec<LogSourceInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogSourceInfo {
    pub program: String,
    /// `out` or `err`.
    pub stream: String,
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let cases = [
            (r#"{"cmd":"ping"}"#, Request::Ping),
            (
                r#"{"cmd":"status"}"#,
                Request::Status {
                    names: vec![],
                    history: false,
                },
            ),
            (
                r#"{"cmd":"start","names":["web"]}"#,
                Request::Start {
                    names: vec!["web".into()],
                },
            ),
            (r#"{"cmd":"down"}"#, Request::Down),
        ];
        for (text, want) in cases {
            assert_eq!(
                serde_json::from_str::<Request>(text).unwrap(),
                want,
                "{text}"
            );
        }
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }

    #[test]
    fn job_events_are_runs_for_period_and_schedule() {
        use crate::heartbeat::RunReport;
        let finish = |code| JobEvent::Finish {
            code,
            signal: None,
            duration_ms: 5,
            tail: vec!["done".into()],
        };
        assert_eq!(
            JobEvent::Start { pid: Some(7) }.to_beat().run,
            Some(RunReport::Started)
        );
        assert_eq!(finish(0).to_beat().run, Some(RunReport::Succeeded));
        let failed = finish(3).to_beat();
        assert_eq!(failed.run, Some(RunReport::Failed));
        assert_eq!(
            failed.record.as_deref(),
            Some("job exited 3 after 5ms: done")
        );
    }
}
