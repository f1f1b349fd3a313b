//! Runtime helpers: the only glommio the layers above the I/O layer need. Sessions,
//! hooks and the relay wait, time out and run blocking work through these, so that
//! they name no executor themselves.
//!
//! Everything here must be called on a shard (a glommio executor thread).

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::task::{Poll, Waker};
use std::time::Duration;

use rand_core::RngCore;

/// The time limit of [`timeout`] passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// Runs `fut` for at most `dur`. Must be called on a shard.
pub async fn timeout<F: Future>(dur: Duration, fut: F) -> Result<F::Output, Elapsed> {
    futures_lite::future::or(async { Ok(fut.await) }, async {
        sleep(dur).await;
        Err(Elapsed)
    })
    .await
}

/// Waits `dur` without blocking the shard. Must be called on a shard.
pub async fn sleep(dur: Duration) {
    glommio::timer::sleep(dur).await
}

/// Runs blocking work (a synchronous client library, a file read, DNS) on the shard's
/// helper threads and awaits its result; the shard's event loop goes on meanwhile.
/// Must be called on a shard.
pub fn run_blocking<F, R>(work: F) -> impl Future<Output = R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(work)
}

/// 32 bytes from the operating system's generator: the seed of one transport's
/// random numbers (padding, cookies, ephemeral keys).
pub fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut s);
    s
}

/// Tells one session that the shutdown grace period is over. Each session has its own, so
/// that waiting on it costs the session's hot path one flag check per wake-up, whatever
/// the number of sessions.
#[derive(Default)]
pub struct StopSignal {
    stopped: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl StopSignal {
    pub fn stop(&self) {
        self.stopped.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    #[cfg(test)]
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Resolves once [`StopSignal::stop`] was called.
    pub async fn stopped(&self) {
        std::future::poll_fn(|cx| {
            if self.stopped.get() {
                return Poll::Ready(());
            }
            let waker = match self.waker.take() {
                Some(w) if w.will_wake(cx.waker()) => w,
                _ => cx.waker().clone(),
            };
            self.waker.set(Some(waker));
            Poll::Pending
        })
        .await
    }
}

/// A change signal for single-threaded tasks: waiters see a generation number move.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Resolves once the generation differs from `seen`.
    pub async fn changed_since(&self, seen: u64) {
        poll_fn(|cx| {
            if self.generation.get() != seen {
                Poll::Ready(())
            } else {
                let mut w = self.waiters.borrow_mut();
                if !w.iter().any(|x| x.will_wake(cx.waker())) {
                    w.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

/// Runs `test` on a fresh glommio executor, as code runs on a shard (tests only).
#[cfg(test)]
pub(crate) fn on_shard<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("a glommio executor")
        .run(test());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_and_blocking_helpers_on_a_shard() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            assert_eq!(
                timeout(Duration::from_millis(10), sleep(Duration::from_secs(5))).await,
                Err(Elapsed)
            );
            assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
            let thread = run_blocking(|| std::thread::current().id()).await;
            assert_ne!(
                thread,
                std::thread::current().id(),
                "ran off the shard thread"
            );
        });
    }
}
