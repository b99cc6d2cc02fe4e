//! `ward import`: convert a PM2, supervisord, systemd or Procfile setup into
//! a commented `supervisor.toml`.
//!
//! Each source module reads its format into the neutral [`Imported`] model:
//! the programs with every option that maps onto a ward key, and a list of
//! [`Unmapped`] options with the reason. [`emit`] writes that as TOML, and
//! the result is checked with `config::parse_str` before it is written.
//! Must never start, stop or change anything on the machine: it only reads
//! the named files (and runs `node` to evaluate a PM2 `.js` ecosystem file).

mod emit;
mod pm2;
mod procfile;
mod supervisord;
mod systemd;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::exit_codes;

pub use emit::emit;

/// What `ward import` converts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// PM2: ecosystem.config.js / .json, or the output of `pm2 jlist`
    Pm2,
    /// supervisord: .conf files with [program:x] sections (and [include])
    Supervisord,
    /// systemd: .service units
    Systemd,
    /// Procfile: `name: command` lines
    Procfile,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Pm2 => "pm2",
            Source::Supervisord => "supervisord",
            Source::Systemd => "systemd",
            Source::Procfile => "procfile",
        }
    }
}

/// A whole converted setup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imported {
    /// The files read, for the header.
    pub sources: Vec<PathBuf>,
    pub programs: Vec<Prog>,
    /// Options that could not be mapped, listed at the top of the output.
    pub unmapped: Vec<Unmapped>,
}

/// How a program is run.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    Shell(String),
    Argv(Vec<String>),
}

impl Default for Cmd {
    fn default() -> Self {
        Cmd::Argv(Vec::new())
    }
}

/// One program, with the ward keys that were set from the source. `None`
/// means "not set in the source": ward's default applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prog {
    pub name: String,
    /// Where it came from (`ecosystem.config.js, app "api"`), as a comment.
    pub origin: String,
    pub command: Cmd,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    pub env_file: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub autostart: Option<bool>,
    pub instances: Option<u32>,
    pub depends_on: Vec<String>,
    pub restart: Option<&'static str>,
    pub exit_codes: Option<Vec<i32>>,
    pub min_uptime: Option<Duration>,
    pub backoff_initial: Option<Duration>,
    pub backoff_max: Option<Duration>,
    pub backoff_multiplier: Option<f64>,
    pub max_restarts: Option<u32>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<Duration>,
    pub log_stdout: Option<String>,
    /// A path, or `stdout` to merge.
    pub log_stderr: Option<String>,
    pub log_max_size: Option<u64>,
    pub log_keep: Option<u32>,
    pub log_timestamps: Option<bool>,
    /// Comments written above the program: how something was mapped.
    pub notes: Vec<String>,
}

/// An option of the source that has no ward equivalent (yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Unmapped {
    /// The program it belongs to; `None` for file-wide options.
    pub program: Option<String>,
    /// The option as written in the source (`cron_restart = "0 3 * * *"`).
    pub option: String,
    pub reason: String,
}

impl Imported {
    pub fn unmapped(
        &mut self,
        program: Option<&str>,
        option: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.unmapped.push(Unmapped {
            program: program.map(str::to_string),
            option: option.into(),
            reason: reason.into(),
        });
    }
}

