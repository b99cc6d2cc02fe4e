//! ward's own event log: `tracing` to stderr and to `<state_dir>/ward.log`.
//!
//! Filter with `WARD_LOG` (e.g. `WARD_LOG=debug`); default `info`.

use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::LogPolicy;
use crate::logs::OwnLogWriter;

/// Install the global subscriber. Returns the file writer so the daemon can
/// reopen `ward.log` on SIGUSR1.
pub fn init(own_log: &Path, policy: &LogPolicy, to_stderr: bool) -> OwnLogWriter {
    let writer = crate::logs::own_log_writer(own_log.to_path_buf(), policy);
    let filter =
        || EnvFilter::try_from_env("WARD_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let file = fmt::layer()
        .with_ansi(false)
        .with_writer(writer.clone())
        .with_filter(filter());
    let stderr = to_stderr.then(|| {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter())
    });
    let _ = tracing_subscriber::registry()
        .with(file)
        .with(stderr)
        .try_init();
    writer
}
