//! File watching: reload when the config file changes (`watch_config`), and
//! restart a program when its files change (`watch = [...]`, PM2's `--watch`).
//!
//! Watchers run on notify's own thread and only send paths into a channel;
//! all decisions happen in one tokio task. Never touches a child directly:
//! restarts and reloads go through the [`Supervisor`].

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{Config, Program};
use crate::program::Request;
use crate::supervisor::Supervisor;

/// Quiet time after a config file change before reloading.
const CONFIG_DEBOUNCE: Duration = Duration::from_millis(300);
/// Always ignored by program watches.
const ALWAYS_IGNORED: &[&str] = &[".git", "node_modules"];

/// Start the watch task. It follows reloads: watches are rebuilt whenever
/// the running config changes.
pub fn spawn(sup: Arc<Supervisor>) {
    tokio::spawn(run(sup));
}

/// Where a change came from.
enum Source {
    Config,
    Program(String),
}

async fn run(sup: Arc<Supervisor>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Source, PathBuf)>();
    let mut epoch = sup.subscribe_epoch();
    let mut config: Option<Arc<Config>> = None;
    let mut watchers: Vec<notify::RecommendedWatcher> = Vec::new();
    let mut programs: HashMap<String, ProgramWatch> = HashMap::new();
    // Pending actions: what to do, and when (after the debounce).
    let mut reload_at: Option<Instant> = None;
    let mut restart_at: HashMap<String, Instant> = HashMap::new();
    loop {
        let current = sup.config();
        if !config.as_ref().is_some_and(|c| Arc::ptr_eq(c, &current)) {
            watchers.clear();
            programs.clear();
            watchers.extend(config_watcher(&current, &tx));
            for p in current.programs.iter().filter(|p| !p.watch.is_empty()) {
                let w = ProgramWatch::new(p, &current);
                if let Some(watcher) = w.start(&tx) {
                    watchers.push(watcher);
                    programs.insert(p.name.clone(), w);
                }
            }
            config = Some(current);
        }
        let next = reload_at
            .into_iter()
            .chain(restart_at.values().copied())
            .min();
        tokio::select! {
            changed = epoch.changed() => if changed.is_err() { return },
            Some((source, path)) = rx.recv() => match source {
                Source::Config => reload_at = Some(Instant::now() + CONFIG_DEBOUNCE),
                Source::Program(name) => {
                    if let Some(w) = programs.get(&name) {
                        if w.matches(&path) {
                            tracing::debug!(program = %name, path = %path.display(), "watched file changed");
                            restart_at.insert(name, Instant::now() + w.delay);
                        }
                    }
                }
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                if reload_at.is_some_and(|t| t <= now) {
                    reload_at = None;
                    tracing::info!("the config file changed; reloading");
                    if let Err(e) = sup.reload().await {
                        tracing::error!("reload refused: {e}");
                    }
                }
                let due: Vec<String> = restart_at.iter().filter(|(_, t)| **t <= now).map(|(n, _)| n.clone()).collect();
                for name in due {
                    restart_at.remove(&name);
                    restart_watched(&sup, &name).await;
                }
            }
        }
    }
}

/// Restart the instances of `name` that are up (a stopped program stays stopped).
async fn restart_watched(sup: &Supervisor, name: &str) {
    let Ok(handles) = sup.resolve(&[name.to_string()]) else {
        return;
    };
    let up: Vec<String> = handles
        .iter()
        .filter(|h| h.phase().is_wanted_up())
        .map(|h| h.id.clone())
        .collect();
    if up.is_empty() {
        return;
    }
    tracing::info!(program = %name, "watched files changed; restarting");
    if let Ok(actions) = sup.act(Request::Restart, &up).await {
        for r in actions.results.iter().filter(|r| !r.ok) {
            tracing::warn!(program = %r.name, "restart after a file change failed: {}", r.message);
        }
    }
}

fn config_watcher(
    config: &Config,
    tx: &mpsc::UnboundedSender<(Source, PathBuf)>,
) -> Option<notify::RecommendedWatcher> {
    if !config.supervisor.watch_config {
        return None;
    }
    let file = config.path.clone();
    let dir = file.parent()?.to_path_buf();
    let tx = tx.clone();
    let target = file.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            // Editors replace files by rename, so watch the directory and filter.
            if ev.kind.is_access() {
                return;
            }
            if ev.paths.iter().any(|p| p == &target) {
                let _ = tx.send((Source::Config, target.clone()));
            }
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the config file; `watch_config` is off"))
    .ok()?;
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config directory; `watch_config` is off");
        return None;
    }
    tracing::info!(file = %file.display(), "watching the config file for changes");
    Some(watcher)
}

