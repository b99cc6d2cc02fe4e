//! Loader tests: one per kind of problem (message, key, line:col), defaults,
//! `[defaults]` merging, env files, instances, path resolution, the sample
//! config and the documented defaults.
//!
//! Uses a fixed `System` (euid 0, host `testhost`) so results do not depend
//! on who runs the tests. Must never write outside its temp dirs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::load::parse_with;
use super::system::System;
use super::*;

fn sys() -> System {
    System {
        euid: 0,
        egid: 0,
        xdg_state_home: None,
        home: Some("/home/t".into()),
        hostname: "testhost".into(),
    }
}

const FILE: &str = "/srv/app/supervisor.toml";

fn ok(src: &str) -> Config {
    match parse_with(src, Path::new(FILE), &sys()) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn errs_with(src: &str, path: &Path, sys: &System) -> Vec<Diagnostic> {
    match parse_with(src, path, sys) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(ConfigError::Invalid(d)) => d.items,
        Err(e) => panic!("expected diagnostics, got {e}"),
    }
}

fn errs(src: &str) -> Vec<Diagnostic> {
    errs_with(src, Path::new(FILE), &sys())
}

/// The only diagnostic of `src`.
fn one(src: &str) -> Diagnostic {
    let mut d = errs(src);
    assert_eq!(d.len(), 1, "expected one diagnostic, got {d:#?}");
    d.remove(0)
}

#[track_caller]
fn check(d: &Diagnostic, line: usize, col: usize, key: &str, message: &str) {
    assert_eq!(
        (d.line, d.col, d.key.as_str(), d.message.as_str()),
        (line, col, key, message),
        "{d:#?}"
    );
}

fn hint(d: &Diagnostic) -> &str {
    d.hint.as_deref().unwrap_or("")
}

// ---------------------------------------------------------------- defaults

#[test]
fn minimal_program_gets_every_default() {
    let c = ok("[[program]]\nname = \"web\"\ncommand = \"./web --port 8080\"\n");
    assert_eq!(c.path, PathBuf::from(FILE));
    let p = &c.programs[0];
    assert_eq!(p.name, "web");
    assert_eq!(p.command, CommandSpec::Shell("./web --port 8080".into()));
    assert_eq!(p.cwd, None);
    assert!(p.env.is_empty());
    assert_eq!((p.user.clone(), p.group.clone()), (None, None));
    assert_eq!(p.autostart, defaults::AUTOSTART);
    assert_eq!(p.instances, defaults::INSTANCES);
    assert!(p.depends_on.is_empty());
    assert_eq!(p.restart, RestartPolicy::OnFailure);
    assert_eq!(p.exit_codes, vec![0]);
    assert_eq!(p.min_uptime, defaults::MIN_UPTIME);
    assert_eq!(
        p.backoff,
        BackoffPolicy {
            initial: defaults::BACKOFF_INITIAL,
            max: defaults::BACKOFF_MAX,
            multiplier: defaults::BACKOFF_MULTIPLIER,
            jitter: defaults::BACKOFF_JITTER,
        }
    );
    assert_eq!(p.stable_after, defaults::STABLE_AFTER);
    assert_eq!(p.max_restarts, defaults::MAX_RESTARTS);
    assert_eq!(p.fatal_retry, None);
    assert_eq!(p.stop_signal, Signal::SIGTERM);
    assert_eq!(p.stop_timeout, defaults::STOP_TIMEOUT);
    assert_eq!(p.log, LogPolicy::default());
}

#[test]
fn supervisor_defaults() {
    let c = ok("");
    assert!(c.programs.is_empty(), "an empty program list is valid");
    let s = &c.supervisor;
    assert_eq!(s.state_dir, PathBuf::from("/var/lib/ward"));
    assert_eq!(s.socket, PathBuf::from("/var/lib/ward/ward.sock"));
    assert_eq!(s.socket_group, None);
    assert_eq!(s.host, "testhost");
    assert_eq!(s.log, LogPolicy::default());

    let user = System {
        euid: 1000,
        ..sys()
    };
    let c = parse_with("", Path::new(FILE), &user).unwrap();
    assert_eq!(
        c.supervisor.state_dir,
        PathBuf::from("/home/t/.local/state/ward")
    );
}

