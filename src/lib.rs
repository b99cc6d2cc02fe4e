//! ward: a process supervisor with a built-in heartbeat registry.
//!
//! Module map:
//! - `config`: find, parse and validate `supervisor.toml` into a typed model.
//! - `logs`: capture program output into rotated files, ward's own log, `ward logs`.

pub mod config;
pub mod logs;
