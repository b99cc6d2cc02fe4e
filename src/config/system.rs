//! What the loader needs to know about this machine: euid, home and XDG
//! dirs, hostname, and user/group lookups.
//!
//! Gathered once into `System` so the loader stays testable (tests build a
//! `System` with another euid). Must never modify anything on the machine.

use std::ffi::OsString;
use std::path::PathBuf;

use super::model::{defaults, Group, User};

/// A snapshot of the facts about the running ward process.
#[derive(Debug, Clone)]
pub(crate) struct System {
    pub euid: u32,
    pub egid: u32,
    pub xdg_state_home: Option<OsString>,
    pub home: Option<OsString>,
    pub hostname: String,
}

impl System {
    pub(crate) fn current() -> Self {
        System {
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            xdg_state_home: std::env::var_os("XDG_STATE_HOME"),
            home: std::env::var_os("HOME"),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into()),
        }
    }

    /// Root: `/var/lib/ward`; otherwise `$XDG_STATE_HOME/ward`, else
    /// `$HOME/.local/state/ward`, else `<tmp>/ward-<euid>`.
    pub(crate) fn default_state_dir(&self) -> PathBuf {
        if self.euid == 0 {
            return PathBuf::from(defaults::ROOT_STATE_DIR);
        }
        let absolute =
            |v: &Option<OsString>| v.as_ref().map(PathBuf::from).filter(|p| p.is_absolute());
        if let Some(xdg) = absolute(&self.xdg_state_home) {
            return xdg.join("ward");
        }
        if let Some(home) = absolute(&self.home) {
            return home.join(".local/state/ward");
        }
        std::env::temp_dir().join(format!("ward-{}", self.euid))
    }

    /// `Ok(None)` when no such user exists.
    pub(crate) fn user(&self, name: &str) -> Result<Option<User>, String> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Some(User {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                home: u.dir,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("cannot look up user `{name}`: {e}")),
        }
    }

    /// `Ok(None)` when no such group exists.
    pub(crate) fn group(&self, name: &str) -> Result<Option<Group>, String> {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Ok(Some(Group {
                name: g.name,
                gid: g.gid.as_raw(),
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("cannot look up group `{name}`: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(euid: u32, xdg: Option<&str>, home: Option<&str>) -> System {
        System {
            euid,
            egid: euid,
            xdg_state_home: xdg.map(Into::into),
            home: home.map(Into::into),
            hostname: "h".into(),
        }
    }

    #[test]
    fn state_dir_rules() {
        let root = sys(0, Some("/x"), Some("/root"));
        assert_eq!(root.default_state_dir(), PathBuf::from("/var/lib/ward"));
        let xdg = sys(1000, Some("/home/a/.state"), Some("/home/a"));
        assert_eq!(
            xdg.default_state_dir(),
            PathBuf::from("/home/a/.state/ward")
        );
        let home = sys(1000, None, Some("/home/a"));
        assert_eq!(
            home.default_state_dir(),
            PathBuf::from("/home/a/.local/state/ward")
        );
        // A relative XDG_STATE_HOME is ignored, as the XDG spec says.
        let rel = sys(1000, Some("rel"), Some("/home/a"));
        assert_eq!(
            rel.default_state_dir(),
            PathBuf::from("/home/a/.local/state/ward")
        );
        let none = sys(1000, None, None);
        assert!(none.default_state_dir().ends_with("ward-1000"));
    }

    #[test]
    fn looks_up_root() {
        let s = System::current();
        let root = s.user("root").unwrap().unwrap();
        assert_eq!(root.uid, 0);
        assert!(s.user("no-such-user-ward-test").unwrap().is_none());
        assert!(s.group("no-such-group-ward-test").unwrap().is_none());
    }
}