#[test]
fn supervisor_settings() {
    let c = ok(r#"
[supervisor]
state_dir = "./state"
socket_group = "root"
host = "box-1"

[supervisor.log]
max_size = "1MiB"
keep = 2
"#);
    let s = &c.supervisor;
    assert_eq!(s.state_dir, PathBuf::from("/srv/app/state"));
    assert_eq!(s.socket, PathBuf::from("/srv/app/state/ward.sock"));
    assert_eq!(s.socket_group.as_ref().map(|g| g.gid), Some(0));
    assert_eq!(s.host, "box-1");
    assert_eq!(s.log.max_size, 1 << 20);
    assert_eq!(s.log.keep, 2);

    let c = ok("[supervisor]\nsocket = \"/run/ward.sock\"\n");
    assert_eq!(c.supervisor.socket, PathBuf::from("/run/ward.sock"));
}

#[test]
fn every_program_key() {
    let c = ok(r#"
[[program]]
name = "api.v2_x-1"
command = ["sleep", "10"]
cwd = "/"
env = { PORT = 8080, DEBUG = true, NAME = "x" }
autostart = false
instances = 3
restart = "always"
exit_codes = [0, 2, 255]
min_uptime = "500ms"
backoff = { initial = "2s", max = "1m", multiplier = 3, jitter = 0.0 }
stable_after = "1m30s"
max_restarts = 0
fatal_retry = "5m"
stop_signal = "SIGINT"
stop_timeout = "1s"
user = "root"
group = "root"

[program.log]
stdout = "/var/log/api.log"
stderr = "stdout"
max_size = 100
keep = 0
compress = true
timestamps = true
max_age = "7d"
"#);
    let p = &c.programs[0];
    assert_eq!(
        p.command,
        CommandSpec::Argv(vec!["sleep".into(), "10".into()])
    );
    assert_eq!(p.cwd, Some(PathBuf::from("/")));
    assert_eq!(p.env["PORT"], "8080");
    assert_eq!(p.env["DEBUG"], "true");
    assert!(!p.autostart);
    assert_eq!(p.instances, 3);
    assert_eq!(p.restart, RestartPolicy::Always);
    assert_eq!(p.exit_codes, vec![0, 2, 255]);
    assert_eq!(p.min_uptime, Duration::from_millis(500));
    assert_eq!(p.backoff.initial, Duration::from_secs(2));
    assert_eq!(p.backoff.max, Duration::from_secs(60));
    assert_eq!(p.backoff.multiplier, 3.0);
    assert_eq!(p.backoff.jitter, 0.0);
    assert_eq!(p.stable_after, Duration::from_secs(90));
    assert_eq!(p.max_restarts, 0);
    assert_eq!(p.fatal_retry, Some(Duration::from_secs(300)));
    assert_eq!(p.stop_signal, Signal::SIGINT);
    assert_eq!(p.stop_timeout, Duration::from_secs(1));
    assert_eq!(p.user.as_ref().map(|u| u.uid), Some(0));
    assert_eq!(p.group.as_ref().map(|g| g.gid), Some(0));
    assert_eq!(p.log.stdout, Some(PathBuf::from("/var/log/api.log")));
    assert_eq!(p.log.stderr, StderrTarget::Stdout);
    assert_eq!(p.log.max_size, 100);
    assert_eq!(p.log.keep, 0);
    assert!(p.log.compress && p.log.timestamps);
    assert_eq!(p.log.max_age, Some(Duration::from_secs(7 * 86_400)));
}

#[test]
fn instances_expand_into_ids() {
    let c = ok(r#"
[[program]]
name = "web"
command = "x"
instances = 3

[[program]]
name = "db"
command = "y"
"#);
    let ids: Vec<String> = c.instances().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["web:0", "web:1", "web:2", "db"]);

    let d = one("[[program]]\nname = \"w\"\ncommand = \"x\"\ninstances = 0\n");
    check(
        &d,
        4,
        13,
        "instances",
        "`0` must be at least 1 in program `w`",
    );
}

#[test]
fn backoff_as_a_subtable_and_as_dotted_keys() {
    let c = ok(r#"
[[program]]
name = "a"
command = "x"
[program.backoff]
initial = "3s"

[[program]]
name = "b"
command = "x"
backoff.max = "2m"
"#);
    assert_eq!(c.programs[0].backoff.initial, Duration::from_secs(3));
    assert_eq!(c.programs[1].backoff.max, Duration::from_secs(120));
}

#[test]
fn inline_array_of_program_tables() {
    let c = ok("program = [{ name = \"a\", command = \"x\" }]\n");
    assert_eq!(c.programs[0].name, "a");
}

// ---------------------------------------------------------------- [defaults]

#[test]
fn defaults_apply_where_a_program_is_silent() {
    let c = ok(r#"
[defaults]
restart = "always"
stop_timeout = "30s"
env = { A = "from-defaults", B = "from-defaults" }
backoff = { initial = "5s", jitter = 0.5 }

[defaults.log]
keep = 9
compress = true

[[program]]
name = "a"
command = "x"
stop_timeout = "3s"
env = { B = "from-program", C = "c" }
backoff = { initial = "2s" }
log = { keep = 1 }

[[program]]
name = "b"
command = "y"
"#);
    let a = &c.programs[0];
    assert_eq!(a.restart, RestartPolicy::Always);
    assert_eq!(a.stop_timeout, Duration::from_secs(3));
    assert_eq!(a.env["A"], "from-defaults");
    assert_eq!(a.env["B"], "from-program");
    assert_eq!(a.env["C"], "c");
    assert_eq!(a.backoff.initial, Duration::from_secs(2));
    assert_eq!(a.backoff.jitter, 0.5, "backoff merges per key");
    assert_eq!(a.backoff.max, defaults::BACKOFF_MAX);
    assert_eq!(a.log.keep, 1);
    assert!(a.log.compress, "log merges per key");
    let b = &c.programs[1];
    assert_eq!(b.stop_timeout, Duration::from_secs(30));
    assert_eq!(b.backoff.initial, Duration::from_secs(5));
    assert_eq!(b.log.keep, 9);
    assert_eq!(b.env.len(), 2);
}

#[test]
fn defaults_may_hold_the_command_but_not_a_name() {
    let c = ok("[defaults]\ncommand = \"run\"\n[[program]]\nname = \"a\"\n");
    assert_eq!(c.programs[0].command, CommandSpec::Shell("run".into()));
    let d = one("[defaults]\nname = \"x\"\n");
    check(&d, 2, 1, "name", "unknown key in `[defaults]`");
}

#[test]
fn backoff_max_below_initial_is_checked_after_merging() {
    let d = one(r#"
[defaults]
backoff = { max = "2s" }

[[program]]
name = "a"
command = "x"
backoff.initial = "5s"
"#);
    check(
        &d,
        3,
        19,
        "backoff.max",
        "backoff max (2s) is less than backoff initial (5s) in program `a`",
    );
}

// ---------------------------------------------------------------- job cadence

#[test]
fn period_schedule_tz_and_grace() {
    let c = ok(r#"
[defaults.heartbeat]
period = "1h"
grace = "5m"

[[program]]
name = "hourly"
command = "x"

[[program]]
name = "nightly"
command = "x"
heartbeat = { schedule = "0 3 * * *", tz = "UTC" }

[[program]]
name = "weekly"
command = "x"
[program.heartbeat]
schedule = "@weekly"
grace = "2h"

[[program]]
name = "plain"
command = "x"
"#);
    let hb = |i: usize| c.programs[i].heartbeat;
    let cron = |s: &str| crate::cron::Cron::parse(s).unwrap();
    assert_eq!(
        hb(0).cadence,
        Some(Cadence::Period(Duration::from_secs(3600)))
    );
    assert_eq!(hb(0).grace, Duration::from_secs(300));
    // A program's schedule replaces the defaults' period; grace still merges.
    assert_eq!(
        hb(1).cadence,
        Some(Cadence::Schedule(cron("0 3 * * *"), crate::cron::Zone::Utc))
    );
    assert_eq!(hb(1).grace, Duration::from_secs(300));
    assert_eq!(
        hb(2).cadence,
        Some(Cadence::Schedule(cron("0 0 * * 0"), defaults::TZ))
    );
    assert_eq!(hb(2).grace, Duration::from_secs(7200));
    let plain = &ok("[[program]]\nname = \"p\"\ncommand = \"x\"\n").programs[0];
    assert_eq!(plain.heartbeat.cadence, None);
    assert_eq!(plain.heartbeat.grace, defaults::GRACE);
}

#[test]
fn job_cadence_problems() {
    let base = "[[program]]\nname = \"a\"\ncommand = \"x\"\n[program.heartbeat]\n";
    let d = one(&format!(
        "{base}period = \"1h\"\nschedule = \"0 3 * * *\"\n"
    ));
    check(
        &d,
        6,
        1,
        "heartbeat.schedule",
        "`period` (line 5) and `schedule` exclude each other in program `a`",
    );
    // A bad cron field is pointed at inside the string.
    let d = one(&format!("{base}schedule = \"0 24 * * *\"\n"));
    check(
        &d,
        5,
        15,
        "heartbeat.schedule",
        "hour `24` is out of range 0-23 in schedule `0 24 * * *` in program `a`",
    );
    let d = one(&format!("{base}schedule = \"0 0 31 feb *\"\n"));
    check(
        &d,
        5,
        17,
        "heartbeat.schedule",
        "day `31` never falls in month `feb`: this schedule never fires in schedule `0 0 31 feb *` in program `a`",
    );
    let d = one(&format!("{base}schedule = \"0 3 * * * *\"\n"));
    assert_eq!((d.line, d.col), (5, 23), "{d:#?}");
    assert!(hint(&d).contains("no seconds"), "{d:#?}");
    let d = one(&format!("{base}schedule = 3\n"));
    check(
        &d,
        5,
        12,
        "heartbeat.schedule",
        "expected a string, found an integer (`3`) in program `a`",
    );
    let d = one(&format!(
        "{base}schedule = \"0 3 * * *\"\ntz = \"Europe/Berlin\"\n"
    ));
    check(
        &d,
        6,
        6,
        "heartbeat.tz",
        "unsupported time zone `Europe/Berlin` in program `a`",
    );
    assert!(hint(&d).contains("TZ="), "{d:#?}");
    let d = one(&format!("{base}period = \"1h\"\ntz = \"UTC\"\n"));
    check(
        &d,
        6,
        6,
        "heartbeat.tz",
        "`tz` is set but `schedule` is not, in program `a`",
    );
    let d = one(&format!("{base}grace = \"5m\"\n"));
    check(
        &d,
        5,
        9,
        "heartbeat.grace",
        "`grace` is set but neither `period` nor `schedule` is, in program `a`",
    );
    let d = errs(&format!("{base}period = \"0s\"\ngrace = \"0ms\"\n"));
    assert_eq!(d.len(), 2, "{d:#?}");
    check(
        &d[0],
        5,
        10,
        "heartbeat.period",
        "`0s` is not a period in program `a`",
    );
    check(
        &d[1],
        6,
        9,
        "heartbeat.grace",
        "`0s` is not a grace period in program `a`",
    );
    // A bad schedule is one problem, not a lone `tz` and `grace` as well.
    let d = one(&format!(
        "{base}schedule = \"daily\"\ntz = \"UTC\"\ngrace = \"1m\"\n"
    ));
    check(
        &d,
        5,
        13,
        "heartbeat.schedule",
        "too few fields: `daily` has 1 in schedule `daily` in program `a`",
    );
    let d = one(&format!("{base}perod = \"1h\"\n"));
    check(&d, 5, 1, "heartbeat.perod", "unknown key in program `a`");
    assert_eq!(hint(&d), "did you mean `period`?");
    // `grace` and `tz` in [defaults] apply only where they mean something.
    ok("[defaults.heartbeat]\ngrace = \"1m\"\ntz = \"UTC\"\n[[program]]\nname = \"a\"\ncommand = \"x\"\n");
}

// ---------------------------------------------------------------- env_file

#[test]
fn env_file_is_read_relative_to_the_config_and_merged_under_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.env"),
        "# secrets\nexport A=from-file\nB='from file'\n",
    )
    .unwrap();
    let src = r#"
[[program]]
name = "a"
command = "x"
env_file = "app.env"
env = { B = "from-env" }
"#;
    let c = parse_with(src, &dir.path().join("supervisor.toml"), &sys()).unwrap();
    let env = &c.programs[0].env;
    assert_eq!(env["A"], "from-file");
    assert_eq!(env["B"], "from-env");
}

#[test]
fn env_file_problems_point_at_the_key_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("supervisor.toml");
    let src = "[[program]]\nname = \"a\"\ncommand = \"x\"\nenv_file = \"missing.env\"\n";
    let d = errs_with(src, &cfg, &sys());
    assert_eq!(d.len(), 1, "{d:#?}");
    let missing = dir.path().join("missing.env");
    check(
        &d[0],
        4,
        12,
        "env_file",
        &format!("env file `{}` not found in program `a`", missing.display()),
    );

    std::fs::write(dir.path().join("bad.env"), "OK=1\nnot an assignment\n").unwrap();
    let src = "[[program]]\nname = \"a\"\ncommand = \"x\"\nenv_file = \"bad.env\"\n";
    let d = errs_with(src, &cfg, &sys());
    assert!(
        d[0].message
            .ends_with("bad.env` line 2: expected `KEY=VALUE` in program `a`"),
        "{d:#?}"
    );
}

// ---------------------------------------------------------------- paths

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("app")).unwrap();
    let src = r#"
[[program]]
name = "a"
command = "x"
cwd = "./app"
log = { stdout = "logs/a.out", stderr = "../a.err" }
"#;
    let cfg = dir.path().join("supervisor.toml");
    let c = parse_with(src, &cfg, &sys()).unwrap();
    let p = &c.programs[0];
    assert_eq!(p.cwd, Some(dir.path().join("app")));
    assert_eq!(p.log.stdout, Some(dir.path().join("logs/a.out")));
    assert_eq!(
        p.log.stderr,
        StderrTarget::File(Some(dir.path().join("../a.err")))
    );
}

#[test]
fn relative_config_path_becomes_absolute() {
    let c = parse_with("", Path::new("supervisor.toml"), &sys()).unwrap();
    assert!(c.path.is_absolute());
    assert_eq!(
        c.path,
        std::env::current_dir().unwrap().join("supervisor.toml")
    );
}

#[test]
fn cwd_must_be_an_existing_directory() {
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\"\ncwd = \"/no/such/dir\"\n");
    assert_eq!((d.line, d.col, d.key.as_str()), (4, 7, "cwd"));
    assert!(
        d.message
            .starts_with("directory `/no/such/dir` is not usable:"),
        "{d:#?}"
    );
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\"\ncwd = \"/etc/passwd\"\n");
    check(
        &d,
        4,
        7,
        "cwd",
        "`/etc/passwd` is not a directory in program `a`",
    );
}

