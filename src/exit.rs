//! How a process ended: an exit code or a signal, never a magic number.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The end of a process, as `waitpid` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    /// It called `exit(code)`.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// Whether this exit counts as success under `exit_codes`.
    pub fn is_success(self, exit_codes: &[i32]) -> bool {
        matches!(self, Exit::Code(c) if exit_codes.contains(&c))
    }

    /// Decode a raw `wait` status.
    pub fn from_wait_status(status: i32) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }
}

/// `SIGKILL` style name of a signal number, or the number itself.
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit {c}"),
            Exit::Signal(s) => write!(f, "{}", signal_name(*s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_wait_statuses() {
        assert_eq!(Exit::from_wait_status(0), Exit::Code(0));
        assert_eq!(Exit::from_wait_status(3 << 8), Exit::Code(3));
        assert_eq!(Exit::from_wait_status(9), Exit::Signal(9));
        assert_eq!(Exit::Signal(9).to_string(), "SIGKILL");
        assert_eq!(Exit::Code(2).to_string(), "exit 2");
    }

    #[test]
    fn success_follows_exit_codes() {
        assert!(Exit::Code(0).is_success(&[0]));
        assert!(Exit::Code(3).is_success(&[0, 3]));
        assert!(!Exit::Code(1).is_success(&[0]));
        assert!(!Exit::Signal(15).is_success(&[0, 15]));
    }
}
