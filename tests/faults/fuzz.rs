//! Property tests: the config parser and the control-protocol request parser
//! never panic, whatever they are given, and the config parser's errors are
//! always located. A seed corpus of tricky configs lives in
//! `tests/corpus/config/` (`ok_*.toml` must parse, `err_*.toml` must not).

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use ward::config::{parse_str, ConfigError};
use ward::control::protocol::Request;

const EXAMPLE: &str = include_str!("../../supervisor.toml.example");

/// Where parsed configs pretend to live (relative paths resolve against it).
fn config_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("supervisor.toml")
}

/// Parse `source`; fail unless the result is `Ok` or located diagnostics.
fn parses_cleanly(source: &str) -> Result<bool, String> {
    match parse_str(source, &config_path()) {
        Ok(_) => Ok(true),
        Err(ConfigError::Invalid(d)) => {
            if d.items.is_empty() {
                return Err("an error without any diagnostic".into());
            }
            let lines = source.split('\n').count();
            for item in &d.items {
                if item.line < 1 || item.line > lines || item.col < 1 {
                    return Err(format!(
                        "diagnostic at {}:{} outside the {lines}-line source: {item:?}",
                        item.line, item.col
                    ));
                }
            }
            Ok(false)
        }
        Err(e) => Err(format!("not a diagnostics error: {e}")),
    }
}

/// Fragments that make TOML (and ward's keys) interesting when spliced in.
const TOKENS: &[&str] = &[
    "\n",
    "\r\n",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "#",
    "\\",
    "\\u{0}",
    "\u{feff}",
    "é",
    "\u{10ffff}",
    "\t",
    " ",
    "0",
    "-1",
    "1e308",
    "nan",
    "inf",
    "true",
    "99999999999999999999",
    "4294967296",
    "\"\"",
    "[]",
    "{}",
    "[[program]]\n",
    "[program.log]\n",
    "[defaults]\n",
    "[supervisor]\n",
    "name = \"x\"\n",
    "name = \"steady\"\n",
    "command = \"true\"\n",
    "command = []\n",
    "instances = 0\n",
    "instances = 100000000000\n",
    "max_restarts = -1\n",
    "keep = 4294967296\n",
    "max_size = \"99999999999999999999TiB\"\n",
    "max_size = \"0\"\n",
    "stop_timeout = \"1000000000000h\"\n",
    "min_uptime = \"-1s\"\n",
    "stop_signal = \"SIGFOO\"\n",
    "backoff = { multiplier = 1e308, jitter = 2.0 }\n",
    "depends_on = [\"chatty\", \"crashy\"]\n",
    "depends_on = [\"nope\"]\n",
    "log = { stderr = \"stdout\", stdout = \"\" }\n",
    "user = \"nobody-such-user\"\n",
    "env_file = \"/nonexistent\"\n",
    "cwd = \"\"\n",
    "restart = \"sometimes\"\n",
    "env = { \"\" = \"x\" }\n",
    "a.b.c = 1\n",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: usize },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

/// The char boundary at or before `at % (len + 1)`.
fn boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(mut s: String, m: &Mutation) -> String {
    match *m {
        Mutation::Delete { at, len } => {
            let a = boundary(&s, at);
            let b = boundary(&s, (a + len).min(s.len()));
            s.replace_range(a..b.max(a), "");
        }
        Mutation::Insert { at, token } => {
            let a = boundary(&s, at);
            s.insert_str(a, TOKENS[token % TOKENS.len()]);
        }
        Mutation::DuplicateLine { line } => {
            let mut lines: Vec<&str> = s.split('\n').collect();
            let i = line % lines.len();
            lines.insert(i, lines[i]);
            s = lines.join("\n");
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<&str> = s.split('\n').collect();
            let n = lines.len();
            lines.swap(a % n, b % n);
            s = lines.join("\n");
        }
        Mutation::Truncate { at } => {
            let a = boundary(&s, at);
            s.truncate(a);
        }
    }
    s
}

/// Valid requests to mutate.
const REQUESTS: &[&str] = &[
    r#"{"cmd":"ping"}"#,
    r#"{"cmd":"status","names":["web","web:1"],"history":true}"#,
    r#"{"cmd":"restart","names":["all"]}"#,
    r#"{"cmd":"log_sources","names":[]}"#,
    r#"{"cmd":"down"}"#,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(s in any::<String>()) {
        prop_assert_eq!(parses_cleanly(&s).err(), None);
    }

    #[test]
    fn config_parser_never_panics_on_toml_like_text(s in "([a-z_.]{1,12}|\\[|\\]|=|\"|'|\\{|\\}|,|[ \t]|\n|[0-9]{1,3}){0,120}") {
        prop_assert_eq!(parses_cleanly(&s).err(), None);
    }

    #[test]
    fn config_parser_never_panics_on_a_mutated_example(muts in proptest::collection::vec(mutation(), 1..8)) {
        let s = muts.iter().fold(EXAMPLE.to_string(), apply);
        prop_assert_eq!(parses_cleanly(&s).err(), None, "mutated source:\n{}", s);
    }

    #[test]
    fn request_parser_never_panics_on_arbitrary_bytes(b in any::<Vec<u8>>()) {
        let _ = serde_json::from_slice::<Request>(&b);
    }

    #[test]
    fn request_parser_never_panics_on_mutated_requests(
        which in 0..REQUESTS.len(),
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let s = muts.iter().fold(REQUESTS[which].to_string(), apply);
        if let Ok(req) = serde_json::from_slice::<Request>(s.as_bytes()) {
            // What parses also survives a round trip.
            let again: Request = serde_json::from_slice(&serde_json::to_vec(&req).unwrap()).unwrap();
            prop_assert_eq!(again, req);
        }
    }
}

#[test]
fn the_example_config_parses() {
    assert_eq!(parses_cleanly(EXAMPLE), Ok(true));
}

#[test]
fn the_config_corpus_parses_as_its_file_names_say() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/config");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "corpus too small: {files:?}");
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let source = String::from_utf8(fs::read(&f).unwrap()).unwrap();
        let parsed = parses_cleanly(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = name.starts_with("ok_");
        assert!(
            name.starts_with("ok_") || name.starts_with("err_"),
            "{name}: corpus files are named ok_* or err_*"
        );
        assert_eq!(
            parsed,
            want,
            "{name}: parsed = {parsed}; diagnostics: {:?}",
            parse_str(&source, &config_path())
                .err()
                .map(|e| e.to_string())
        );
    }
}
