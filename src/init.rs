//! `ward init`: write a commented starter `supervisor.toml`.
//!
//! Owns the starter text (which must always pass `ward check`; a test says
//! so) and writing it without clobbering an existing file. Must never
//! overwrite a file unless asked to with `--force`.

use std::io::Write;
use std::path::Path;

use crate::cli::exit_codes;

/// The starter config: one harmless program that runs anywhere, and every
/// commonly used key, commented, with its default.
pub const STARTER: &str = r#"# supervisor.toml: the programs ward runs. Written by `ward init`.
#
#   ward check            validate this file (every problem at once)
#   ward up               run ward in the foreground (Ctrl-C stops everything)
#   ward up --detach      ... or in the background; then `ward status`, `ward logs -f`, `ward down`
#   ward startup          start ward at boot with systemd
#
# Every key, its type and default: docs/CONFIG.md. Relative paths are relative
# to this file's directory.

[supervisor]
# Socket, logs and pid records. Default: /var/lib/ward as root,
# else ~/.local/state/ward.
# state_dir = "/var/lib/ward"
# socket_group = "deploy"       # members may use `ward` commands too

# Keys here apply to every program that does not set them.
[defaults]
# restart = "on-failure"        # always | on-failure | never
# stop_timeout = "10s"          # then SIGKILL to the program's process group

# [defaults.log]
# max_size = "10MiB"            # rotate past this size
# keep = 5                      # rotated files kept
# timestamps = false            # prefix each line with the time it was read

[[program]]
name = "hello"
# A string runs under `/bin/sh -c`; an array runs directly: ["node", "server.js"].
command = "while true; do echo \"hello from $WARD_NAME\"; sleep 5; done"
# cwd = "/srv/app"              # default: this file's directory
# env = { PORT = "8080" }
# env_file = ".env"             # a dotenv file; `env` wins over it
# user = "www-data"             # when ward runs as root
# instances = 1                 # copies named hello:0, hello:1... with WARD_INSTANCE
# depends_on = ["db"]           # start after these are running
# autostart = true
# restart = "on-failure"
# exit_codes = [0]              # exits that count as success
# min_uptime = "1s"             # an exit before this is a failed start
# backoff = { initial = "1s", max = "60s", multiplier = 2.0, jitter = 0.2 }
# stable_after = "30s"          # a run this long resets the backoff
# max_restarts = 10             # failed starts in a row before `fatal` (0 = never give up)
# stop_signal = "TERM"
# stop_timeout = "10s"

# [program.log]
# stdout = "logs/hello.out.log" # default: <state_dir>/logs/hello.out.log
# stderr = "stdout"             # merge stderr into the stdout file
# max_size = "10MiB"
# keep = 5

# Another program: copy the block above.
# [[program]]
# name = "web"
# command = ["node", "server.js"]
"#;

/// `ward init [-o FILE] [--force]`.
pub fn init(output: &Path, force: bool) -> u8 {
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if force {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    let written = open
        .open(output)
        .and_then(|mut f| f.write_all(STARTER.as_bytes()));
    match written {
        Ok(()) => {
            println!("wrote {}", output.display());
            let c = if output == Path::new("supervisor.toml") {
                String::new()
            } else {
                format!(" -c {}", output.display())
            };
            println!("next: edit it, then `ward check{c}` and `ward up{c}`");
            exit_codes::OK
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!("error: `{}` already exists", output.display());
            eprintln!("  hint: pass --force to replace it, or -o OTHER.toml to write elsewhere");
            exit_codes::FAILED
        }
        Err(e) => {
            eprintln!("error: cannot write `{}`: {e}", output.display());
            eprintln!("  hint: check that the directory exists and is writable");
            exit_codes::FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_passes_ward_check() {
        let c = crate::config::parse_str(STARTER, Path::new("/tmp/supervisor.toml"))
            .expect("starter is valid");
        assert_eq!(c.programs.len(), 1);
        assert_eq!(c.programs[0].name, "hello");
    }

    #[test]
    fn the_packaged_config_is_the_starter() {
        assert_eq!(
            include_str!("../packaging/supervisor.toml"),
            STARTER,
            "regenerate it with `ward init -o packaging/supervisor.toml --force`"
        );
    }

    #[test]
    fn every_commented_key_is_a_real_key() {
        // Uncomment the `key = value` lines of the first program and the
        // tables; the result must parse except for the machine-specific keys.
        let mut out = String::new();
        for line in STARTER.lines() {
            let t = line.trim_start_matches("# ");
            let machine = [
                "cwd",
                "env_file",
                "user",
                "depends_on",
                "socket_group",
                "state_dir",
                "name = \"web\"",
                "command = [\"node\"",
                "[[program]]",
            ];
            let key_line = t.contains(" = ")
                && !t.starts_with("ward")
                && !machine.iter().any(|m| t.starts_with(m));
            if line.starts_with("# ") && (key_line || t == "[defaults.log]" || t == "[program.log]")
            {
                out.push_str(t);
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        crate::config::parse_str(&out, Path::new("/tmp/supervisor.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{out}"));
    }
}