/// One program's `watch` settings, resolved against its working directory.
struct ProgramWatch {
    name: String,
    base: PathBuf,
    patterns: Vec<String>,
    ignore: Vec<String>,
    state_dir: PathBuf,
    delay: Duration,
}

impl ProgramWatch {
    fn new(p: &Program, config: &Config) -> ProgramWatch {
        let base = p.cwd.clone().unwrap_or_else(|| {
            config
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        });
        ProgramWatch {
            name: p.name.clone(),
            base,
            patterns: p
                .watch
                .iter()
                .map(|s| s.trim_end_matches('/').to_string())
                .collect(),
            ignore: p
                .watch_ignore
                .iter()
                .map(|s| s.trim_end_matches('/').to_string())
                .collect(),
            state_dir: config.supervisor.state_dir.clone(),
            delay: p.watch_delay,
        }
    }

    /// The directories to watch: each pattern's literal prefix.
    fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self
            .patterns
            .iter()
            .map(|pat| {
                let literal: PathBuf = Path::new(pat)
                    .components()
                    .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                    .collect();
                let full = self.base.join(literal);
                if full.is_file() {
                    full.parent().map(Path::to_path_buf).unwrap_or(full)
                } else {
                    full
                }
            })
            .collect();
        roots.sort();
        roots.dedup();
        roots
    }

    fn start(
        &self,
        tx: &mpsc::UnboundedSender<(Source, PathBuf)>,
    ) -> Option<notify::RecommendedWatcher> {
        let tx = tx.clone();
        let name = self.name.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if ev.kind.is_access() {
                    return;
                }
                for p in ev.paths {
                    let _ = tx.send((Source::Program(name.clone()), p));
                }
            }
        })
        .map_err(|e| tracing::warn!(program = %self.name, error = %e, "cannot watch files"))
        .ok()?;
        for root in self.roots() {
            if let Err(e) = watcher.watch(&root, RecursiveMode::Recursive) {
                tracing::warn!(program = %self.name, path = %root.display(), error = %e, "cannot watch this path");
            }
        }
        Some(watcher)
    }

    /// Whether a change at `path` should restart the program.
    fn matches(&self, path: &Path) -> bool {
        if path.starts_with(&self.state_dir) {
            return false;
        }
        let Ok(rel) = path.strip_prefix(&self.base) else {
            return false;
        };
        let rel = rel.to_string_lossy();
        if rel.split('/').any(|part| ALWAYS_IGNORED.contains(&part)) {
            return false;
        }
        let hit = |pat: &String| path_matches(pat, &rel);
        self.patterns.iter().any(hit) && !self.ignore.iter().any(hit)
    }
}

/// `pattern` (relative, may hold `*`, `**`, `?`) matches `rel` itself, a file
/// under it (for a directory pattern), or, for a pattern without `/`, the
/// file name alone (`*.js` matches `src/a.js`).
fn path_matches(pattern: &str, rel: &str) -> bool {
    let pattern = normalize(pattern);
    if pattern.is_empty() || pattern == "." {
        return true;
    }
    if glob(&pattern, rel) || rel.starts_with(&format!("{pattern}/")) {
        return true;
    }
    if !pattern.contains('/') {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        return glob(&pattern, name) || rel.split('/').any(|part| part == pattern);
    }
    false
}

fn normalize(p: &str) -> String {
    Path::new(p)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Glob match: `*` any run without `/`, `**` any run, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') if p.get(1) == Some(&'*') => {
                let rest = if p.get(2) == Some(&'/') {
                    &p[3..]
                } else {
                    &p[2..]
                };
                (0..=t.len()).any(|i| go(rest, &t[i..]))
            }
            Some('*') => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != '/')
                .any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && t[0] != '/' && go(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*.js", "a.js"));
        assert!(!glob("*.js", "src/a.js"));
        assert!(glob("src/**/*.js", "src/a/b/c.js"));
        assert!(glob("src/**/*.js", "src/c.js"));
        assert!(glob("**", "a/b"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "a/c"));
    }

    #[test]
    fn patterns() {
        assert!(path_matches("src/", "src/lib/a.js"));
        assert!(path_matches("src", "src/a.js"));
        assert!(!path_matches("src", "srcs/a.js"));
        assert!(path_matches("*.js", "lib/deep/a.js"));
        assert!(!path_matches("*.js", "lib/a.ts"));
        assert!(path_matches("./app.py", "app.py"));
        assert!(path_matches(".", "anything/at/all"));
        assert!(path_matches("logs", "a/logs/x.log"));
    }
}
