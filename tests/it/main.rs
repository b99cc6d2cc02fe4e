//! Integration tests: the real `ward` binary, one temp dir and daemon per test.
//!
//! Run one with `cargo test --test it NAME`. A failing test prints the
//! commands it ran, the daemon's stderr, `ward status`, ward's log and the
//! state dir; set `WARD_IT_KEEP=1` to keep every test's directory.

// Shared with the `faults` test binary, which uses helpers this one does not.
#[allow(dead_code)]
mod support;

mod config_errors;
mod heartbeats;
mod instances;
mod late_jobs;
mod lifecycle;
mod limits;
mod logs_capture;
mod logs_cli;
mod process_groups;
mod reload;
mod restart;
mod shutdown;
mod socket;