// ---------------------------------------------------------------- users

#[test]
fn unknown_user_and_group() {
    let d = errs(
        "[[program]]\nname = \"a\"\ncommand = \"x\"\nuser = \"no-such-user-ward\"\ngroup = \"no-such-group-ward\"\n",
    );
    check(
        &d[0],
        4,
        8,
        "user",
        "unknown user `no-such-user-ward` in program `a`",
    );
    check(
        &d[1],
        5,
        9,
        "group",
        "unknown group `no-such-group-ward` in program `a`",
    );
    let d = one("[supervisor]\nsocket_group = \"no-such-group-ward\"\n");
    check(
        &d,
        2,
        16,
        "socket_group",
        "unknown group `no-such-group-ward` in `[supervisor]`",
    );
}

#[test]
fn another_user_needs_root() {
    let not_root = System {
        euid: 4242,
        egid: 4242,
        ..sys()
    };
    let src = "[[program]]\nname = \"a\"\ncommand = \"x\"\nuser = \"root\"\n";
    let d = errs_with(src, Path::new(FILE), &not_root);
    assert_eq!(d.len(), 1, "{d:#?}");
    check(
        &d[0],
        4,
        8,
        "user",
        "running as user `root` needs ward to run as root in program `a`",
    );
    assert_eq!(hint(&d[0]), "run ward as root, or remove `user`");

    let src = "[[program]]\nname = \"a\"\ncommand = \"x\"\ngroup = \"root\"\n";
    let d = errs_with(src, Path::new(FILE), &not_root);
    check(
        &d[0],
        4,
        9,
        "group",
        "running as group `root` needs ward to run as root in program `a`",
    );
    // The socket group is only a chown of the socket: no root needed.
    assert!(parse_with(
        "[supervisor]\nsocket_group = \"root\"\n",
        Path::new(FILE),
        &not_root
    )
    .is_ok());
}

