//! The loader: walks a parsed TOML document (with spans) and builds the
//! validated `Config`, collecting every problem as a located `Diagnostic`.
//!
//! Owns the meaning of each key, `[defaults]` merging, path resolution,
//! `env_file` reading, user/group checks and the dependency graph checks.
//! Must never stop at the first problem, and never start processes or
//! create anything (it only reads the config, env files and directories).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use toml_edit::{ImDocument, Item, TableLike, Value};

use super::diag::{unknown_key_hint, ConfigError, Diagnostic, Diagnostics, LineIndex, Loc};
use super::envfile::parse_env_file;
use super::model::{
    defaults, BackoffPolicy, Cadence, CommandSpec, Config, External, Group, HeartbeatPolicy,
    LogPolicy, OnHung, Program, ReadyMode, RestartPolicy, StderrTarget, StoreSettings,
    SupervisorSettings, User,
};
use super::system::System;
use super::units::{parse_duration, parse_signal, parse_size};
use crate::cron::{Cron, Zone};

pub(crate) const TOP_KEYS: &[&str] = &["supervisor", "defaults", "program", "store", "external"];
pub(crate) const SUPERVISOR_KEYS: &[&str] = &[
    "state_dir",
    "socket",
    "socket_group",
    "host",
    "log",
    "watch_config",
    "http",
    "database",
    "database_url_env",
];
pub(crate) const STORE_KEYS: &[&str] = &["enabled", "events_retention", "refresh"];
/// Every `[[program]]` key; `[defaults]` takes all but `name`.
pub(crate) const PROGRAM_KEYS: &[&str] = &[
    "name",
    "command",
    "cwd",
    "env",
    "env_file",
    "user",
    "group",
    "autostart",
    "instances",
    "depends_on",
    "restart",
    "exit_codes",
    "min_uptime",
    "backoff",
    "stable_after",
    "max_restarts",
    "fatal_retry",
    "stop_signal",
    "stop_timeout",
    "log",
    "watch",
    "watch_ignore",
    "watch_delay",
    "ready",
    "ready_timeout",
    "heartbeat",
];
pub(crate) const HEARTBEAT_KEYS: &[&str] = &[
    "interval",
    "stale_after",
    "hung_after",
    "on_hung",
    "watchdog_signal",
    "period",
    "schedule",
    "tz",
    "grace",
];
/// Every `[[external]]` key: a name, words, and the heartbeat deadlines.
pub(crate) const EXTERNAL_KEYS: &[&str] = &[
    "name",
    "description",
    "interval",
    "stale_after",
    "hung_after",
    "on_hung",
];
pub(crate) const BACKOFF_KEYS: &[&str] = &["initial", "max", "multiplier", "jitter"];
pub(crate) const LOG_KEYS: &[&str] = &[
    "stdout",
    "stderr",
    "max_size",
    "keep",
    "compress",
    "timestamps",
    "max_age",
];

/// Unix socket paths longer than this do not fit in `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;

/// Parse and validate `source`, which was read from `path` (as the user named it).
pub(crate) fn parse_with(source: &str, path: &Path, sys: &System) -> Result<Config, ConfigError> {
    let abs = absolute(path);
    let base = abs
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut w = Walker {
        idx: LineIndex::new(source),
        diags: Vec::new(),
        base,
        sys,
    };
    let config = match ImDocument::parse(source) {
        Ok(doc) => Some(w.document(doc.as_table(), abs)),
        Err(e) => {
            let loc = e.span().map_or(Loc::START, |s| w.idx.loc(s.start));
            let message = e.message().trim().replace('\n', "; ");
            w.diag(loc, "", format!("invalid TOML: {message}"), None);
            None
        }
    };
    let mut items = w.diags;
    items.sort_by_key(|d| (d.line, d.col));
    items.dedup();
    match config {
        Some(c) if items.is_empty() => Ok(c),
        _ => Err(ConfigError::Invalid(Diagnostics {
            file: path.to_path_buf(),
            items,
        })),
    }
}

/// `sqlite://<state_dir>/ward.db`.
fn default_database(state_dir: &Path) -> String {
    format!(
        "sqlite://{}",
        state_dir.join(defaults::DATABASE_FILE).display()
    )
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        normalize(&cwd.join(path))
    }
}

/// Drop `.` components (lexically; `..` is kept, symlinks are not resolved).
fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// One key of a table, with where its key and value are.
struct Entry<'t> {
    /// The key relative to its section, e.g. `log.max_size`.
    key: String,
    key_loc: Loc,
    val_loc: Loc,
    item: &'t Item,
}

/// What one `[[program]]` or `[defaults]` table sets; `None` = not set.
#[derive(Default, Clone)]
struct Layer {
    command: Option<CommandSpec>,
    /// `command` was written, even if invalid (so no "missing" error too).
    command_written: bool,
    cwd: Option<PathBuf>,
    env: BTreeMap<String, String>,
    env_file: Option<BTreeMap<String, String>>,
    user: Option<User>,
    group: Option<Group>,
    autostart: Option<bool>,
    instances: Option<u32>,
    depends_on: Option<Vec<(String, Loc)>>,
    restart: Option<RestartPolicy>,
    exit_codes: Option<Vec<i32>>,
    min_uptime: Option<Duration>,
    backoff: BackoffLayer,
    stable_after: Option<Duration>,
    max_restarts: Option<u32>,
    fatal_retry: Option<Duration>,
    stop_signal: Option<Signal>,
    stop_timeout: Option<Duration>,
    log: LogLayer,
    watch: Option<Vec<String>>,
    watch_ignore: Option<Vec<String>>,
    watch_delay: Option<Duration>,
    ready: Option<ReadyMode>,
    ready_timeout: Option<Duration>,
    heartbeat: HeartbeatLayer,
}

#[derive(Default, Clone, Copy)]
struct HeartbeatLayer {
    interval: Option<Duration>,
    stale_after: Option<Duration>,
    hung_after: Option<Duration>,
    on_hung: Option<OnHung>,
    watchdog_signal: Option<Signal>,
    /// `period` or `schedule` (one at most), with where it was written.
    cadence: Option<(LayerCadence, Loc)>,
    /// `period` or `schedule` was written, even if invalid (so `tz` and
    /// `grace` are not reported as alone too).
    cadence_written: bool,
    tz: Option<(Zone, Loc)>,
    grace: Option<(Duration, Loc)>,
}

/// `period` or `schedule` as written; the zone comes from `tz` after merging.
#[derive(Clone, Copy)]
enum LayerCadence {
    Period(Duration),
    Schedule(Cron),
}

#[derive(Default, Clone, Copy)]
struct BackoffLayer {
    initial: Option<(Duration, Loc)>,
    max: Option<(Duration, Loc)>,
    multiplier: Option<f64>,
    jitter: Option<f64>,
}

#[derive(Default, Clone)]
struct LogLayer {
    stdout: Option<PathBuf>,
    stderr: Option<StderrTarget>,
    max_size: Option<u64>,
    keep: Option<u32>,
    compress: Option<bool>,
    timestamps: Option<bool>,
    max_age: Option<Duration>,
}

impl LogLayer {
    /// This layer over `under` (per key; this layer wins).
    fn over(&self, under: &LogLayer) -> LogLayer {
        LogLayer {
            stdout: self.stdout.clone().or_else(|| under.stdout.clone()),
            stderr: self.stderr.clone().or_else(|| under.stderr.clone()),
            max_size: self.max_size.or(under.max_size),
            keep: self.keep.or(under.keep),
            compress: self.compress.or(under.compress),
            timestamps: self.timestamps.or(under.timestamps),
            max_age: self.max_age.or(under.max_age),
        }
    }

    fn policy(self) -> LogPolicy {
        let d = LogPolicy::default();
        LogPolicy {
            stdout: self.stdout.or(d.stdout),
            stderr: self.stderr.unwrap_or(d.stderr),
            max_size: self.max_size.unwrap_or(d.max_size),
            keep: self.keep.unwrap_or(d.keep),
            compress: self.compress.unwrap_or(d.compress),
            timestamps: self.timestamps.unwrap_or(d.timestamps),
            max_age: self.max_age.or(d.max_age),
        }
    }
}

