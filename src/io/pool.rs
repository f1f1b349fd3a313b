//! Per-shard pool of fixed-size relay buffers with a hard memory cap.
//!
//! The relay decrypts and re-encrypts packets in place in these buffers, so once the
//! pool is warm a session allocates nothing per packet. The cap bounds the relay memory
//! of a shard whatever the number of sessions: when every buffer is lent out,
//! [`BufferPool::acquire`] waits (first come, first served) until one comes back, which
//! turns memory pressure into backpressure instead of an out-of-memory kill.
//!
//! A shard is single-threaded, so the pool is plain `Rc`/`RefCell` with no atomics.
//! Buffers are not zeroed between users: a session must only read bytes it wrote.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Size of a relay buffer: the largest packet we accept (256 KiB, the transport's cap in
/// `sshr_protocol::packet`) plus headroom for the length field, padding and MAC/tag of the other leg.
pub const RELAY_BUFFER_SIZE: usize = 256 * 1024 + 1024;

/// A byte budget for the receive buffers of unauthenticated connections, per shard.
///
/// Before authentication a connection reads into a small inline buffer of its own; only
/// a packet larger than that (a big certificate, a post-quantum key exchange) grows it,
/// and that growth is charged here. When the budget is spent, such a packet is refused
/// and its connection closed with a reason, so that connections which announce big
/// packets and then stall cannot hold more than the cap together. Shard-local: plain
/// cells.
#[derive(Clone, Debug)]
pub struct HandshakeBudget {
    inner: Rc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    cap: usize,
    used: Cell<usize>,
}

impl HandshakeBudget {
    pub fn new(cap: usize) -> Self {
        HandshakeBudget {
            inner: Rc::new(BudgetInner {
                cap,
                used: Cell::new(0),
            }),
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.inner.used.get()
    }

    /// Charge `n` bytes if they fit.
    pub fn try_charge(&self, n: usize) -> bool {
        let used = self.inner.used.get();
        if used + n > self.inner.cap {
            return false;
        }
        self.inner.used.set(used + n);
        true
    }

    pub fn refund(&self, n: usize) {
        let used = &self.inner.used;
        used.set(used.get().saturating_sub(n));
    }
}

/// A pool of equally sized buffers, at most `capacity()` of them alive at once.
///
/// Cloning gives another handle to the same pool.
#[derive(Clone)]
pub struct BufferPool {
    inner: Rc<Inner>,
}

struct Inner {
    buf_size: usize,
    max_buffers: usize,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// Buffers returned and ready for reuse.
    free: Vec<Box<[u8]>>,
    /// Buffers currently lent out (owned by a `PooledBuf` or parked in a waiter slot).
    lent: usize,
    /// Tasks waiting for a buffer, oldest first.
    waiters: VecDeque<Rc<WaiterSlot>>,
}

/// Where a released buffer is handed to a waiting `acquire`.
#[derive(Default)]
struct WaiterSlot {
    buf: Cell<Option<Box<[u8]>>>,
    waker: Cell<Option<Waker>>,
}

/// Point-in-time figures of a pool, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    pub buffer_size: usize,
    pub capacity: usize,
    /// Buffers lent out right now.
    pub in_use: usize,
    /// Buffers allocated so far (in use or idle); never exceeds `capacity`.
    pub allocated: usize,
    /// Tasks waiting in `acquire`.
    pub waiters: usize,
}

impl BufferPool {
    /// A pool of buffers of `buf_size` bytes using at most `cap_bytes` bytes in total.
    ///
    /// The cap is rounded down to a whole number of buffers, with a minimum of one.
    /// Buffers are allocated lazily, the first time they are needed.
    pub fn new(buf_size: usize, cap_bytes: usize) -> Self {
        assert!(buf_size > 0, "buffer size must be positive");
        let max_buffers = (cap_bytes / buf_size).max(1);
        BufferPool {
            inner: Rc::new(Inner {
                buf_size,
                max_buffers,
                state: RefCell::new(State::default()),
            }),
        }
    }

    #[cfg(test)]
    pub fn buffer_size(&self) -> usize {
        self.inner.buf_size
    }