#[test]
fn socket_path_must_fit_a_unix_socket() {
    let long = format!("/{}", "x".repeat(120));
    let d = one(&format!("[supervisor]\nstate_dir = \"{long}\"\n"));
    assert_eq!(
        (d.line, d.col, d.key.as_str()),
        (2, 13, "state_dir"),
        "{d:#?}"
    );
    assert!(d.message.contains("longer than the 107"), "{d:#?}");
}

#[test]
fn quoted_integer_gets_a_hint() {
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\"\nlog = { keep = \"5\" }\n");
    check(
        &d,
        4,
        16,
        "log.keep",
        "expected an integer, found a string (`\"5\"`) in program `a`",
    );
    assert_eq!(hint(&d), "remove the quotes");
}

// ---------------------------------------------------------------- unknown keys

#[test]
fn unknown_key_suggests_the_closest() {
    let d = one("[[program]]\nname = \"web\"\ncommand = \"x\"\nrestrat = \"always\"\n");
    check(&d, 4, 1, "restrat", "unknown key in program `web`");
    assert_eq!(hint(&d), "did you mean `restart`?");
}

#[test]
fn unknown_key_without_a_close_match_lists_valid_keys() {
    let d =
        one("[[program]]\nname = \"web\"\ncommand = \"x\"\n[program.log]\nrotation_strategy = 1\n");
    check(
        &d,
        5,
        1,
        "log.rotation_strategy",
        "unknown key in program `web`",
    );
    assert_eq!(
        hint(&d),
        "valid keys here: `stdout`, `stderr`, `max_size`, `keep`, `compress`, `timestamps`, `max_age`"
    );
}

