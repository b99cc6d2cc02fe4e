//! SIGKILL of ward itself, while programs run and a log rotates flat out.

use std::fs;

use crate::support::{alive, group_members, read_rotated, rotated_files, TestEnv, DEADLINE};

const WRITER: &str = r#"
if [ -e second-run ]; then exec sleep 1000; fi
seq 1 6000000
exec sleep 1000
"#;
// 6,000,000 lines are ~47 MiB: about 730 files of 64 KiB, under `keep = 1000`,
// so no line can be rotated away however long a loaded machine takes to
// reach the kill (flat out without a bound, it once did).

/// Check that `data` holds the lines `1..=N` once each, in order. The last
/// line may be cut (no `\n`): SIGKILL can stop ward inside a write. Returns N.
fn check_prefix_of_sequence(data: &[u8]) -> Result<u64, String> {
    let (whole, cut) = match data.iter().rposition(|b| *b == b'\n') {
        Some(p) => (&data[..p], &data[p + 1..]),
        None => (&[][..], data),
    };
    let mut expect = 1u64;
    if !whole.is_empty() {
        for (i, line) in whole.split(|b| *b == b'\n').enumerate() {
            let n = std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if n != Some(expect) {
                let what = if n.is_some_and(|n| n < expect) {
                    "a duplicate"
                } else {
                    "a gap"
                };
                return Err(format!(
                    "{what}: line {} is {:?}, expected {expect}",
                    i + 1,
                    String::from_utf8_lossy(line)
                ));
            }
            expect += 1;
        }
    }
    if !cut.is_empty() && !expect.to_string().as_bytes().starts_with(cut) {
        return Err(format!(
            "the unfinished last line {:?} is not the start of {expect}",
            String::from_utf8_lossy(cut)
        ));
    }
    Ok(expect - 1)
}

#[test]
fn sigkill_of_ward_leaves_no_old_process_and_no_duplicate_or_missing_line() {
    let env = TestEnv::new();
    fs::write(env.root.join("writer.sh"), WRITER).unwrap();
    env.config(
        r#"
[[program]]
name = "writer"
command = ["sh", "writer.sh"]
min_uptime = "0s"
log = { max_size = "64KiB", keep = 1000 }

[[program]]
name = "family"
command = "sleep 1000 & sleep 1000 & wait"
min_uptime = "0s"
"#,
    );
    env.up();
    let daemon = env.daemon_pid();
    let writer = env.running_pid("writer");
    let family = env.running_pid("family");
    env.wait_until("the family has its two sleeps", DEADLINE, || {
        group_members(family).len() == 3
    });
    let log = env.log_path("writer.out.log");
    env.wait_until("the writer's log rotated 20 times", DEADLINE, || {
        rotated_files(&log).len() > 20
    });
    // Flat out with a 64 KiB limit, the log rotates every few milliseconds:
    // the kill lands during (or right next to) a rotation.
    let mut old: Vec<i32> = vec![daemon, writer];
    old.extend(group_members(family));
    env.signal_daemon(libc::SIGKILL);
    env.wait_daemon_exit(DEADLINE);
    // Direct children die with ward (PR_SET_PDEATHSIG); their own children
    // (the family's sleeps) are left for the next `ward up` to kill.
    env.wait_until("the writer died with ward", DEADLINE, || !alive(writer));
    let left: Vec<i32> = old.iter().copied().filter(|p| alive(*p)).collect();
    env.check(
        !left.is_empty(),
        format!("expected the family's sleeps to outlive ward until the next `ward up`: {old:?}"),
    );
    let before = read_rotated(&log);
    let last = check_prefix_of_sequence(&before)
        .unwrap_or_else(|e| env.fail(&format!("log after SIGKILL: {e}")));
    env.check(last > 100_000, format!("only {last} lines reached the log"));
    env.check(
        !log.with_file_name("writer.out.log.1000").exists(),
        "keep = 1000 was reached: the test would lose files",
    );

    fs::write(env.root.join("second-run"), "").unwrap();
    env.up();
    env.wait_until("no process of the old run is alive", DEADLINE, || {
        old.iter().all(|p| !alive(*p)) && group_members(family).is_empty()
    });
    for pgid in [writer, family] {
        let members = group_members(pgid);
        env.check(
            members.is_empty(),
            format!("old group {pgid} still has {members:?}"),
        );
    }
    let own_log = fs::read_to_string(env.state_dir.join("ward.log")).unwrap_or_default();
    env.check(
        own_log.contains("left by a previous ward"),
        "ward.log reports the leftovers it killed",
    );
    // The new run (which only sleeps) must not have touched the files.
    env.running_pid("writer");
    let after = read_rotated(&log);
    env.check(
        after == before,
        format!(
            "the log files changed across the restart ({} -> {} bytes)",
            before.len(),
            after.len()
        ),
    );
    eprintln!(
        "after SIGKILL: {last} whole lines in {} files, each once and in order",
        rotated_files(&log).len()
    );
}

#[test]
fn a_log_left_cut_by_a_killed_ward_is_continued_on_a_new_line() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "next"
command = "echo next-run; exec sleep 1000"
min_uptime = "0s"
"#,
    );
    // What a SIGKILL inside a write leaves: a last line without its `\n`.
    let log = env.log_path("next.out.log");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    fs::write(&log, "1\n2\n3").unwrap();
    env.up();
    env.wait_until("the new run's line is in the log", DEADLINE, || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("next-run"))
    });
    let text = fs::read_to_string(&log).unwrap();
    env.check(
        text == "1\n2\n3\nnext-run\n",
        format!("the new run's first line must start on its own line: {text:?}"),
    );
}