/// A source file that cannot be read or understood.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ImportError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl ImportError {
    pub fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> ImportError {
        ImportError {
            file: file.to_path_buf(),
            line,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> ImportError {
        self.hint = Some(hint.into());
        self
    }
}

/// The directory holding a source file, absolute where possible (relative
/// paths in the source resolve against it).
pub(crate) fn source_dir(file: &Path) -> std::path::PathBuf {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

pub(crate) fn read(file: &Path) -> Result<String, ImportError> {
    std::fs::read_to_string(file).map_err(|e| {
        ImportError::new(file, None, format!("cannot read it: {e}"))
            .hint("check the path and its permissions")
    })
}

/// Convert `files` of the `from` format.
pub fn import(from: Source, files: &[PathBuf]) -> Result<Imported, ImportError> {
    let mut out = match from {
        Source::Pm2 => {
            let mut all = Imported::default();
            for f in files {
                let one = pm2::import(f)?;
                all.programs.extend(one.programs);
                all.unmapped.extend(one.unmapped);
            }
            all
        }
        Source::Supervisord => supervisord::import(files)?,
        Source::Systemd => systemd::import(files)?,
        Source::Procfile => {
            let mut all = Imported::default();
            for f in files {
                let one = procfile::import(f)?;
                all.programs.extend(one.programs);
                all.unmapped.extend(one.unmapped);
            }
            all
        }
    };
    out.sources = files.to_vec();
    dedupe_names(&mut out);
    Ok(out)
}

/// ward names: letters, digits, `_`, `.`, `-`. Anything else becomes `-`.
pub(crate) fn ward_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let n = n.trim_matches('-').to_string();
    if n.is_empty() {
        "program".into()
    } else {
        n
    }
}

/// Two programs with one name (two files, or a sanitized clash) get `-2`...
fn dedupe_names(out: &mut Imported) {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for p in &mut out.programs {
        let n = seen.entry(p.name.clone()).or_default();
        *n += 1;
        if *n > 1 {
            let new = format!("{}-{}", p.name, n);
            p.notes.push(format!(
                "renamed from `{}`: that name was already taken",
                p.name
            ));
            p.name = new;
        }
    }
}

/// A ward duration string: `1500ms`, `30s`, `5m`.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        format!("{ms}ms")
    } else if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// Split a command line the way a POSIX shell would split words (quotes
/// and backslashes; no expansion). `Err` on an unterminated quote.
pub(crate) fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Quote a word for `/bin/sh` (single quotes unless it is plain).
pub(crate) fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The `ward import` command: convert, check, then write or print.
pub fn cli(from: Source, files: &[PathBuf], output: Option<&Path>, force: bool) -> u8 {
    let imported = match import(from, files) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(h) = &e.hint {
                eprintln!("  hint: {h}");
            }
            return exit_codes::USAGE;
        }
    };
    let text = emit(&imported, from);
    let check_path = match output {
        Some(o) => o.to_path_buf(),
        None => std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join("supervisor.toml"),
    };
    let local = match check(&text, &check_path) {
        Ok(local) => local,
        Err(e) => {
            eprintln!("error: the converted config does not pass `ward check` (a bug in `ward import`):\n{e}");
            eprintln!("--- converted config ---\n{text}");
            return exit_codes::FAILED;
        }
    };
    match output {
        None => print!("{text}"),
        Some(o) => {
            let mut open = std::fs::OpenOptions::new();
            open.write(true);
            if force {
                open.create(true).truncate(true);
            } else {
                open.create_new(true);
            }
            if let Err(e) = open
                .open(o)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            {
                eprintln!("error: cannot write `{}`: {e}", o.display());
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    eprintln!("  hint: pass --force to replace it");
                }
                return exit_codes::FAILED;
            }
            println!(
                "wrote {} ({} programs, {} options not mapped: see the comments at its top)",
                o.display(),
                imported.programs.len(),
                imported.unmapped.len()
            );
        }
    }
    for d in &local {
        eprintln!("note: {d}");
    }
    if !local.is_empty() {
        eprintln!("  hint: these depend on this machine (directories, users, env files); fix them before `ward up`");
    }
    exit_codes::OK
}

/// Check converted text with the real config loader. Problems that only
/// depend on this machine (a `cwd`, `env_file`, `user` or `group` that does
/// not exist here) are returned as notes; anything else is an error.
pub fn check(text: &str, path: &Path) -> Result<Vec<String>, String> {
    match crate::config::parse_str(text, path) {
        Ok(_) => Ok(Vec::new()),
        Err(crate::config::ConfigError::Invalid(d)) => {
            let local_key = |k: &str| ["cwd", "env_file", "user", "group"].contains(&k);
            if d.items.iter().all(|i| local_key(&i.key)) {
                Ok(d.items
                    .iter()
                    .map(|i| format!("{}:{}: {}", path.display(), i.line, i.message))
                    .collect())
            } else {
                Err(d.to_string())
            }
        }
        Err(e) => Err(e.to_string()),
    }
}
