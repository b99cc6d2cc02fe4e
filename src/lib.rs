//! ward: a process supervisor with a built-in heartbeat registry.
//!
//! Module map (see docs/ARCHITECTURE.md for the picture):
//! - [`config`]: find, parse and validate `supervisor.toml` into a typed model.
//! - [`daemon`]: `ward up` from lock to exit; signals; shutdown order.
//! - [`supervisor`]: the set of program handles; status and multi-program actions.
//! - [`program`]: one actor per instance (owns its child) and its pure state machine.
//! - [`reaper`]: the one thread that spawns and reaps children.
//! - [`backoff`]: restart delays (pure).
//! - [`logs`]: capture, rotation and reading of program output.
//! - [`control`]: the control socket protocol, server and client.
//! - [`store`]: the SQL status tables (SQLite or PostgreSQL), written off the supervision path.
//! - [`cli`]: the `ward` command line.
//! - [`procfs`], [`exit`], [`telemetry`]: small shared pieces.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod exit;
pub mod heartbeat;
pub mod logs;
pub mod procfs;
pub mod program;
pub mod reaper;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod watch;

/// Send one sd_notify datagram to `socket` (a path, or `@name` for the
/// abstract namespace), as `systemd-notify` does.
pub fn sdnotify_send(socket: &std::ffi::OsStr, payload: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(payload, &addr)?;
    } else {
        sock.send_to(payload, std::path::Path::new(socket))?;
    }
    Ok(())
}
