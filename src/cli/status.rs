//! `ward status` as a table, like `pm2 ls`, with a summary line.

use std::fmt::Write as _;

use crate::control::protocol::{ProgramStatus, StatusReport};
use crate::heartbeat::{Health, JobView};
use crate::program::{Phase, Snapshot};

const RESET: &str = "\x1b[0m";

fn colour(phase: Phase) -> &'static str {
    match phase {
        Phase::Running => "\x1b[32m",
        Phase::Starting | Phase::Waiting | Phase::Stopping | Phase::Backoff => "\x1b[33m",
        Phase::Fatal | Phase::Unknown => "\x1b[31m",
        Phase::Stopped | Phase::Exited => "\x1b[2m",
    }
}

/// Render the report; `detail` adds the message and recent transitions.
pub fn render(report: &StatusReport, color: bool, detail: bool, now_ms: u64) -> String {
    let headers = [
        "NAME",
        "STATE",
        "HEALTH",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "CPU",
        "MEM",
        "LAST BEAT",
        "JOBS",
        "ERRORS",
        "INFO",
    ];
    let rows: Vec<[String; 13]> = report.programs.iter().map(|p| row(p, now_ms)).collect();
    let mut widths = headers.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], p: Option<&Snapshot>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            match (i, p, color) {
                // A late job stands out even when its process is stopped.
                (2, Some(s), true) if s.health == Health::Late => {
                    let _ = write!(out, "{}{cell}{RESET}", colour(Phase::Waiting));
                }
                (1 | 2, Some(s), true) => {
                    let _ = write!(out, "{}{cell}{RESET}", colour(s.state));
                }
                _ => out.push_str(cell),
            }
            if i < last {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        while out.ends_with(' ') {
            out.pop();
        }
        out.push('\n');
    };
    line(&headers.map(String::from), None, &mut out);
    for (r, p) in rows.iter().zip(&report.programs) {
        line(r, Some(&p.snapshot), &mut out);
    }
    out.push_str(&summary(report));
    out.push('\n');
    if let Some(store) = &report.store {
        if !store.connected && store.last_error.is_some() {
            let _ = writeln!(
                out,
                "warning: status tables not written ({}): {}; {} change(s) kept in memory",
                store.url,
                store.last_error.as_deref().unwrap_or(""),
                store.pending
            );
        }
        if store.dropped_events > 0 {
            let _ = writeln!(
                out,
                "warning: {} event(s) could not be recorded in the status tables",
                store.dropped_events
            );
        }
    }
    if detail {
        for p in &report.programs {
            history(&p.snapshot, now_ms, &mut out);
        }
    }
    out
}

pub fn print(report: &StatusReport, color: bool, detail: bool) {
    print!(
        "{}",
        render(report, color, detail, crate::program::now_ms())
    );
}

fn row(p: &ProgramStatus, now_ms: u64) -> [String; 13] {
    let s = &p.snapshot;
    let dash = || "-".to_string();
    let last_exit = s
        .last_exit
        .as_ref()
        .map(|e| format!("{} ({} ago)", e.exit, ago(now_ms.saturating_sub(e.at_ms))))
        .unwrap_or_else(dash);
    let mut info = match s.state {
        Phase::Running if s.message.is_some() && s.health != Health::Healthy => {
            s.message.clone().unwrap_or_default()
        }
        Phase::Running | Phase::Starting => s.heartbeat.status.clone().unwrap_or_default(),
        Phase::Backoff => s
            .next_start_ms
            .map(|t| format!("restart in {}", ago(t.saturating_sub(now_ms))))
            .unwrap_or_default(),
        Phase::Fatal | Phase::Waiting | Phase::Unknown => s.message.clone().unwrap_or_default(),
        Phase::Exited => s.message.clone().unwrap_or_default(),
        _ => String::new(),
    };
    if let Some(note) = s.job.as_ref().and_then(|j| job_note(j, s.state, now_ms)) {
        info = if info.is_empty() {
            note
        } else {
            format!("{note}; {info}")
        };
    }
    if p.log.bytes_dropped > 0 {
        if !info.is_empty() {
            info.push_str("; ");
        }
        info.push_str(&format!("log: {} dropped", bytes(p.log.bytes_dropped)));
    }
    let hb = &s.heartbeat;
    let beaten = hb.beats > 0;
    [
        s.name.clone(),
        s.state.as_str().to_string(),
        s.health.as_str().to_string(),
        s.pid.map(|p| p.to_string()).unwrap_or_else(dash),
        p.uptime_ms.map(ago).unwrap_or_else(dash),
        s.restarts.to_string(),
        last_exit,
        p.cpu_percent
            .map(|c| format!("{c:.1}%"))
            .unwrap_or_else(dash),
        p.rss_bytes.map(bytes).unwrap_or_else(dash),
        hb.last_beat_ms
            .map(|t| format!("{} ago", ago(now_ms.saturating_sub(t))))
            .unwrap_or_else(dash),
        if beaten {
            hb.jobs_processed.to_string()
        } else {
            dash()
        },
        if beaten {
            hb.error_count.to_string()
        } else {
            dash()
        },
        info,
    ]
}

