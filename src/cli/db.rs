//! The verbs that read or prepare the status tables directly, without the
//! daemon: `ward status --db`, `ward events`, `ward db migrate`.
//!
//! Opens the database named by the config (or `database_url_env`) on a small
//! current-thread runtime. Never writes rows; `migrate` only applies schema.

use std::fmt::Write as _;
use std::time::Duration;

use super::status::{ago, bytes};
use super::{exit_codes, print_error};
use crate::config::Config;
use crate::exit::signal_name;
use crate::program::now_ms;
use crate::store::{self, Db, EventFilter, EventView, HostRow, StoreError, WorkerView};

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            print_error(&format!("cannot start the async runtime: {e}"), None);
            None
        }
    }
}

fn report(e: &StoreError) -> u8 {
    print_error(&e.chain(), e.hint().as_deref());
    exit_codes::FAILED
}

async fn open(config: &Config, create: bool) -> Result<(Db, String), StoreError> {
    let url = store::database_url(&config.supervisor);
    let db = Db::open(&url, create).await?;
    Ok((db, url))
}

/// `ward db migrate`.
pub fn migrate(config: &Config) -> u8 {
    let Some(rt) = runtime() else {
        return exit_codes::FAILED;
    };
    rt.block_on(async {
        let (db, url) = match open(config, true).await {
            Ok(x) => x,
            Err(e) => return report(&e),
        };
        let result = db.migrate(&url).await;
        db.close().await;
        match result {
            Ok(applied) if applied.is_empty() => {
                println!(
                    "{}: up to date ({} migrations)",
                    store::redact(&url),
                    db.known_migrations().len()
                );
                exit_codes::OK
            }
            Ok(applied) => {
                for (version, description) in &applied {
                    println!("applied {version:04} {description}");
                }
                println!(
                    "{}: {} migration(s) applied",
                    store::redact(&url),
                    applied.len()
                );
                exit_codes::OK
            }
            Err(e) => report(&e),
        }
    })
}

/// What `ward status --db --json` prints.
#[derive(serde::Serialize)]
struct DbStatus {
    hosts: Vec<HostRow>,
    workers: Vec<WorkerView>,
}

/// `ward status --db [--all-hosts]`.
pub fn status(config: &Config, names: &[String], all_hosts: bool, json: bool) -> u8 {
    let Some(rt) = runtime() else {
        return exit_codes::FAILED;
    };
    rt.block_on(async {
        let (db, _) = match open(config, false).await {
            Ok(x) => x,
            Err(e) => return report(&e),
        };
        let host = (!all_hosts).then_some(config.supervisor.host.as_str());
        let read = async { Ok::<_, sqlx::Error>((db.hosts(host).await?, db.workers(host).await?)) };
        let (hosts, mut workers) = match read.await {
            Ok(x) => x,
            Err(e) => return report(&StoreError::Query(e)),
        };
        db.close().await;
        if !names.is_empty() {
            workers.retain(|w| {
                names
                    .iter()
                    .any(|n| n == &w.name || n == &w.program || n == "all")
            });
        }
        if json {
            let out = DbStatus { hosts, workers };
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        } else {
            print!("{}", render(&hosts, &workers, now_ms() as i64));
        }
        exit_codes::OK
    })
}

fn exit_text(code: Option<i64>, signal: Option<i64>) -> Option<String> {
    match (code, signal) {
        (Some(c), _) => Some(format!("exit {c}")),
        (None, Some(s)) => Some(signal_name(s as i32)),
        _ => None,
    }
}

fn since(now: i64, t: i64) -> String {
    ago(now.saturating_sub(t).max(0) as u64)
}