#[test]
fn unknown_keys_everywhere() {
    let d = errs(
        r#"heartbeat = 1
[supervisor]
stat_dir = "/x"
[supervisor.log]
kep = 1
[defaults]
backoff = { intial = "1s" }
"#,
    );
    assert_eq!(d.len(), 4, "{d:#?}");
    check(&d[0], 1, 1, "heartbeat", "unknown key in the top level");
    check(&d[1], 3, 1, "stat_dir", "unknown key in `[supervisor]`");
    assert_eq!(hint(&d[1]), "did you mean `state_dir`?");
    check(&d[2], 5, 1, "log.kep", "unknown key in `[supervisor]`");
    check(
        &d[3],
        7,
        13,
        "backoff.intial",
        "unknown key in `[defaults]`",
    );
    assert_eq!(hint(&d[3]), "did you mean `initial`?");
}

// ---------------------------------------------------------------- bad values

#[test]
fn wrong_type_points_at_the_value() {
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\"\nautostart = \"yes\"\n");
    check(
        &d,
        4,
        13,
        "autostart",
        "expected `true` or `false`, found a string (`\"yes\"`) in program `a`",
    );
    let d = one("[[program]]\nname = \"a\"\ncommand = 5\n");
    check(
        &d,
        3,
        11,
        "command",
        "expected a command string or an array of strings, found an integer (`5`) in program `a`",
    );
    let d = one("[[program]]\nname = \"a\"\ncommand = [\"ls\", 5]\n");
    check(
        &d,
        3,
        18,
        "command",
        "expected a string argument, found an integer (`5`) in program `a`",
    );
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\"\nenv = { A = [1] }\n");
    check(
        &d,
        4,
        13,
        "env.A",
        "expected a string, integer or boolean, found an array in program `a`",
    );
}

#[test]
fn bad_durations() {
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\"\nmin_uptime = \"5x\"\n");
    check(
        &d,
        4,
        14,
        "min_uptime",
        "unknown unit `x` in duration `5x` in program `a`",
    );
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\"\nstop_timeout = \"30\"\n");
    check(
        &d,
        4,
        16,
        "stop_timeout",
        "duration `30` has no unit in program `a`",
    );
    assert_eq!(hint(&d), "add a unit: `\"30s\"` or `\"30ms\"`");
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\"\nstable_after = 30\n");
    check(
        &d,
        4,
        16,
        "stable_after",
        "expected a duration string, found an integer (`30`) in program `a`",
    );
    assert_eq!(hint(&d), "add a unit and quote it: `\"30s\"`");
}

#[test]
fn bad_size_and_signal() {
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\"\nlog.max_size = \"10 parsecs\"\n");
    check(
        &d,
        4,
        16,
        "log.max_size",
        "unknown unit `parsecs` in size `10 parsecs` in program `a`",
    );
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\"\nstop_signal = \"SIGNOPE\"\n");
    check(
        &d,
        4,
        15,
        "stop_signal",
        "unknown signal `SIGNOPE` in program `a`",
    );
}

#[test]
fn bad_enums_and_ranges() {
    let d = errs(
        r#"[[program]]
name = "a"
command = "x"
restart = "sometimes"
exit_codes = [0, 256]
backoff = { multiplier = 0.5, jitter = 1.5 }
max_restarts = -1
fatal_retry = "0s"
"#,
    );
    assert_eq!(d.len(), 6, "{d:#?}");
    check(
        &d[0],
        4,
        11,
        "restart",
        "unknown restart policy `sometimes` in program `a`",
    );
    assert_eq!(hint(&d[0]), "use `always`, `on-failure` or `never`");
    check(
        &d[1],
        5,
        18,
        "exit_codes",
        "exit code `256` must be between 0 and 255 in program `a`",
    );
    check(
        &d[2],
        6,
        26,
        "backoff.multiplier",
        "`0.5` must be at least 1.0 in program `a`",
    );
    check(
        &d[3],
        6,
        40,
        "backoff.jitter",
        "`1.5` must be between 0 and 1 in program `a`",
    );
    check(
        &d[4],
        7,
        16,
        "max_restarts",
        "`-1` must be at least 0 in program `a`",
    );
    check(
        &d[5],
        8,
        15,
        "fatal_retry",
        "`0s` is not a retry delay in program `a`",
    );
}

#[test]
fn bad_names_and_commands() {
    let d = one("[[program]]\nname = \"web:1\"\ncommand = \"x\"\n");
    check(
        &d,
        2,
        8,
        "name",
        "invalid program name `web:1` in `[[program]]` #1",
    );
    let d = one("[[program]]\nname = \"a\"\ncommand = \"  \"\n");
    check(&d, 3, 11, "command", "empty command in program `a`");
    let d = one("[[program]]\nname = \"a\"\ncommand = []\n");
    check(&d, 3, 11, "command", "empty command in program `a`");
}

#[test]
fn program_must_be_an_array_of_tables() {
    let d = one("[program]\nname = \"a\"\ncommand = \"x\"\n");
    check(
        &d,
        1,
        1,
        "program",
        "expected an array of tables, found a table in the top level",
    );
    assert_eq!(
        hint(&d),
        "write each program as `[[program]]` (two brackets)"
    );
}

