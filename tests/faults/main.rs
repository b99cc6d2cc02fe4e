//! Fault injection: the real `ward` binary under faults (SIGKILL of ward, a
//! crash loop, process trees that misbehave, a flood of output, orphans,
//! bad input at the control socket, SIGKILL while the status-table writer
//! is mid-batch, a flood of heartbeat connections past their cap) plus property tests of the
//! parsers.
//! Every case asserts an outcome; docs/FAULTS.md lists them.
//!
//! Run with `cargo test --test faults`; the long variants with
//! `WARD_LONG_FAULTS=1 cargo test --test faults -- --include-ignored`.
//! Shares the `TestEnv` harness of the `it` binary.

#[path = "../it/support.rs"]
#[allow(dead_code)]
mod support;

mod control_socket;
mod crash_loop;
mod fuzz;
mod http_connections;
mod kill_store;
mod kill_ward;
mod orphans;
mod process_tree;

/// Whether the long variants were asked for (`WARD_LONG_FAULTS=1`).
pub fn long_faults() -> bool {
    std::env::var_os("WARD_LONG_FAULTS").is_some_and(|v| v == "1")
}
