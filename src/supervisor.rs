//! The set of program actors and the operations on many of them at once:
//! name resolution, status, start/stop/restart with dependency order.
//!
//! Holds handles only; never owns a child (the actors do) and never does
//! socket I/O (the control server does).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::watch;

use crate::config::Config;
use crate::control::protocol::{ActionResult, Actions, LogSourceInfo, LogSources, ProgramStatus, StatusReport};
use crate::program::{Phase, ProgramHandle, Request};
use crate::procfs;

pub struct Supervisor {
    pub config: Config,
    /// Every instance, in config order.
    pub handles: Vec<ProgramHandle>,
    pub started_at_ms: u64,
    epoch: watch::Sender<u64>,
    cpu_samples: Mutex<HashMap<i32, (u64, Instant)>>,
}

/// A name that matches no program.
#[derive(Debug, thiserror::Error)]
#[error("unknown program `{name}`")]
pub struct UnknownName {
    pub name: String,
    pub known: Vec<String>,
}

impl UnknownName {
    pub fn hint(&self) -> String {
        if self.known.is_empty() {
            "the config defines no programs".into()
        } else {
            format!("known programs: {} (or `all`)", self.known.join(", "))
        }
    }
}

impl Supervisor {
    pub fn new(config: Config, handles: Vec<ProgramHandle>, epoch: watch::Sender<u64>) -> Supervisor {
        Supervisor {
            config,
            handles,
            started_at_ms: crate::program::now_ms(),
            epoch,
            cpu_samples: Mutex::new(HashMap::new()),
        }
    }

