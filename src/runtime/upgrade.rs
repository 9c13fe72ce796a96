//! Zero-downtime binary upgrade (SIGUSR2, or `mtlsgate upgrade`). The running
//! process starts the binary found at its own path, with its own arguments,
//! as nginx does on USR2 (so under systemd the successor stays in the
//! service's cgroup). The successor binds the same ports beside it
//! (SO_REUSEPORT), loads and checks its config, and says "ready" over an
//! inherited pipe. Only then does the old process stop accepting: with
//! `net.ipv4.tcp_migrate_req = 1` the kernel hands the connections still
//! queued on its sockets to the successor's instead of resetting them. The old
//! process then drains and exits. In-memory ticket keys go to the successor
//! over a second pipe, so resumption keeps working. If the successor fails
//! (bad binary, bad config, no "ready" in time), the old one keeps serving.

use crate::tls::tickets::KeySet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const READY_FD: &str = "MTLSGATE_UPGRADE_READY_FD";
const KEYS_FD: &str = "MTLSGATE_UPGRADE_KEYS_FD";
/// How long a successor may take from exec to "ready".
const READY_WITHIN: Duration = Duration::from_secs(30);

/// What a process started by an upgrade got from its predecessor.
#[derive(Default)]
pub struct Successor {
    ready: Option<File>,
    pub keys: Option<KeySet>,
}

/// A pipe whose read end stays here and whose write end a child inherits
/// (or the reverse, with `child_reads`).
fn pipe(child_reads: bool) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (ours, theirs) = if child_reads { (w, r) } else { (r, w) };
    // The child's end must survive exec.
    // SAFETY: fcntl on a descriptor we own; clearing FD_CLOEXEC only.
    if unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&theirs), libc::F_SETFD, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((ours, theirs))
}

/// A started successor, not yet known to be ready.
pub struct Pending {
    child: Child,
    ready: File,
}

/// Starts the successor. `keys`: the in-memory ticket keys to hand over
/// (none when they come from a key file, which the successor reads itself).
pub fn start(keys: Option<&KeySet>) -> Result<Pending, String> {
    let mut args = std::env::args_os();
    args.next();
    let exe = EXE.get().cloned().ok_or("no program path to start")?;
    let (ready_r, ready_w) = pipe(false).map_err(|e| format!("cannot make a pipe: {e}"))?;
    let mut cmd = Command::new(&exe);
    cmd.args(args).stdin(Stdio::null());
    cmd.env(
        READY_FD,
        std::os::fd::AsRawFd::as_raw_fd(&ready_w).to_string(),
    );
    let mut keys_r = None;
    if let Some(k) = keys {
        let (w, r) = pipe(true).map_err(|e| format!("cannot make a pipe: {e}"))?;
        // A few hundred bytes: fits the pipe's buffer before the child reads.
        File::from(w)
            .write_all(k.to_text().as_bytes())
            .map_err(|e| format!("cannot hand over the ticket keys: {e}"))?;
        cmd.env(KEYS_FD, std::os::fd::AsRawFd::as_raw_fd(&r).to_string());
        keys_r = Some(r);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.to_string_lossy()))?;
    // The child has its copies; ours would keep the pipes open.
    drop((ready_w, keys_r));
    Ok(Pending {
        child,
        ready: File::from(ready_r),
    })
}

impl Pending {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for "ready". On failure the successor is stopped (if still
    /// running) and reaped, and the error says what it did.
    pub fn wait(mut self) -> Result<u32, String> {
        let pid = self.child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ready = self.ready;
        std::thread::spawn(move || {
            let mut b = [0u8; 6];
            let _ = tx.send(ready.read_exact(&mut b).is_ok() && &b == b"ready\n");
        });
        let why = match rx.recv_timeout(READY_WITHIN) {
            Ok(true) => return Ok(pid),
            Ok(false) => "exited before it was ready",
            Err(_) => "was not ready in time",
        };
        // SAFETY: kill(2) on the PID of the child we started and have not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let status = self
            .child
            .wait()
            .map_or("unknown".to_string(), |s| s.to_string());
        Err(format!(
            "the new process (pid {pid}) {why} ({status}); see its log lines above"
        ))
    }
}

/// The path this process was started from, made absolute at start (a
/// relative path or a PATH lookup would find another file after a `cd`; the
/// running binary's own inode, /proc/self/exe, is the old one).
static EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn resolve_exe() -> Option<std::path::PathBuf> {
    let arg0 = std::path::PathBuf::from(std::env::args_os().next()?);
    if arg0.components().count() > 1 {
        return Some(std::env::current_dir().ok()?.join(arg0));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(&arg0))
        .find(|p| p.is_file())
}

/// Reads what a predecessor handed over, and forgets the variables so a
/// later upgrade of this process does not pass them on. Call before any
/// thread starts.
pub fn inherited() -> Result<Successor, String> {
    if let Some(p) = resolve_exe() {
        let _ = EXE.set(p);
    }
    let take = |name: &str| -> Result<Option<File>, String> {
        let Some(v) = std::env::var_os(name) else {
            return Ok(None);
        };
        std::env::remove_var(name);
        let fd: i32 = v
            .to_str()
            .and_then(|s| s.parse().ok())
            .filter(|fd| *fd > 2)
            .ok_or_else(|| format!("{name}: not a descriptor number"))?;
        // SAFETY: the predecessor passed this descriptor for us alone to own;
        // it is read or written once, then closed.
        Ok(Some(unsafe { File::from_raw_fd(fd) }))
    };
    let ready = take(READY_FD)?;
    let keys = match take(KEYS_FD)? {
        None => None,
        Some(mut f) => {
            let mut text = String::new();
            f.read_to_string(&mut text)
                .map_err(|e| format!("cannot read the handed-over ticket keys: {e}"))?;
            Some(KeySet::from_text(&text)?)
        }
    };
    Ok(Successor { ready, keys })
}

impl Successor {
    /// Whether a predecessor waits for this process's "ready".
    pub fn is_upgrade(&self) -> bool {
        self.ready.is_some()
    }

    /// Tells the predecessor that every listener is bound and served.
    pub fn announce_ready(&mut self) {
        if let Some(mut f) = self.ready.take() {
            if let Err(e) = f.write_all(b"ready\n") {
                tracing::warn!(error = %e, "cannot tell the old process we are ready");
            }
        }
    }
}