/// A program as written, before checks that need all programs.
struct Parsed {
    name: Option<(String, Loc)>,
    header: Loc,
    ctx: String,
    layer: Layer,
}

/// An `[[external]]` as written, before the name and store checks.
struct ParsedExternal {
    name: Option<(String, Loc)>,
    header: Loc,
    ctx: String,
    description: Option<String>,
    heartbeat: HeartbeatLayer,
}

struct Walker<'a> {
    idx: LineIndex<'a>,
    diags: Vec<Diagnostic>,
    /// The config file's directory: relative paths resolve against it.
    base: PathBuf,
    sys: &'a System,
}

impl Walker<'_> {
    fn diag(&mut self, loc: Loc, key: &str, message: String, hint: Option<String>) {
        self.diags.push(Diagnostic {
            line: loc.line,
            col: loc.col,
            key: key.to_owned(),
            message,
            hint,
        });
    }

    fn span_loc(&self, span: Option<std::ops::Range<usize>>) -> Option<Loc> {
        span.map(|s| self.idx.loc(s.start))
    }

    /// Where a table starts: its header, or `fallback` for implicit tables.
    fn table_loc(&self, item: &Item, fallback: Loc) -> Loc {
        self.span_loc(item.span()).unwrap_or(fallback)
    }

    /// The keys of `t`, reporting unknown ones. `prefix` is prepended to keys.
    fn entries<'t>(
        &mut self,
        t: &'t dyn TableLike,
        valid: &[&str],
        prefix: &str,
        ctx: &str,
        fallback: Loc,
    ) -> Vec<Entry<'t>> {
        let mut out = Vec::new();
        for (k, item) in t.iter() {
            let val_loc = self.span_loc(item.span());
            let key_loc = self
                .span_loc(t.key(k).and_then(|k| k.span()))
                .or(val_loc)
                .unwrap_or(fallback);
            let key = format!("{prefix}{k}");
            if !valid.contains(&k) {
                self.diag(
                    key_loc,
                    &key,
                    format!("unknown key in {ctx}"),
                    Some(unknown_key_hint(k, valid)),
                );
                continue;
            }
            out.push(Entry {
                key,
                key_loc,
                val_loc: val_loc.unwrap_or(key_loc),
                item,
            });
        }
        out
    }

    fn wrong_type(&mut self, e: &Entry<'_>, expected: &str, ctx: &str, hint: Option<String>) {
        self.diag(
            e.val_loc,
            &e.key,
            format!("expected {expected}, found {} in {ctx}", found(e.item)),
            hint,
        );
    }

    fn bad_value(&mut self, e: &Entry<'_>, problem: String, ctx: &str, hint: Option<String>) {
        self.diag(e.val_loc, &e.key, format!("{problem} in {ctx}"), hint);
    }

    fn string(&mut self, e: &Entry<'_>, ctx: &str) -> Option<String> {
        match e.item.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.wrong_type(e, "a string", ctx, None);
                None
            }
        }
    }

    fn boolean(&mut self, e: &Entry<'_>, ctx: &str) -> Option<bool> {
        let b = e.item.as_bool();
        if b.is_none() {
            self.wrong_type(e, "`true` or `false`", ctx, None);
        }
        b
    }

    fn integer(&mut self, e: &Entry<'_>, ctx: &str, min: i64, max: i64) -> Option<i64> {
        let Some(n) = e.item.as_integer() else {
            let quoted = e
                .item
                .as_str()
                .is_some_and(|s| s.trim().parse::<i64>().is_ok());
            let hint = quoted.then(|| "remove the quotes".to_owned());
            self.wrong_type(e, "an integer", ctx, hint);
            return None;
        };
        if n < min || n > max {
            let range = if max == i64::from(u32::MAX) {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            self.bad_value(e, format!("`{n}` must be {range}"), ctx, None);
            return None;
        }
        Some(n)
    }

    fn u32(&mut self, e: &Entry<'_>, ctx: &str, min: u32) -> Option<u32> {
        self.integer(e, ctx, i64::from(min), i64::from(u32::MAX))
            .map(|n| n as u32)
    }

    fn float(&mut self, e: &Entry<'_>, ctx: &str) -> Option<f64> {
        match e.item.as_value() {
            Some(Value::Float(f)) => Some(*f.value()),
            Some(Value::Integer(i)) => Some(*i.value() as f64),
            _ => {
                self.wrong_type(e, "a number", ctx, None);
                None
            }
        }
    }

    fn duration(&mut self, e: &Entry<'_>, ctx: &str) -> Option<Duration> {
        const LOOK: &str = "durations look like `500ms`, `30s`, `5m`, `2h`, `1d`";
        let Some(s) = e.item.as_str() else {
            let hint = match e.item.as_integer() {
                Some(n) => format!("add a unit and quote it: `\"{n}s\"`"),
                None => LOOK.into(),
            };
            self.wrong_type(e, "a duration string", ctx, Some(hint));
            return None;
        };
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(msg) => {
                let t = s.trim();
                let hint = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                    format!("add a unit: `\"{t}s\"` or `\"{t}ms\"`")
                } else {
                    LOOK.into()
                };
                self.bad_value(e, msg, ctx, Some(hint));
                None
            }
        }
    }

    fn size(&mut self, e: &Entry<'_>, ctx: &str) -> Option<u64> {
        const LOOK: &str = "sizes look like `512KiB`, `10MiB`, `1GiB`, `10MB` or a byte count";
        if let Some(n) = e.item.as_integer() {
            if n < 0 {
                self.bad_value(e, format!("size `{n}` is negative"), ctx, None);
                return None;
            }
            return Some(n as u64);
        }
        let Some(s) = e.item.as_str() else {
            self.wrong_type(e, "a size string", ctx, Some(LOOK.into()));
            return None;
        };
        match parse_size(s) {
            Ok(n) => Some(n),
            Err(msg) => {
                self.bad_value(e, msg, ctx, Some(LOOK.into()));
                None
            }
        }
    }

    fn signal(&mut self, e: &Entry<'_>, ctx: &str) -> Option<Signal> {
        const LOOK: &str = "use a signal name like `TERM`, `INT`, `HUP`, `QUIT`, `USR1`";
        let s = self.string(e, ctx)?;
        match parse_signal(&s) {
            Ok(sig) => Some(sig),
            Err(msg) => {
                self.bad_value(e, msg, ctx, Some(LOOK.into()));
                None
            }
        }
    }

    /// A non-empty path string, resolved against the config file's dir.
    fn path(&mut self, e: &Entry<'_>, ctx: &str) -> Option<PathBuf> {
        let s = self.string(e, ctx)?;
        if s.is_empty() {
            self.bad_value(e, "empty path".into(), ctx, None);
            return None;
        }
        Some(normalize(&self.base.join(s)))
    }

    fn table<'t>(&mut self, e: &Entry<'t>, ctx: &str) -> Option<&'t dyn TableLike> {
        let t = e.item.as_table_like();
        if t.is_none() {
            self.wrong_type(e, "a table", ctx, None);
        }
        t
    }

    fn document(&mut self, root: &toml_edit::Table, path: PathBuf) -> Config {
        let entries = self.entries(root, TOP_KEYS, "", "the top level", Loc::START);
        let mut supervisor = None;
        let mut store = StoreSettings::default();
        let mut defaults_layer = Layer::default();
        let mut parsed = Vec::new();
        let mut externals = Vec::new();
        let mut store_enabled_at = None;
        for e in &entries {
            match e.key.as_str() {
                "supervisor" => {
                    if let Some(t) = self.table(e, "the top level") {
                        let at = self.table_loc(e.item, e.key_loc);
                        supervisor = Some(self.supervisor(t, at));
                    }
                }
                "defaults" => {
                    if let Some(t) = self.table(e, "the top level") {
                        let at = self.table_loc(e.item, e.key_loc);
                        defaults_layer = self.layer(t, at, "`[defaults]`");
                    }
                }
                "program" => parsed = self.programs(e),
                "external" => externals = self.externals(e),
                "store" => {
                    if let Some(t) = self.table(e, "the top level") {
                        let at = self.table_loc(e.item, e.key_loc);
                        store = self.store(t, at);
                        store_enabled_at = t.get("enabled").and_then(|i| self.span_loc(i.span()));
                    }
                }
                _ => unreachable!("entries() only returns known keys"),
            }
        }
        let supervisor = supervisor.unwrap_or_else(|| self.supervisor_defaults());
        let program_names: Vec<(String, Loc)> =
            parsed.iter().filter_map(|p| p.name.clone()).collect();
        let external_names: Vec<&str> = externals
            .iter()
            .filter_map(|x| x.name.as_ref().map(|(n, _)| n.as_str()))
            .collect();
        let programs = self.finish_programs(parsed, &defaults_layer, &external_names);
        if !store.enabled {
            if let Some(first) = externals.first() {
                let n = externals.len();
                let (at, line) = match store_enabled_at {
                    Some(l) => (l, format!(" (line {})", l.line)),
                    None => (first.header, String::new()),
                };
                self.diag(
                    first.header,
                    "external",
                    format!(
                        "{n} `[[external]]` worker{} need{} the status tables, but `[store] enabled = false`{line}",
                        if n == 1 { "" } else { "s" },
                        if n == 1 { "s" } else { "" },
                    ),
                    Some(format!(
                        "external workers write their rows into the `heartbeats` table of the status database: remove `enabled = false` from `[store]`{}, or remove the `[[external]]` entries",
                        if at == first.header { "" } else { " at that line" }
                    )),
                );
            }
        }
        let externals = self.finish_externals(externals, &program_names);
        Config {
            path,
            supervisor,
            programs,
            store,
            externals,
        }
    }

    fn store(&mut self, t: &dyn TableLike, at: Loc) -> StoreSettings {
        const CTX: &str = "`[store]`";
        let mut s = StoreSettings::default();
        for e in self.entries(t, STORE_KEYS, "", CTX, at) {
            match e.key.as_str() {
                "enabled" => s.enabled = self.boolean(&e, CTX).unwrap_or(s.enabled),
                "events_retention" => {
                    if let Some(d) = self.duration(&e, CTX) {
                        s.events_retention = d;
                    }
                }
                "refresh" => {
                    if let Some(d) = self.duration(&e, CTX) {
                        if d < Duration::from_millis(100) {
                            self.bad_value(
                                &e,
                                format!("`refresh` of {d:?} is too short"),
                                CTX,
                                Some("use at least `\"100ms\"`; the default is `\"5s\"`".into()),
                            );
                        } else {
                            s.refresh = d;
                        }
                    }
                }
                _ => unreachable!("entries() only returns known keys"),
            }
        }
        s
    }

    /// A database URL: `sqlite:` (relative paths resolved against the
    /// config's directory) or `postgres://` / `postgresql://`.
    fn database_url(&mut self, e: &Entry<'_>, ctx: &str) -> Option<String> {
        let url = self.string(e, ctx)?;
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (file, query) = match rest.split_once('?') {
                Some((f, q)) => (f, Some(q)),
                None => (rest, None),
            };
            if file.is_empty() {
                self.bad_value(
                    e,
                    "the SQLite URL names no file".into(),
                    ctx,
                    Some(
                        "write `sqlite:///absolute/path/ward.db` or `sqlite://relative/ward.db`"
                            .into(),
                    ),
                );
                return None;
            }
            let file = if file == ":memory:" || Path::new(file).is_absolute() {
                file.to_owned()
            } else {
                normalize(&self.base.join(file)).display().to_string()
            };
            return Some(match query {
                Some(q) => format!("sqlite://{file}?{q}"),
                None => format!("sqlite://{file}"),
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Some(url.to_owned());
        }
        let scheme = url.split_once(':').map_or(url, |(s, _)| s);
        self.bad_value(
            e,
            format!("unsupported database URL scheme `{scheme}`"),
            ctx,
            Some("use `sqlite:///path/to/ward.db` (embedded, the default) or `postgres://user@host/db`; put a password in the variable named by `database_url_env`".into()),
        );
        None
    }

    fn supervisor_defaults(&self) -> SupervisorSettings {
        let state_dir = self.sys.default_state_dir();
        SupervisorSettings {
            socket: state_dir.join("ward.sock"),
            state_dir: state_dir.clone(),
            socket_group: None,
            host: self.sys.hostname.clone(),
            log: LogPolicy::default(),
            database: default_database(&state_dir),
            database_url_env: None,
            watch_config: false,
            http: None,
        }
    }

    fn supervisor(&mut self, t: &dyn TableLike, at: Loc) -> SupervisorSettings {
        const CTX: &str = "`[supervisor]`";
        let mut s = self.supervisor_defaults();
        let mut state_dir_set = None;
        let mut socket_set = None;
        let mut database_set = false;
        for e in self.entries(t, SUPERVISOR_KEYS, "", CTX, at) {
            match e.key.as_str() {
                "state_dir" => {
                    if let Some(p) = self.path(&e, CTX) {
                        s.state_dir = p;
                        state_dir_set = Some(e.val_loc);
                    }
                }
                "socket" => {
                    if let Some(p) = self.path(&e, CTX) {
                        s.socket = p;
                        socket_set = Some(e.val_loc);
                    }
                }
                "socket_group" => {
                    if let Some(name) = self.string(&e, CTX) {
                        s.socket_group = self.lookup_group(&e, &name, CTX, false);
                    }
                }
                "host" => {
                    if let Some(h) = self.string(&e, CTX) {
                        if h.trim().is_empty() {
                            self.bad_value(&e, "empty host name".into(), CTX, None);
                        } else {
                            s.host = h;
                        }
                    }
                }
                "log" => {
                    if let Some(lt) = self.table(&e, CTX) {
                        let at = self.table_loc(e.item, e.key_loc);
                        s.log = self.log(lt, at, CTX).policy();
                    }
                }
                "database" => {
                    if let Some(url) = self.database_url(&e, CTX) {
                        s.database = url;
                        database_set = true;
                    }
                }
                "database_url_env" => {
                    if let Some(name) = self.string(&e, CTX) {
                        let valid = !name.is_empty()
                            && !name.starts_with(|c: char| c.is_ascii_digit())
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                        if valid {
                            s.database_url_env = Some(name);
                        } else {
                            self.bad_value(
                                &e,
                                format!("`{name}` is not an environment variable name"),
                                CTX,
                                Some(
                                    "name a variable, e.g. `\"DATABASE_URL\"`, not its value"
                                        .into(),
                                ),
                            );
                        }
                    }
                }
                "watch_config" => {
                    if let Some(b) = self.boolean(&e, CTX) {
                        s.watch_config = b;
                    }
                }
                "http" => {
                    if let Some(v) = self.string(&e, CTX) {
                        match v.parse::<std::net::SocketAddr>() {
                            Ok(addr) if addr.ip().is_loopback() => s.http = Some(addr),
                            Ok(addr) => self.bad_value(
                                &e,
                                format!("`{addr}` is not a loopback address"),
                                CTX,
                                Some("heartbeats are served on loopback only: use 127.0.0.1:PORT or [::1]:PORT".into()),
                            ),
                            Err(_) => self.bad_value(
                                &e,
                                format!("`{v}` is not an address with a port"),
                                CTX,
                                Some("write it as \"127.0.0.1:9750\"".into()),
                            ),
                        }
                    }
                }
                _ => unreachable!("entries() only returns known keys"),
            }
        }
        if !database_set {
            s.database = default_database(&s.state_dir);
        }
        if socket_set.is_none() {
            s.socket = s.state_dir.join("ward.sock");
        }
        let len = s.socket.as_os_str().len();
        if let Some(loc) = socket_set.or(state_dir_set) {
            if len > MAX_SOCKET_PATH {
                let key = if socket_set.is_some() {
                    "socket"
                } else {
                    "state_dir"
                };
                self.diag(
                    loc,
                    key,
                    format!(
                        "socket path `{}` is {len} bytes, longer than the {MAX_SOCKET_PATH} a unix socket allows in {CTX}",
                        s.socket.display()
                    ),
                    Some("set a shorter `socket` path".into()),
                );
            }
        }
        s
    }

    fn log(&mut self, t: &dyn TableLike, at: Loc, ctx: &str) -> LogLayer {
        let mut l = LogLayer::default();
        for e in self.entries(t, LOG_KEYS, "log.", ctx, at) {
            match &e.key["log.".len()..] {
                "stdout" => l.stdout = self.path(&e, ctx),
                "stderr" => {
                    if e.item.as_str() == Some("stdout") {
                        l.stderr = Some(StderrTarget::Stdout);
                    } else {
                        l.stderr = self.path(&e, ctx).map(|p| StderrTarget::File(Some(p)));
                    }
                }
                "max_size" => l.max_size = self.size(&e, ctx),
                "keep" => l.keep = self.u32(&e, ctx, 0),
                "compress" => l.compress = self.boolean(&e, ctx),
                "timestamps" => l.timestamps = self.boolean(&e, ctx),
                "max_age" => l.max_age = self.duration(&e, ctx),
                _ => unreachable!("entries() only returns known keys"),
            }
        }
        l
    }

    fn heartbeat(&mut self, t: &dyn TableLike, at: Loc, ctx: &str) -> HeartbeatLayer {
        let mut h = HeartbeatLayer::default();
        for e in self.entries(t, HEARTBEAT_KEYS, "heartbeat.", ctx, at) {
            self.heartbeat_key(&e.key["heartbeat.".len()..], &e, ctx, &mut h);
        }
        h
    }

    /// One heartbeat key (`bare`, without its section prefix) into `h`.
    fn heartbeat_key(&mut self, bare: &str, e: &Entry<'_>, ctx: &str, h: &mut HeartbeatLayer) {
        match bare {
            "interval" => {
                h.interval = self.duration(e, ctx).filter(|d| {
                    if d.is_zero() {
                        self.bad_value(
                            e,
                            "`0s` is not an interval".into(),
                            ctx,
                            Some("remove `interval` to expect no heartbeats".into()),
                        );
                    }
                    !d.is_zero()
                })
            }
            "stale_after" => h.stale_after = self.duration(e, ctx),
            "hung_after" => h.hung_after = self.duration(e, ctx),
            "on_hung" => {
                if let Some(v) = self.string(e, ctx) {
                    h.on_hung = match v.as_str() {
                        "restart" => Some(OnHung::Restart),
                        "alert" => Some(OnHung::Alert),
                        "none" => Some(OnHung::None),
                        _ => {
                            self.bad_value(
                                e,
                                format!("unknown action `{v}`"),
                                ctx,
                                Some("use `restart`, `alert` or `none`".into()),
                            );
                            None
                        }
                    };
                }
            }
            "watchdog_signal" => h.watchdog_signal = self.signal(e, ctx),
            "period" => {
                h.cadence_written = true;
                if let Some(d) = self.nonzero(e, ctx, "a period") {
                    self.cadence(h, e, LayerCadence::Period(d), ctx);
                }
            }
            "schedule" => {
                h.cadence_written = true;
                if let Some(c) = self.schedule(e, ctx) {
                    self.cadence(h, e, LayerCadence::Schedule(c), ctx);
                }
            }
            "tz" => {
                if let Some(v) = self.string(e, ctx) {
                    match Zone::parse(&v) {
                        Some(z) => h.tz = Some((z, e.val_loc)),
                        None => self.bad_value(
                            e,
                            format!("unsupported time zone `{v}`"),
                            ctx,
                            Some("use `local` (the zone ward runs in, as cron does) or `UTC`; for another zone, run ward with `TZ=Area/City` and keep `local`".into()),
                        ),
                    }
                }
            }
            "grace" => {
                h.grace = self
                    .nonzero(e, ctx, "a grace period")
                    .map(|d| (d, e.val_loc))
            }
            _ => unreachable!("entries() only returns known keys"),
        }
    }

    /// A duration that must not be zero.
    fn nonzero(&mut self, e: &Entry<'_>, ctx: &str, what: &str) -> Option<Duration> {
        let d = self.duration(e, ctx)?;
        if d.is_zero() {
            self.bad_value(e, format!("`0s` is not {what}"), ctx, None);
            return None;
        }
        Some(d)
    }

    /// Record `period` or `schedule`; the two exclude each other.
    fn cadence(&mut self, h: &mut HeartbeatLayer, e: &Entry<'_>, c: LayerCadence, ctx: &str) {
        if let Some((prev, loc)) = h.cadence {
            let other = match prev {
                LayerCadence::Period(_) => "period",
                LayerCadence::Schedule(_) => "schedule",
            };
            self.diag(
                e.key_loc,
                &e.key,
                format!(
                    "`{other}` (line {}) and `{}` exclude each other in {ctx}",
                    loc.line,
                    &e.key["heartbeat.".len()..]
                ),
                Some("keep `period` (the longest time between two runs) or `schedule` (cron times), not both".into()),
            );
            return;
        }
        h.cadence = Some((c, e.key_loc));
    }

    /// A cron `schedule`; a bad field is pointed at inside the string.
    fn schedule(&mut self, e: &Entry<'_>, ctx: &str) -> Option<Cron> {
        let s = self.string(e, ctx)?;
        match Cron::parse(&s) {
            Ok(c) => Some(c),
            Err(err) => {
                // Columns inside the quotes hold only when nothing is escaped.
                let loc = match e.item.span() {
                    Some(span) if span.len() == s.len() + 2 => {
                        self.idx.loc(span.start + 1 + err.at)
                    }
                    _ => e.val_loc,
                };
                let hint = err.hint.unwrap_or_else(|| {
                    "five fields: minute hour day-of-month month weekday, e.g. `0 3 * * *`".into()
                });
                self.diag(
                    loc,
                    &e.key,
                    format!("{} in schedule `{s}` in {ctx}", err.message),
                    Some(hint),
                );
                None
            }
        }
    }

    fn backoff(&mut self, t: &dyn TableLike, at: Loc, ctx: &str) -> BackoffLayer {
        let mut b = BackoffLayer::default();
        for e in self.entries(t, BACKOFF_KEYS, "backoff.", ctx, at) {
            match &e.key["backoff.".len()..] {
                "initial" => b.initial = self.duration(&e, ctx).map(|d| (d, e.val_loc)),
                "max" => b.max = self.duration(&e, ctx).map(|d| (d, e.val_loc)),
                "multiplier" => {
                    b.multiplier = self.float(&e, ctx).filter(|&m| {
                        let ok = m.is_finite() && m >= 1.0;
                        if !ok {
                            self.bad_value(&e, format!("`{m}` must be at least 1.0"), ctx, None);
                        }
                        ok
                    });
                }
                "jitter" => {
                    b.jitter = self.float(&e, ctx).filter(|&j| {
                        let ok = (0.0..=1.0).contains(&j);
                        if !ok {
                            self.bad_value(&e, format!("`{j}` must be between 0 and 1"), ctx, None);
                        }
                        ok
                    });
                }
                _ => unreachable!("entries() only returns known keys"),
            }
        }
        b
    }

    fn lookup_user(&mut self, e: &Entry<'_>, name: &str, ctx: &str) -> Option<User> {
        match self.sys.user(name) {
            Err(msg) => self.bad_value(e, msg, ctx, None),
            Ok(None) => self.bad_value(
                e,
                format!("unknown user `{name}`"),
                ctx,
                Some("create the user, or fix the name".into()),
            ),
            Ok(Some(u)) if self.sys.euid != 0 && u.uid != self.sys.euid => self.bad_value(
                e,
                format!("running as user `{name}` needs ward to run as root"),
                ctx,
                Some("run ward as root, or remove `user`".into()),
            ),
            Ok(Some(u)) => return Some(u),
        }
        None
    }

    /// `setgid` too needs root, unless it is ward's own group; a socket group does not.
    fn lookup_group(
        &mut self,
        e: &Entry<'_>,
        name: &str,
        ctx: &str,
        for_child: bool,
    ) -> Option<Group> {
        match self.sys.group(name) {
            Err(msg) => self.bad_value(e, msg, ctx, None),
            Ok(None) => self.bad_value(
                e,
                format!("unknown group `{name}`"),
                ctx,
                Some("create the group, or fix the name".into()),
            ),
            Ok(Some(g)) if for_child && self.sys.euid != 0 && g.gid != self.sys.egid => self
                .bad_value(
                    e,
                    format!("running as group `{name}` needs ward to run as root"),
                    ctx,
                    Some("run ward as root, or remove `group`".into()),
                ),
            Ok(Some(g)) => return Some(g),
        }
        None
    }

    /// The per-program keys of a `[[program]]` or `[defaults]` table (not `name`).
    fn layer(&mut self, t: &dyn TableLike, at: Loc, ctx: &str) -> Layer {
        let valid: &[&str] = if ctx == "`[defaults]`" {
            &PROGRAM_KEYS[1..]
        } else {
            PROGRAM_KEYS
        };
        let mut l = Layer::default();
        for e in self.entries(t, valid, "", ctx, at) {
            match e.key.as_str() {
                "name" => {} // read by `programs` before the rest
                "command" => {
                    l.command_written = true;
                    l.command = self.command(&e, ctx);
                }
                "cwd" => {
                    if let Some(p) = self.path(&e, ctx) {
                        match std::fs::metadata(&p) {
                            Ok(m) if m.is_dir() => l.cwd = Some(p),
                            Ok(_) => self.bad_value(
                                &e,
                                format!("`{}` is not a directory", p.display()),
                                ctx,
                                None,
                            ),
                            Err(err) => self.bad_value(
                                &e,
                                format!("directory `{}` is not usable: {err}", p.display()),
                                ctx,
                                Some("create it, or fix the path (relative paths start at the config file's directory)".into()),
                            ),
                        }
                    }
                }
                "env" => {
                    if let Some(t) = self.table(&e, ctx) {
                        l.env = self.env(t, e.val_loc, ctx);
                    }
                }
                "env_file" => {
                    if let Some(p) = self.path(&e, ctx) {
                        l.env_file = self.env_file(&e, &p, ctx);
                    }
                }
                "user" => {
                    if let Some(name) = self.string(&e, ctx) {
                        l.user = self.lookup_user(&e, &name, ctx);
                    }
                }
                "group" => {
                    if let Some(name) = self.string(&e, ctx) {
                        l.group = self.lookup_group(&e, &name, ctx, true);
                    }
                }
                "autostart" => l.autostart = self.boolean(&e, ctx),
                "instances" => l.instances = self.u32(&e, ctx, 1),
                "depends_on" => l.depends_on = self.depends_on(&e, ctx),
                "restart" => {
                    if let Some(s) = self.string(&e, ctx) {
                        l.restart = match s.as_str() {
                            "always" => Some(RestartPolicy::Always),
                            "on-failure" => Some(RestartPolicy::OnFailure),
                            "never" => Some(RestartPolicy::Never),
                            _ => {
                                self.bad_value(
                                    &e,
                                    format!("unknown restart policy `{s}`"),
                                    ctx,
                                    Some("use `always`, `on-failure` or `never`".into()),
                                );
                                None
                            }
                        };
                    }
                }
                "exit_codes" => l.exit_codes = self.exit_codes(&e, ctx),
                "min_uptime" => l.min_uptime = self.duration(&e, ctx),
                "backoff" => {
                    if let Some(t) = self.table(&e, ctx) {
                        let at = self.table_loc(e.item, e.key_loc);
                        l.backoff = self.backoff(t, at, ctx);
                    }
                }
                "stable_after" => l.stable_after = self.duration(&e, ctx),
                "max_restarts" => l.max_restarts = self.u32(&e, ctx, 0),
                "fatal_retry" => {
                    l.fatal_retry = self.duration(&e, ctx).filter(|d| {
                        if d.is_zero() {
                            self.bad_value(
                                &e,
                                "`0s` is not a retry delay".into(),
                                ctx,
                                Some(
                                    "remove `fatal_retry` to stay fatal until restarted by hand"
                                        .into(),
                                ),
                            );
                        }
                        !d.is_zero()
                    });
                }
                "stop_signal" => l.stop_signal = self.signal(&e, ctx),
                "stop_timeout" => l.stop_timeout = self.duration(&e, ctx),
                "watch" => l.watch = self.strings(&e, ctx),
                "watch_ignore" => l.watch_ignore = self.strings(&e, ctx),
                "watch_delay" => l.watch_delay = self.duration(&e, ctx),
                "ready" => {
                    if let Some(v) = self.string(&e, ctx) {
                        l.ready = match v.as_str() {
                            "started" => Some(ReadyMode::Started),
                            "uptime" => Some(ReadyMode::Uptime),
                            "notify" => Some(ReadyMode::Notify),
                            "heartbeat" => Some(ReadyMode::Heartbeat),
                            "ipc" => Some(ReadyMode::Ipc),
                            _ => {
                                self.bad_value(
                                    &e,
                                    format!("unknown readiness mode `{v}`"),
                                    ctx,
                                    Some(
                                        "use `started`, `uptime`, `notify`, `heartbeat` or `ipc`"
                                            .into(),
                                    ),
                                );
                                None
                            }
                        };
                    }
                }
                "ready_timeout" => l.ready_timeout = self.duration(&e, ctx),
                "heartbeat" => {
                    if let Some(t) = self.table(&e, ctx) {
                        let at = self.table_loc(e.item, e.key_loc);
                        l.heartbeat = self.heartbeat(t, at, ctx);
                    }
                }
                "log" => {
                    if let Some(t) = self.table(&e, ctx) {
                        let at = self.table_loc(e.item, e.key_loc);
                        l.log = self.log(t, at, ctx);
                    }
                }
                _ => unreachable!("entries() only returns known keys"),
            }
        }
        l
    }

    fn command(&mut self, e: &Entry<'_>, ctx: &str) -> Option<CommandSpec> {
        const EXPECTED: &str = "a command string or an array of strings";
        match e.item.as_value() {
            Some(Value::String(s)) => {
                if s.value().trim().is_empty() {
                    self.bad_value(e, "empty command".into(), ctx, None);
                    return None;
                }
                Some(CommandSpec::Shell(s.value().clone()))
            }
            Some(Value::Array(a)) => {
                let mut argv = Vec::new();
                for v in a.iter() {
                    match v.as_str() {
                        Some(s) => argv.push(s.to_owned()),
                        None => {
                            let loc = self.span_loc(v.span()).unwrap_or(e.val_loc);
                            self.diag(
                                loc,
                                &e.key,
                                format!(
                                    "expected a string argument, found {} in {ctx}",
                                    found_value(v)
                                ),
                                Some("quote every argument: `[\"sleep\", \"10\"]`".into()),
                            );
                            return None;
                        }
                    }
                }
                if argv.first().map_or(true, |a| a.is_empty()) {
                    self.bad_value(e, "empty command".into(), ctx, None);
                    return None;
                }
                Some(CommandSpec::Argv(argv))
            }
            _ => {
                self.wrong_type(e, EXPECTED, ctx, None);
                None
            }
        }
    }

    fn env(&mut self, t: &dyn TableLike, at: Loc, ctx: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (k, item) in t.iter() {
            let key_loc = self.span_loc(t.key(k).and_then(|k| k.span())).unwrap_or(at);
            let e = Entry {
                key: format!("env.{k}"),
                key_loc,
                val_loc: self.span_loc(item.span()).unwrap_or(key_loc),
                item,
            };
            if k.is_empty() || k.contains(['=', '\0']) {
                self.diag(
                    key_loc,
                    &e.key,
                    format!("invalid environment variable name in {ctx}"),
                    Some("names cannot be empty or contain `=`".into()),
                );
                continue;
            }
            let value = match item.as_value() {
                Some(Value::String(s)) => s.value().clone(),
                Some(Value::Integer(i)) => i.value().to_string(),
                Some(Value::Boolean(b)) => b.value().to_string(),
                _ => {
                    self.wrong_type(&e, "a string, integer or boolean", ctx, None);
                    continue;
                }
            };
            if value.contains('\0') {
                self.bad_value(&e, "value contains a NUL byte".into(), ctx, None);
                continue;
            }
            env.insert(k.to_owned(), value);
        }
        env
    }

    fn env_file(&mut self, e: &Entry<'_>, p: &Path, ctx: &str) -> Option<BTreeMap<String, String>> {
        match std::fs::read_to_string(p) {
            Ok(text) => match parse_env_file(&text) {
                Ok(env) => Some(env),
                Err(msg) => {
                    self.bad_value(e, format!("env file `{}` {msg}", p.display()), ctx, None);
                    None
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                self.bad_value(
                    e,
                    format!("env file `{}` not found", p.display()),
                    ctx,
                    Some("create it, or fix the path (relative paths start at the config file's directory)".into()),
                );
                None
            }
            Err(err) => {
                self.bad_value(
                    e,
                    format!("cannot read env file `{}`: {err}", p.display()),
                    ctx,
                    None,
                );
                None
            }
        }
    }

    fn strings(&mut self, e: &Entry<'_>, ctx: &str) -> Option<Vec<String>> {
        let Some(a) = e.item.as_array() else {
            self.wrong_type(e, "an array of strings", ctx, None);
            return None;
        };
        let mut out = Vec::new();
        for v in a.iter() {
            match v.as_str() {
                Some(s) => out.push(s.to_owned()),
                None => {
                    let loc = self.span_loc(v.span()).unwrap_or(e.val_loc);
                    self.diag(
                        loc,
                        &e.key,
                        format!("expected a string, found {} in {ctx}", found_value(v)),
                        None,
                    );
                }
            }
        }
        Some(out)
    }

    fn depends_on(&mut self, e: &Entry<'_>, ctx: &str) -> Option<Vec<(String, Loc)>> {
        let Some(a) = e.item.as_array() else {
            self.wrong_type(e, "an array of program names", ctx, None);
            return None;
        };
        let mut out: Vec<(String, Loc)> = Vec::new();
        for v in a.iter() {
            let loc = self.span_loc(v.span()).unwrap_or(e.val_loc);
            match v.as_str() {
                Some(s) if !out.iter().any(|(n, _)| n == s) => out.push((s.to_owned(), loc)),
                Some(_) => {}
                None => self.diag(
                    loc,
                    &e.key,
                    format!("expected a program name, found {} in {ctx}", found_value(v)),
                    None,
                ),
            }
        }
        Some(out)
    }

    fn exit_codes(&mut self, e: &Entry<'_>, ctx: &str) -> Option<Vec<i32>> {
        let Some(a) = e.item.as_array() else {
            self.wrong_type(
                e,
                "an array of exit codes",
                ctx,
                Some("e.g. `exit_codes = [0, 2]`".into()),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for v in a.iter() {
            let loc = self.span_loc(v.span()).unwrap_or(e.val_loc);
            match v.as_integer() {
                Some(n) if (0..=255).contains(&n) => out.push(n as i32),
                Some(n) => {
                    ok = false;
                    self.diag(
                        loc,
                        &e.key,
                        format!("exit code `{n}` must be between 0 and 255 in {ctx}"),
                        None,
                    );
                }
                None => {
                    ok = false;
                    self.diag(
                        loc,
                        &e.key,
                        format!(
                            "expected an integer exit code, found {} in {ctx}",
                            found_value(v)
                        ),
                        None,
                    );
                }
            }
        }
        ok.then_some(out)
    }

    /// Every `[[program]]`, read but not yet merged or cross-checked.
    fn programs(&mut self, e: &Entry<'_>) -> Vec<Parsed> {
        let mut out = Vec::new();
        for (i, (t, header)) in self
            .tables_of(e, "program", "program")
            .into_iter()
            .enumerate()
        {
            let mut ctx = format!("`[[program]]` #{}", i + 1);
            let name = self.entry_name(t, header, &mut ctx, "program");
            let layer = self.layer(t, header, &ctx);
            out.push(Parsed {
                name,
                header,
                ctx,
                layer,
            });
        }
        out
    }

    /// Every `[[external]]`, read but not yet cross-checked.
    fn externals(&mut self, e: &Entry<'_>) -> Vec<ParsedExternal> {
        let mut out = Vec::new();
        let tables = self.tables_of(e, "external", "external worker");
        for (i, (t, header)) in tables.into_iter().enumerate() {
            let mut ctx = format!("`[[external]]` #{}", i + 1);
            let name = self.entry_name(t, header, &mut ctx, "external");
            let mut x = ParsedExternal {
                name,
                header,
                ctx,
                description: None,
                heartbeat: HeartbeatLayer::default(),
            };
            let ctx = x.ctx.clone();
            for e in self.entries(t, EXTERNAL_KEYS, "", &ctx, header) {
                match e.key.as_str() {
                    "name" => {}
                    "description" => x.description = self.string(&e, &ctx),
                    key => {
                        self.heartbeat_key(key, &e, &ctx, &mut x.heartbeat);
                        if key == "on_hung" && x.heartbeat.on_hung == Some(OnHung::Restart) {
                            x.heartbeat.on_hung = None;
                            self.bad_value(
                                &e,
                                "ward cannot restart an `[[external]]` worker: it does not run it"
                                    .into(),
                                &ctx,
                                Some("use `alert` (log an error, the default) or `none` (only show it)".into()),
                            );
                        }
                    }
                }
            }
            out.push(x);
        }
        out
    }

    /// The tables of an array of tables (`[[section]]`, or an inline array).
    fn tables_of<'t>(
        &mut self,
        e: &Entry<'t>,
        section: &str,
        noun: &str,
    ) -> Vec<(&'t dyn TableLike, Loc)> {
        match e.item {
            Item::ArrayOfTables(a) => a
                .iter()
                .map(|t| {
                    (
                        t as &dyn TableLike,
                        self.span_loc(t.span()).unwrap_or(e.key_loc),
                    )
                })
                .collect(),
            Item::Value(Value::Array(a)) if a.iter().all(Value::is_inline_table) => a
                .iter()
                .filter_map(|v| {
                    let at = self.span_loc(v.span()).unwrap_or(e.val_loc);
                    v.as_inline_table().map(|t| (t as &dyn TableLike, at))
                })
                .collect(),
            _ => {
                self.wrong_type(
                    e,
                    "an array of tables",
                    "the top level",
                    Some(format!(
                        "write each {noun} as `[[{section}]]` (two brackets)"
                    )),
                );
                Vec::new()
            }
        }
    }

    /// The `name` of a `[[program]]` or `[[external]]` table, checked; on
    /// success `ctx` becomes `program `NAME`` (or `external `NAME``).
    fn entry_name(
        &mut self,
        t: &dyn TableLike,
        header: Loc,
        ctx: &mut String,
        kind: &str,
    ) -> Option<(String, Loc)> {
        let Some(item) = t.get("name") else {
            let noun = if kind == "program" {
                "program"
            } else {
                "worker"
            };
            self.diag(
                header,
                "name",
                format!("missing required key in {ctx}"),
                Some(format!("add `name = \"...\"` to this {noun}")),
            );
            return None;
        };
        let val_loc = self.span_loc(item.span()).unwrap_or(header);
        let ne = Entry {
            key: "name".into(),
            key_loc: val_loc,
            val_loc,
            item,
        };
        let n = self.string(&ne, ctx)?;
        if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            self.bad_value(
                &ne,
                format!("invalid {kind} name `{n}`"),
                ctx,
                Some("use letters, digits, `_`, `.` and `-` only".into()),
            );
            return None;
        }
        *ctx = format!("{kind} `{n}`");
        Some((n, val_loc))
    }

    /// Check external names against each other and the programs, fill in
    /// the heartbeat defaults, and require an `interval`.
    fn finish_externals(
        &mut self,
        parsed: Vec<ParsedExternal>,
        programs: &[(String, Loc)],
    ) -> Vec<External> {
        let mut first: HashMap<String, (Loc, &str)> = HashMap::new();
        for (name, loc) in programs {
            first.entry(name.clone()).or_insert((*loc, "a program"));
        }
        let mut out = Vec::new();
        for x in parsed {
            if let Some((name, loc)) = &x.name {
                match first.get(name) {
                    Some((prev, what)) => {
                        // Report at whichever of the two comes later in the file.
                        let (at, earlier, kind) = if prev < loc {
                            (*loc, *prev, *what)
                        } else {
                            (*prev, *loc, "an external worker")
                        };
                        self.diag(
                            at,
                            "name",
                            format!(
                                "duplicate name `{name}` (first defined on line {}, as {kind})",
                                earlier.line
                            ),
                            Some("programs and `[[external]]` workers share one namespace: names must be unique".into()),
                        );
                    }
                    None => {
                        first.insert(name.clone(), (*loc, "an external worker"));
                    }
                }
            }
            if x.heartbeat.interval.is_none() {
                self.diag(
                    x.header,
                    "interval",
                    format!("missing required key in {}", x.ctx),
                    Some("add `interval = \"30s\"`: how often the worker writes its row".into()),
                );
            }
            let mut defaults = HeartbeatLayer::default();
            defaults.on_hung = Some(defaults::EXTERNAL_ON_HUNG);
            let heartbeat = self.heartbeat_policy(&x.heartbeat, &defaults, x.header, &x.ctx, "");
            out.push(External {
                name: x.name.map(|(n, _)| n).unwrap_or_default(),
                description: x.description,
                heartbeat,
            });
        }
        out
    }

    /// Apply `[defaults]`, then check names, dependencies and cycles.
    fn finish_programs(
        &mut self,
        parsed: Vec<Parsed>,
        d: &Layer,
        externals: &[&str],
    ) -> Vec<Program> {
        // Unique names; the first definition wins.
        let mut first: HashMap<String, Loc> = HashMap::new();
        for p in &parsed {
            if let Some((name, loc)) = &p.name {
                if let Some(prev) = first.get(name) {
                    self.diag(
                        *loc,
                        "name",
                        format!(
                            "duplicate program name `{name}` (first defined on line {})",
                            prev.line
                        ),
                        Some("program names must be unique".into()),
                    );
                } else {
                    first.insert(name.clone(), *loc);
                }
            }
        }
        let names: Vec<&str> = {
            let mut v: Vec<(&str, Loc)> = first.iter().map(|(k, l)| (k.as_str(), *l)).collect();
            v.sort_by_key(|(_, l)| *l);
            v.into_iter().map(|(k, _)| k).collect()
        };

        let mut programs = Vec::new();
        let mut graph: BTreeMap<String, Vec<(String, Loc)>> = BTreeMap::new();
        for p in &parsed {
            let l = &p.layer;
            if l.command.is_none()
                && !l.command_written
                && d.command.is_none()
                && !d.command_written
            {
                self.diag(
                    p.header,
                    "command",
                    format!("missing required key in {}", p.ctx),
                    Some(
                        "add `command = \"...\"` (a shell line) or `command = [\"prog\", \"arg\"]`"
                            .into(),
                    ),
                );
            }
            let deps = l
                .depends_on
                .clone()
                .or_else(|| d.depends_on.clone())
                .unwrap_or_default();
            let own = p.name.as_ref().map(|(n, _)| n.as_str());
            let mut valid_deps = Vec::new();
            for (dep, loc) in &deps {
                if Some(dep.as_str()) == own {
                    self.diag(
                        *loc,
                        "depends_on",
                        format!("{} depends on itself", p.ctx),
                        None,
                    );
                } else if !first.contains_key(dep) {
                    let hint = match unknown_key_hint(dep, &names) {
                        _ if externals.contains(&dep.as_str()) => format!(
                            "`{dep}` is an `[[external]]` worker: ward does not run it, so nothing can wait for it"
                        ),
                        h if h.starts_with("did you mean") => h,
                        _ if names.is_empty() => "no programs are defined".into(),
                        _ => format!(
                            "defined programs: {}",
                            names
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    self.diag(
                        *loc,
                        "depends_on",
                        format!("unknown program `{dep}` in {}", p.ctx),
                        Some(hint),
                    );
                } else {
                    valid_deps.push((dep.clone(), *loc));
                }
            }
            if let Some((name, loc)) = &p.name {
                if first.get(name) == Some(loc) {
                    graph.insert(name.clone(), valid_deps);
                }
            }

            let b = &l.backoff;
            let initial = b.initial.or(d.backoff.initial);
            let max = b.max.or(d.backoff.max);
            let backoff = BackoffPolicy {
                initial: initial.map_or(defaults::BACKOFF_INITIAL, |(v, _)| v),
                max: max.map_or(defaults::BACKOFF_MAX, |(v, _)| v),
                multiplier: b
                    .multiplier
                    .or(d.backoff.multiplier)
                    .unwrap_or(defaults::BACKOFF_MULTIPLIER),
                jitter: b
                    .jitter
                    .or(d.backoff.jitter)
                    .unwrap_or(defaults::BACKOFF_JITTER),
            };
            if backoff.max < backoff.initial {
                let (key, loc) = match (max, initial) {
                    (Some((_, loc)), _) => ("backoff.max", loc),
                    (None, Some((_, loc))) => ("backoff.initial", loc),
                    (None, None) => ("backoff", p.header),
                };
                self.diag(
                    loc,
                    key,
                    format!(
                        "backoff max ({:?}) is less than backoff initial ({:?}) in {}",
                        backoff.max, backoff.initial, p.ctx
                    ),
                    Some("raise `backoff.max` or lower `backoff.initial`".into()),
                );
            }

            let mut heartbeat =
                self.heartbeat_policy(&l.heartbeat, &d.heartbeat, p.header, &p.ctx, "heartbeat.");
            heartbeat.cadence = self.merged_cadence(&l.heartbeat, &d.heartbeat, &p.ctx);
            heartbeat.grace = (l.heartbeat.grace)
                .or(d.heartbeat.grace)
                .map_or(defaults::GRACE, |(g, _)| g);

            let mut env = l
                .env_file
                .clone()
                .or_else(|| d.env_file.clone())
                .unwrap_or_default();
            env.extend(d.env.clone());
            env.extend(l.env.clone());

            programs.push(Program {
                name: p.name.as_ref().map(|(n, _)| n.clone()).unwrap_or_default(),
                command: l
                    .command
                    .clone()
                    .or_else(|| d.command.clone())
                    .unwrap_or(CommandSpec::Argv(Vec::new())),
                cwd: l.cwd.clone().or_else(|| d.cwd.clone()),
                env,
                user: l.user.clone().or_else(|| d.user.clone()),
                group: l.group.clone().or_else(|| d.group.clone()),
                autostart: l.autostart.or(d.autostart).unwrap_or(defaults::AUTOSTART),
                instances: l.instances.or(d.instances).unwrap_or(defaults::INSTANCES),
                depends_on: deps.into_iter().map(|(n, _)| n).collect(),
                restart: l.restart.or(d.restart).unwrap_or(defaults::RESTART),
                exit_codes: l
                    .exit_codes
                    .clone()
                    .or_else(|| d.exit_codes.clone())
                    .unwrap_or_else(|| defaults::EXIT_CODES.to_vec()),
                min_uptime: l
                    .min_uptime
                    .or(d.min_uptime)
                    .unwrap_or(defaults::MIN_UPTIME),
                backoff,
                stable_after: l
                    .stable_after
                    .or(d.stable_after)
                    .unwrap_or(defaults::STABLE_AFTER),
                max_restarts: l
                    .max_restarts
                    .or(d.max_restarts)
                    .unwrap_or(defaults::MAX_RESTARTS),
                fatal_retry: l.fatal_retry.or(d.fatal_retry),
                stop_signal: l
                    .stop_signal
                    .or(d.stop_signal)
                    .unwrap_or(defaults::STOP_SIGNAL),
                stop_timeout: l
                    .stop_timeout
                    .or(d.stop_timeout)
                    .unwrap_or(defaults::STOP_TIMEOUT),
                log: l.log.over(&d.log).policy(),
                watch: l
                    .watch
                    .clone()
                    .or_else(|| d.watch.clone())
                    .unwrap_or_default(),
                watch_ignore: l
                    .watch_ignore
                    .clone()
                    .or_else(|| d.watch_ignore.clone())
                    .unwrap_or_default(),
                watch_delay: l
                    .watch_delay
                    .or(d.watch_delay)
                    .unwrap_or(defaults::WATCH_DELAY),
                ready: l.ready.or(d.ready).unwrap_or(defaults::READY),
                ready_timeout: l
                    .ready_timeout
                    .or(d.ready_timeout)
                    .unwrap_or(defaults::READY_TIMEOUT),
                heartbeat,
            });
        }
        self.cycles(&names, &graph);
        programs
    }

    /// A heartbeat layer over its defaults, with the derived deadlines
    /// (`stale_after` 3 × and `hung_after` 10 × `interval` unless set), checked.
    /// `prefix` is where the keys live: `heartbeat.` for a program, empty
    /// for an `[[external]]` (whose missing `interval` is reported apart).
    fn heartbeat_policy(
        &mut self,
        hl: &HeartbeatLayer,
        hd: &HeartbeatLayer,
        header: Loc,
        ctx: &str,
        prefix: &str,
    ) -> HeartbeatPolicy {
        let interval = hl.interval.or(hd.interval);
        let stale_after = hl.stale_after.or(hd.stale_after);
        let hung_after = hl.hung_after.or(hd.hung_after);
        let heartbeat = HeartbeatPolicy {
            interval,
            stale_after: stale_after
                .or(interval.map(|i| i * defaults::STALE_FACTOR))
                .unwrap_or(Duration::ZERO),
            hung_after: hung_after
                .or(interval.map(|i| i * defaults::HUNG_FACTOR))
                .unwrap_or(Duration::ZERO),
            on_hung: hl.on_hung.or(hd.on_hung).unwrap_or(defaults::ON_HUNG),
            watchdog_signal: hl
                .watchdog_signal
                .or(hd.watchdog_signal)
                .unwrap_or(defaults::WATCHDOG_SIGNAL),
            // A program's own: set by the caller (`merged_cadence`).
            cadence: None,
            grace: defaults::GRACE,
        };
        if !prefix.is_empty()
            && interval.is_none()
            && (stale_after.is_some() || hung_after.is_some())
        {
            self.diag(
                header,
                "heartbeat.interval",
                format!(
                    "`stale_after`/`hung_after` are set but `heartbeat.interval` is not, in {}",
                    ctx
                ),
                Some("set `heartbeat.interval` (e.g. \"30s\"): deadlines count from it".into()),
            );
        }
        if interval.is_some() && heartbeat.hung_after < heartbeat.stale_after {
            self.diag(
                header,
                &format!("{prefix}hung_after"),
                format!(
                    "hung_after ({:?}) is shorter than stale_after ({:?}) in {}",
                    heartbeat.hung_after, heartbeat.stale_after, ctx
                ),
                Some("a worker goes stale before it is hung: raise `hung_after`".into()),
            );
        }
        heartbeat
    }

    /// `period`/`schedule` and `tz` after `[defaults]`: the program's own
    /// `period` or `schedule` replaces the defaults' either. `tz` and `grace`
    /// written in the program need a `period` or `schedule` to act on.
    fn merged_cadence(
        &mut self,
        hl: &HeartbeatLayer,
        hd: &HeartbeatLayer,
        ctx: &str,
    ) -> Option<Cadence> {
        let zone = hl.tz.or(hd.tz).map_or(defaults::TZ, |(z, _)| z);
        let cadence = hl.cadence.or(hd.cadence).map(|(c, _)| match c {
            LayerCadence::Period(d) => Cadence::Period(d),
            LayerCadence::Schedule(cron) => Cadence::Schedule(cron, zone),
        });
        if hl.cadence_written && cadence.is_none() {
            return None;
        }
        if let Some((_, loc)) = hl.tz {
            if !matches!(cadence, Some(Cadence::Schedule(..))) {
                self.diag(
                    loc,
                    "heartbeat.tz",
                    format!("`tz` is set but `schedule` is not, in {ctx}"),
                    Some("`tz` says in which zone `schedule` is read: add a `schedule` or remove `tz`".into()),
                );
            }
        }
        if let Some((_, loc)) = hl.grace {
            if cadence.is_none() {
                self.diag(
                    loc,
                    "heartbeat.grace",
                    format!("`grace` is set but neither `period` nor `schedule` is, in {ctx}"),
                    Some("grace is the slack after each expected run: add `period = \"1h\"` or `schedule = \"0 3 * * *\"`".into()),
                );
            }
        }
        cadence
    }

    /// Report each dependency cycle once, at the edge that closes it.
    fn cycles(&mut self, names: &[&str], graph: &BTreeMap<String, Vec<(String, Loc)>>) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        fn visit(
            node: &str,
            graph: &BTreeMap<String, Vec<(String, Loc)>>,
            marks: &mut HashMap<String, Mark>,
            stack: &mut Vec<String>,
            found: &mut Vec<(String, Vec<String>, Loc)>,
        ) {
            marks.insert(node.to_owned(), Mark::Active);
            stack.push(node.to_owned());
            for (dep, loc) in graph.get(node).into_iter().flatten() {
                match marks.get(dep.as_str()).copied().unwrap_or(Mark::New) {
                    Mark::New => visit(dep, graph, marks, stack, found),
                    Mark::Active => {
                        let start = stack.iter().position(|n| n == dep).unwrap_or(0);
                        let mut cycle = stack[start..].to_vec();
                        cycle.push(dep.clone());
                        found.push((node.to_owned(), cycle, *loc));
                    }
                    Mark::Done => {}
                }
            }
            stack.pop();
            marks.insert(node.to_owned(), Mark::Done);
        }
        let mut marks = HashMap::new();
        let mut found = Vec::new();
        for name in names {
            if marks.get(*name).copied().unwrap_or(Mark::New) == Mark::New {
                visit(name, graph, &mut marks, &mut Vec::new(), &mut found);
            }
        }
        for (node, cycle, loc) in found {
            self.diag(
                loc,
                "depends_on",
                format!(
                    "dependency cycle `{}` in program `{node}`",
                    cycle.join(" -> ")
                ),
                Some("remove one of these dependencies".into()),
            );
        }
    }
}

fn found(item: &Item) -> String {
    match item {
        Item::Value(v) => found_value(v),
        Item::Table(_) => "a table".into(),
        Item::ArrayOfTables(_) => "an array of tables".into(),
        Item::None => "nothing".into(),
    }
}

fn found_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("a string (`{:?}`)", s.value()),
        Value::Integer(i) => format!("an integer (`{}`)", i.value()),
        Value::Float(f) => format!("a float (`{}`)", f.value()),
        Value::Boolean(b) => format!("a boolean (`{}`)", b.value()),
        Value::Datetime(_) => "a datetime".into(),
        Value::Array(_) => "an array".into(),
        Value::InlineTable(_) => "a table".into(),
    }
}
