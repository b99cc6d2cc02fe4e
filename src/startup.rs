//! `ward startup` / `ward unstartup`: run ward at boot under systemd.
//!
//! Owns rendering the `ward.service` unit (the same template as
//! `packaging/ward.service`), writing it where systemd looks, and running
//! `systemctl` to enable or disable it, saying every step and how to undo
//! it. Where systemd is not running it writes the unit and prints the manual
//! steps. Must never touch anything but the one unit file and `systemctl`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cli::exit_codes;
use crate::config::Config;

/// The unit's name, in both the system and the user manager.
pub const UNIT_NAME: &str = "ward.service";
const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";
/// Exists only while systemd is the init system (`sd_booted(3)`).
const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";
/// Added to the longest stop chain for `TimeoutStopSec=`.
const STOP_MARGIN: Duration = Duration::from_secs(10);

/// Everything the unit text depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitSpec {
    /// Absolute path of the `ward` binary.
    pub exe: PathBuf,
    /// Absolute path of the config.
    pub config: PathBuf,
    /// A unit for the user's manager (`systemctl --user`).
    pub user_mode: bool,
    /// `TimeoutStopSec=`: long enough for ward's own ordered stop.
    pub stop_timeout: Duration,
    /// `NoNewPrivileges=yes` (only when no program switches user).
    pub no_new_privileges: bool,
}

impl UnitSpec {
    pub fn for_config(config: &Config, exe: &Path, user_mode: bool) -> UnitSpec {
        UnitSpec {
            exe: exe.to_path_buf(),
            config: config.path.clone(),
            user_mode,
            stop_timeout: longest_stop(config) + STOP_MARGIN,
            no_new_privileges: config
                .programs
                .iter()
                .all(|p| p.user.is_none() && p.group.is_none()),
        }
    }
}

/// The longest time ward's ordered stop can take: dependents stop before
/// what they depend on, so a chain `a -> b -> c` can take the sum of their
/// `stop_timeout`s. At least the largest single `stop_timeout`.
pub fn longest_stop(config: &Config) -> Duration {
    fn chain(config: &Config, name: &str, depth: usize) -> Duration {
        let Some(p) = config.program(name) else {
            return Duration::ZERO;
        };
        // Validation rejects cycles; the depth guard is only for safety.
        if depth > config.programs.len() {
            return p.stop_timeout;
        }
        let dependents = config
            .programs
            .iter()
            .filter(|d| d.depends_on.iter().any(|x| x == name));
        p.stop_timeout
            + dependents
                .map(|d| chain(config, &d.name, depth + 1))
                .max()
                .unwrap_or_default()
    }
    config
        .programs
        .iter()
        .map(|p| chain(config, &p.name, 0))
        .max()
        .unwrap_or_default()
}

