//! Config errors and located diagnostics: `ConfigError`, `Diagnostics`,
//! byte-offset to line:col mapping, and "did you mean" suggestions.
//!
//! Owns how config problems are worded and rendered. Must never read files
//! or decide what is valid; the loader decides, this file only reports.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong finding, reading or validating the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No config file at any of the searched places.
    #[error(
        "no config file found (searched {})\n  hint: create a commented starter with `ward init`, or pass `-c FILE` (or set WARD_CONFIG); `ward import` converts a PM2, supervisord, systemd or Procfile setup",
        list_paths(searched)
    )]
    NotFound { searched: Vec<PathBuf> },
    /// The file exists (or was named) but cannot be read.
    #[error("cannot read config `{}`\n  hint: check that the file exists and is readable", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file was read but has one or more problems; all are listed.
    #[error("{0}")]
    Invalid(Diagnostics),
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    /// The file as the user named it (relative stays relative).
    pub file: PathBuf,
    pub items: Vec<Diagnostic>,
}

/// One problem, located at a key (unknown keys) or a value (bad values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// The key concerned, relative to its section (`restart`, `log.max_size`);
    /// empty for problems not tied to a key (TOML syntax errors).
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for d in &self.items {
            write!(f, "error: {file}:{}:{}: ", d.line, d.col)?;
            if !d.key.is_empty() {
                write!(f, "`{}`: ", d.key)?;
            }
            writeln!(f, "{}", d.message)?;
            if let Some(hint) = &d.hint {
                writeln!(f, "  hint: {hint}")?;
            }
        }
        let n = self.items.len();
        write!(f, "{n} error{} in {file}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Loc {
    pub line: usize,
    pub col: usize,
}

impl Loc {
    pub(crate) const START: Loc = Loc { line: 1, col: 1 };
}

/// Maps byte offsets of a source text to line:col.
pub(crate) struct LineIndex<'a> {
    src: &'a str,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { src, starts }
    }

    pub(crate) fn loc(&self, offset: usize) -> Loc {
        let offset = offset.min(self.src.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let col = self
            .src
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        Loc {
            line: line + 1,
            col: col + 1,
        }
    }
}

/// Edit distance between two short strings (keys), counted in chars.
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The hint for an unknown key: the closest valid key, or the whole list.
pub(crate) fn unknown_key_hint(key: &str, valid: &[&str]) -> String {
    let lower = key.to_ascii_lowercase();
    let best = valid
        .iter()
        .map(|v| (levenshtein(&lower, v), *v))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, v)) if d <= 2 || d * 3 <= key.chars().count() => {
            format!("did you mean `{v}`?")
        }
        _ => format!(
            "valid keys here: {}",
            valid
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_maps_offsets() {
        let idx = LineIndex::new("ab\ncdé\nx");
        assert_eq!(idx.loc(0), Loc { line: 1, col: 1 });
        assert_eq!(idx.loc(2), Loc { line: 1, col: 3 });
        assert_eq!(idx.loc(3), Loc { line: 2, col: 1 });
        // `é` is two bytes but one column.
        assert_eq!(idx.loc(7), Loc { line: 2, col: 4 });
        assert_eq!(idx.loc(8), Loc { line: 3, col: 1 });
        assert_eq!(idx.loc(100), Loc { line: 3, col: 2 });
    }

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("restart", "restart"), 0);
        assert_eq!(levenshtein("restrat", "restart"), 2);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("comand", "command"), 1);
    }

    #[test]
    fn hint_suggests_or_lists() {
        let valid = ["restart", "command", "cwd"];
        assert_eq!(
            unknown_key_hint("restrat", &valid),
            "did you mean `restart`?"
        );
        assert_eq!(
            unknown_key_hint("zzzzzzzzzz", &valid),
            "valid keys here: `restart`, `command`, `cwd`"
        );
    }

    #[test]
    fn display_renders_every_item_and_a_count() {
        let d = Diagnostics {
            file: "supervisor.toml".into(),
            items: vec![
                Diagnostic {
                    line: 12,
                    col: 1,
                    key: "restrat".into(),
                    message: "unknown key in program `web`".into(),
                    hint: Some("did you mean `restart`?".into()),
                },
                Diagnostic {
                    line: 3,
                    col: 5,
                    key: String::new(),
                    message: "invalid TOML: expected `=`".into(),
                    hint: None,
                },
            ],
        };
        assert_eq!(
            d.to_string(),
            "error: supervisor.toml:12:1: `restrat`: unknown key in program `web`\n  \
             hint: did you mean `restart`?\n\
             error: supervisor.toml:3:5: invalid TOML: expected `=`\n\
             2 errors in supervisor.toml"
        );
        let one = Diagnostics {
            file: "a.toml".into(),
            items: vec![d.items[1].clone()],
        };
        assert!(one.to_string().ends_with("\n1 error in a.toml"));
    }
}