/// The table: like live status, with HOST first and stale hosts marked.
fn render(hosts: &[HostRow], workers: &[WorkerView], now: i64) -> String {
    let headers = [
        "HOST",
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "CPU",
        "MEM",
        "UPDATED",
        "INFO",
    ];
    let stale = |h: &str| match hosts.iter().find(|x| x.host == h) {
        Some(x) => x.stale,
        None => true,
    };
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let mut info = w
                .message
                .clone()
                .filter(|_| w.state != "running")
                .unwrap_or_default();
            if stale(&w.host) && w.state != "removed" {
                info = format!("host stale; {info}")
                    .trim_end_matches("; ")
                    .to_string();
            }
            vec![
                w.host.clone(),
                w.name.clone(),
                w.state.clone(),
                w.pid.map(|p| p.to_string()).unwrap_or_else(dash),
                w.uptime_ms
                    .map(|u| ago(u.max(0) as u64))
                    .unwrap_or_else(dash),
                w.restarts.to_string(),
                match (
                    exit_text(w.last_exit_code, w.last_exit_signal),
                    w.last_exit_at_ms,
                ) {
                    (Some(e), Some(at)) => format!("{e} ({} ago)", since(now, at)),
                    (Some(e), None) => e,
                    _ => dash(),
                },
                w.cpu_percent
                    .map(|c| format!("{c:.1}%"))
                    .unwrap_or_else(dash),
                w.rss_bytes
                    .map(|b| bytes(b.max(0) as u64))
                    .unwrap_or_else(dash),
                format!("{} ago", since(now, w.updated_at_ms)),
                info,
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(l, "{c:<w$}  ", w = widths[i]);
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&headers.map(String::from));
    for r in &rows {
        line(r);
    }
    for h in hosts {
        let running = workers
            .iter()
            .filter(|w| w.host == h.host && w.state == "running")
            .count();
        let total = workers
            .iter()
            .filter(|w| w.host == h.host && w.state != "removed" && w.state != "external")
            .count();
        let externals = workers
            .iter()
            .filter(|w| w.host == h.host && w.state == "external")
            .count();
        let mut s = format!("{}: {running}/{total} running", h.host);
        if externals > 0 {
            s.push_str(&format!(", {externals} external"));
        }
        s.push_str(&format!("; supervisor pid {} ", h.pid));
        match (h.stopped_at_ms, h.stale) {
            (Some(at), _) => s.push_str(&format!("stopped {} ago", since(now, at))),
            (None, true) => s.push_str(&format!(
                "STALE: last seen {} ago",
                since(now, h.last_seen_at_ms)
            )),
            (None, false) => {
                s.push_str(&format!("last seen {} ago", since(now, h.last_seen_at_ms)))
            }
        }
        if h.dropped_events > 0 {
            s.push_str(&format!("; {} events dropped", h.dropped_events));
        }
        out.push_str(&s);
        out.push('\n');
    }
    if hosts.is_empty() {
        out.push_str("no supervisor has written to this database yet\n");
    }
    out
}

/// `ward events [NAME] [--since D] [-n N] [--json] [--all-hosts]`.
pub fn events(
    config: &Config,
    name: Option<String>,
    since_d: Option<Duration>,
    limit: usize,
    json: bool,
    all_hosts: bool,
) -> u8 {
    let Some(rt) = runtime() else {
        return exit_codes::FAILED;
    };
    rt.block_on(async {
        let (db, _) = match open(config, false).await {
            Ok(x) => x,
            Err(e) => return report(&e),
        };
        let filter = EventFilter {
            host: (!all_hosts).then(|| config.supervisor.host.clone()),
            name,
            since_ms: since_d.map_or(0, |d| now_ms().saturating_sub(d.as_millis() as u64)),
            limit: limit.min(i64::MAX as usize) as i64,
        };
        let events = match db.events(&filter).await {
            Ok(e) => e,
            Err(e) => return report(&StoreError::Query(e)),
        };
        db.close().await;
        if json {
            for e in &events {
                println!("{}", serde_json::to_string(e).unwrap_or_default());
            }
        } else {
            for e in &events {
                println!("{}", event_line(e, all_hosts));
            }
            if events.is_empty() {
                eprintln!("no events");
            }
        }
        exit_codes::OK
    })
}

fn event_line(e: &EventView, host: bool) -> String {
    let at = store::db::ts(e.at_ms.max(0) as u64);
    let mut s = if host {
        format!("{at}  {}  {}  {}", e.host, e.name, e.event)
    } else {
        format!("{at}  {}  {}", e.name, e.event)
    };
    if let Some(pid) = e.pid {
        let _ = write!(s, "  pid {pid}");
    }
    if let Some(x) = exit_text(e.exit_code, e.exit_signal) {
        let _ = write!(s, "  {x}");
    }
    if let Some(d) = e.delay_ms {
        let _ = write!(
            s,
            "  delay {}",
            crate::program::human(Duration::from_millis(d.max(0) as u64))
        );
    }
    if let Some(d) = &e.detail {
        let _ = write!(s, "  {d}");
    }
    s
}
