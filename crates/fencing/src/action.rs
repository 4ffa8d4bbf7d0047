//! The failure actions (libvirt's `<on_lockfailure>`) and what each one does here.

use std::fmt;

/// What to do with a VM whose locks are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `default`, `poweroff` and `restart`: SIGTERM, then SIGKILL after the grace period.
    /// `restart` cannot be honoured safely (the locks are gone, so a restart could not take
    /// them back), so it stops the VM like `poweroff`, as sanlock refuses it outright.
    Poweroff,
    /// `pause`: suspend through libvirt; if that fails, escalate as `Poweroff`.
    Pause,
    /// `ignore`: leave the VM running. Only honoured where the configuration allows it;
    /// otherwise treated as `Poweroff`.
    Ignore,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Poweroff => "poweroff",
            Action::Pause => "pause",
            Action::Ignore => "ignore",
        })
    }
}
