//! Integration tests for ward's operations features, through the real
//! binary: sd_notify to systemd, `ward startup`, `ward init`, `ward import`
//! and `packaging/install.sh`.
//!
//! Run one with `cargo test --test ops NAME`.

mod support;

mod init_import;
mod install;
mod sdnotify;
mod startup;
