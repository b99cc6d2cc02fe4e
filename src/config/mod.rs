//! Configuration: finding, parsing and validating `supervisor.toml`.
//!
//! Owns the two layers: a walk over the TOML document that keeps every
//! key's location (`load`), and the validated typed model (`model`). We walk
//! `toml_edit` spans instead of deriving serde with `deny_unknown_fields`
//! because serde stops at the first error; here every problem is reported at
//! once with file:line:col. Must never start processes or touch the state dir.

mod diag;
mod envfile;
mod load;
pub mod model;
mod system;
mod units;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use diag::{ConfigError, Diagnostic, Diagnostics};
pub use model::*;
pub use units::{parse_duration, parse_signal, parse_size};

use system::System;

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "WARD_CONFIG";

/// Find the config file: `explicit` (`-c`) if given, else `$WARD_CONFIG`,
/// else the first of `defaults::CONFIG_SEARCH` that exists.
///
/// A path named by `-c` or `$WARD_CONFIG` must exist; there is no fallback.
pub fn find_config(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let search: Vec<PathBuf> = defaults::CONFIG_SEARCH.iter().map(PathBuf::from).collect();
    find_config_in(explicit, std::env::var_os(CONFIG_ENV), &search)
}

fn find_config_in(
    explicit: Option<&Path>,
    env: Option<OsString>,
    search: &[PathBuf],
) -> Result<PathBuf, ConfigError> {
    let named = explicit
        .map(Path::to_path_buf)
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from));
    let candidates = match named {
        Some(p) => vec![p],
        None => search.to_vec(),
    };
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(ConfigError::NotFound {
            searched: candidates,
        }),
    }
}

/// Read, parse and validate the config at `path`. `Config.path` is absolute.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&source, path)
}

/// Parse and validate `source` as if read from `path` (relative paths in it
/// resolve against `path`'s directory).
pub fn parse_str(source: &str, path: &Path) -> Result<Config, ConfigError> {
    load::parse_with(source, path, &System::current())
}

/// Root: `/var/lib/ward`; otherwise `$XDG_STATE_HOME/ward`, else
/// `$HOME/.local/state/ward`.
pub fn default_state_dir() -> PathBuf {
    System::current().default_state_dir()
}

/// The control socket a config points at, read leniently: only the
/// `[supervisor]` keys `state_dir` and `socket` are looked at, so a file with
/// errors elsewhere still leads the CLI to its daemon.
pub fn socket_of(path: &Path) -> Result<PathBuf, String> {
    let source = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let doc: toml_edit::ImDocument<String> =
        source.parse().map_err(|e: toml_edit::TomlError| {
            e.to_string()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_string()
        })?;
    let dir = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let sup = doc.get("supervisor").and_then(|i| i.as_table_like());
    let get = |key: &str| {
        sup.and_then(|t| t.get(key))
            .and_then(|i| i.as_str())
            .map(|s| dir.join(s))
    };
    Ok(match (get("socket"), get("state_dir")) {
        (Some(socket), _) => socket,
        (None, Some(state)) => state.join("ward.sock"),
        (None, None) => default_state_dir().join("ward.sock"),
    })
}
