//! Starting one child: `clone(CLONE_VM | CLONE_VFORK)`, as glibc's
//! `posix_spawn` does, plus the two things `posix_spawn` cannot do
//! (`PR_SET_PDEATHSIG` and dropping to another user).
//!
//! Why not `fork`: a fork copies ward's page tables and marks every page
//! copy-on-write, so the child's `exec` then tears the copy down and ward's
//! own threads take a page fault on the next write to each page. With 1,000
//! programs that was a third of the cost of a spawn; with `CLONE_VM` the
//! child borrows ward's memory until it execs, and ward (only the calling
//! thread) waits for that, which the spawn did anyway to learn whether the
//! exec worked.
//!
//! The rules that make sharing memory safe, all kept by [`spawn`]:
//! - everything the child needs (paths, argv, envp, descriptors, ids) is
//!   prepared before the clone; the child allocates nothing, takes no lock and
//!   makes only plain system calls;
//! - every signal is blocked in the calling thread across the clone, and the
//!   child resets every handled signal to its default before unblocking, so
//!   no ward signal handler ever runs on the child's side of the memory;
//! - the child reports a failure by writing into the shared `Prepared` (the
//!   step and errno) and `_exit`s; the parent reads it after the clone
//!   returns, which with `CLONE_VFORK` is after the child exec'd or exited.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::OnceLock;

use crate::reaper::Creds;

/// The open-file limit programs get, `(soft, hard)`: what ward itself was
/// given, set once ward raised its own soft limit ([`raise_nofile_limit`]).
static CHILD_NOFILE: OnceLock<(libc::rlim_t, libc::rlim_t)> = OnceLock::new();

/// Raise ward's soft limit on open descriptors to its hard limit, as
/// systemd expects of services that need many (its default soft limit is
/// 1,024): each program costs ward two or three descriptors (its log pipes,
/// its stat file), so 1,000 programs need more than 1,024. Programs still
/// get the limits ward was started with: some use `select`, which breaks
/// above 1,024. Returns `(old soft, new soft)` when the limit changed.
pub fn raise_nofile_limit() -> io::Result<Option<(u64, u64)>> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= lim.rlim_max {
        return Ok(None);
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads `raised`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let _ = CHILD_NOFILE.set((lim.rlim_cur, lim.rlim_max));
    Ok(Some((lim.rlim_cur, lim.rlim_max)))
}

/// What to start.
pub struct Spec<'a> {
    pub argv: &'a [String],
    /// The child's whole environment.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: &'a Path,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// Kept open across exec under its own number (close-on-exec cleared).
    pub keep: Option<RawFd>,
    pub creds: Option<&'a Creds>,
}

/// The step of the child's setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum Step {
    None = 0,
    Session,
    Descriptors,
    Directory,
    Credentials,
    DeathSignal,
    Exec,
}

/// Everything the child reads, prepared by the parent; `failed`/`errno` are
/// written by the child.
struct Prepared {
    path: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    keep: Option<RawFd>,
    ids: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    /// The open-file limit to restore before exec, when ward raised its own.
    nofile: Option<libc::rlimit>,
    parent: libc::pid_t,
    failed: Step,
    errno: i32,
}

const STACK: usize = 64 * 1024;

/// Start `spec` in a new session; returns the child's pid once it has exec'd.
///
/// Must be called from the long-lived process thread: `PR_SET_PDEATHSIG`
/// fires when the thread that created the child exits.
pub fn spawn(spec: &Spec) -> io::Result<i32> {
    let program = spec.argv.first().map(String::as_str).unwrap_or_default();
    let path_var = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let path = resolve(program, path_var, spec.cwd)?;
    let argv = spec
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes(), "an argument"))
        .collect::<io::Result<Vec<_>>>()?;
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstring(&kv, "an environment variable")
        })
        .collect::<io::Result<Vec<_>>>()?;
    let null_terminated = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(ptr::null()))
            .collect::<Vec<_>>()
    };
    let mut prepared = Prepared {
        path: cstring(path.as_os_str().as_bytes(), "the program path")?,
        argv: null_terminated(&argv),
        envp: null_terminated(&envp),
        cwd: cstring(spec.cwd.as_os_str().as_bytes(), "`cwd`")?,
        stdin: spec.stdin,
        stdout: spec.stdout,
        stderr: spec.stderr,
        keep: spec.keep,
        ids: spec.creds.map(|c| (c.uid, c.gid, c.groups.clone())),
        nofile: CHILD_NOFILE.get().map(|&(soft, hard)| libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        }),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        failed: Step::None,
        errno: 0,
    };
    let mut stack = vec![0u8; STACK];
    // SAFETY: see the module comment. `stack`, `prepared`, `argv` and `envp`
    // outlive the child's use of them: with CLONE_VFORK, clone returns only
    // after the child has exec'd (its own memory from then on) or exited.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(STACK);
        let top = top.sub(top as usize % 16);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            ptr::addr_of_mut!(prepared).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    // SAFETY: the child is done with `prepared` (exec'd or exited).
    let (failed, errno) = unsafe {
        (
            ptr::read_volatile(ptr::addr_of!(prepared.failed)),
            ptr::read_volatile(ptr::addr_of!(prepared.errno)),
        )
    };
    if failed == Step::None {
        return Ok(pid);
    }
    // The child has exited: reap it here, so it is never taken for a run.
    let mut status = 0;
    // SAFETY: waitpid on our own exited child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let err = io::Error::from_raw_os_error(errno);
    let what = match failed {
        Step::Session => "cannot start a new session (setsid)".to_string(),
        Step::Descriptors => "cannot set up stdin/stdout/stderr".to_string(),
        Step::Directory => format!("cannot change to directory `{}`", spec.cwd.display()),
        Step::Credentials => "cannot switch to the program's user and group".to_string(),
        Step::DeathSignal => "cannot set the parent-death signal".to_string(),
        Step::Exec | Step::None => return Err(err),
    };
    Err(io::Error::new(err.kind(), format!("{what}: {err}")))
}

fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Find `program` as `execvp` would, but before the clone (the child must not
/// allocate): a name with a `/` is used as it is (relative to `cwd`, where
/// the child will be), otherwise the first executable file of that name in
/// `PATH` (the child's, else a default). Relative `PATH` entries are taken
/// from `cwd`.
fn resolve(program: &str, path_var: Option<&OsStr>, cwd: &Path) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the command is empty",
        ));
    }
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path_var = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut denied = None;
    for dir in path_var.as_bytes().split(|&b| b == b':') {
        let dir = Path::new(OsStr::from_bytes(if dir.is_empty() { b"." } else { dir }));
        let candidate = if dir.is_absolute() {
            dir.join(program)
        } else {
            cwd.join(dir).join(program)
        };
        match candidate.metadata() {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(candidate),
            Ok(m) if m.is_file() => denied = Some(candidate),
            _ => {}
        }
    }
    match denied {
        Some(p) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("`{}` is not executable", p.display()),
        )),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no `{program}` in PATH"),
        )),
    }
}

/// The child's side: plain system calls on prepared data, then exec.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Prepared`, alive and not touched by the
    // parent (suspended by CLONE_VFORK) until this function execs or exits.
    unsafe {
        let p = &mut *arg.cast::<Prepared>();
        let fail = |p: &mut Prepared, step: Step| -> ! {
            p.errno = *libc::__errno_location();
            p.failed = step;
            libc::_exit(127)
        };
        // Handlers are ward's and must not run here; SIGPIPE is ignored by
        // the Rust runtime and children expect its default.
        for sig in 1..libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, ptr::null(), &mut old) == 0
                && (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN
                    || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
        if libc::setsid() < 0 {
            fail(p, Step::Session);
        }
        if libc::dup2(p.stdin, 0) < 0 || libc::dup2(p.stdout, 1) < 0 || libc::dup2(p.stderr, 2) < 0
        {
            fail(p, Step::Descriptors);
        }
        if let Some(fd) = p.keep {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                fail(p, Step::Descriptors);
            }
        }
        if libc::chdir(p.cwd.as_ptr()) < 0 {
            fail(p, Step::Directory);
        }
        if let Some(lim) = &p.nofile {
            // Lowering a soft limit cannot fail; a failure would only leave
            // the program with more descriptors than it was given.
            libc::setrlimit(libc::RLIMIT_NOFILE, lim);
        }
        if let Some((uid, gid, groups)) = &p.ids {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(*gid) != 0
                || libc::setuid(*uid) != 0
            {
                fail(p, Step::Credentials);
            }
        }
        // After setuid: a credential change clears the death signal.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(p, Step::DeathSignal);
        }
        if libc::getppid() != p.parent {
            // ward died between the clone and the prctl.
            libc::_exit(1);
        }
        libc::execve(p.path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        fail(p, Step::Exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_follows_path_like_execvp() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let path = OsString::from(format!("/nonexistent:{}", bin.display()));
        // Not executable yet: refused, naming the file.
        let e = resolve("tool", Some(&path), dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve("tool", Some(&path), dir.path()).unwrap(), tool);
        // Relative PATH entries are taken from cwd.
        assert_eq!(
            resolve("tool", Some(OsStr::new("bin")), dir.path()).unwrap(),
            dir.path().join("bin").join("tool")
        );
        let e = resolve("nope", Some(&path), dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            resolve("./x/y", None, dir.path()).unwrap(),
            PathBuf::from("./x/y")
        );
        assert_eq!(
            resolve("sh", None, dir.path())
                .unwrap()
                .file_name()
                .unwrap(),
            "sh"
        );
    }
}
