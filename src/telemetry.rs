//! ward's own event log: `tracing` to stderr and to `<state_dir>/ward.log`.
//!
//! Filter with `WARD_LOG` (e.g. `WARD_LOG=debug`); default `info`.

use std::path::Path;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

use crate::config::LogPolicy;
use crate::logs::OwnLogWriter;

/// `WARD_LOG` as `target=level` directives (`debug`, `info,ward::store=trace`);
/// unset or unreadable: `info`, with sqlx's per-query lines off. (A
/// `Targets` filter, not `EnvFilter`: no regex engine in the binary.)
fn filter(spec: Option<&str>) -> Targets {
    const DEFAULT: &str = "info,sqlx=warn";
    match spec.map(str::parse::<Targets>) {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("ward: ignoring WARD_LOG ({e}); using `{DEFAULT}`");
            DEFAULT.parse().expect("the default filter parses")
        }
        None => DEFAULT.parse().expect("the default filter parses"),
    }
}

/// Install the global subscriber. Returns the file writer so the daemon can
/// reopen `ward.log` on SIGUSR1.
pub fn init(own_log: &Path, policy: &LogPolicy, to_stderr: bool) -> OwnLogWriter {
    let writer = crate::logs::own_log_writer(own_log.to_path_buf(), policy);
    let filter = || filter(std::env::var("WARD_LOG").ok().as_deref());
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn ward_log_directives_parse_and_bad_ones_fall_back() {
        let f = filter(Some("debug"));
        assert!(f.would_enable("ward::store", &Level::DEBUG));
        let f = filter(None);
        assert!(f.would_enable("ward::daemon", &Level::INFO));
        assert!(!f.would_enable("ward::daemon", &Level::DEBUG));
        assert!(!f.would_enable("sqlx::query", &Level::INFO));
        let f = filter(Some("info,ward::store=trace"));
        assert!(f.would_enable("ward::store", &Level::TRACE));
        assert!(!f.would_enable("ward::daemon", &Level::DEBUG));
        let f = filter(Some("ward=[{"));
        assert!(f.would_enable("ward::daemon", &Level::INFO));
    }
}
