//! Shutdown signalling shared by the listener and the HTTP/1 relay: a cheap watch over a
//! cancellation token, polled on every wake-up of a connection's task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Watches a cancellation token from a future that is polled far more often than the token
/// changes: every wake-up of a connection's task, several per request.
///
/// Why not `select!` on `token.cancelled()`: that polls the token's future on every wake-up,
/// and each poll takes the token's mutex and checks its notification; with two tokens per
/// connection that was about 2% of a forwarded request's CPU. Here the token's future gets a
/// waker of its own, and is polled only after that waker fired; a wake-up for anything else
/// costs one atomic load.
pub(crate) struct CancelWatch {
    /// The token fired and this watch has seen it (it stays so).
    seen: bool,
    signal: Arc<WatchSignal>,
    /// A waker that marks `signal` before it wakes the task.
    own_waker: Waker,
    /// The task's waker last handed to `signal` (it rarely changes).
    task: Option<Waker>,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
}

struct WatchSignal {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for WatchSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl CancelWatch {
    pub(crate) fn new(token: CancellationToken) -> CancelWatch {
        let signal = Arc::new(WatchSignal {
            // Set, so the first poll registers with the token.
            fired: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        CancelWatch {
            seen: false,
            own_waker: Waker::from(signal.clone()),
            signal,
            task: None,
            wait: Box::pin(token.cancelled_owned()),
        }
    }

    pub(crate) fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.seen {
            return Poll::Ready(());
        }
        if !self.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let waker = cx.waker().clone();
            *self
                .signal
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
            self.task = Some(waker);
        }
        if self.check() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether the token has fired, without registering the current task: one atomic load
    /// unless the token's own waker fired since the last look.
    pub(crate) fn check(&mut self) -> bool {
        if !self.seen
            && self.signal.fired.load(Ordering::Relaxed)
            && self.signal.fired.swap(false, Ordering::Acquire)
        {
            self.seen = self
                .wait
                .as_mut()
                .poll(&mut Context::from_waker(&self.own_waker))
                .is_ready();
        }
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_sees_the_token_fire_and_stays_fired() {
        let token = CancellationToken::new();
        let mut watch = CancelWatch::new(token.clone());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(watch.poll_cancelled(&mut cx).is_pending());
        assert!(!watch.check());
        token.cancel();
        assert!(watch.check());
        assert!(watch.poll_cancelled(&mut cx).is_ready());
        assert!(watch.check());
    }

    #[test]
    fn a_watch_made_after_the_token_fired_sees_it_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        let mut watch = CancelWatch::new(token);
        assert!(watch.check());
    }
}
