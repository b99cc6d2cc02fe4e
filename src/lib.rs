//! ward: a process supervisor with a built-in heartbeat registry.
//!
//! Module map:
//! - `config`: find, parse and validate `supervisor.toml` into a typed model.

pub mod config;
