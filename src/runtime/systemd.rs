//! Readiness, reload and stop notices to systemd (`Type=notify-reload`):
//! without `$NOTIFY_SOCKET` (not started by systemd) they do nothing.

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Every listener is bound and the workers run: connections are served.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A reload starts; `ready` ends it. systemd wants the monotonic time with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => tracing::warn!(error = %e, "cannot read the monotonic clock for systemd"),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// An upgrade's successor (`pid`) is the service's main process from now on.
pub fn main_pid(pid: u32) {
    send(&[NotifyState::MainPid(pid), NotifyState::Ready]);
}