/// Quote one `ExecStart=` word: `%` and `$` are special in unit files.
fn exec_word(s: &str) -> String {
    let escaped = s.replace('%', "%%").replace('$', "$$");
    if escaped
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'')
    {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// The unit text. `packaging/ward.service` is this with `/usr/bin/ward` and
/// `/etc/ward/supervisor.toml` (a test checks they agree).
pub fn render(spec: &UnitSpec) -> String {
    let mut u = String::new();
    let exec = format!(
        "{} up -c {}",
        exec_word(&spec.exe.to_string_lossy()),
        exec_word(&spec.config.to_string_lossy())
    );
    let how = if spec.user_mode {
        "ward unstartup --user"
    } else {
        "ward unstartup"
    };
    let _ = writeln!(
        u,
        "# ward: run the programs of {} at boot.",
        spec.config.display()
    );
    let _ = writeln!(u, "# Written by `ward startup`; remove it with `{how}`.");
    let _ = writeln!(
        u,
        "# Reload the config: systemctl{} reload ward",
        if spec.user_mode { " --user" } else { "" }
    );
    u.push_str(
        "\n[Unit]\n\
         Description=ward process supervisor\n",
    );
    if !spec.user_mode {
        // The user manager has no network-online.target.
        u.push_str("# Programs are often servers: start them once the network is up.\nWants=network-online.target\nAfter=network-online.target\n");
    }
    u.push_str("\n[Service]\n# ward tells systemd when every autostart program has started (READY=1),\n# its status line (STATUS=) and that it is alive (WATCHDOG=1).\nType=notify\nNotifyAccess=main\n");
    let _ = writeln!(u, "ExecStart={exec}");
    u.push_str(
        "# SIGHUP asks ward to reload its config.\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         # SIGTERM goes to ward alone: ward stops its programs itself (dependents\n\
         # first, each group with its stop_signal, then SIGKILL after its\n\
         # stop_timeout). Whatever is left after TimeoutStopSec gets SIGKILL.\n\
         KillMode=mixed\n",
    );
    let _ = writeln!(
        u,
        "# The longest chain of stop_timeout in the config, plus {}s.\nTimeoutStopSec={}",
        STOP_MARGIN.as_secs(),
        seconds(spec.stop_timeout)
    );
    u.push_str(
        "Restart=on-failure\n\
         RestartSec=2s\n\
         # ward pings every 15s; a hung ward is restarted (its programs with it).\n\
         WatchdogSec=30s\n\
         # A program killed by the kernel's OOM killer is ward's to restart; the\n\
         # default (stop) would take the whole service down.\n\
         OOMPolicy=continue\n\
         # Servers under ward often need more than the default 1024 descriptors.\n\
         LimitNOFILE=65536\n\
         # Hardening, kept conservative: programs may write anywhere and may\n\
         # need to see /tmp and /home, so there is no ProtectSystem=, ProtectHome=\n\
         # or PrivateTmp=.\n",
    );
    if spec.no_new_privileges {
        u.push_str(
            "# No program sets `user`/`group`, so nothing needs setuid helpers such as\n\
             # sudo; `ward startup` leaves this out when one does.\n\
             NoNewPrivileges=yes\n",
        );
    } else {
        u.push_str(
            "# NoNewPrivileges= is left out: programs may switch user, and such setups often\n\
             # rely on setuid helpers (sudo, ping) that it would break.\n",
        );
    }
    let target = if spec.user_mode {
        "default.target"
    } else {
        "multi-user.target"
    };
    let _ = writeln!(u, "\n[Install]\nWantedBy={target}");
    u
}

/// Where the unit goes: `/etc/systemd/system`, or the user's
/// `$XDG_CONFIG_HOME/systemd/user` (default `~/.config/systemd/user`).
pub fn unit_path(user_mode: bool) -> Result<PathBuf, String> {
    if !user_mode {
        return Ok(Path::new(SYSTEM_UNIT_DIR).join(UNIT_NAME));
    }
    let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(x) = abs(std::env::var_os("XDG_CONFIG_HOME")) {
        return Ok(x.join("systemd/user").join(UNIT_NAME));
    }
    match abs(std::env::var_os("HOME")) {
        Some(h) => Ok(h.join(".config/systemd/user").join(UNIT_NAME)),
        None => Err("neither XDG_CONFIG_HOME nor HOME is set to an absolute path".into()),
    }
}

fn systemd_running() -> bool {
    Path::new(SYSTEMD_RUN_DIR).is_dir()
}

fn systemctl(user_mode: bool, args: &[&str]) -> Vec<String> {
    let mut v = vec!["systemctl".to_string()];
    if user_mode {
        v.push("--user".into());
    }
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// Run a command, echoing it; `Err` with what went wrong.
fn run_step(argv: &[String]) -> Result<(), String> {
    println!("+ {}", argv.join(" "));
    match Command::new(&argv[0]).args(&argv[1..]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{}`: {e}", argv[0])),
    }
}

fn error(msg: &str, hint: &str) {
    eprintln!("error: {msg}");
    if !hint.is_empty() {
        eprintln!("  hint: {hint}");
    }
}

/// `ward startup`.
pub fn startup(config: &Config, user_mode: bool, print: bool) -> u8 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            error(&format!("cannot find the path of the ward binary: {e}"), "");
            return exit_codes::FAILED;
        }
    };
    let spec = UnitSpec::for_config(config, &exe, user_mode);
    let text = render(&spec);
    if print {
        print!("{text}");
        return exit_codes::OK;
    }
    if !user_mode && !nix::unistd::geteuid().is_root() {
        error(
            "a system unit (in /etc/systemd/system) needs root",
            "run `sudo ward startup`, or `ward startup --user` for your user's systemd; `--print` shows the unit",
        );
        return exit_codes::FAILED;
    }
    let path = match unit_path(user_mode) {
        Ok(p) => p,
        Err(e) => {
            error(
                &format!("cannot place the user unit: {e}"),
                "set HOME, or use `--print` and place it yourself",
            );
            return exit_codes::FAILED;
        }
    };
    let existed = path.exists();
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, &text));
    if let Err(e) = written {
        error(
            &format!("cannot write `{}`: {e}", path.display()),
            "check the directory's permissions; `--print` shows the unit",
        );
        return exit_codes::FAILED;
    }
    println!(
        "{} {} (ward: {}, config: {})",
        if existed { "replaced" } else { "wrote" },
        path.display(),
        exe.display(),
        config.path.display()
    );
    let steps = [
        systemctl(user_mode, &["daemon-reload"]),
        systemctl(user_mode, &["enable", "--now", UNIT_NAME]),
    ];
    let undo = if user_mode {
        "ward unstartup --user"
    } else {
        "ward unstartup"
    };
    if !systemd_running() {
        error(
            "systemd is not running here (no /run/systemd/system), so the unit was written but not enabled",
            "on a machine booted with systemd, run the steps below; in a container, run `ward up` as its main process instead",
        );
        for s in &steps {
            eprintln!("  {}", s.join(" "));
        }
        eprintln!("undo: {undo}");
        return exit_codes::FAILED;
    }
    for s in &steps {
        if let Err(e) = run_step(s) {
            error(&e, &format!("the unit is in place at {}; fix the problem and run the remaining steps, or undo with `{undo}`", path.display()));
            return exit_codes::FAILED;
        }
    }
    println!(
        "ward now starts at boot and is running: {}",
        systemctl(user_mode, &["status", "ward"]).join(" ")
    );
    if user_mode {
        println!("note: a user's services stop when the user logs out and start only at login, unless lingering is on:");
        println!(
            "  sudo loginctl enable-linger {}",
            std::env::var("USER").unwrap_or_else(|_| "$USER".into())
        );
    }
    println!("undo: {undo}");
    exit_codes::OK
}

/// `ward unstartup`.
pub fn unstartup(user_mode: bool) -> u8 {
    let path = match unit_path(user_mode) {
        Ok(p) => p,
        Err(e) => {
            error(&format!("cannot find the user unit: {e}"), "set HOME");
            return exit_codes::FAILED;
        }
    };
    if !path.exists() {
        error(
            &format!(
                "there is no `{}`: ward is not set up to start at boot",
                path.display()
            ),
            if user_mode {
                ""
            } else {
                "for a user unit, pass --user"
            },
        );
        return exit_codes::FAILED;
    }
    let running = systemd_running();
    if running {
        if let Err(e) = run_step(&systemctl(user_mode, &["disable", "--now", UNIT_NAME])) {
            error(
                &e,
                "the unit file is kept; retry, or stop and disable it by hand",
            );
            return exit_codes::FAILED;
        }
    }
    if let Err(e) = std::fs::remove_file(&path) {
        error(&format!("cannot remove `{}`: {e}", path.display()), "");
        return exit_codes::FAILED;
    }
    println!("removed {}", path.display());
    if running {
        if let Err(e) = run_step(&systemctl(user_mode, &["daemon-reload"])) {
            error(&e, "");
            return exit_codes::FAILED;
        }
        println!("ward no longer starts at boot (and was stopped with its programs)");
    } else {
        println!("note: systemd is not running here; nothing to disable");
    }
    exit_codes::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(user_mode: bool) -> UnitSpec {
        UnitSpec {
            exe: "/usr/bin/ward".into(),
            config: "/etc/ward/supervisor.toml".into(),
            user_mode,
            stop_timeout: Duration::from_secs(20),
            no_new_privileges: false,
        }
    }

    #[test]
    fn packaging_unit_is_the_rendered_template() {
        let packaged = include_str!("../packaging/ward.service");
        let rendered = render(&spec(false))
            .replace("# Written by `ward startup`; remove it with `ward unstartup`.", "# Installed by install.sh or the .deb package.")
            .replace(
                "# The longest chain of stop_timeout in the config, plus 10s.",
                "# The default stop_timeout plus 10s: if your programs stop more slowly (a\n# chain of depends_on stops one after the other), `ward startup --print`\n# computes the right value.",
            );
        assert_eq!(
            packaged, rendered,
            "regenerate packaging/ward.service from startup::render"
        );
    }

    #[test]
    fn user_units_want_default_target_and_no_network() {
        let u = render(&spec(true));
        assert!(u.contains("WantedBy=default.target"));
        assert!(!u.contains("network-online"));
        assert!(u.contains("systemctl --user reload ward"));
    }

    #[test]
    fn exec_words_are_escaped() {
        assert_eq!(exec_word("/usr/bin/ward"), "/usr/bin/ward");
        assert_eq!(exec_word("/srv/my app/ward"), "\"/srv/my app/ward\"");
        assert_eq!(exec_word("/x/100%/$HOME"), "/x/100%%/$$HOME");
    }

    #[test]
    fn stop_timeout_covers_the_longest_dependency_chain() {
        let src = r#"
[[program]]
name = "db"
command = "x"
stop_timeout = "30s"
[[program]]
name = "api"
command = "x"
depends_on = ["db"]
stop_timeout = "5s"
[[program]]
name = "web"
command = "x"
depends_on = ["api"]
stop_timeout = "1s"
[[program]]
name = "solo"
command = "x"
stop_timeout = "31s"
"#;
        let c = crate::config::parse_str(src, Path::new("/tmp/x.toml")).unwrap();
        assert_eq!(longest_stop(&c), Duration::from_secs(36));
        let s = UnitSpec::for_config(&c, Path::new("/usr/bin/ward"), false);
        assert_eq!(s.stop_timeout, Duration::from_secs(46));
        assert!(s.no_new_privileges);
        assert!(render(&s).contains("TimeoutStopSec=46s\n"));
    }
}
