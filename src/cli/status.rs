//! `ward status` as a table, like `pm2 ls`, with a summary line.

use std::fmt::Write as _;

use crate::control::protocol::{ProgramStatus, StatusReport};
use crate::heartbeat::external::ExternalSnapshot;
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

/// The colour of an external's state and health cells.
fn health_colour(health: Health) -> &'static str {
    match health {
        Health::Healthy | Health::Ready => "\x1b[32m",
        Health::Stale | Health::CircuitOpen | Health::Starting | Health::Backoff | Health::Late => {
            "\x1b[33m"
        }
        Health::Hung | Health::Crashed | Health::Fatal | Health::Unknown => "\x1b[31m",
        Health::Stopped => "\x1b[2m",
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
    // Each row with the colours of its STATE and HEALTH cells.
    let mut rows: Vec<([String; 13], [&str; 2])> = report
        .programs
        .iter()
        .map(|p| {
            let state = colour(p.snapshot.state);
            // A late job stands out even when its process is stopped.
            let health = match p.snapshot.health {
                Health::Late => colour(Phase::Waiting),
                _ => state,
            };
            (row(p, now_ms), [state, health])
        })
        .collect();
    rows.extend(report.externals.iter().map(|x| {
        let c = health_colour(x.health);
        (external_row(x, now_ms), [c, c])
    }));
    let mut widths = headers.map(str::len);
    for (r, _) in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], paint: Option<&[&str; 2]>, out: &mut String| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            match (i, paint, color) {
                (1 | 2, Some(c), true) => {
                    let _ = write!(out, "{}{cell}{RESET}", c[i - 1]);
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
    for (r, paint) in &rows {
        line(r, Some(paint), &mut out);
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
        for x in &report.externals {
            external_history(x, now_ms, &mut out);
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
        // With no pid: the main process exited and the rest of its group
        // is being stopped; the message says so.
        Phase::Stopping if s.pid.is_none() => s.message.clone().unwrap_or_default(),
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
    let [last_beat, jobs, errors] = beat_cells(&s.heartbeat, now_ms);
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
        last_beat,
        jobs,
        errors,
        info,
    ]
}

/// LAST BEAT, JOBS and ERRORS; counters only once something was reported.
fn beat_cells(hb: &crate::heartbeat::HeartbeatView, now_ms: u64) -> [String; 3] {
    let dash = || "-".to_string();
    let counted = hb.last_beat_ms.is_some() || hb.beats > 0;
    let count = |n: u64| if counted { n.to_string() } else { dash() };
    [
        hb.last_beat_ms
            .map(|t| format!("{} ago", ago(now_ms.saturating_sub(t))))
            .unwrap_or_else(dash),
        count(hb.jobs_processed),
        count(hb.error_count),
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

/// `5/6 running, 1 fatal`, and `; externals: 2 healthy, 1 stale` when there are any.
pub fn summary(report: &StatusReport) -> String {
    let mut s = crate::program::state::summary(report.programs.iter().map(|p| p.snapshot.state));
    if report.programs.is_empty() && !report.externals.is_empty() {
        s.clear();
    }
    if !report.externals.is_empty() {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for x in &report.externals {
            *counts.entry(x.health.as_str()).or_default() += 1;
        }
        let parts: Vec<String> = counts.iter().map(|(h, n)| format!("{n} {h}")).collect();
        let sep = if s.is_empty() { "" } else { "; " };
        let _ = write!(s, "{sep}externals: {}", parts.join(", "));
    }
    s
}

/// The row of an `[[external]]` worker: no process, so no pid, uptime, CPU or memory.
fn external_row(x: &ExternalSnapshot, now_ms: u64) -> [String; 13] {
    let dash = || "-".to_string();
    let hb = &x.heartbeat;
    let info = match (&x.message, x.health) {
        (Some(m), h) if h != Health::Healthy => m.clone(),
        _ => hb.status.clone().unwrap_or_default(),
    };
    let [last_beat, jobs, errors] = beat_cells(hb, now_ms);
    [
        x.name.clone(),
        x.state.clone(),
        x.health.as_str().to_string(),
        dash(),
        dash(),
        dash(),
        dash(),
        dash(),
        dash(),
        last_beat,
        jobs,
        errors,
        info,
    ]
}

fn external_history(x: &ExternalSnapshot, now_ms: u64, out: &mut String) {
    let _ = writeln!(
        out,
        "\n{}: an [[external]] worker (ward does not run it)",
        x.name
    );
    if let Some(d) = &x.description {
        let _ = writeln!(out, "  {d}");
    }
    match (&x.worker_host, x.worker_pid) {
        (Some(h), Some(p)) => {
            let _ = writeln!(out, "  its row says: host {h}, pid {p}");
        }
        (Some(h), None) => {
            let _ = writeln!(out, "  its row says: host {h}");
        }
        (None, Some(p)) => {
            let _ = writeln!(out, "  its row says: pid {p}");
        }
        (None, None) => {}
    }
    if let Some(m) = &x.message {
        let _ = writeln!(out, "  {m}");
    }
    for (label, value) in [
        ("task", &x.heartbeat.current_task),
        ("last error", &x.heartbeat.last_error),
    ] {
        if let Some(v) = value {
            let _ = writeln!(out, "  {label}: {v}");
        }
    }
    if x.history.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nrecent health changes of {}:", x.name);
    for c in &x.history {
        let _ = writeln!(
            out,
            "  {:>8} ago  {} -> {}  {}",
            ago(now_ms.saturating_sub(c.at_ms)),
            c.from.as_str(),
            c.to.as_str(),
            c.detail
        );
    }
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
