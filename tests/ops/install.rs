//! `packaging/install.sh` into a scratch root (never the real system).

use std::path::Path;

use crate::support::{run, ward, ward_bin};

fn install(root: &Path, extra: &[&str]) -> crate::support::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/install.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(script)
        .arg("--root")
        .arg(root)
        .arg("--binary")
        .arg(ward_bin())
        .args(extra);
    run(cmd)
}

#[test]
fn install_is_idempotent_keeps_the_config_and_uninstalls() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for _ in 0..2 {
        let out = install(root, &["--prefix", "/opt/ward"]);
        assert_eq!(out.code(), Some(0), "{out}");
    }
    let bin = root.join("opt/ward/bin/ward");
    assert!(bin.is_file());
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/ward.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/ward/bin/ward up -c /etc/ward/supervisor.toml\n"),
        "{unit}"
    );
    let conf = root.join("etc/ward/supervisor.toml");
    let check = run(ward(&["check", "-c", conf.to_str().unwrap()], root));
    assert_eq!(check.code(), Some(0), "{check}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(root.join("var/lib/ward"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    std::fs::write(&conf, "# edited\n").unwrap();
    let out = install(root, &["--prefix", "/opt/ward"]);
    assert!(out.stdout.contains("kept the existing"), "{out}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "# edited\n");

    let out = install(root, &["--prefix", "/opt/ward", "--uninstall"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!bin.exists() && !root.join("etc/systemd/system/ward.service").exists());
    assert!(conf.exists(), "the config is kept");
}

#[test]
fn install_without_a_binary_explains() {
    let dir = tempfile::tempdir().unwrap();
    let out = install(dir.path(), &["--binary", "/nonexistent/ward"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("cargo build --release"), "{out}");
}
