//! `ward startup` / `ward unstartup`, and the unit they write.

use std::path::Path;

use crate::support::{run, ward, ward_bin};

fn config(dir: &Path) -> std::path::PathBuf {
    let c = dir.join("supervisor.toml");
    std::fs::write(&c, "[supervisor]\nstate_dir = \"state\"\n\n[[program]]\nname = \"a\"\ncommand = \"sleep 1\"\nstop_timeout = \"45s\"\n").unwrap();
    c
}

#[test]
fn the_printed_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let out = run(ward(
        &["startup", "--print", "-c", c.to_str().unwrap()],
        dir.path(),
    ));
    assert_eq!(out.code(), Some(0), "{out}");
    let unit = out.stdout;
    assert!(
        unit.contains(&format!("ExecStart={} up -c {}\n", ward_bin(), c.display())),
        "{unit}"
    );
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "Restart=on-failure",
        "RestartSec=2s",
        "TimeoutStopSec=55s",
        "WatchdogSec=30s",
        "NoNewPrivileges=yes",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}:\n{unit}");
    }
    let path = dir.path().join("ward.service");
    std::fs::write(&path, &unit).unwrap();
    let mut verify = std::process::Command::new("systemd-analyze");
    verify.arg("verify").arg(&path);
    let v = run(verify);
    assert_eq!(v.code(), Some(0), "{v}\n{unit}");
    assert!(
        v.stderr.trim().is_empty(),
        "systemd-analyze complained:\n{v}"
    );
    // The packaged unit too (its binary does not exist here: point it at ours).
    let packaged = include_str!("../../packaging/ward.service").replace(
        "ExecStart=/usr/bin/ward",
        &format!("ExecStart={}", ward_bin()),
    );
    std::fs::write(&path, packaged).unwrap();
    let mut verify = std::process::Command::new("systemd-analyze");
    verify.arg("verify").arg(&path);
    let v = run(verify);
    assert!(v.code() == Some(0) && v.stderr.trim().is_empty(), "{v}");
}

#[test]
fn user_startup_without_systemd_writes_the_unit_and_says_what_to_do() {
    if Path::new("/run/systemd/system").exists() {
        eprintln!("systemd is running here: this test would enable a real unit; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let mut cmd = ward(
        &["startup", "--user", "-c", c.to_str().unwrap()],
        dir.path(),
    );
    cmd.env("HOME", &home).env_remove("XDG_CONFIG_HOME");
    let out = run(cmd);
    assert_eq!(out.code(), Some(1), "{out}");
    let unit = home.join(".config/systemd/user/ward.service");
    assert!(
        out.stdout.contains(&format!("wrote {}", unit.display())),
        "{out}"
    );
    assert!(out.stderr.contains("systemd is not running here"), "{out}");
    assert!(
        out.stderr.contains("systemctl --user daemon-reload")
            && out
                .stderr
                .contains("systemctl --user enable --now ward.service"),
        "{out}"
    );
    assert!(out.stderr.contains("undo: ward unstartup --user"), "{out}");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("WantedBy=default.target") && !text.contains("network-online"),
        "{text}"
    );

    let mut cmd = ward(&["unstartup", "--user"], dir.path());
    cmd.env("HOME", &home).env_remove("XDG_CONFIG_HOME");
    let out = run(cmd);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!unit.exists());
    let mut cmd = ward(&["unstartup", "--user"], dir.path());
    cmd.env("HOME", &home).env_remove("XDG_CONFIG_HOME");
    let out = run(cmd);
    assert_eq!(out.code(), Some(1), "nothing to undo: {out}");
}

#[test]
fn startup_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("bad.toml");
    std::fs::write(&c, "[[program]]\nname = \"a\"\n").unwrap();
    let out = run(ward(
        &["startup", "--print", "-c", c.to_str().unwrap()],
        dir.path(),
    ));
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stdout.is_empty());
}
