//! Round trips from the fixtures in tests/fixtures/import: convert, emit,
//! parse the result with the real config loader, and check the values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::config::{CommandSpec, Config, RestartPolicy};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(p)
}

/// Convert, emit, and parse. Only machine-specific problems (a missing
/// `/srv/...` directory, user or env file) are allowed; they are stripped
/// (commented out) so the rest can be parsed and checked.
fn round_trip(from: Source, files: &[&str]) -> (Imported, String, Config) {
    let files: Vec<PathBuf> = files.iter().map(|f| fixture(f)).collect();
    let imp = import(from, &files).unwrap_or_else(|e| panic!("{e}"));
    let text = emit(&imp, from);
    let path = Path::new("/tmp/imported.toml");
    let local = check(&text, path).unwrap_or_else(|e| panic!("not a valid config:\n{e}\n{text}"));
    let mut usable = text.clone();
    if !local.is_empty() {
        let lines: Vec<usize> = local
            .iter()
            .map(|l| l.split(':').nth(1).unwrap().parse::<usize>().unwrap())
            .collect();
        usable = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if lines.contains(&(i + 1)) {
                    format!("# {l}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    let config =
        crate::config::parse_str(&usable, path).unwrap_or_else(|e| panic!("{e}\n{usable}"));
    (imp, text, config)
}

fn unmapped(imp: &Imported, program: Option<&str>, option_prefix: &str) -> bool {
    imp.unmapped
        .iter()
        .any(|u| u.program.as_deref() == program && u.option.starts_with(option_prefix))
}

#[test]
fn pm2_ecosystem_js() {
    let (imp, text, c) = round_trip(Source::Pm2, &["pm2/ecosystem.config.js"]);
    let api = c.program("api").unwrap();
    assert_eq!(
        api.command,
        CommandSpec::Argv(vec![
            "node".into(),
            "--max-old-space-size=512".into(),
            "./dist/server.js".into()
        ])
    );
    assert_eq!(
        api.instances,
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    );
    assert_eq!(api.env["PORT"], "3000");
    assert_eq!(api.env["NODE_ENV"], "development");
    assert_eq!(api.stop_timeout, Duration::from_secs(5));
    assert_eq!(api.min_uptime, Duration::from_secs(5));
    assert_eq!(api.max_restarts, 10);
    assert_eq!(api.restart, RestartPolicy::Always);
    assert!(api.log.timestamps);
    let worker = c.program("worker").unwrap();
    assert_eq!(
        worker.command,
        CommandSpec::Argv(
            ["python3", "worker.py", "--queue", "emails", "--verbose"]
                .map(String::from)
                .to_vec()
        )
    );
    assert_eq!(worker.instances, 2);
    assert_eq!(worker.backoff.initial, Duration::from_millis(100));
    assert_eq!(worker.backoff.multiplier, 1.5);
    let report = c.program("nightly-report").unwrap();
    assert_eq!(report.restart, RestartPolicy::Never);
    assert_eq!(report.backoff.initial, Duration::from_secs(4));
    match &report.command {
        CommandSpec::Argv(a) => assert!(
            a[0].ends_with("pm2/bin/report") && a[1..] == ["--since", "24 hours ago"],
            "{a:?}"
        ),
        other => panic!("{other:?}"),
    }
    for (p, opt) in [
        ("api", "env_production"),
        ("api", "exec_mode"),
        ("api", "max_memory_restart"),
        ("worker", "cron_restart"),
        ("nightly-report", "watch"),
    ] {
        assert!(
            unmapped(&imp, Some(p), opt),
            "{p}: {opt} not listed\n{text}"
        );
    }
    assert!(
        text.contains("# - worker: cron_restart = \"0 3 * * *\": ward has no scheduled restarts"),
        "{text}"
    );
    assert!(
        text.contains("# - api: max_memory_restart = \"300M\""),
        "{text}"
    );
}

#[test]
fn pm2_json_and_jlist() {
    let (imp, text, c) = round_trip(Source::Pm2, &["pm2/ecosystem.json", "pm2/jlist.json"]);
    let web = c.program("web").unwrap();
    assert_eq!(web.restart, RestartPolicy::OnFailure);
    assert_eq!(web.exit_codes, vec![0]);
    assert_eq!(web.min_uptime, Duration::from_secs(2));
    assert_eq!(web.env["DEBUG"], "false");
    assert!(
        web.cwd.as_ref().unwrap().ends_with("fixtures/import/pm2"),
        "{:?}",
        web.cwd
    );
    assert_eq!(
        web.log.stderr,
        crate::config::StderrTarget::Stdout,
        "{text}"
    );
    let cleanup = c.program("cleanup").unwrap();
    assert_eq!(
        cleanup.command,
        CommandSpec::Argv(vec!["bash".into(), "jobs/cleanup.sh".into()])
    );
    let api = c.program("api").unwrap();
    assert_eq!(api.instances, 2);
    assert_eq!(
        api.env.get("NODE_ENV").map(String::as_str),
        Some("production")
    );
    assert!(
        !api.env.contains_key("PM2_HOME") && !api.env.contains_key("unique_id"),
        "{text}"
    );
    assert_eq!(api.stop_timeout, Duration::from_millis(1600));
    assert!(
        api.log.stdout.is_none(),
        "PM2's default log paths are dropped"
    );
    assert!(unmapped(&imp, Some("api"), "3 variables of the shell"));
    assert!(unmapped(&imp, Some("scheduler"), "cron_restart"));
}

#[test]
fn pm2_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("eco.json");
    std::fs::write(&f, "{\n  \"apps\": [\n    { \"name\": \"x\", }\n  ]\n}\n").unwrap();
    let e = import(Source::Pm2, std::slice::from_ref(&f)).unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    std::fs::write(&f, r#"{"apps": [{"name": "x"}]}"#).unwrap();
    assert!(import(Source::Pm2, &[f])
        .unwrap_err()
        .to_string()
        .contains("has no `script`"));
    let js = dir.path().join("eco.config.js");
    std::fs::write(
        &js,
        "module.exports = { apps: [ { name: 'x', script: 'x.js' ] };\n",
    )
    .unwrap();
    let e = import(Source::Pm2, &[js]).unwrap_err();
    assert!(e.to_string().contains("node could not evaluate it"), "{e}");
}

#[test]
fn supervisord_with_include_and_numprocs() {
    let (imp, text, c) = round_trip(Source::Supervisord, &["supervisord/supervisord.conf"]);
    let web = c.program("web").unwrap();
    assert_eq!(
        web.command,
        CommandSpec::Argv(
            [
                "/srv/app/venv/bin/gunicorn",
                "app:app",
                "--bind",
                "127.0.0.1:8000",
                "--workers",
                "4"
            ]
            .map(String::from)
            .to_vec()
        )
    );
    assert_eq!(web.restart, RestartPolicy::Always);
    assert_eq!(web.min_uptime, Duration::from_secs(5));
    assert_eq!(web.max_restarts, 3);
    assert_eq!(web.stop_signal, nix::sys::signal::Signal::SIGQUIT);
    assert_eq!(web.stop_timeout, Duration::from_secs(30));
    assert_eq!(web.log.max_size, 50 << 20);
    assert_eq!(web.log.keep, 10);
    assert_eq!(web.env["DJANGO_SETTINGS_MODULE"], "app.settings");
    assert_eq!(
        web.env["TZ"], "UTC",
        "[supervisord] environment reaches every program"
    );
    let worker = c.program("worker").unwrap();
    assert_eq!(worker.instances, 3);
    assert_eq!(worker.restart, RestartPolicy::OnFailure);
    assert_eq!(worker.exit_codes, vec![0, 2]);
    match &worker.command {
        CommandSpec::Shell(s) => assert!(
            s.ends_with("conf.d/worker.py --name \"worker-$(printf %02d $WARD_INSTANCE)\""),
            "{s}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(
        worker.cwd.as_ref().unwrap().ends_with("supervisord/conf.d"),
        "%(here)s is the included file's directory"
    );
    let beat = c.program("beat").unwrap();
    assert!(!beat.autostart);
    assert_eq!(
        beat.command,
        CommandSpec::Argv(
            [
                "/usr/bin/env",
                "celery",
                "-A",
                "app",
                "beat",
                "--loglevel",
                "info"
            ]
            .map(String::from)
            .to_vec()
        )
    );
    assert!(unmapped(&imp, Some("web"), "priority"));
    assert!(unmapped(&imp, Some("beat"), "stdout_logfile = NONE"));
    assert!(unmapped(&imp, None, "[group:app]"));
    assert!(
        text.contains("# - worker: umask = 022: no ward equivalent"),
        "{text}"
    );
}

#[test]
fn supervisord_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.conf");
    std::fs::write(&f, "[program:a]\ncommand=x\nnumprocs=zero\n").unwrap();
    let e = import(Source::Supervisord, std::slice::from_ref(&f)).unwrap_err();
    assert_eq!(
        (e.line, e.message.contains("numprocs")),
        (Some(3), true),
        "{e}"
    );
    std::fs::write(
        &f,
        "[program:a]\ncommand=x %(ENV_WARD_TEST_SURELY_UNSET)s\n",
    )
    .unwrap();
    assert_eq!(import(Source::Supervisord, &[f]).unwrap_err().line, Some(2));
}

#[test]
fn systemd_units() {
    let (imp, text, c) = round_trip(
        Source::Systemd,
        &[
            "systemd/api.service",
            "systemd/db.service",
            "systemd/cleanup.service",
        ],
    );
    let api = c.program("api").unwrap();
    assert_eq!(
        api.command,
        CommandSpec::Shell(
            "exec /usr/bin/node /srv/api/server.js --port \"${PORT}\" --name api".into()
        )
    );
    assert_eq!(api.env["GREETING"], "hello world");
    assert_eq!(api.env["PORT"], "8080");
    assert_eq!(api.env["NODE_ENV"], "production");
    assert_eq!(api.depends_on, vec!["db".to_string()]);
    assert_eq!(api.restart, RestartPolicy::OnFailure);
    assert_eq!(api.backoff.initial, Duration::from_secs(5));
    assert_eq!(api.max_restarts, 5);
    assert_eq!(api.stop_signal, nix::sys::signal::Signal::SIGINT);
    assert_eq!(api.stop_timeout, Duration::from_secs(90));
    assert!(text.contains("env_file = \"/etc/default/api\""));
    assert!(text.contains("user = \"www-data\""));
    let db = c.program("db").unwrap();
    assert_eq!(db.exit_codes, vec![0, 143]);
    assert_eq!(db.restart, RestartPolicy::Always);
    let cleanup = c.program("cleanup").unwrap();
    assert_eq!(cleanup.restart, RestartPolicy::Never);
    assert_eq!(
        cleanup.command,
        CommandSpec::Argv(
            ["/bin/sh", "-c", "find /tmp/uploads -mtime +1 -delete"]
                .map(String::from)
                .to_vec()
        )
    );
    assert!(unmapped(&imp, Some("api"), "WatchdogSec=20s"));
    assert!(text.contains("heartbeat"), "{text}");
    assert!(unmapped(&imp, Some("api"), "ExecStartPre"));
    assert!(unmapped(&imp, Some("api"), "LimitNOFILE"));
    assert!(unmapped(&imp, Some("db"), "TimeoutStopSec=infinity"));
}

#[test]
fn systemd_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.service");
    std::fs::write(&f, "[Service]\nExecStart=/bin/true\nRestart=sometimes\n").unwrap();
    assert_eq!(
        import(Source::Systemd, std::slice::from_ref(&f))
            .unwrap_err()
            .line,
        Some(3)
    );
    std::fs::write(&f, "[Service]\nExecStart=\"/bin/true\n").unwrap();
    assert_eq!(
        import(Source::Systemd, std::slice::from_ref(&f))
            .unwrap_err()
            .line,
        Some(2)
    );
    std::fs::write(&f, "[Service]\nType=simple\n").unwrap();
    assert!(import(Source::Systemd, &[f])
        .unwrap_err()
        .to_string()
        .contains("no ExecStart"));
    assert_eq!(systemd::timespan("1min 30s"), Some(Duration::from_secs(90)));
    assert_eq!(systemd::timespan("90"), Some(Duration::from_secs(90)));
    assert_eq!(systemd::timespan("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(systemd::timespan("infinity"), None);
}

#[test]
fn procfile() {
    let (imp, text, c) = round_trip(Source::Procfile, &["procfile/Procfile"]);
    assert!(
        check(&text, Path::new("/tmp/x.toml")).unwrap().is_empty(),
        "a Procfile's output passes as is"
    );
    assert!(imp.unmapped.is_empty());
    let web = c.program("web").unwrap();
    assert_eq!(
        web.command,
        CommandSpec::Shell("bundle exec puma -C config/puma.rb -p $PORT".into())
    );
    assert_eq!(web.env["PORT"], "5000");
    assert_eq!(
        web.env["RAILS_ENV"], "production",
        "from the .env beside the Procfile"
    );
    assert_eq!(c.program("release").unwrap().restart, RestartPolicy::Never);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("Procfile");
    std::fs::write(&f, "web: ok\n\nbad line\n").unwrap();
    assert_eq!(import(Source::Procfile, &[f]).unwrap_err().line, Some(3));
}

#[test]
fn emitted_strings_and_keys_are_escaped() {
    let imp = Imported {
        programs: vec![Prog {
            name: "x".into(),
            command: Cmd::Argv(vec!["a\"b".into(), "c\\d".into(), "é\n".into()]),
            env: [("WEIRD KEY".to_string(), "v'\"".to_string())].into(),
            ..Prog::default()
        }],
        ..Imported::default()
    };
    let text = emit(&imp, Source::Procfile);
    let c = crate::config::parse_str(&text, Path::new("/tmp/x.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        c.programs[0].command,
        CommandSpec::Argv(vec!["a\"b".into(), "c\\d".into(), "é\n".into()])
    );
    assert_eq!(c.programs[0].env["WEIRD KEY"], "v'\"");
}
