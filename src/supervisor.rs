//! The set of program actors and the operations on many of them at once:
//! name resolution, status, start/stop/restart with dependency order.
//!
//! Holds handles only; never owns a child (the actors do) and never does
//! socket I/O (the control server does).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use crate::config::{Config, Instance, Program};
use crate::control::protocol::{
    ActionResult, Actions, LogSourceInfo, LogSources, ProgramStatus, StatusReport, StoreStatus,
};
use crate::heartbeat::external::Externals;
use crate::logs::InstanceLogs;
use crate::procfs;
use crate::program::{Context, Phase, ProgramHandle, Request};

/// Figures a sample of `/proc` measures, not the actor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub log_bytes_dropped: u64,
}

pub struct Supervisor {
    current: RwLock<Arc<Generation>>,
    ctx: Arc<Context>,
    pub started_at_ms: u64,
    epoch: watch::Sender<u64>,
    /// CPU % and RSS sampling, shared by status calls and the store's refresh.
    sampler: Mutex<procfs::Sampler>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The status-table writer's health, once `store::spawn` set it.
    store: std::sync::OnceLock<Arc<Mutex<StoreStatus>>>,
    /// The registry of `[[external]]` workers.
    externals: Externals,
}

/// A config and the actors running it; swapped whole on reload.
pub struct Generation {
    pub config: Arc<Config>,
    /// Every instance, in config order.
    pub handles: Vec<ProgramHandle>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
    /// Settings that need a restart of ward to take effect.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new config is invalid; nothing was changed\n{0}")]
    Invalid(String),
}

/// A name that matches no program (or names an `[[external]]` worker,
/// which no action but `status` and `beat` applies to).
#[derive(Debug)]
pub struct UnknownName {
    pub name: String,
    pub known: Vec<String>,
    /// The name is an `[[external]]` worker's.
    pub external: bool,
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.external {
            write!(
                f,
                "`{}` is an [[external]] worker; ward does not run it",
                self.name
            )
        } else {
            write!(f, "unknown program `{}`", self.name)
        }
    }
}

impl std::error::Error for UnknownName {}

impl UnknownName {
    pub fn hint(&self) -> String {
        if self.external {
            "an external worker reports through the `heartbeats` table; `ward status` and `ward beat` take its name, start/stop/restart/logs do not (docs/HEARTBEATS.md)".into()
        } else if self.known.is_empty() {
            "the config defines no programs".into()
        } else {
            format!("known programs: {} (or `all`)", self.known.join(", "))
        }
    }
}

impl Supervisor {
    /// Create one actor per instance of `config` (none started yet).
    pub fn new(config: Config, ctx: Arc<Context>) -> Supervisor {
        let epoch = ctx.epoch.clone();
        let handles = config
            .instances()
            .into_iter()
            .map(|inst| {
                let logs = open_logs(&config, &inst);
                ProgramHandle::spawn(inst, ctx.clone(), logs)
            })
            .collect();
        let generation = Generation {
            config: Arc::new(config),
            handles,
        };
        register(&ctx, &generation.handles);
        let externals = Externals::spawn(&generation.config.externals, ctx.changed.clone());
        Supervisor {
            externals,
            current: RwLock::new(Arc::new(generation)),
            ctx,
            started_at_ms: crate::program::now_ms(),
            epoch,
            sampler: Mutex::new(procfs::Sampler::new()),
            reloading: tokio::sync::Mutex::new(()),
            store: std::sync::OnceLock::new(),
        }
    }

    /// Let status reports include the status-table writer's health.
    pub fn set_store_status(&self, status: Arc<Mutex<StoreStatus>>) {
        let _ = self.store.set(status);
    }

