//! ward's own log file (`<state_dir>/ward.log`) as a `tracing` writer, with
//! the same rotation as program logs.
//!
//! Owns the shared handle to that one file. Must never emit `tracing` events
//! itself (they would re-enter the writer and deadlock): its own write errors
//! go to stderr once and into its stats.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogPolicy;

use super::rotate::{RotatingFile, RotationPolicy};
use super::LogStats;

/// A `tracing_subscriber` writer appending to a rotated file. Cheap to clone.
///
/// `policy.timestamps` is ignored: the `tracing` formatter writes its own.
#[derive(Clone, Debug)]
pub struct OwnLogWriter {
    file: Arc<Mutex<RotatingFile>>,
}

/// The writer for one event: holds the file lock while the event is written,
/// so events never interleave.
#[derive(Debug)]
pub struct OwnLogGuard<'a> {
    file: MutexGuard<'a, RotatingFile>,
}

/// Open `path` (creating parent directories) as ward's own log.
///
/// Never fails: errors are reported once on stderr and counted in
/// [`OwnLogWriter::stats`].
pub fn own_log_writer(path: PathBuf, policy: &LogPolicy) -> OwnLogWriter {
    OwnLogWriter {
        file: Arc::new(Mutex::new(RotatingFile::open_quiet(
            path,
            RotationPolicy::from(policy),
        ))),
    }
}

impl OwnLogWriter {
    fn lock(&self) -> MutexGuard<'_, RotatingFile> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reopen the file (SIGUSR1).
    pub fn reopen(&self) {
        self.lock().reopen();
    }

    pub fn stats(&self) -> LogStats {
        self.lock().stats()
    }
}

impl<'a> MakeWriter<'a> for OwnLogWriter {
    type Writer = OwnLogGuard<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        OwnLogGuard { file: self.lock() }
    }
}

impl Write for OwnLogGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_events_land_in_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/ward.log");
        let policy = LogPolicy {
            max_size: 200,
            keep: 2,
            ..LogPolicy::default()
        };
        let writer = own_log_writer(path.clone(), &policy);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..20 {
                tracing::info!(i, "event number {i}");
            }
        });
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.contains("event number 19"), "{current}");
        let rotated = std::fs::read_to_string(super::super::rotated_path(&path, 1, false)).unwrap();
        assert!(rotated.ends_with('\n'));
        assert!(!super::super::rotated_path(&path, 3, false).exists());
        assert_eq!(writer.stats().bytes_dropped, 0);
    }
}
