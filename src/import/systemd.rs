//! systemd `.service` units: one program per unit.
//!
//! Reads the unit's sections (with `\` continuations and repeated keys),
//! maps `[Service]` options onto ward keys, and turns `After=`/`Requires=`
//! between the imported units into `depends_on`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{read, sh_quote, split_words, ward_name, Cmd, ImportError, Imported, Prog};

/// One `Key=Value` with its line.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Sections in file order, each with its entries in order.
pub(crate) fn parse_unit(
    file: &Path,
    text: &str,
) -> Result<Vec<(String, Vec<Entry>)>, ImportError> {
    let mut sections: Vec<(String, Vec<Entry>)> = Vec::new();
    let mut pending: Option<(String, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (line, start) = match pending.take() {
            Some((mut acc, start)) => {
                acc.push(' ');
                acc.push_str(raw.trim());
                (acc, start)
            }
            None => (raw.trim().to_string(), i + 1),
        };
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending = Some((cont.trim_end().to_string(), start));
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
                return Err(ImportError::new(
                    file,
                    Some(start),
                    format!("malformed section header `{line}`"),
                ));
            };
            sections.push((name.to_string(), Vec::new()));
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(ImportError::new(
                file,
                Some(start),
                format!("expected `Key=Value`, found `{line}`"),
            ));
        };
        let Some((_, entries)) = sections.last_mut() else {
            return Err(ImportError::new(
                file,
                Some(start),
                format!("`{}` is outside any section", k.trim()),
            )
            .hint("a unit starts with a section such as [Unit] or [Service]"));
        };
        entries.push(Entry {
            key: k.trim().to_string(),
            value: v.trim().to_string(),
            line: start,
        });
    }
    Ok(sections)
}

/// A systemd time span (`90`, `5min 20s`, `1.5s`, `500ms`); `None` for
/// `infinity` or garbage.
pub(crate) fn timespan(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() || s == "infinity" {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.trim_start().is_empty() {
        rest = rest.trim_start();
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = rest[n_end..].trim_start();
        let u_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..u_end];
        rest = &rest[u_end..];
        let secs = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "us" | "usec" | "µs" => 1e-6,
            "ms" | "msec" => 1e-3,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 604_800.0,
            _ => return None,
        };
        total += n * secs;
    }
    Some(Duration::from_millis((total * 1000.0).round() as u64))
}

/// Expand the specifiers ward can know (`%n %N %p %%`); `Err` names one it cannot.
fn specifiers(s: &str, unit: &str) -> Result<String, String> {
    let stem = unit.strip_suffix(".service").unwrap_or(unit);
    let prefix = stem.split('@').next().unwrap_or(stem);
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('n') => out.push_str(unit),
            Some('N') => out.push_str(stem),
            Some('p') => out.push_str(prefix),
            Some(o) => return Err(format!("%{o}")),
            None => out.push('%'),
        }
    }
    Ok(out)
}