    /// The running config and actors.
    pub fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.current().config.clone()
    }

    pub fn handles(&self) -> Vec<ProgramHandle> {
        self.current().handles.clone()
    }

    /// The `[[external]]` workers' registry.
    pub fn externals(&self) -> &Externals {
        &self.externals
    }

    /// Notified on every snapshot change (phase or heartbeat).
    pub fn changed(&self) -> Arc<tokio::sync::Notify> {
        self.ctx.changed.clone()
    }

    /// Bumped on every phase change and every reload.
    pub fn subscribe_epoch(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Re-read the config file and apply only the difference: new programs
    /// start, removed ones stop, changed ones restart, untouched ones keep
    /// running with the same pid. An invalid file changes nothing.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one = self.reloading.lock().await;
        let old = self.current();
        let mut new = match crate::config::load(&old.config.path) {
            Ok(c) => c,
            Err(e) => return Err(ReloadError::Invalid(e.to_string())),
        };
        let mut report = ReloadReport::default();
        if new.supervisor != old.config.supervisor {
            report.warnings.push(
                "changes to [supervisor] (state_dir, socket, socket_group, host, log, database) take effect when ward restarts".into(),
            );
            new.supervisor = old.config.supervisor.clone();
        }
        if new.store != old.config.store {
            report
                .warnings
                .push("changes to [store] take effect when ward restarts".into());
            new.store = old.config.store.clone();
        }
        let old_by_id: HashMap<&str, &ProgramHandle> =
            old.handles.iter().map(|h| (h.id.as_str(), h)).collect();
        let instances = new.instances();
        let new_ids: HashSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
        let removed: Vec<ProgramHandle> = old
            .handles
            .iter()
            .filter(|h| !new_ids.contains(h.id.as_str()))
            .cloned()
            .collect();
        let changed: Vec<ProgramHandle> = instances
            .iter()
            .filter_map(|inst| {
                old_by_id
                    .get(inst.id.as_str())
                    .filter(|h| !same_settings(&h.program, &inst.program))
            })
            .map(|h| (*h).clone())
            .collect();
        // Stop what goes away or changes, dependents first.
        let was_up: HashSet<String> = changed
            .iter()
            .filter(|h| h.phase().is_wanted_up())
            .map(|h| h.id.clone())
            .collect();
        let mut to_stop = removed.clone();
        to_stop.extend(changed.iter().cloned());
        self.stop_ordered(&to_stop).await;

        let changed_ids: HashSet<&str> = changed.iter().map(|h| h.id.as_str()).collect();
        let mut to_start = Vec::new();
        let mut handles = Vec::with_capacity(instances.len());
        for inst in instances {
            let old_handle = old_by_id.get(inst.id.as_str()).copied();
            match old_handle {
                Some(h) if !changed_ids.contains(inst.id.as_str()) => {
                    report.unchanged += 1;
                    handles.push(h.clone());
                    continue;
                }
                Some(_) => report.changed.push(inst.id.clone()),
                None => report.added.push(inst.id.clone()),
            }
            // Keep the log writer when the log settings did not change.
            let logs = match old_handle {
                Some(h) if h.program.log == inst.program.log => h.logs.clone(),
                _ => open_logs(&new, &inst),
            };
            let start = match old_handle {
                Some(h) => was_up.contains(&h.id),
                None => inst.program.autostart,
            };
            let h = ProgramHandle::spawn(inst, self.ctx.clone(), logs);
            if start {
                to_start.push(h.clone());
            }
            handles.push(h);
        }
        report.removed = removed.iter().map(|h| h.id.clone()).collect();
        let old_x: HashSet<&str> = old
            .config
            .externals
            .iter()
            .map(|x| x.name.as_str())
            .collect();
        let new_x: HashSet<&str> = new.externals.iter().map(|x| x.name.as_str()).collect();
        for x in &new.externals {
            if !old_x.contains(x.name.as_str()) {
                report.added.push(x.name.clone());
            } else if old.config.external(&x.name) != Some(x) {
                report.changed.push(x.name.clone());
            } else {
                report.unchanged += 1;
            }
        }
        for x in &old.config.externals {
            if !new_x.contains(x.name.as_str()) {
                report.removed.push(x.name.clone());
            }
        }
        self.externals.configure(new.externals.clone()).await;
        register(&self.ctx, &handles);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Generation {
            config: Arc::new(new),
            handles,
        });
        self.epoch.send_modify(|e| *e = e.wrapping_add(1));
        // Reply once the new and changed programs run (or failed to).
        let starts: Vec<_> = to_start
            .into_iter()
            .map(|h| tokio::spawn(async move { (h.id.clone(), h.request(Request::Start).await) }))
            .collect();
        for t in starts {
            if let Ok((id, Err(why))) = t.await {
                report.warnings.push(format!("`{id}` did not start: {why}"));
            }
        }
        tracing::info!(
            added = ?report.added,
            removed = ?report.removed,
            changed = ?report.changed,
            unchanged = report.unchanged,
            "config reloaded"
        );
        for w in &report.warnings {
            tracing::warn!("{w}");
        }
        Ok(report)
    }

    /// Instances named by `names`: `all`, a program name (all its instances),
    /// or an instance id (`web:1`). Empty means all. Order follows the config.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<ProgramHandle>, UnknownName> {
        let current = self.current();
        if names.is_empty() || names.iter().any(|n| n == "all") {
            return Ok(current.handles.clone());
        }
        let mut wanted = HashSet::new();
        for name in names {
            let before = wanted.len();
            for h in &current.handles {
                if &h.id == name || &h.program.name == name {
                    wanted.insert(h.id.clone());
                }
            }
            if wanted.len() == before
                && !current
                    .handles
                    .iter()
                    .any(|h| &h.id == name || &h.program.name == name)
            {
                if current.config.external(name).is_some() {
                    return Err(UnknownName {
                        name: name.clone(),
                        known: Vec::new(),
                        external: true,
                    });
                }
                let mut known: Vec<String> = current
                    .config
                    .programs
                    .iter()
                    .map(|p| p.name.clone())
                    .collect();
                known.dedup();
                known.extend(current.config.externals.iter().map(|x| x.name.clone()));
                return Err(UnknownName {
                    name: name.clone(),
                    known,
                    external: false,
                });
            }
        }
        Ok(current
            .handles
            .iter()
            .filter(|h| wanted.contains(&h.id))
            .cloned()
            .collect())
    }

    /// Programs and externals named by `names` (all when empty or `all`).
    pub fn status(&self, names: &[String], history: bool) -> Result<StatusReport, UnknownName> {
        let config = self.config();
        let all = names.is_empty() || names.iter().any(|n| n == "all");
        let (x_names, p_names): (Vec<String>, Vec<String>) = names
            .iter()
            .cloned()
            .partition(|n| !all && config.external(n).is_some());
        let handles = if !all && p_names.is_empty() {
            Vec::new()
        } else {
            self.resolve(&p_names)?
        };
        let externals = self
            .externals
            .snapshot()
            .iter()
            .filter(|x| all || x_names.contains(&x.name))
            .map(|x| {
                let mut x = x.clone();
                if !history {
                    x.history.clear();
                }
                x
            })
            .collect();
        let now_ms = crate::program::now_ms();
        let mut sampler = self.sampler.lock().unwrap_or_else(|e| e.into_inner());
        if names.is_empty() {
            sampler.begin_pass();
        }
        let programs = handles
            .into_iter()
            .map(|h| {
                let mut snapshot = if history {
                    h.snapshot()
                } else {
                    h.snapshot_brief()
                };
                let (mut cpu_percent, mut rss_bytes) = (None, None);
                if let (Some(pid), Some(start)) = (snapshot.pid, snapshot.start_ticks) {
                    let ran_ms = snapshot
                        .started_at_ms
                        .map_or(0, |s| now_ms.saturating_sub(s));
                    match sampler.sample(pid, start, ran_ms) {
                        Ok(Some(s)) => {
                            rss_bytes = Some(s.stat.rss_bytes);
                            cpu_percent = Some(s.cpu_percent);
                        }
                        // `/proc` unreadable (out of descriptors): no figures,
                        // and no verdict on the process either.
                        Err(_) => {}
                        Ok(None) => {
                            // Status never lies: the pid is not the process ward started.
                            snapshot.message = Some(format!(
                                "pid {pid} is not (or no longer) the process ward started"
                            ));
                            snapshot.state = Phase::Unknown;
                        }
                    }
                }
                // None once the main process exited, while its group is stopped.
                let uptime_ms = if snapshot.state.has_process() && snapshot.pid.is_some() {
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
            sampler.end_pass();
        }
        drop(sampler);
        Ok(StatusReport {
            host: config.supervisor.host.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            config: config.path.display().to_string(),
            started_at_ms: self.started_at_ms,
            programs,
            externals,
            store: self
                .store
                .get()
                .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        })
    }

    /// CPU %, RSS and dropped log bytes of every instance, handed to `each`
    /// with the instance id: what the status tables' refresh needs, without
    /// building a report (or allocating: it runs for 1,000 programs every
    /// refresh).
    pub fn sample_metrics(&self, mut each: impl FnMut(&str, Metrics)) {
        let current = self.current();
        let now_ms = crate::program::now_ms();
        let mut sampler = self.sampler.lock().unwrap_or_else(|e| e.into_inner());
        sampler.begin_pass();
        for h in &current.handles {
            let (pid, start, started) = h.process();
            let sample = match (pid, start) {
                (Some(pid), Some(start)) => {
                    let ran_ms = started.map_or(0, |s| now_ms.saturating_sub(s));
                    sampler.sample(pid, start, ran_ms).ok().flatten()
                }
                _ => None,
            };
            let m = Metrics {
                cpu_percent: sample.map(|s| s.cpu_percent),
                rss_bytes: sample.map(|s| s.stat.rss_bytes),
                log_bytes_dropped: h.logs.bytes_dropped(),
            };
            each(&h.id, m);
        }
        sampler.end_pass();
    }

    /// Start, stop or restart the named instances; returns when each has
    /// taken effect. Starting also starts what they depend on; stopping
    /// several stops dependents before their dependencies.
    pub async fn act(&self, req: Request, names: &[String]) -> Result<Actions, UnknownName> {
        let targets: Vec<ProgramHandle> = self.resolve(names)?;
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
                    Ok(message) => ActionResult {
                        name,
                        ok: true,
                        message,
                    },
                    Err(message) => ActionResult {
                        name,
                        ok: false,
                        message,
                    },
                })
                .collect(),
        })
    }

    /// Instances (not among `targets`) that `targets` depend on, transitively.
    fn dependency_closure(&self, targets: &[ProgramHandle]) -> Vec<ProgramHandle> {
        let current = self.current();
        let mut programs: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = targets
            .iter()
            .flat_map(|h| h.program.depends_on.iter().map(|s| s.as_str()))
            .collect();
        while let Some(name) = stack.pop() {
            if programs.insert(name) {
                if let Some(p) = current.config.program(name) {
                    stack.extend(p.depends_on.iter().map(|s| s.as_str()));
                }
            }
        }
        let ids: HashSet<&str> = targets.iter().map(|h| h.id.as_str()).collect();
        current
            .handles
            .iter()
            .filter(|h| programs.contains(h.program.name.as_str()) && !ids.contains(h.id.as_str()))
            .cloned()
            .collect()
    }

    /// Stop `targets` in parallel, each only after the targets that depend on
    /// it have no process left.
    pub async fn stop_ordered(
        &self,
        targets: &[ProgramHandle],
    ) -> Vec<(String, Result<String, String>)> {
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
                    while dependents.iter().any(|d| d.phase().has_process()) {
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
        for h in &self.current().handles {
            h.logs.reopen();
        }
    }
}

fn open_logs(config: &Config, inst: &Instance) -> InstanceLogs {
    let paths = inst
        .program
        .log
        .paths(&config.supervisor.state_dir, &inst.id, inst.index);
    InstanceLogs::open(paths, &inst.program.log)
}

/// Publish the instances of each program for `depends_on` lookups.
fn register(ctx: &Context, handles: &[ProgramHandle]) {
    let mut map: HashMap<String, Vec<watch::Receiver<crate::program::Snapshot>>> = HashMap::new();
    for h in handles {
        map.entry(h.program.name.clone())
            .or_default()
            .push(h.subscribe());
    }
    *ctx.registry.write().unwrap_or_else(|e| e.into_inner()) = map;
}

/// Whether an instance can keep running across a reload: every setting is
/// the same except the number of instances (scaling adds or removes others).
fn same_settings(old: &Program, new: &Program) -> bool {
    let mut n = new.clone();
    n.instances = old.instances;
    *old == n
}
