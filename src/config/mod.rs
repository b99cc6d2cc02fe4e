//! Configuration: finding, parsing and validating `supervisor.toml`.
//!
//! Owns the two layers (raw TOML walk with locations, validated typed model).
//! Must never start processes or touch the state dir.

pub mod model;

pub use model::*;
