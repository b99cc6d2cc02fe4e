//! The control socket: a unix socket speaking JSON lines.
//!
//! `protocol` is the documented wire format (docs/PROTOCOL.md), `server` the
//! daemon side, `client` the blocking CLI side.

pub mod client;
pub mod protocol;
pub mod server;
