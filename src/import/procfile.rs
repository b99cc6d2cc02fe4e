//! Procfiles (Heroku, foreman, honcho): `name: command` lines.
//!
//! Each line becomes a program whose command runs under `/bin/sh -c`, as
//! foreman runs it; a `.env` beside the Procfile becomes `env_file`.

use std::path::Path;

use super::{read, ward_name, Cmd, ImportError, Imported, Prog};

pub fn import(file: &Path) -> Result<Imported, ImportError> {
    let text = read(file)?;
    let dir = super::source_dir(file);
    let mut out = Imported::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, command)) = line.split_once(':') else {
            return Err(ImportError::new(
                file,
                Some(i + 1),
                format!("expected `name: command`, found `{line}`"),
            )
            .hint("each line of a Procfile is a process name, a colon, and its command"));
        };
        let (name, command) = (name.trim(), command.trim());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ImportError::new(
                file,
                Some(i + 1),
                format!("`{name}` is not a process name"),
            )
            .hint("names are letters, digits, `_` and `-`"));
        }
        if command.is_empty() {
            return Err(ImportError::new(
                file,
                Some(i + 1),
                format!("process `{name}` has no command"),
            ));
        }
        let mut p = Prog {
            name: ward_name(name),
            origin: format!("{}:{}", file.display(), i + 1),
            command: Cmd::Shell(command.to_string()),
            cwd: Some(dir.display().to_string()),
            ..Prog::default()
        };
        if command.contains("$PORT") || command.contains("${PORT}") || name == "web" {
            p.env.insert("PORT".into(), "5000".into());
            p.notes.push("PORT = 5000 is foreman's default for the first process; Heroku sets PORT itself: pick the port this process should use".into());
        }
        if name == "release" {
            p.restart = Some("never");
            p.notes.push("Heroku runs `release` once per deploy, not as a service: it runs once here; consider removing it".into());
        }
        if dir.join(".env").is_file() {
            p.env_file = Some(dir.join(".env").display().to_string());
            p.notes
                .push("env_file: the .env beside the Procfile, as foreman reads it".into());
        }
        out.programs.push(p);
    }
    if out.programs.is_empty() {
        return Err(ImportError::new(file, None, "no processes found")
            .hint("a Procfile has lines like `web: bundle exec puma`"));
    }
    Ok(out)
}
