//! supervisord `.conf` files: one program per `[program:x]` section.
//!
//! Reads the INI dialect supervisord uses (`;` comments, indented
//! continuation lines, `[include] files = …` globs relative to the file),
//! expands `%(name)s` references as supervisord does, and maps `numprocs`
//! onto `instances` (turning `%(process_num)d` in the command into
//! `$WARD_INSTANCE`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{read, sh_quote, split_words, ward_name, Cmd, ImportError, Imported, Prog};

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: String,
    line: usize,
}

#[derive(Debug, Clone)]
struct Section {
    name: String,
    file: PathBuf,
    entries: Vec<Entry>,
}

impl Section {
    fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }
}

fn parse_ini(file: &Path, text: &str) -> Result<Vec<Section>, ImportError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        // An indented line continues the previous value.
        if raw.starts_with([' ', '\t']) {
            if let Some(e) = sections.last_mut().and_then(|s| s.entries.last_mut()) {
                e.value.push('\n');
                e.value.push_str(strip_comment(trimmed));
                continue;
            }
        }
        if trimmed.starts_with('[') {
            let Some(name) = trimmed
                .strip_prefix('[')
                .and_then(|l| l.split_once(']'))
                .map(|(n, _)| n.trim())
            else {
                return Err(ImportError::new(
                    file,
                    Some(i + 1),
                    format!("malformed section header `{trimmed}`"),
                ));
            };
            sections.push(Section {
                name: name.to_string(),
                file: file.to_path_buf(),
                entries: Vec::new(),
            });
            continue;
        }
        let Some(at) = trimmed.find(['=', ':']) else {
            return Err(ImportError::new(
                file,
                Some(i + 1),
                format!("expected `key = value`, found `{trimmed}`"),
            ));
        };
        let Some(section) = sections.last_mut() else {
            return Err(
                ImportError::new(file, Some(i + 1), "a value outside any section")
                    .hint("supervisord files start with a section such as [program:name]"),
            );
        };
        section.entries.push(Entry {
            key: trimmed[..at].trim().to_lowercase(),
            value: strip_comment(trimmed[at + 1..].trim()).to_string(),
            line: i + 1,
        });
    }
    Ok(sections)
}

/// supervisord treats ` ;` (whitespace, then `;`) as the start of a comment.
fn strip_comment(v: &str) -> &str {
    match v.find(" ;").or_else(|| v.find("\t;")) {
        Some(i) => v[..i].trim_end(),
        None => v,
    }
}