    /// Instances named by `names`: `all`, a program name (all its instances),
    /// or an instance id (`web:1`). Empty means all. Order follows the config.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<&ProgramHandle>, UnknownName> {
        if names.is_empty() || names.iter().any(|n| n == "all") {
            return Ok(self.handles.iter().collect());
        }
        let mut wanted = HashSet::new();
        for name in names {
            let before = wanted.len();
            for h in &self.handles {
                if &h.id == name || &h.program.name == name {
                    wanted.insert(h.id.as_str());
                }
            }
            if wanted.len() == before && !self.handles.iter().any(|h| &h.id == name || &h.program.name == name) {
                let mut known: Vec<String> = self.config.programs.iter().map(|p| p.name.clone()).collect();
                known.dedup();
                return Err(UnknownName { name: name.clone(), known });
            }
        }
        Ok(self.handles.iter().filter(|h| wanted.contains(h.id.as_str())).collect())
    }

    pub fn status(&self, names: &[String], history: bool) -> Result<StatusReport, UnknownName> {
        let handles = self.resolve(names)?;
        let now = Instant::now();
        let now_ms = crate::program::now_ms();
        let ticks = procfs::ticks_per_second() as f64;
        let mut samples = self.cpu_samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut live = HashSet::new();
        let programs = handles
            .into_iter()
            .map(|h| {
                let mut snapshot = h.snapshot();
                if !history {
                    snapshot.history.clear();
                }
                let (mut cpu_percent, mut rss_bytes) = (None, None);
                if let (Some(pid), Some(start)) = (snapshot.pid, snapshot.start_ticks) {
                    match procfs::stat(pid) {
                        Some(st) if st.start_ticks == start && st.state != 'Z' => {
                            live.insert(pid);
                            rss_bytes = Some(st.rss_bytes);
                            cpu_percent = Some(match samples.insert(pid, (st.cpu_ticks, now)) {
                                Some((prev, at)) if now.duration_since(at).as_millis() >= 200 => {
                                    let secs = now.duration_since(at).as_secs_f64();
                                    (st.cpu_ticks.saturating_sub(prev) as f64 / ticks) / secs * 100.0
                                }
                                _ => {
                                    let ran = snapshot.started_at_ms.map(|s| now_ms.saturating_sub(s)).unwrap_or(0);
                                    if ran == 0 {
                                        0.0
                                    } else {
                                        (st.cpu_ticks as f64 / ticks) / (ran as f64 / 1000.0) * 100.0
                                    }
                                }
                            });
                        }
                        _ => {
                            // Status never lies: the pid is not the process ward started.
                            snapshot.message = Some(format!("pid {pid} is not (or no longer) the process ward started"));
                            snapshot.state = Phase::Unknown;
                        }
                    }
                }
                let uptime_ms = if snapshot.state.has_process() {
                    snapshot.started_at_ms.map(|s| now_ms.saturating_sub(s))
                } else {
                    None
                };
                ProgramStatus {
                    snapshot,
                    uptime_ms,
                    cpu_percent,
                    rss_bytes,
                    log: h.logs.stats(),
                }
            })
            .collect();
        if names.is_empty() {
            samples.retain(|pid, _| live.contains(pid));
        }
        Ok(StatusReport {
            host: self.config.supervisor.host.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            config: self.config.path.display().to_string(),
            started_at_ms: self.started_at_ms,
            programs,
        })
    }

    /// Start, stop or restart the named instances; returns when each has
    /// taken effect. Starting also starts what they depend on; stopping
    /// several stops dependents before their dependencies.
    pub async fn act(&self, req: Request, names: &[String]) -> Result<Actions, UnknownName> {
        let targets: Vec<ProgramHandle> = self.resolve(names)?.into_iter().cloned().collect();
        let results = match req {
            Request::Stop => self.stop_ordered(&targets).await,
            Request::Start | Request::Restart => {
                if req == Request::Start {
                    for dep in self.dependency_closure(&targets) {
                        dep.send(Request::Start);
                    }
                }
                let tasks: Vec<_> = targets
                    .iter()
                    .map(|h| {
                        let h = h.clone();
                        tokio::spawn(async move { (h.id.clone(), h.request(req).await) })
                    })
                    .collect();
                let mut results = Vec::with_capacity(tasks.len());
                for t in tasks {
                    if let Ok(r) = t.await {
                        results.push(r);
                    }
                }
                results
            }
        };
        Ok(Actions {
            results: results
                .into_iter()
                .map(|(name, r)| match r {
                    Ok(message) => ActionResult { name, ok: true, message },
                    Err(message) => ActionResult { name, ok: false, message },
                })
                .collect(),
        })
    }

    /// Instances (not among `targets`) that `targets` depend on, transitively.
    fn dependency_closure(&self, targets: &[ProgramHandle]) -> Vec<&ProgramHandle> {
        let mut programs: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = targets.iter().flat_map(|h| h.program.depends_on.iter().map(|s| s.as_str())).collect();
        while let Some(name) = stack.pop() {
            if programs.insert(name) {
                if let Some(p) = self.config.program(name) {
                    stack.extend(p.depends_on.iter().map(|s| s.as_str()));
                }
            }
        }
        let ids: HashSet<&str> = targets.iter().map(|h| h.id.as_str()).collect();
        self.handles
            .iter()
            .filter(|h| programs.contains(h.program.name.as_str()) && !ids.contains(h.id.as_str()))
            .collect()
    }

    /// Stop `targets` in parallel, each only after the targets that depend on
    /// it have no process left.
    pub async fn stop_ordered(&self, targets: &[ProgramHandle]) -> Vec<(String, Result<String, String>)> {
        let tasks: Vec<_> = targets
            .iter()
            .map(|h| {
                let dependents: Vec<ProgramHandle> = targets
                    .iter()
                    .filter(|d| d.program.depends_on.contains(&h.program.name))
                    .cloned()
                    .collect();
                let h = h.clone();
                let mut epoch = self.epoch.subscribe();
                tokio::spawn(async move {
                    while dependents.iter().any(|d| d.snapshot().state.has_process()) {
                        if epoch.changed().await.is_err() {
                            break;
                        }
                    }
                    (h.id.clone(), h.request(Request::Stop).await)
                })
            })
            .collect();
        let mut results = Vec::with_capacity(tasks.len());
        for t in tasks {
            if let Ok(r) = t.await {
                results.push(r);
            }
        }
        results
    }

    pub fn log_sources(&self, names: &[String]) -> Result<LogSources, UnknownName> {
        let mut sources = Vec::new();
        for h in self.resolve(names)? {
            let paths = h.logs.paths();
            sources.push(LogSourceInfo {
                program: h.id.clone(),
                stream: "out".into(),
                path: paths.stdout.display().to_string(),
            });
            if let Some(err) = &paths.stderr {
                sources.push(LogSourceInfo {
                    program: h.id.clone(),
                    stream: "err".into(),
                    path: err.display().to_string(),
                });
            }
        }
        Ok(LogSources { sources })
    }

    pub fn reopen_logs(&self) {
        for h in &self.handles {
            h.logs.reopen();
        }
    }
}
