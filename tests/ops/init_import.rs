//! `ward init`, the hint when no config exists, and `ward import` through the binary.

use std::path::Path;

use crate::support::{run, ward};

fn fixture(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(p)
        .display()
        .to_string()
}

#[test]
fn init_writes_a_checkable_starter_and_never_clobbers() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(ward(&["init"], dir.path()));
    assert_eq!(out.code(), Some(0), "{out}");
    let written = dir.path().join("supervisor.toml");
    assert!(written.is_file());
    let check = run(ward(&["check"], dir.path()));
    assert_eq!(check.code(), Some(0), "{check}");
    std::fs::write(&written, "# mine\n").unwrap();
    let again = run(ward(&["init"], dir.path()));
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(
        again.stderr.contains("already exists") && again.stderr.contains("--force"),
        "{again}"
    );
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "# mine\n");
    let forced = run(ward(
        &["init", "--force", "-o", "supervisor.toml"],
        dir.path(),
    ));
    assert_eq!(forced.code(), Some(0), "{forced}");
    assert!(std::fs::read_to_string(&written)
        .unwrap()
        .contains("[[program]]"));
}

#[test]
fn up_without_a_config_says_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(ward(&["up"], dir.path()));
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("no config file found") && out.stderr.contains("`ward init`"),
        "{out}"
    );
    assert_eq!(
        out.stderr.matches("hint:").count(),
        1,
        "one hint, not two:\n{out}"
    );
}

#[test]
fn import_writes_a_file_that_ward_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(ward(
        &[
            "import",
            "procfile",
            &fixture("procfile/Procfile"),
            "-o",
            "supervisor.toml",
        ],
        dir.path(),
    ));
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout.contains("wrote supervisor.toml (3 programs"),
        "{out}"
    );
    let check = run(ward(&["check"], dir.path()));
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(check.stdout.contains("3 programs"), "{check}");
    let again = run(ward(
        &[
            "import",
            "procfile",
            &fixture("procfile/Procfile"),
            "-o",
            "supervisor.toml",
        ],
        dir.path(),
    ));
    assert_eq!(again.code(), Some(1), "refuses to overwrite: {again}");
}

#[test]
fn import_to_stdout_lists_what_it_could_not_map_and_notes_local_paths() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(ward(
        &["import", "pm2", &fixture("pm2/ecosystem.config.js")],
        dir.path(),
    ));
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout.starts_with("# Converted by `ward import pm2`"),
        "{out}"
    );
    assert!(
        out.stdout.contains("cron_restart") && out.stdout.contains("max_memory_restart"),
        "{out}"
    );
    assert!(
        out.stderr.contains("note:") && out.stderr.contains("/srv/api"),
        "machine-specific problems are notes: {out}"
    );
}

#[test]
fn import_errors_point_at_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.service");
    std::fs::write(&f, "[Service]\nExecStart=/bin/true\nRestart=sometimes\n").unwrap();
    let out = run(ward(
        &["import", "systemd", f.to_str().unwrap()],
        dir.path(),
    ));
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains(&format!("{}:3: unknown Restart=`sometimes`", f.display())),
        "{out}"
    );
}