// ---------------------------------------------------------------- structure

#[test]
fn missing_name_and_command_point_at_the_header() {
    let d = errs("[[program]]\ncommand = \"x\"\n\n[[program]]\nname = \"b\"\n");
    assert_eq!(d.len(), 2, "{d:#?}");
    check(
        &d[0],
        1,
        1,
        "name",
        "missing required key in `[[program]]` #1",
    );
    check(
        &d[1],
        4,
        1,
        "command",
        "missing required key in program `b`",
    );
}

#[test]
fn duplicate_name_points_at_the_second() {
    let d = one(
        "[[program]]\nname = \"a\"\ncommand = \"x\"\n\n[[program]]\nname = \"a\"\ncommand = \"y\"\n",
    );
    check(
        &d,
        6,
        8,
        "name",
        "duplicate program name `a` (first defined on line 2)",
    );
}

#[test]
fn externals_get_deadlines_from_their_interval() {
    let c = ok("[[program]]\nname = \"web\"\ncommand = \"x\"\n\n[[external]]\nname = \"billing\"\ndescription = \"invoices\"\ninterval = \"10s\"\n\n[[external]]\nname = \"mailer\"\ninterval = \"1s\"\nstale_after = \"5s\"\nhung_after = \"1m\"\non_hung = \"none\"\n");
    let b = c.external("billing").expect("billing");
    assert_eq!(b.description.as_deref(), Some("invoices"));
    assert_eq!(b.heartbeat.interval, Some(Duration::from_secs(10)));
    assert_eq!(b.heartbeat.stale_after, Duration::from_secs(30));
    assert_eq!(b.heartbeat.hung_after, Duration::from_secs(100));
    assert_eq!(b.heartbeat.on_hung, defaults::EXTERNAL_ON_HUNG);
    let m = &c.externals[1];
    assert_eq!(
        (
            m.heartbeat.stale_after,
            m.heartbeat.hung_after,
            m.heartbeat.on_hung
        ),
        (
            Duration::from_secs(5),
            Duration::from_secs(60),
            OnHung::None
        )
    );
    // Inline tables work as for programs.
    let c = ok("external = [{ name = \"a\", interval = \"1s\" }]\n");
    assert_eq!(c.externals[0].name, "a");
}

#[test]
fn external_problems_are_located() {
    let d = errs(
        "[[external]]\nname = \"a\"\ninterval = \"1s\"\non_hung = \"restart\"\nwatchdog_signal = \"ABRT\"\n\n[[external]]\nname = \"b c\"\n\n[[external]]\nname = \"d\"\ninterval = \"1s\"\nstale_after = \"5s\"\nhung_after = \"2s\"\n",
    );
    assert_eq!(d.len(), 5, "{d:#?}");
    check(
        &d[0],
        4,
        11,
        "on_hung",
        "ward cannot restart an `[[external]]` worker: it does not run it in external `a`",
    );
    check(
        &d[1],
        5,
        1,
        "watchdog_signal",
        "unknown key in external `a`",
    );
    check(
        &d[2],
        7,
        1,
        "interval",
        "missing required key in `[[external]]` #2",
    );
    check(
        &d[3],
        8,
        8,
        "name",
        "invalid external name `b c` in `[[external]]` #2",
    );
    check(
        &d[4],
        10,
        1,
        "hung_after",
        "hung_after (2s) is shorter than stale_after (5s) in external `d`",
    );
}

#[test]
fn externals_share_the_namespace_of_programs() {
    // An external before the program: the error points at the later one.
    let d = one("[[external]]\nname = \"a\"\ninterval = \"1s\"\n\n[[program]]\nname = \"a\"\ncommand = \"x\"\n");
    check(
        &d,
        6,
        8,
        "name",
        "duplicate name `a` (first defined on line 2, as an external worker)",
    );
    let d = one("[[external]]\nname = \"a\"\ninterval = \"1s\"\n\n[[external]]\nname = \"a\"\ninterval = \"1s\"\n");
    check(
        &d,
        6,
        8,
        "name",
        "duplicate name `a` (first defined on line 2, as an external worker)",
    );
    // depends_on cannot name one.
    let d = one("[[external]]\nname = \"a\"\ninterval = \"1s\"\n\n[[program]]\nname = \"p\"\ncommand = \"x\"\ndepends_on = [\"a\"]\n");
    assert_eq!(d.message, "unknown program `a` in program `p`");
    assert!(hint(&d).contains("is an `[[external]]` worker"), "{d:#?}");
}

#[test]
fn externals_need_the_store() {
    let d = one("[store]\nenabled = false\n\n[[external]]\nname = \"a\"\ninterval = \"1s\"\n");
    check(
        &d,
        4,
        1,
        "external",
        "1 `[[external]]` worker needs the status tables, but `[store] enabled = false` (line 2)",
    );
    assert!(hint(&d).contains("remove `enabled = false`"), "{d:#?}");
}

#[test]
fn dependency_problems() {
    let d = errs(
        r#"[[program]]
name = "web"
command = "x"
depends_on = ["dbb", "web"]

[[program]]
name = "db"
command = "y"
"#,
    );
    assert_eq!(d.len(), 2, "{d:#?}");
    check(
        &d[0],
        4,
        15,
        "depends_on",
        "unknown program `dbb` in program `web`",
    );
    assert_eq!(hint(&d[0]), "did you mean `db`?");
    check(
        &d[1],
        4,
        22,
        "depends_on",
        "program `web` depends on itself",
    );
}