    /// How many buffers may be alive at once.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.inner.max_buffers
    }

    pub fn stats(&self) -> PoolStats {
        let st = self.inner.state.borrow();
        PoolStats {
            buffer_size: self.inner.buf_size,
            capacity: self.inner.max_buffers,
            in_use: st.lent,
            allocated: st.lent + st.free.len(),
            waiters: st.waiters.len(),
        }
    }

    /// A buffer now, or `None` if the cap is reached or other tasks are already
    /// waiting (a try never jumps the queue).
    #[cfg(test)]
    pub fn try_acquire(&self) -> Option<PooledBuf> {
        let buf = self.inner.take_buffer()?;
        Some(PooledBuf::new(self.inner.clone(), buf))
    }

    /// A buffer, waiting in FIFO order while the cap is reached.
    ///
    /// Cancel-safe: dropping the future gives up its place in the queue, and a buffer
    /// handed to it in the meantime goes to the next waiter.
    pub fn acquire(&self) -> Acquire {
        Acquire {
            inner: self.inner.clone(),
            slot: None,
        }
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Inner {
    /// A free or newly allocated buffer, if the queue is empty and the cap allows.
    fn take_buffer(&self) -> Option<Box<[u8]>> {
        let mut st = self.state.borrow_mut();
        if !st.waiters.is_empty() {
            return None;
        }
        let buf = match st.free.pop() {
            Some(buf) => buf,
            None if st.lent < self.max_buffers => vec![0u8; self.buf_size].into_boxed_slice(),
            None => return None,
        };
        st.lent += 1;
        Some(buf)
    }

    /// Give a buffer back: to the oldest waiter if there is one (it stays lent), else to
    /// the free list.
    fn release(&self, buf: Box<[u8]>) {
        let waker = {
            let mut st = self.state.borrow_mut();
            match st.waiters.pop_front() {
                Some(slot) => {
                    slot.buf.set(Some(buf));
                    slot.waker.take()
                }
                None => {
                    st.lent -= 1;
                    st.free.push(buf);
                    None
                }
            }
        };
        // Wake outside the borrow: a waker may poll synchronously in some executors.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Future returned by [`BufferPool::acquire`].
pub struct Acquire {
    inner: Rc<Inner>,
    /// Our place in the queue once we had to wait.
    slot: Option<Rc<WaiterSlot>>,
}

impl Future for Acquire {
    type Output = PooledBuf;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<PooledBuf> {
        let this = &mut *self;
        match &this.slot {
            Some(slot) => {
                if let Some(buf) = slot.buf.take() {
                    this.slot = None;
                    return Poll::Ready(PooledBuf::new(this.inner.clone(), buf));
                }
                slot.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
            None => {
                if let Some(buf) = this.inner.take_buffer() {
                    return Poll::Ready(PooledBuf::new(this.inner.clone(), buf));
                }
                let slot = Rc::new(WaiterSlot::default());
                slot.waker.set(Some(cx.waker().clone()));
                this.inner
                    .state
                    .borrow_mut()
                    .waiters
                    .push_back(slot.clone());
                this.slot = Some(slot);
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        match slot.buf.take() {
            // Handed a buffer but never polled again: pass it on.
            Some(buf) => self.inner.release(buf),
            None => self
                .inner
                .state
                .borrow_mut()
                .waiters
                .retain(|w| !Rc::ptr_eq(w, &slot)),
        }
    }
}

/// A buffer lent by a [`BufferPool`]; goes back to the pool when dropped.
pub struct PooledBuf {
    pool: Rc<Inner>,
    buf: Option<Box<[u8]>>,
}

impl PooledBuf {
    fn new(pool: Rc<Inner>, buf: Box<[u8]>) -> Self {
        PooledBuf {
            pool,
            buf: Some(buf),
        }
    }
}

impl Deref for PooledBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.buf.as_deref().expect("buffer present until drop")
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().expect("buffer present until drop")
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.release(buf);
        }
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuf")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{self, FutureExt};

    fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        future::block_on(future::poll_once(fut)).map_or(Poll::Pending, Poll::Ready)
    }

    #[test]
    fn cap_is_enforced() {
        let pool = BufferPool::new(1024, 3 * 1024 + 500);
        assert_eq!(pool.capacity(), 3);
        let held: Vec<_> = (0..3)
            .map(|_| pool.try_acquire().expect("under cap"))
            .collect();
        assert!(
            pool.try_acquire().is_none(),
            "fourth buffer must be refused"
        );
        let mut waiting = pool.acquire();
        assert!(poll_once(&mut waiting).is_pending());
        let st = pool.stats();
        assert_eq!((st.in_use, st.allocated, st.waiters), (3, 3, 1));
        assert!(held.iter().all(|b| b.len() == 1024));
    }

    #[test]
    fn cap_smaller_than_a_buffer_still_gives_one() {
        let pool = BufferPool::new(4096, 10);
        assert_eq!(pool.capacity(), 1);
        let _a = pool.try_acquire().unwrap();
        assert!(pool.try_acquire().is_none());
    }

    #[test]
    fn waiter_is_woken_on_release_in_fifo_order() {
        let pool = BufferPool::new(64, 64);
        let held = pool.try_acquire().unwrap();
        let mut first = pool.acquire();
        let mut second = pool.acquire();
        assert!(poll_once(&mut first).is_pending());
        assert!(poll_once(&mut second).is_pending());

        let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waker = waker_fn(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(first.poll(&mut cx).is_pending());

        drop(held);
        assert!(
            woken.load(std::sync::atomic::Ordering::SeqCst),
            "release wakes the waiter"
        );
        // A try may not jump the queue while someone waits... and the buffer went to
        // `first`, so nothing is free anyway.
        assert!(pool.try_acquire().is_none());
        assert!(
            poll_once(&mut second).is_pending(),
            "second waits behind first"
        );
        let got = match poll_once(&mut first) {
            Poll::Ready(b) => b,
            Poll::Pending => panic!("first waiter must get the released buffer"),
        };
        drop(got);
        assert!(poll_once(&mut second).is_ready());
        assert_eq!(pool.stats().in_use, 0);
    }

    #[test]
    fn try_acquire_does_not_jump_the_queue() {
        let pool = BufferPool::new(64, 128);
        let a = pool.try_acquire().unwrap();
        let b = pool.try_acquire().unwrap();
        let mut waiting = pool.acquire();
        assert!(poll_once(&mut waiting).is_pending());
        drop(a);
        // The released buffer belongs to the waiter now.
        assert!(pool.try_acquire().is_none());
        assert!(poll_once(&mut waiting).is_ready());
        drop(b);
        assert!(pool.try_acquire().is_some());
    }

    #[test]
    fn buffers_are_reused_not_reallocated() {
        let pool = BufferPool::new(256, 256 * 4);
        let mut a = pool.try_acquire().unwrap();
        a[0] = 0xAB;
        let ptr = a.as_ptr();
        drop(a);
        let b = pool.try_acquire().unwrap();
        assert_eq!(b.as_ptr(), ptr, "the same allocation comes back");
        assert_eq!(b[0], 0xAB);
        assert_eq!(pool.stats().allocated, 1, "no second allocation once warm");
    }

    #[test]
    fn dropped_waiter_leaves_the_queue_and_passes_its_buffer_on() {
        let pool = BufferPool::new(64, 64);
        let held = pool.try_acquire().unwrap();

        // Cancelled while queued: removed from the queue.
        let mut gone = pool.acquire();
        assert!(poll_once(&mut gone).is_pending());
        drop(gone);
        assert_eq!(pool.stats().waiters, 0);

        // Cancelled after being handed a buffer: the buffer goes to the next waiter.
        let mut first = pool.acquire();
        let mut second = pool.acquire();
        assert!(poll_once(&mut first).is_pending());
        assert!(poll_once(&mut second).is_pending());
        drop(held);
        drop(first);
        assert!(poll_once(&mut second).is_ready());
        assert_eq!(pool.stats().in_use, 0);
        assert_eq!(pool.stats().allocated, 1);
    }

    #[test]
    fn acquire_is_immediate_under_cap() {
        let pool = BufferPool::new(32, 1024);
        let buf = future::block_on(pool.acquire());
        assert_eq!(buf.len(), 32);
        assert_eq!(pool.stats().in_use, 1);
    }

    fn waker_fn(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Waker {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Waker::from(std::sync::Arc::new(Flag(flag)))
    }
}
