//! PM2: ecosystem files (`.js` evaluated with `node`, `.json`) and the
//! output of `pm2 jlist` (process objects with a `pm2_env`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{read, split_words, ward_name, Cmd, ImportError, Imported, Prog};

/// What `node` prints for an ecosystem file: its `apps` (or the export itself).
const NODE_SCRIPT: &str = "const c=require(require('path').resolve(process.argv[1])); console.log(JSON.stringify(c.apps||c))";

fn evaluate_js(file: &Path) -> Result<String, ImportError> {
    let out = Command::new("node").arg("-e").arg(NODE_SCRIPT).arg(file).output().map_err(|e| {
        ImportError::new(file, None, format!("evaluating a .js ecosystem file needs `node`, which cannot be run: {e}"))
            .hint("install Node.js, or convert the file to JSON (`pm2 ecosystem` docs) or pass the output of `pm2 jlist`")
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // node reports `file:line` on the first line of a syntax error.
        let first: Vec<&str> = err.lines().take(5).collect();
        return Err(ImportError::new(
            file,
            None,
            format!("node could not evaluate it:\n  {}", first.join("\n  ")),
        )
        .hint("run `node FILE` to see the whole error"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn import(file: &Path) -> Result<Imported, ImportError> {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let text = match ext {
        "js" | "cjs" => evaluate_js(file)?,
        "mjs" => {
            return Err(ImportError::new(
                file,
                None,
                "an ES module ecosystem file cannot be loaded with require()",
            )
            .hint("rename it to .cjs / use module.exports, or convert it to JSON"))
        }
        _ => read(file)?,
    };
    let json: Value = serde_json::from_str(&text).map_err(|e| {
        let line = if ext == "js" || ext == "cjs" { None } else { Some(e.line()) };
        ImportError::new(file, line, format!("not valid JSON: {e}")).hint("PM2 files are ecosystem.config.js, a JSON ecosystem file, or the output of `pm2 jlist`")
    })?;
    let apps: Vec<Value> = match json {
        Value::Array(a) => a,
        Value::Object(ref o) if o.contains_key("apps") => match o.get("apps") {
            Some(Value::Array(a)) => a.clone(),
            Some(v @ Value::Object(_)) => vec![v.clone()],
            _ => return Err(ImportError::new(file, None, "`apps` is not a list")),
        },
        Value::Object(_) => vec![json],
        _ => {
            return Err(ImportError::new(
                file,
                None,
                "expected a list of apps or an object with `apps`",
            ))
        }
    };
    let dir = super::source_dir(file);
    let mut out = Imported::default();
    if apps.iter().any(|a| a.get("pm2_env").is_some()) {
        jlist(file, &apps, &mut out)?;
    } else {
        for (i, app) in apps.iter().enumerate() {
            let Value::Object(app) = app else {
                return Err(ImportError::new(
                    file,
                    None,
                    format!("app {} is not an object", i + 1),
                ));
            };
            let p = app_to_prog(file, &dir, i, app, &mut out, false)?;
            out.programs.push(p);
        }
    }
    Ok(out)
}

/// `pm2 jlist`: one object per running process; cluster instances repeat
/// the same name. `pm2_env` holds the app's options.
fn jlist(file: &Path, procs: &[Value], out: &mut Imported) -> Result<(), ImportError> {
    let mut by_name: BTreeMap<String, (usize, Map<String, Value>, u32)> = BTreeMap::new();
    for (i, proc_) in procs.iter().enumerate() {
        let Some(Value::Object(env)) = proc_.get("pm2_env") else {
            return Err(ImportError::new(
                file,
                None,
                format!("process {} has no `pm2_env` object", i + 1),
            ));
        };
        let name = proc_
            .get("name")
            .or_else(|| env.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("app")
            .to_string();
        by_name
            .entry(name)
            .and_modify(|e| e.2 += 1)
            .or_insert((i, env.clone(), 1));
    }
    let mut entries: Vec<_> = by_name.into_iter().collect();
    entries.sort_by_key(|(_, (i, _, _))| *i);
    for (name, (i, env, count)) in entries {
        // Translate pm2_env's names back to ecosystem names.
        let mut app = Map::new();
        app.insert("name".into(), Value::String(name));
        for (from, to) in [
            ("pm_exec_path", "script"),
            ("pm_cwd", "cwd"),
            ("args", "args"),
            ("node_args", "node_args"),
            ("exec_interpreter", "interpreter"),
            ("exec_mode", "exec_mode"),
            ("autorestart", "autorestart"),
            ("max_restarts", "max_restarts"),
            ("min_uptime", "min_uptime"),
            ("restart_delay", "restart_delay"),
            ("exp_backoff_restart_delay", "exp_backoff_restart_delay"),
            ("kill_timeout", "kill_timeout"),
            ("max_memory_restart", "max_memory_restart"),
            ("cron_restart", "cron_restart"),
            ("watch", "watch"),
            ("pm_out_log_path", "out_file"),
            ("pm_err_log_path", "error_file"),
            ("log_date_format", "log_date_format"),
            ("merge_logs", "merge_logs"),
            ("uid", "uid"),
            ("gid", "gid"),
            ("stop_exit_codes", "stop_exit_codes"),
        ] {
            if let Some(v) = env.get(from).filter(|v| !v.is_null()) {
                // PM2's own default log paths are not worth keeping.
                if to.ends_with("_file") && v.as_str().is_some_and(|s| s.contains("/.pm2/logs/")) {
                    continue;
                }
                app.insert(to.into(), v.clone());
            }
        }
        let instances = env
            .get("instances")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(u64::from(count));
        if instances > 1 {
            app.insert("instances".into(), Value::from(instances));
        }
        if let Some(Value::Object(vars)) = env.get("env") {
            let (kept, skipped) = user_env(vars, &env);
            app.insert("env".into(), Value::Object(kept));
            if !skipped.is_empty() {
                out.unmapped(
                    Some(&ward_name(app["name"].as_str().unwrap_or("app"))),
                    format!(
                        "{} variables of the shell `pm2 start` ran in ({}…)",
                        skipped.len(),
                        skipped
                            .iter()
                            .take(4)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "left out: ward passes its own environment to every program",
                );
            }
        }
        let p = app_to_prog(file, Path::new("/"), i, &app, out, true)?;
        out.programs.push(p);
    }
    Ok(())
}

/// `pm2_env.env` mixes the app's env with the whole shell environment of
/// `pm2 start` and PM2's internals. Keep what looks like the app's.
fn user_env(
    vars: &Map<String, Value>,
    pm2_env: &Map<String, Value>,
) -> (Map<String, Value>, Vec<String>) {
    const SHELL: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PWD",
        "OLDPWD",
        "TERM",
        "LANG",
        "LANGUAGE",
        "SHLVL",
        "HOSTNAME",
        "MAIL",
        "LS_COLORS",
        "_",
        "EDITOR",
        "PAGER",
        "DISPLAY",
        "COLORTERM",
        "LESSOPEN",
        "LESSCLOSE",
        "MOTD_SHOWN",
    ];
    let mut kept = Map::new();
    let mut skipped = Vec::new();
    for (k, v) in vars {
        let internal = k.starts_with("PM2_")
            || k.starts_with("pm_")
            || k == "NODE_APP_INSTANCE"
            || k == "unique_id"
            || k == "name"
            || pm2_env.contains_key(k) && k.chars().any(|c| c.is_ascii_lowercase());
        let shell = SHELL.contains(&k.as_str())
            || k.starts_with("SSH_")
            || k.starts_with("XDG_")
            || k.starts_with("LC_")
            || k.starts_with("DBUS_")
            || k.starts_with("NVM_");
        if internal {
            continue;
        }
        if shell {
            skipped.push(k.clone());
        } else {
            kept.insert(k.clone(), v.clone());
        }
    }
    (kept, skipped)
}

/// A PM2 duration: a number of milliseconds, or a string with a unit (`"1m"`, `"10s"`, `"500ms"`, `"1h"`).
fn millis(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| *f >= 0.0)
            .map(|f| Duration::from_millis(f as u64)),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<f64>() {
                return Some(Duration::from_millis(n as u64));
            }
            crate::config::parse_duration(s).ok()
        }
        _ => None,
    }
}

fn words(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => split_words(s),
        Value::Array(a) => Ok(a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect()),
        Value::Null => Ok(Vec::new()),
        other => Ok(vec![other.to_string()]),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The interpreter PM2 picks from the script's extension.
fn interpreter_for(script: &str) -> Option<&'static str> {
    let ext = Path::new(script).extension()?.to_str()?;
    Some(match ext {
        "js" | "cjs" | "mjs" => "node",
        "ts" => "ts-node",
        "py" => "python3",
        "sh" => "bash",
        "rb" => "ruby",
        "php" => "php",
        "pl" => "perl",
        "coffee" => "coffee",
        _ => return None,
    })
}

fn app_to_prog(
    file: &Path,
    dir: &Path,
    index: usize,
    app: &Map<String, Value>,
    out: &mut Imported,
    from_jlist: bool,
) -> Result<Prog, ImportError> {
    let err = |m: String| ImportError::new(file, None, m);
    let script = app.get("script").map(text).ok_or_else(|| {
        err(format!("app {} has no `script`", index + 1)).hint("every PM2 app needs `script`")
    })?;
    let raw_name = app.get("name").map(text).unwrap_or_else(|| {
        Path::new(&script)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".into())
    });
    let name = ward_name(&raw_name);
    let pname = Some(name.as_str());
    let mut p = Prog {
        name: name.clone(),
        origin: if from_jlist {
            format!("{} (pm2 jlist), process `{raw_name}`", file.display())
        } else {
            format!("{}, app `{raw_name}`", file.display())
        },
        ..Prog::default()
    };
    if name != raw_name {
        p.notes.push(format!(
            "named `{raw_name}` in PM2; ward names are letters, digits, `_`, `.` and `-`"
        ));
    }
    let cwd = match app.get("cwd").map(text) {
        Some(c) => {
            let c = PathBuf::from(c);
            if c.is_absolute() {
                c
            } else {
                // `dir.join(".")` would print as `dir/.`.
                c.components()
                    .filter(|c| *c != std::path::Component::CurDir)
                    .fold(dir.to_path_buf(), |acc, c| acc.join(c))
            }
        }
        None => dir.to_path_buf(),
    };
    if !from_jlist || app.contains_key("cwd") {
        p.cwd = Some(cwd.display().to_string());
    }
    let bad = |k: &str, m: String| err(format!("app `{raw_name}`: `{k}`: {m}"));
    let mut interp_args = Vec::new();
    let mut args = Vec::new();
    let mut interpreter: Option<String> = None;
    let mut log_file = None;
    for (k, v) in app {
        let opt = format!("{k} = {}", v);
        match k.as_str() {
            "name" | "script" | "cwd" => {}
            "args" => args = words(v).map_err(|m| bad(k, m))?,
            "interpreter" | "exec_interpreter" => interpreter = Some(text(v)),
            "interpreter_args" | "node_args" => interp_args.extend(words(v).map_err(|m| bad(k, m))?),
            "env" => {
                let Value::Object(vars) = v else { return Err(bad(k, "not an object".into())) };
                for (ek, ev) in vars {
                    p.env.insert(ek.clone(), text(ev));
                }
            }
            k if k.starts_with("env_") => {
                let vars = v.as_object().map(|o| o.iter().map(|(a, b)| format!("{a}={}", text(b))).collect::<Vec<_>>().join(" ")).unwrap_or_default();
                out.unmapped(pname, format!("{k} ({vars})"), format!("used only with `pm2 start --env {}`; ward has one env per program: copy what you need into [program.env]", &k[4..]));
            }
            "instances" => {
                let cpus = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
                let n: i64 = match v {
                    Value::String(s) if s == "max" => 0,
                    Value::String(s) => s.parse().map_err(|_| bad(k, format!("`{s}` is not a number or \"max\"")))?,
                    Value::Number(n) => n.as_i64().ok_or_else(|| bad(k, "not an integer".into()))?,
                    _ => return Err(bad(k, "not a number".into())),
                };
                let count = if n <= 0 { (cpus + n).max(1) } else { n };
                if n <= 0 {
                    p.notes.push(format!("instances = {} meant \"one per CPU{}\"; this machine has {cpus} CPUs", text(v), if n < 0 { format!(" minus {}", -n) } else { String::new() }));
                }
                if count > 1 {
                    p.instances = Some(count as u32);
                }
            }
            "exec_mode" => {
                if text(v).contains("cluster") {
                    out.unmapped(pname, opt, "PM2's cluster mode shares one port between Node workers; ward runs independent processes: give each instance its own port (from $WARD_INSTANCE) or use SO_REUSEPORT");
                }
            }
            "autorestart" => p.restart = Some(if v.as_bool() == Some(false) { "never" } else { "always" }),
            "stop_exit_codes" => {
                let codes: Vec<i32> = match v {
                    Value::Array(a) => a.iter().filter_map(|c| c.as_i64()).map(|c| c as i32).collect(),
                    Value::Number(n) => n.as_i64().map(|c| vec![c as i32]).unwrap_or_default(),
                    _ => Vec::new(),
                };
                p.exit_codes = Some(codes);
                if p.restart != Some("never") {
                    p.restart = Some("on-failure");
                }
            }
            "max_restarts" => p.max_restarts = v.as_u64().map(|n| n as u32),
            "min_uptime" => p.min_uptime = Some(millis(v).ok_or_else(|| bad(k, format!("`{v}` is not a duration")))?),
            "restart_delay" => {
                let d = millis(v).ok_or_else(|| bad(k, format!("`{v}` is not a duration")))?.max(Duration::from_millis(1));
                if !app.contains_key("exp_backoff_restart_delay") {
                    p.backoff_initial = Some(d);
                    p.backoff_max = Some(d);
                    p.backoff_multiplier = Some(1.0);
                    p.notes.push("backoff from restart_delay: a fixed delay, as PM2 does".into());
                }
            }
            "exp_backoff_restart_delay" => {
                let d = millis(v).ok_or_else(|| bad(k, format!("`{v}` is not a duration")))?.max(Duration::from_millis(1));
                p.backoff_initial = Some(d);
                p.backoff_max = Some(Duration::from_secs(15).max(d));
                p.backoff_multiplier = Some(1.5);
                p.notes.push("backoff from exp_backoff_restart_delay: ×1.5 up to 15s, as PM2 does".into());
            }
            "kill_timeout" => p.stop_timeout = Some(millis(v).ok_or_else(|| bad(k, format!("`{v}` is not a duration")))?),
            "user" | "uid" => p.user = Some(text(v)),
            "gid" => p.group = Some(text(v)),
            "out_file" | "output" => match text(v).as_str() {
                "/dev/null" => out.unmapped(pname, opt, "ward always keeps output; use a small `log.max_size` and `log.keep`"),
                path => p.log_stdout = Some(path.to_string()),
            },
            "error_file" | "error" => match text(v).as_str() {
                "/dev/null" => out.unmapped(pname, opt, "ward always keeps output; use a small `log.max_size` and `log.keep`"),
                path => p.log_stderr = Some(path.to_string()),
            },
            "log_file" | "log" => log_file = Some(text(v)),
            "log_date_format" => {
                p.log_timestamps = Some(true);
                p.notes.push(format!("log_date_format {v}: ward's timestamps are its own fixed UTC format"));
            }
            "time" => p.log_timestamps = v.as_bool(),
            "merge_logs" | "combine_logs" => {
                if v.as_bool() == Some(true) && app.get("instances").is_some() {
                    out.unmapped(pname, opt, "ward gives each instance its own log files (web.out.0.log…); `ward logs web` merges them when reading");
                }
            }
            "autostart" => p.autostart = v.as_bool(),
            "port" => {
                p.env.insert("PORT".into(), text(v));
            }
            "max_memory_restart" => out.unmapped(pname, opt, "ward does not restart on memory use; limit memory with systemd (MemoryMax= on ward.service) or in the program"),
            "cron_restart" => out.unmapped(pname, opt, format!("ward has no scheduled restarts: run `ward restart {name}` from cron or a systemd timer")),
            "watch" | "ignore_watch" | "watch_delay" | "watch_options" => {
                if v.as_bool() != Some(false) {
                    out.unmapped(pname, opt, "ward does not restart programs when their files change");
                }
            }
            "wait_ready" | "listen_timeout" => out.unmapped(pname, opt, "ward counts a start as good after `min_uptime`; readiness signals are not read"),
            "shutdown_with_message" | "kill_retry_time" | "treekill" => out.unmapped(pname, opt, "ward stops the whole process group with `stop_signal`, then SIGKILL after `stop_timeout`"),
            "instance_var" => out.unmapped(pname, opt, "ward sets WARD_INSTANCE (0, 1, …) in each instance instead"),
            "increment_var" => out.unmapped(pname, opt, "use WARD_INSTANCE to derive per-instance values"),
            "source_map_support" | "disable_source_map_support" | "vizion" | "automation" | "pmx" | "namespace" | "version" | "force" | "append_env_to_name" | "filter_env" | "post_update" | "disable_logs" | "deep_monitoring" | "trace" => {
                out.unmapped(pname, opt, "PM2-specific; no ward equivalent")
            }
            _ => out.unmapped(pname, opt, "unknown PM2 option"),
        }
    }
    if let Some(l) = log_file {
        if p.log_stdout.is_none() && p.log_stderr.is_none() {
            p.log_stdout = Some(l);
            p.log_stderr = Some("stdout".into());
        } else {
            out.unmapped(
                pname,
                format!("log_file = {l:?}"),
                "ward has no third, combined file besides out and err",
            );
        }
    }
    if p.log_stdout.is_some() && p.log_stdout == p.log_stderr {
        p.log_stderr = Some("stdout".into());
    }
    // The command: [interpreter, interpreter args, script, args].
    let interpreter = match interpreter.as_deref() {
        Some("none") | Some("") => None,
        Some(i) => Some(i.to_string()),
        None if from_jlist => None,
        None => interpreter_for(&script).map(str::to_string),
    };
    let mut argv = Vec::new();
    if let Some(i) = &interpreter {
        argv.push(i.clone());
        argv.extend(interp_args);
        argv.push(script.clone());
    } else {
        if !interp_args.is_empty() {
            out.unmapped(
                pname,
                format!("interpreter_args {interp_args:?}"),
                "no interpreter to pass them to",
            );
        }
        // PM2 runs a script found in `cwd`; otherwise it looks it up in PATH.
        // ward resolves a relative argv[0] in PATH, so make a local one absolute.
        let local = cwd.join(&script);
        let relative =
            !Path::new(&script).is_absolute() && (script.contains('/') || local.is_file());
        argv.push(if relative {
            local.display().to_string()
        } else {
            script.clone()
        });
    }
    argv.extend(args);
    p.command = Cmd::Argv(argv);
    if p.restart.is_none() {
        p.restart = Some("always");
        p.notes
            .push("restart = \"always\": PM2 restarts on every exit, including a clean one".into());
    }
    Ok(p)
}