#[test]
fn dependency_cycles_show_the_cycle() {
    let d = one(r#"[[program]]
name = "a"
command = "x"
depends_on = ["b"]

[[program]]
name = "b"
command = "x"
depends_on = ["c"]

[[program]]
name = "c"
command = "x"
depends_on = ["a"]
"#);
    check(
        &d,
        14,
        15,
        "depends_on",
        "dependency cycle `a -> b -> c -> a` in program `c`",
    );
    let d = one(
        "[[program]]\nname = \"a\"\ncommand = \"x\"\ndepends_on = [\"b\"]\n\
         [[program]]\nname = \"b\"\ncommand = \"x\"\ndepends_on = [\"a\"]\n",
    );
    assert_eq!(d.message, "dependency cycle `a -> b -> a` in program `b`");
    // A valid chain is fine.
    let c = ok(
        "[[program]]\nname = \"a\"\ncommand = \"x\"\ndepends_on = [\"b\"]\n\
         [[program]]\nname = \"b\"\ncommand = \"x\"\n",
    );
    assert_eq!(c.programs[0].depends_on, ["b"]);
}

#[test]
fn toml_syntax_error_has_a_location() {
    let d = one("[[program]]\nname = \"a\"\ncommand = \"x\nrestart = 1\n");
    assert_eq!((d.line, d.key.as_str()), (3, ""), "{d:#?}");
    assert!(d.message.starts_with("invalid TOML: "), "{d:#?}");
}

#[test]
fn every_problem_is_reported_at_once_in_order() {
    let src = r#"[supervisor]
hots = "x"

[[program]]
name = "a"
command = "x"
restrat = "always"
min_uptime = "soon"
depends_on = ["ghost"]

[[program]]
command = "y"
"#;
    let err = parse_with(src, Path::new("supervisor.toml"), &sys()).unwrap_err();
    let ConfigError::Invalid(diags) = &err else {
        panic!("{err}")
    };
    let lines: Vec<usize> = diags.items.iter().map(|d| d.line).collect();
    assert_eq!(lines, [2, 7, 8, 9, 11]);
    let text = err.to_string();
    assert!(
        text.starts_with(
            "error: supervisor.toml:2:1: `hots`: unknown key in `[supervisor]`\n  hint: did you mean `host`?\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("\n5 errors in supervisor.toml"), "{text}");
}

// ---------------------------------------------------------------- finding and loading

#[test]
fn find_config_order() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("supervisor.toml");
    let etc = dir.path().join("etc.toml");
    let search = vec![here.clone(), etc.clone()];

    let err = find_config_in(None, None, &search).unwrap_err();
    assert!(matches!(&err, ConfigError::NotFound { searched } if *searched == search));
    let text = err.to_string();
    assert!(
        text.contains("`ward init`") && text.contains("`-c FILE`"),
        "{text}"
    );

    std::fs::write(&etc, "").unwrap();
    assert_eq!(find_config_in(None, None, &search).unwrap(), etc);
    std::fs::write(&here, "").unwrap();
    assert_eq!(find_config_in(None, None, &search).unwrap(), here);
    // `$WARD_CONFIG` beats the search path, `-c` beats both; neither falls back.
    let named = dir.path().join("named.toml");
    let env = Some(named.clone().into_os_string());
    assert!(matches!(
        find_config_in(None, env.clone(), &search),
        Err(ConfigError::NotFound { searched }) if searched == [named.clone()]
    ));
    std::fs::write(&named, "").unwrap();
    assert_eq!(find_config_in(None, env.clone(), &search).unwrap(), named);
    assert_eq!(find_config_in(Some(&etc), env, &search).unwrap(), etc);
    assert_eq!(
        find_config_in(None, Some("".into()), &search).unwrap(),
        here
    );
}

#[test]
fn load_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisor.toml");
    assert!(matches!(load(&path), Err(ConfigError::Read { .. })));
    std::fs::write(&path, "[[program]]\nname = \"a\"\ncommand = \"x\"\n").unwrap();
    let c = load(&path).unwrap();
    assert_eq!(c.path, path);
    assert_eq!(c.programs.len(), 1);
}

// ---------------------------------------------------------------- sample and docs

#[test]
fn example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("supervisor.toml.example");
    let source = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "`{}` must exist (it is written on main): {e}",
            path.display()
        )
    });
    if let Err(e) = parse_with(&source, &path, &sys()) {
        panic!("the example config must be valid:\n{e}");
    }
}

/// Rows `| key | default | ... |` of `docs/CONFIG.md`'s defaults table.
fn documented_defaults() -> std::collections::HashMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md");
    let text = std::fs::read_to_string(&path).expect("docs/CONFIG.md exists");
    let start = text
        .find("<!-- defaults-table -->")
        .expect("docs/CONFIG.md has a `<!-- defaults-table -->` marker");
    text[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let unquote = |s: &str| s.trim_matches('`').trim_matches('"').to_owned();
            (unquote(cells[1]), unquote(cells[2]))
        })
        .collect()
}

