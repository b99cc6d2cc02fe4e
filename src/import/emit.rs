//! Writes an [`Imported`] setup as a commented `supervisor.toml`.
//!
//! Strings and keys are quoted by `toml_edit`, so any value round-trips.
//! Owns the layout only; never decides what maps to what.

use std::fmt::Write as _;

use super::{duration, Cmd, Imported, Prog, Source};

fn s(v: &str) -> String {
    toml_edit::Value::from(v).to_string()
}

fn key(k: &str) -> String {
    toml_edit::Key::new(k).to_string()
}

fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
}

/// The whole file.
pub fn emit(imp: &Imported, from: Source) -> String {
    let mut out = String::new();
    let files: Vec<String> = imp
        .sources
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    comment(
        &mut out,
        &format!(
            "Converted by `ward import {}` from: {}",
            from.as_str(),
            files.join(", ")
        ),
    );
    comment(&mut out, "Review it, then run `ward check -c <this file>`. Every key: docs/CONFIG.md;\nwhat each source option became: docs/IMPORT.md.");
    if imp.unmapped.is_empty() {
        comment(&mut out, "\nEvery option was mapped.");
    } else {
        comment(
            &mut out,
            &format!(
                "\nNot mapped ({}): ward has no equivalent, or it needs your decision:",
                imp.unmapped.len()
            ),
        );
        for u in &imp.unmapped {
            let who = u
                .program
                .as_deref()
                .map(|p| format!("{p}: "))
                .unwrap_or_default();
            comment(
                &mut out,
                &format!("- {who}{}: {}", u.option.replace('\n', " "), u.reason),
            );
        }
    }
    if imp.programs.is_empty() {
        comment(&mut out, "\nNo programs were found.");
    }
    for p in &imp.programs {
        out.push('\n');
        program(&mut out, p);
    }
    out
}

fn program(out: &mut String, p: &Prog) {
    out.push_str("[[program]]\n");
    if !p.origin.is_empty() {
        comment(out, &format!("from {}", p.origin));
    }
    for n in &p.notes {
        comment(out, &format!("note: {n}"));
    }
    let _ = writeln!(out, "name = {}", s(&p.name));
    match &p.command {
        Cmd::Shell(c) => {
            let _ = writeln!(out, "command = {}", s(c));
        }
        Cmd::Argv(a) => {
            let words: Vec<String> = a.iter().map(|w| s(w)).collect();
            let _ = writeln!(out, "command = [{}]", words.join(", "));
        }
    }
    let mut line = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            let _ = writeln!(out, "{k} = {v}");
        }
    };
    line("cwd", p.cwd.as_deref().map(s));
    line("env_file", p.env_file.as_deref().map(s));
    line("user", p.user.as_deref().map(s));
    line("group", p.group.as_deref().map(s));
    line("autostart", p.autostart.map(|b| b.to_string()));
    line("instances", p.instances.map(|n| n.to_string()));
    if !p.depends_on.is_empty() {
        line(
            "depends_on",
            Some(format!(
                "[{}]",
                p.depends_on
                    .iter()
                    .map(|d| s(d))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
    }
    line("restart", p.restart.map(s));
    line(
        "exit_codes",
        p.exit_codes.as_ref().map(|c| {
            format!(
                "[{}]",
                c.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
    );
    line("min_uptime", p.min_uptime.map(|d| s(&duration(d))));
    line("max_restarts", p.max_restarts.map(|n| n.to_string()));
    line("stop_signal", p.stop_signal.as_deref().map(s));
    line("stop_timeout", p.stop_timeout.map(|d| s(&duration(d))));
    let mut backoff = Vec::new();
    if let Some(d) = p.backoff_initial {
        backoff.push(format!("initial = {}", s(&duration(d))));
    }
    if let Some(d) = p.backoff_max {
        backoff.push(format!("max = {}", s(&duration(d))));
    }
    if let Some(m) = p.backoff_multiplier {
        backoff.push(format!("multiplier = {m:?}"));
    }
    if !backoff.is_empty() {
        line("backoff", Some(format!("{{ {} }}", backoff.join(", "))));
    }
    if !p.env.is_empty() {
        out.push_str("\n[program.env]\n");
        for (k, v) in &p.env {
            let _ = writeln!(out, "{} = {}", key(k), s(v));
        }
    }
    let mut log = Vec::new();
    if let Some(v) = &p.log_stdout {
        log.push(format!("stdout = {}", s(v)));
    }
    if let Some(v) = &p.log_stderr {
        log.push(format!("stderr = {}", s(v)));
    }
    if let Some(v) = p.log_max_size {
        log.push(format!("max_size = {}", s(&size(v))));
    }
    if let Some(v) = p.log_keep {
        log.push(format!("keep = {v}"));
    }
    if let Some(v) = p.log_timestamps {
        log.push(format!("timestamps = {v}"));
    }
    if !log.is_empty() {
        out.push_str("\n[program.log]\n");
        for l in log {
            let _ = writeln!(out, "{l}");
        }
    }
}

/// Bytes as ward's binary units when exact (`50MiB`), else a byte count.
fn size(b: u64) -> String {
    for (unit, n) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if b >= n && b % n == 0 {
            return format!("{}{unit}", b / n);
        }
    }
    b.to_string()
}