/// A job's clock in words: `late for 3m2s`; and, for a job with no process
/// of its own, `run started 5s ago` or `late in 58m0s`.
fn job_note(job: &JobView, phase: Phase, now_ms: u64) -> Option<String> {
    if let Some(since) = job.late_since_ms {
        return Some(format!("late for {}", ago(now_ms.saturating_sub(since))));
    }
    if phase.has_process() {
        return None;
    }
    match (job.run_started_ms, job.late_at_ms) {
        (Some(start), _) => Some(format!(
            "run started {} ago",
            ago(now_ms.saturating_sub(start))
        )),
        (None, Some(at)) => Some(format!("late in {}", ago(at.saturating_sub(now_ms)))),
        (None, None) => None,
    }
}

/// `5/6 running, 1 fatal`.
pub fn summary(report: &StatusReport) -> String {
    crate::program::state::summary(report.programs.iter().map(|p| p.snapshot.state))
}

fn history(s: &Snapshot, now_ms: u64, out: &mut String) {
    if let Some(m) = &s.message {
        let _ = writeln!(out, "\n{}: {m}", s.name);
    }
    if s.history.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nrecent transitions of {}:", s.name);
    for t in &s.history {
        let _ = write!(
            out,
            "  {:>8} ago  {} -> {}",
            ago(now_ms.saturating_sub(t.at_ms)),
            t.from.as_str(),
            t.to.as_str()
        );
        if let Some(pid) = t.pid {
            let _ = write!(out, "  pid {pid}");
        }
        if let Some(d) = &t.detail {
            let _ = write!(out, "  {d}");
        }
        out.push('\n');
    }
}

/// `12s`, `5m3s`, `2h10m`, `3d4h`.
pub fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `2.1M`, `512K`.
pub fn bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let b = b as f64;
    if b < K {
        format!("{b}B")
    } else if b < K * K {
        format!("{:.0}K", b / K)
    } else if b < K * K * K {
        format!("{:.1}M", b / K / K)
    } else {
        format!("{:.1}G", b / K / K / K)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations_and_sizes() {
        assert_eq!(ago(0), "0s");
        assert_eq!(ago(61_000), "1m1s");
        assert_eq!(ago(7_200_000), "2h0m");
        assert_eq!(ago(90_000_000), "1d1h");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5M");
    }

    #[test]
    fn job_notes() {
        let job = |late_at, late_since, started| JobView {
            late_at_ms: late_at,
            late_since_ms: late_since,
            run_started_ms: started,
            last_run_ok: None,
        };
        let note = |j: JobView, phase| job_note(&j, phase, 100_000);
        assert_eq!(
            note(job(None, Some(40_000), None), Phase::Running).as_deref(),
            Some("late for 1m0s")
        );
        assert_eq!(
            note(job(Some(160_000), None, None), Phase::Stopped).as_deref(),
            Some("late in 1m0s")
        );
        assert_eq!(
            note(job(Some(160_000), None, Some(95_000)), Phase::Stopped).as_deref(),
            Some("run started 5s ago")
        );
        // A worker ward runs shows its own status instead.
        assert_eq!(note(job(Some(160_000), None, None), Phase::Running), None);
    }
}