/// `*` and `?` in the file name part of `pattern` (as supervisord's globs
/// are used in practice: `conf.d/*.conf`).
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (
        pattern.parent(),
        pattern
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
    ) else {
        return Vec::new();
    };
    if !name.contains(['*', '?']) {
        return if pattern.exists() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn wildcard(p: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (p.chars().collect(), s.chars().collect());
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(&p, &s)
}

/// Read `file` and everything its `[include]` sections name.
fn load(file: &Path, depth: usize, seen: &mut Vec<PathBuf>) -> Result<Vec<Section>, ImportError> {
    let canon = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    if seen.contains(&canon) {
        return Ok(Vec::new());
    }
    seen.push(canon);
    if depth > 10 {
        return Err(ImportError::new(
            file,
            None,
            "[include] nests more than 10 deep",
        ));
    }
    let text = read(file)?;
    let mut out = Vec::new();
    for s in parse_ini(file, &text)? {
        if s.name == "include" {
            let here = file.parent().unwrap_or(Path::new("."));
            if let Some(e) = s.get("files") {
                for pat in e.value.split_whitespace() {
                    let pat = here.join(pat);
                    let matches = glob(&pat);
                    if matches.is_empty() {
                        eprintln!(
                            "note: {}:{}: [include] `{}` matches no file",
                            file.display(),
                            e.line,
                            pat.display()
                        );
                    }
                    for m in matches {
                        out.extend(load(&m, depth + 1, seen)?);
                    }
                }
            }
        } else {
            out.push(s);
        }
    }
    Ok(out)
}

/// Expand `%(name)s` / `%(name)02d` references. `vars` holds what
/// supervisord defines; `ENV_X` comes from the environment.
fn expand(v: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            out.push('%');
            rest = r;
            continue;
        }
        let Some(r) = rest.strip_prefix('(') else {
            out.push('%');
            continue;
        };
        let Some(close) = r.find(')') else {
            return Err(format!("unterminated `%(` in `{v}`"));
        };
        let name = &r[..close];
        let after = &r[close + 1..];
        let conv_at = after
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(|| format!("`%({name})` has no conversion (such as `s` or `d`)"))?;
        let spec = &after[..conv_at];
        rest = &after[conv_at + 1..];
        let value = match name.strip_prefix("ENV_") {
            Some(env) => std::env::var(env).map_err(|_| {
                format!("`%({name})s` names the environment variable `{env}`, which is not set")
            })?,
            None => vars
                .get(name)
                .cloned()
                .ok_or_else(|| format!("unknown name `%({name})`"))?,
        };
        let width: usize = spec.trim_start_matches(['0', '-']).parse().unwrap_or(0);
        if spec.starts_with('0') {
            out.push_str(&format!("{value:0>width$}"));
        } else {
            out.push_str(&format!("{value:>width$}"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The marker `%(process_num)…` is replaced with before a command is split.
const NUM: &str = "\u{1}WARD_INSTANCE\u{1}";

/// supervisord sizes: `50MB` is 50 × 1024 × 1024.
fn size(v: &str) -> Option<u64> {
    let v = v.trim().to_uppercase();
    let (n, mult) = if let Some(n) = v.strip_suffix("KB") {
        (n, 1u64 << 10)
    } else if let Some(n) = v.strip_suffix("MB") {
        (n, 1 << 20)
    } else if let Some(n) = v.strip_suffix("GB") {
        (n, 1 << 30)
    } else {
        (v.as_str(), 1)
    };
    n.trim().parse::<u64>().ok().map(|n| n * mult)
}

fn boolean(v: &str) -> Option<bool> {
    match v.trim().to_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// `KEY="val",KEY2=val2` (values may be quoted and contain commas).
fn environment(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = v.trim();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("`{rest}` is not KEY=value"))?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let end = rest[1..]
                .find(q)
                .ok_or_else(|| format!("unterminated quote in the value of `{key}`"))?;
            value = rest[1..end + 1].to_string();
            rest = rest[end + 2..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        if key.is_empty() {
            return Err("an empty variable name".into());
        }
        out.push((key, value));
    }
    Ok(out)
}

pub fn import(files: &[PathBuf]) -> Result<Imported, ImportError> {
    let mut seen = Vec::new();
    let mut sections = Vec::new();
    for f in files {
        sections.extend(load(f, 0, &mut seen)?);
    }
    let mut out = Imported::default();
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut global_env: Vec<(String, String)> = Vec::new();
    for s in &sections {
        if s.name == "supervisord" {
            for e in &s.entries {
                if e.key == "environment" {
                    global_env = environment(&e.value).map_err(|m| {
                        ImportError::new(&s.file, Some(e.line), format!("environment: {m}"))
                    })?;
                } else if ![
                    "logfile",
                    "pidfile",
                    "nodaemon",
                    "childlogdir",
                    "logfile_maxbytes",
                    "logfile_backups",
                    "loglevel",
                ]
                .contains(&e.key.as_str())
                {
                    out.unmapped(None, format!("[supervisord] {} = {}", e.key, e.value), "supervisord's own setting; ward's own settings are in [supervisor] (state_dir, log)");
                }
            }
        }
    }
    for s in &sections {
        let name = s.name.as_str();
        if let Some(prog) = name.strip_prefix("program:") {
            let p = program(s, prog.trim(), &host, &global_env, &mut out)?;
            out.programs.push(p);
        } else if let Some(g) = name.strip_prefix("group:") {
            out.unmapped(
                None,
                format!(
                    "[group:{g}] programs = {}",
                    s.get("programs").map(|e| e.value.as_str()).unwrap_or("")
                ),
                "ward has no groups: name several programs in one command (`ward restart a b`)",
            );
        } else if name.starts_with("eventlistener:") || name.starts_with("fcgi-program:") {
            out.unmapped(None, format!("[{name}]"), "no ward equivalent");
        } else if ["inet_http_server", "unix_http_server"].contains(&name) {
            out.unmapped(None, format!("[{name}]"), "ward's control socket is `<state_dir>/ward.sock` (see `socket`, `socket_group`); there is no HTTP server");
        } else if name == "supervisorctl"
            || name.starts_with("rpcinterface:")
            || name == "supervisord"
        {
        } else {
            out.unmapped(None, format!("[{name}]"), "unknown section");
        }
    }
    if out.programs.is_empty() {
        return Err(
            ImportError::new(&files[0], None, "no [program:x] sections found")
                .hint("also check the [include] paths"),
        );
    }
    Ok(out)
}

fn program(
    s: &Section,
    prog: &str,
    host: &str,
    global_env: &[(String, String)],
    out: &mut Imported,
) -> Result<Prog, ImportError> {
    let name = ward_name(prog);
    let pname = Some(name.as_str());
    let here = std::fs::canonicalize(s.file.parent().unwrap_or(Path::new("."))).unwrap_or_default();
    let at = |e: &Entry, m: String| ImportError::new(&s.file, Some(e.line), m);
    let numprocs: u32 = match s.get("numprocs") {
        Some(e) => e
            .value
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| at(e, format!("numprocs = `{}` is not a number ≥ 1", e.value)))?,
        None => 1,
    };
    let start: u32 = match s.get("numprocs_start") {
        Some(e) => e
            .value
            .parse()
            .map_err(|_| at(e, format!("numprocs_start = `{}` is not a number", e.value)))?,
        None => 0,
    };
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    vars.insert("program_name", prog.to_string());
    vars.insert("group_name", prog.to_string());
    vars.insert("host_node_name", host.to_string());
    vars.insert("here", here.display().to_string());
    vars.insert("numprocs", numprocs.to_string());
    // Expanded twice: with the marker (to find where the number goes) and
    // for a plain value.
    let exp = |e: &Entry, num: &str| {
        let mut v = vars.clone();
        v.insert("process_num", num.to_string());
        expand(&e.value, &v).map_err(|m| at(e, m))
    };
    let mut p = Prog {
        name: name.clone(),
        origin: format!("{} [program:{prog}]", s.file.display()),
        ..Prog::default()
    };
    if numprocs > 1 {
        p.instances = Some(numprocs);
    }
    for (k, v) in global_env {
        p.env.insert(k.clone(), v.clone());
    }
    if !global_env.is_empty() {
        let names: Vec<&str> = global_env.iter().map(|(k, _)| k.as_str()).collect();
        p.notes.push(format!(
            "{} from [supervisord] environment",
            names.join(", ")
        ));
    }
    let mut stdout_policy = (None, None);
    let mut stderr_policy = (None, None);
    let mut redirect = false;
    let mut command = None;
    for e in &s.entries {
        let opt = format!("{} = {}", e.key, e.value);
        let marked = exp(e, NUM)?;
        let has_num = marked.contains(NUM);
        let plain = exp(e, &start.to_string())?;
        match e.key.as_str() {
            "command" => command = Some((e.clone(), marked)),
            "process_name" => {
                if has_num || plain != prog {
                    p.notes.push(format!(
                        "process_name `{}`: ward names instances `{name}:0`, `{name}:1`…",
                        e.value
                    ));
                }
            }
            "numprocs" | "numprocs_start" => {}
            "directory" => p.cwd = Some(plain),
            "environment" => {
                let vars = environment(&marked).map_err(|m| at(e, format!("environment: {m}")))?;
                for (k, v) in vars {
                    if v.contains(NUM) {
                        out.unmapped(
                            pname,
                            format!("environment {k}={}", e.value),
                            "differs per process; ward gives each instance WARD_INSTANCE instead",
                        );
                    } else {
                        p.env.insert(k, v);
                    }
                }
            }
            "user" => p.user = Some(plain),
            "autostart" => p.autostart = boolean(&plain),
            "autorestart" => {
                p.restart = Some(match plain.to_lowercase().as_str() {
                    "true" => "always",
                    "false" => "never",
                    "unexpected" => "on-failure",
                    _ => {
                        return Err(at(
                            e,
                            format!("autorestart = `{plain}`: expected true, false or unexpected"),
                        ))
                    }
                })
            }
            "exitcodes" => {
                let codes: Result<Vec<i32>, _> =
                    plain.split(',').map(|c| c.trim().parse::<i32>()).collect();
                p.exit_codes = Some(codes.map_err(|_| {
                    at(
                        e,
                        format!("exitcodes = `{plain}`: expected numbers separated by commas"),
                    )
                })?);
            }
            "startsecs" => match plain.parse::<u64>() {
                Ok(n) => p.min_uptime = Some(Duration::from_secs(n)),
                Err(_) => return Err(at(e, format!("startsecs = `{plain}` is not a number"))),
            },
            "startretries" => match plain.parse::<u32>() {
                Ok(n) => p.max_restarts = Some(n),
                Err(_) => return Err(at(e, format!("startretries = `{plain}` is not a number"))),
            },
            "stopsignal" => p.stop_signal = Some(plain.trim_start_matches("SIG").to_string()),
            "stopwaitsecs" => match plain.parse::<u64>() {
                Ok(n) => p.stop_timeout = Some(Duration::from_secs(n)),
                Err(_) => return Err(at(e, format!("stopwaitsecs = `{plain}` is not a number"))),
            },
            "stopasgroup" | "killasgroup" => {
                if boolean(&plain) == Some(false) {
                    out.unmapped(pname, opt, "ward always signals the whole process group");
                }
            }
            "redirect_stderr" => redirect = boolean(&plain).unwrap_or(false),
            "stdout_logfile" | "stderr_logfile" => {
                let target = if e.key == "stdout_logfile" {
                    &mut p.log_stdout
                } else {
                    &mut p.log_stderr
                };
                match plain.as_str() {
                    "AUTO" => {}
                    "NONE" => out.unmapped(pname, opt, "ward always keeps a program's output; use a small `log.max_size` and `log.keep`"),
                    "/dev/stdout" | "/dev/stderr" | "/dev/fd/1" | "/dev/fd/2" => out.unmapped(pname, opt, "ward writes program output to files, not to its own stdout"),
                    _ => {
                        let path = if has_num { strip_num(&marked) } else { plain.clone() };
                        if has_num {
                            p.notes.push(format!("{}: ward adds the instance number to log file names itself", e.key));
                        }
                        *target = Some(path);
                    }
                }
            }
            "stdout_logfile_maxbytes" | "stderr_logfile_maxbytes" => {
                let v = size(&plain)
                    .ok_or_else(|| at(e, format!("{} = `{plain}` is not a size", e.key)))?;
                if v == 0 {
                    out.unmapped(
                        pname,
                        opt,
                        "ward always rotates; 0 (no limit) has no equivalent",
                    );
                } else if e.key.starts_with("stdout") {
                    stdout_policy.0 = Some(v);
                } else {
                    stderr_policy.0 = Some(v);
                }
            }
            "stdout_logfile_backups" | "stderr_logfile_backups" => {
                let v: u32 = plain
                    .parse()
                    .map_err(|_| at(e, format!("{} = `{plain}` is not a number", e.key)))?;
                if e.key.starts_with("stdout") {
                    stdout_policy.1 = Some(v);
                } else {
                    stderr_policy.1 = Some(v);
                }
            }
            "priority" => out.unmapped(
                pname,
                opt,
                "ward orders starts by `depends_on`, not by priority",
            ),
            _ => out.unmapped(pname, opt, "no ward equivalent"),
        }
    }
    // ward has one rotation policy per program: stdout's wins.
    p.log_max_size = stdout_policy.0.or(stderr_policy.0);
    p.log_keep = stdout_policy.1.or(stderr_policy.1);
    if stdout_policy.0.is_some() && stderr_policy.0.is_some() && stdout_policy != stderr_policy {
        p.notes.push("stdout and stderr had different rotation settings; ward uses one policy per program (stdout's)".into());
    }
    if redirect {
        p.log_stderr = Some("stdout".into());
    }
    let Some((entry, cmd)) = command else {
        return Err(ImportError::new(
            &s.file,
            None,
            format!("[program:{prog}] has no command"),
        ));
    };
    let words = split_words(&cmd).map_err(|m| at(&entry, format!("command: {m}")))?;
    if words.is_empty() {
        return Err(at(&entry, "command is empty".into()));
    }
    p.command = if cmd.contains(NUM) {
        let n = if start == 0 {
            "$WARD_INSTANCE".to_string()
        } else {
            format!("$((WARD_INSTANCE + {start}))")
        };
        let zero_pad = entry.value.contains("%(process_num)0");
        let num = match (zero_pad, width_of(&entry.value)) {
            (true, Some(w)) => format!("$(printf %0{w}d {n})"),
            _ => n,
        };
        let quoted: Vec<String> = words
            .iter()
            .map(|w| {
                if w.contains(NUM) {
                    format!("\"{}\"", w.replace('"', "\\\"").replace(NUM, &num))
                } else {
                    sh_quote(w)
                }
            })
            .collect();
        p.notes.push("the command used %(process_num): it runs under /bin/sh with $WARD_INSTANCE (0, 1, …) in its place".into());
        Cmd::Shell(format!("exec {}", quoted.join(" ")))
    } else {
        Cmd::Argv(words)
    };
    Ok(p)
}

/// The width in `%(process_num)02d`.
fn width_of(v: &str) -> Option<usize> {
    let after = v.split("%(process_num)").nth(1)?;
    let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.trim_start_matches('0').parse().ok()
}

/// `/var/log/worker-<marker>.log` → `/var/log/worker.log`.
fn strip_num(v: &str) -> String {
    let (a, b) = v.split_once(NUM).unwrap_or((v, ""));
    let a = a.strip_suffix(['-', '_', '.']).unwrap_or(a);
    format!("{a}{b}").replace(NUM, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_supervisord() {
        let mut v = BTreeMap::new();
        v.insert("program_name", "w".to_string());
        v.insert("process_num", "3".to_string());
        assert_eq!(
            expand("%(program_name)s-%(process_num)02d %%", &v).unwrap(),
            "w-03 %"
        );
        assert!(expand("%(nope)s", &v).unwrap_err().contains("nope"));
        assert!(expand("%(ENV_WARD_SURELY_UNSET_X)s", &v)
            .unwrap_err()
            .contains("not set"));
    }

    #[test]
    fn environment_values() {
        let e = environment(r#"A="1,2",B=x, C='y z'"#).unwrap();
        assert_eq!(
            e,
            vec![
                ("A".into(), "1,2".into()),
                ("B".into(), "x".into()),
                ("C".into(), "y z".into())
            ]
        );
    }

    #[test]
    fn sizes_are_binary() {
        assert_eq!(size("50MB"), Some(50 << 20));
        assert_eq!(size("1024"), Some(1024));
        assert_eq!(size("x"), None);
    }
}
