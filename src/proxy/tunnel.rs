//! SSH VPN tunnels (`ssh -w`, `tun@openssh.com` channels) of a relayed session: the
//! session's [`Tunnels`] record, shared by the relay's two pumps, and the task that
//! checks open tunnels against the alert thresholds.
//!
//! The relay forwards tunnel channels unchanged like any other channel (channel ids,
//! windows and flow control run end to end). What [`Tunnels`] adds is the
//! administrator's side of it, which a plain `sshd` does not give: a per-user policy
//! checked when the client opens the channel, and for every tunnel a log line when it
//! opens and closes (user, mode, unit, duration, bytes each way), periodic records while
//! it is open, one `warn` line when it exceeds the configured duration or volume, and
//! metrics.
//!
//! For almost every packet the cost is one branch on the message number; a
//! `CHANNEL_DATA` costs a scan of the session's (small, usually empty) list of open
//! tunnels and an add. Nothing is allocated and no shared atomic is touched per packet:
//! the process-wide metrics get the byte counts at each tick of
//! [`SessionTunnels::watch`] and when a tunnel closes.

use std::cell::{RefCell, RefMut};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use crate::core::tunnel::Tunnels;
use crate::core::values::{TunnelPolicy, TunnelSettings};
use crate::rt::Notify;

/// How often open tunnels are checked against the alert thresholds and their bytes
/// published, at most (the report interval when it is shorter).
const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The tunnels of one session, shared by the relay's two pumps on one thread.
pub struct SessionTunnels {
    tunnels: RefCell<Tunnels>,
    /// Signalled when a tunnel opens, to wake [`SessionTunnels::watch`].
    opened: Notify,
    report_interval: Duration,
}

impl SessionTunnels {
    /// `policy` is the hook's answer for this user, or else the configuration's default.
    pub fn new(user: impl Into<String>, policy: TunnelPolicy, settings: &TunnelSettings) -> Self {
        SessionTunnels {
            tunnels: RefCell::new(Tunnels::new(user, policy, settings)),
            opened: Notify::default(),
            report_interval: settings.report_interval,
        }
    }

    /// The record, for one message (never held across an await).
    pub fn borrow_mut(&self) -> RefMut<'_, Tunnels> {
        self.tunnels.borrow_mut()
    }

    /// Wakes [`SessionTunnels::watch`] if a tunnel opened.
    pub fn notice_opened(&self) {
        if self.tunnels.borrow_mut().take_opened() {
            self.opened.notify();
        }
    }

    /// Runs beside the relay: while tunnels are open, emits the periodic records, checks
    /// the duration threshold and publishes byte counts. Never returns; the relay drops
    /// it when the session ends.
    pub async fn watch(&self) -> Infallible {
        let tick = self.report_interval.min(CHECK_INTERVAL);
        loop {
            if self.tunnels.borrow().open_count() == 0 {
                let seen = self.opened.generation();
                if self.tunnels.borrow().open_count() == 0 {
                    self.opened.changed_since(seen).await;
                }
                continue;
            }
            crate::rt::sleep(tick).await;
            self.tunnels.borrow_mut().tick(Instant::now());
        }
    }
}

/// The session ended: every tunnel still open is closed now.
impl Drop for SessionTunnels {
    fn drop(&mut self) {
        self.tunnels.get_mut().end(Instant::now());
    }
}