/// `ExecStart=` words into a ward command: an argv, or a shell string when
/// it uses `$VAR`/`${VAR}` (which ward does not expand in an argv).
fn exec_command(words: &[String], expand_env: bool) -> Cmd {
    if !expand_env || !words.iter().any(|w| w.contains('$')) {
        return Cmd::Argv(words.to_vec());
    }
    let sh: Vec<String> = words
        .iter()
        .map(|w| {
            let bare = w.strip_prefix('$').filter(|v| {
                !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            if bare.is_some() {
                // systemd splits an unquoted `$VAR` word on whitespace, as sh does.
                w.clone()
            } else if w.contains('$') {
                format!(
                    "\"{}\"",
                    w.replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('`', "\\`")
                )
            } else {
                sh_quote(w)
            }
        })
        .collect();
    Cmd::Shell(format!("exec {}", sh.join(" ")))
}

fn signal(v: &str) -> String {
    v.trim().trim_start_matches("SIG").to_string()
}

pub fn import(files: &[PathBuf]) -> Result<Imported, ImportError> {
    let mut out = Imported::default();
    let mut units = Vec::new();
    for f in files {
        let text = read(f)?;
        let unit = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        units.push((f.clone(), unit, parse_unit(f, &text)?));
    }
    let stem = |u: &str| u.strip_suffix(".service").unwrap_or(u).to_string();
    let names: BTreeMap<String, String> = units
        .iter()
        .map(|(_, u, _)| (stem(u), ward_name(&stem(u))))
        .collect();
    for (file, unit, sections) in units {
        let p = convert(&file, &unit, &sections, &names, &mut out)?;
        out.programs.push(p);
    }
    Ok(out)
}

fn convert(
    file: &Path,
    unit: &str,
    sections: &[(String, Vec<Entry>)],
    names: &BTreeMap<String, String>,
    out: &mut Imported,
) -> Result<Prog, ImportError> {
    let stem = unit.strip_suffix(".service").unwrap_or(unit);
    let name = ward_name(stem);
    let mut p = Prog {
        name: name.clone(),
        origin: file.display().to_string(),
        ..Prog::default()
    };
    let pname = Some(name.as_str());
    if stem.ends_with('@') {
        out.unmapped(pname, format!("template unit `{unit}`"), "ward has no unit instances (%i); use `instances` and $WARD_INSTANCE, and check the command");
    }
    let mut exec: Option<(Vec<String>, bool)> = None;
    let mut restart_set = false;
    let mut service_type = String::from("simple");
    let (mut stdout_file, mut stderr_setting) = (false, None::<String>);
    let bad = |e: &Entry, msg: String| ImportError::new(file, Some(e.line), msg);
    for (section, entries) in sections {
        for e in entries {
            let v = e.value.as_str();
            let opt = format!("{}={}", e.key, v);
            match (section.as_str(), e.key.as_str()) {
                ("Unit", "Description") => p.notes.push(format!("Description: {v}")),
                ("Unit", "Documentation") => {}
                ("Unit", "After" | "Requires" | "Wants" | "BindsTo" | "Requisite") => {
                    for dep in v.split_whitespace() {
                        let d = dep.strip_suffix(".service").unwrap_or(dep);
                        if let Some(n) = names.get(d).filter(|_| d != stem) {
                            if !p.depends_on.contains(n) {
                                p.depends_on.push(n.clone());
                            }
                        }
                    }
                }
                ("Unit" | "Service", "StartLimitBurst") => match v.parse::<u32>() {
                    Ok(n) => {
                        p.max_restarts = Some(n);
                        p.notes.push(format!("max_restarts from StartLimitBurst={n}: ward counts failed starts in a row, not within StartLimitIntervalSec"));
                    }
                    Err(_) => return Err(bad(e, format!("StartLimitBurst=`{v}` is not a number"))),
                },
                ("Unit" | "Service", "StartLimitIntervalSec" | "StartLimitInterval") => {}
                ("Install", _) => {}
                ("Service", "Type") => service_type = v.to_string(),
                ("Service", "ExecStart") => {
                    if v.is_empty() {
                        exec = None;
                        continue;
                    }
                    if exec.is_some() {
                        out.unmapped(pname, opt, "a second ExecStart (Type=oneshot runs them in turn); ward runs one command: chain them in a script");
                        continue;
                    }
                    let mut cmd = v;
                    let mut expand = true;
                    while let Some(c) = cmd.chars().next().filter(|c| "@-:+!".contains(*c)) {
                        match c {
                            '-' => p.notes.push("ExecStart had `-` (a failing exit is not an error): consider `exit_codes`".into()),
                            ':' => expand = false,
                            '@' => out.unmapped(pname, format!("ExecStart prefix `@` in `{v}`"), "ward cannot set a different argv[0]"),
                            _ => out.unmapped(pname, format!("ExecStart prefix `{c}` in `{v}`"), "ward has no privileged/unprivileged split; run the command as the right `user`"),
                        }
                        cmd = &cmd[c.len_utf8()..];
                    }
                    let cmd = specifiers(cmd, unit).map_err(|s| bad(e, format!("ExecStart uses the specifier `{s}`, which has no meaning outside systemd")).hint("replace it with the value it stands for"))?;
                    let words = split_words(&cmd).map_err(|m| bad(e, format!("ExecStart: {m}")))?;
                    if words.is_empty() {
                        return Err(bad(e, "ExecStart is empty".into()));
                    }
                    exec = Some((words, expand));
                }
                ("Service", "Environment") => {
                    let words = split_words(v).map_err(|m| bad(e, format!("Environment: {m}")))?;
                    for w in words {
                        match w.split_once('=') {
                            Some((k, val)) if !k.is_empty() => {
                                p.env.insert(k.to_string(), val.to_string());
                            }
                            _ => return Err(bad(e, format!("Environment: `{w}` is not NAME=value"))),
                        }
                    }
                }
                ("Service", "EnvironmentFile") => {
                    let (optional, path) = match v.strip_prefix('-') {
                        Some(p) => (true, p),
                        None => (false, v),
                    };
                    if p.env_file.is_some() {
                        out.unmapped(pname, opt, "ward reads one env_file per program: merge the files");
                    } else {
                        p.env_file = Some(path.to_string());
                        if optional {
                            p.notes.push(format!("EnvironmentFile had `-` (optional); ward requires `{path}` to exist"));
                        }
                    }
                }
                ("Service", "User") => p.user = Some(v.to_string()),
                ("Service", "Group") => p.group = Some(v.to_string()),
                ("Service", "WorkingDirectory") => {
                    let d = v.strip_prefix('-').unwrap_or(v);
                    if d == "~" {
                        out.unmapped(pname, opt, "ward does not expand `~`: write the home directory");
                    } else {
                        p.cwd = Some(d.to_string());
                    }
                }
                ("Service", "Restart") => {
                    restart_set = true;
                    p.restart = Some(match v {
                        "no" => "never",
                        "always" => "always",
                        "on-failure" => "on-failure",
                        "on-abnormal" | "on-abort" | "on-watchdog" => {
                            p.notes.push(format!("Restart={v} became on-failure (ward restarts on any failed exit)"));
                            "on-failure"
                        }
                        "on-success" => {
                            out.unmapped(pname, opt, "ward cannot restart only after a clean exit; on-failure's opposite has no ward policy");
                            "never"
                        }
                        _ => return Err(bad(e, format!("unknown Restart=`{v}`"))),
                    });
                }
                ("Service", "RestartSec") => match timespan(v) {
                    Some(d) => {
                        p.backoff_initial = Some(d.max(Duration::from_millis(1)));
                        if p.backoff_max.is_none() {
                            p.backoff_max = Some(d.max(Duration::from_millis(1)));
                            p.backoff_multiplier = Some(1.0);
                            p.notes.push("backoff from RestartSec: a fixed delay, as systemd does".into());
                        }
                    }
                    None => return Err(bad(e, format!("RestartSec=`{v}` is not a time span"))),
                },
                ("Service", "RestartMaxDelaySec") => match timespan(v) {
                    Some(d) => {
                        p.backoff_max = Some(d);
                        p.backoff_multiplier = Some(2.0);
                    }
                    None => out.unmapped(pname, opt, "not a finite time span"),
                },
                ("Service", "RestartSteps") => out.unmapped(pname, opt, "ward grows the delay by `backoff.multiplier` (2.0 here) until `backoff.max`"),
                ("Service", "KillSignal") => p.stop_signal = Some(signal(v)),
                ("Service", "KillMode") => match v {
                    "control-group" | "mixed" => {}
                    _ => out.unmapped(pname, opt, "ward always signals the program's whole process group"),
                },
                ("Service", "TimeoutStopSec" | "TimeoutSec") => match timespan(v) {
                    Some(d) => p.stop_timeout = Some(d),
                    None => out.unmapped(pname, opt, "ward always ends a stop with SIGKILL after `stop_timeout`"),
                },
                ("Service", "TimeoutStartSec") => out.unmapped(pname, opt, "ward has no start timeout; `min_uptime` is how long a start must last"),
                ("Service", "WatchdogSec") => out.unmapped(pname, opt, "ward's heartbeat registry will map this (its config keys do not exist yet)"),
                ("Service", "SuccessExitStatus") => {
                    let mut codes = vec![0];
                    for w in v.split_whitespace() {
                        match w.parse::<i32>() {
                            Ok(c) if (0..=255).contains(&c) => codes.push(c),
                            _ => out.unmapped(pname, format!("SuccessExitStatus={w}"), "ward's `exit_codes` are exit codes only, not signals"),
                        }
                    }
                    codes.dedup();
                    p.exit_codes = Some(codes);
                }
                ("Service", "StandardOutput") => match v.split_once(':') {
                    Some(("file" | "append" | "truncate", path)) => {
                        p.log_stdout = Some(path.to_string());
                        stdout_file = true;
                    }
                    _ => out.unmapped(pname, opt, "ward captures output into its own rotated log files"),
                },
                ("Service", "StandardError") => stderr_setting = Some(v.to_string()),
                ("Service", "PIDFile" | "GuessMainPID" | "RemainAfterExit") => out.unmapped(pname, opt, "only meaningful for Type=forking/oneshot under systemd"),
                ("Service", k) if k.starts_with("ExecStartPre") || k.starts_with("ExecStartPost") || k.starts_with("ExecStop") || k == "ExecReload" || k == "ExecCondition" => {
                    out.unmapped(pname, opt, "ward runs one command per program: put extra steps in a wrapper script")
                }
                ("Service", k) if k.starts_with("Limit") || k.starts_with("Memory") || k.starts_with("CPU") || k.starts_with("IO") || k == "Nice" || k == "TasksMax" || k == "OOMScoreAdjust" => {
                    out.unmapped(pname, opt, "ward sets no resource limits: set them on ward.service, or wrap the command (prlimit, nice)")
                }
                ("Service", k) if k.starts_with("Protect") || k.starts_with("Private") || k.starts_with("Restrict") || k.starts_with("ReadOnly") || k.starts_with("ReadWrite") || k == "NoNewPrivileges" || k.starts_with("Capability") || k.starts_with("AmbientCap") || k.starts_with("SystemCall") => {
                    out.unmapped(pname, opt, "ward does no sandboxing: keep it with systemd (on ward.service) or use a wrapper")
                }
                (s, _) => out.unmapped(pname, format!("[{s}] {opt}"), "no ward equivalent"),
            }
        }
    }
    match service_type.as_str() {
        "simple" | "exec" => {}
        "notify" | "notify-reload" => out.unmapped(pname, format!("Type={service_type}"), "ward does not read programs' sd_notify; a start counts after `min_uptime` (heartbeats will cover readiness)"),
        "oneshot" => {
            p.notes.push("Type=oneshot: runs once; an exit with an allowed code leaves it `exited`".into());
            if !restart_set {
                p.restart = Some("never");
            }
        }
        "forking" => out.unmapped(
            pname,
            "Type=forking",
            "ward supervises the process it starts: run the program in the foreground (most daemons have a flag such as --no-daemon / -f)",
        ),
        other => out.unmapped(pname, format!("Type={other}"), "treated as simple"),
    }
    if !restart_set && service_type != "oneshot" {
        p.restart = Some("never");
        p.notes.push("no Restart= means systemd never restarted it; set restart = \"on-failure\" to have ward do so".into());
    }
    match stderr_setting.as_deref() {
        None | Some("inherit") if stdout_file => p.log_stderr = Some("stdout".into()),
        None | Some("inherit") => {}
        Some(s) => match s.split_once(':') {
            Some(("file" | "append" | "truncate", path)) => {
                if p.log_stdout.as_deref() == Some(path) {
                    p.log_stderr = Some("stdout".into());
                } else {
                    p.log_stderr = Some(path.to_string());
                }
            }
            _ => out.unmapped(
                pname,
                format!("StandardError={s}"),
                "ward captures output into its own rotated log files",
            ),
        },
    }
    match exec {
        Some((words, expand)) => p.command = exec_command(&words, expand),
        None => {
            return Err(ImportError::new(file, None, "the unit has no ExecStart")
                .hint("ward needs a command to run"))
        }
    }
    Ok(p)
}