#[test]
fn documented_defaults_match_the_code() {
    let docs = documented_defaults();
    let d = |key: &str| -> &str {
        docs.get(key)
            .unwrap_or_else(|| panic!("docs/CONFIG.md defaults table lacks `{key}`"))
    };
    let dur = |key: &str| parse_duration(d(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
    let num = |key: &str| -> f64 { d(key).parse().unwrap_or_else(|e| panic!("{key}: {e}")) };

    assert_eq!(dur("min_uptime"), defaults::MIN_UPTIME);
    assert_eq!(dur("backoff.initial"), defaults::BACKOFF_INITIAL);
    assert_eq!(dur("backoff.max"), defaults::BACKOFF_MAX);
    assert_eq!(num("backoff.multiplier"), defaults::BACKOFF_MULTIPLIER);
    assert_eq!(num("backoff.jitter"), defaults::BACKOFF_JITTER);
    assert_eq!(dur("stable_after"), defaults::STABLE_AFTER);
    assert_eq!(num("max_restarts"), f64::from(defaults::MAX_RESTARTS));
    assert_eq!(dur("stop_timeout"), defaults::STOP_TIMEOUT);
    assert_eq!(dur("watch_delay"), defaults::WATCH_DELAY);
    assert_eq!(dur("ready_timeout"), defaults::READY_TIMEOUT);
    assert_eq!(dur("heartbeat.grace"), defaults::GRACE);
    assert_eq!(
        crate::cron::Zone::parse(d("heartbeat.tz")),
        Some(defaults::TZ)
    );
    assert_eq!(
        parse_signal(d("heartbeat.watchdog_signal")),
        Ok(defaults::WATCHDOG_SIGNAL)
    );
    let src = format!(
        "[[program]]\nname = \"a\"\ncommand = \"x\"\nready = \"{}\"\n[program.heartbeat]\ninterval = \"1s\"\non_hung = \"{}\"\n",
        d("ready"),
        d("heartbeat.on_hung")
    );
    let p = &ok(&src).programs[0];
    assert_eq!(p.ready, defaults::READY);
    assert_eq!(p.heartbeat.on_hung, defaults::ON_HUNG);
    assert_eq!(p.heartbeat.stale_after, std::time::Duration::from_secs(3));
    assert_eq!(p.heartbeat.hung_after, std::time::Duration::from_secs(10));
    assert_eq!(parse_size(d("log.max_size")), Ok(defaults::LOG_MAX_SIZE));
    assert_eq!(num("log.keep"), f64::from(defaults::LOG_KEEP));
    assert_eq!(num("instances"), f64::from(defaults::INSTANCES));
    assert_eq!(d("autostart"), defaults::AUTOSTART.to_string());
    assert_eq!(parse_signal(d("stop_signal")), Ok(defaults::STOP_SIGNAL));
    assert_eq!(d("exit_codes"), format!("{:?}", defaults::EXIT_CODES));
    assert_eq!(d("store.enabled"), defaults::STORE_ENABLED.to_string());
    assert_eq!(
        dur("store.events_retention"),
        defaults::STORE_EVENTS_RETENTION
    );
    assert_eq!(dur("store.refresh"), defaults::STORE_REFRESH);
    let src = format!(
        "[[external]]\nname = \"x\"\ninterval = \"1s\"\non_hung = \"{}\"\n",
        d("external.on_hung")
    );
    assert_eq!(
        ok(&src).externals[0].heartbeat.on_hung,
        defaults::EXTERNAL_ON_HUNG
    );
    assert_eq!(
        d("supervisor.database"),
        format!("sqlite://<state_dir>/{}", defaults::DATABASE_FILE)
    );

    // The documented restart default, written in a config, gives the code's default.
    let src = format!(
        "[[program]]\nname = \"a\"\ncommand = \"x\"\nrestart = \"{}\"\n",
        d("restart")
    );
    assert_eq!(ok(&src).programs[0].restart, defaults::RESTART);
}

#[test]
fn database_and_store_defaults() {
    let c = ok("");
    assert_eq!(c.supervisor.database, "sqlite:///var/lib/ward/ward.db");
    assert_eq!(c.supervisor.database_url_env, None);
    assert_eq!(c.store, StoreSettings::default());
    // The default database follows state_dir.
    let c = ok("[supervisor]\nstate_dir = \"st\"\n");
    assert_eq!(c.supervisor.database, "sqlite:///srv/app/st/ward.db");
}

#[test]
fn database_urls() {
    let c = ok(r#"
[supervisor]
database = "sqlite://data/ward.db?mode=rwc"
database_url_env = "WARD_DB"

[store]
enabled = false
events_retention = "7d"
refresh = "1s"
"#);
    assert_eq!(
        c.supervisor.database,
        "sqlite:///srv/app/data/ward.db?mode=rwc"
    );
    assert_eq!(c.supervisor.database_url_env.as_deref(), Some("WARD_DB"));
    assert!(!c.store.enabled);
    assert_eq!(c.store.events_retention, Duration::from_secs(7 * 86_400));
    assert_eq!(c.store.refresh, Duration::from_secs(1));
    let c = ok("[supervisor]\ndatabase = \"sqlite:///abs/w.db\"\n");
    assert_eq!(c.supervisor.database, "sqlite:///abs/w.db");
    let pg = "postgres://ward@db.example/ward";
    let c = ok(&format!("[supervisor]\ndatabase = \"{pg}\"\n"));
    assert_eq!(c.supervisor.database, pg);
}

#[test]
fn bad_database_settings() {
    let d = one("[supervisor]\ndatabase = \"mysql://x/y\"\n");
    check(
        &d,
        2,
        12,
        "database",
        "unsupported database URL scheme `mysql` in `[supervisor]`",
    );
    assert!(
        d.hint.as_deref().unwrap_or("").contains("postgres://"),
        "{d:?}"
    );
    let d = one("[supervisor]\ndatabase_url_env = \"postgres://x\"\n");
    check(
        &d,
        2,
        20,
        "database_url_env",
        "`postgres://x` is not an environment variable name in `[supervisor]`",
    );
    let d = one("[store]\nretention = \"1d\"\n");
    check(&d, 2, 1, "retention", "unknown key in `[store]`");
    let d = one("[store]\nrefresh = 5\n");
    check(
        &d,
        2,
        11,
        "refresh",
        "expected a duration string, found an integer (`5`) in `[store]`",
    );
}
