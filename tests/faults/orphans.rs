//! A grandchild that escaped into its own session is reparented to ward
//! (a child subreaper) and reaped when it dies.

use crate::support::{alive, proc_stat, processes_with_env, zombie_children, TestEnv, DEADLINE};

#[test]
fn an_escaped_grandchild_is_reparented_to_ward_and_reaped() {
    let env = TestEnv::new();
    let mark = format!("{}/escaper", env.root.display());
    // Exit only once the background process has its own session, so that
    // the group stop after the exit cannot catch it before it escaped.
    env.config(&format!(
        r#"
[[program]]
name = "escaper"
command = 'setsid sleep 1000 & p=$!; until [ "$(cut -d" " -f6 /proc/$p/stat 2>/dev/null)" = "$p" ]; do sleep 0.01; done; exit 0'
min_uptime = "0s"
restart = "never"
env = {{ WARD_FAULT_MARK = "{mark}" }}
"#
    ));
    env.up();
    let ward = env.daemon_pid();
    env.wait_state("escaper", "exited");
    let needle = format!("WARD_FAULT_MARK={mark}");
    let mut escaped = Vec::new();
    env.wait_until(
        "the escaped process is reparented to ward",
        DEADLINE,
        || {
            escaped = processes_with_env(&needle);
            escaped.len() == 1 && proc_stat(escaped[0]).is_some_and(|s| s.ppid == ward)
        },
    );
    let pid = escaped[0];
    let st = proc_stat(pid).unwrap();
    env.check(
        st.session == pid && st.pgrp == pid,
        format!("pid {pid} did not escape into its own session: {st:?}"),
    );
    // SAFETY: plain kill(2) of a process this test started (through ward).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    env.wait_until("ward reaped it", DEADLINE, || {
        proc_stat(pid).is_none() && zombie_children(ward).is_empty()
    });
    env.check(!alive(pid), "the escaped process is gone");
}
