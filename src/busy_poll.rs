//! Busy polling (`server.busy_poll_us`): while requests keep arriving, the event loop polls
//! its sockets without sleeping, so a packet is picked up without waking a halted core.
//!
//! Why: on a virtual machine an idle vCPU halts, and waking it for the next packet costs far
//! more than handling the packet (on the 2-core rig, 150–250 µs per request for any proxy,
//! a byte relay included: README, Latency). A proxy wakes its core twice per request (the
//! request arrives; the upstream's answer arrives). HAProxy's `busy-polling` answers the
//! same problem by never sleeping; here the loop polls only for a window after the last
//! request and then sleeps as usual, so an idle proxy costs nothing. The price is the core:
//! under steady traffic the worker thread stays at 100 % CPU. It is for a proxy pinned to
//! cores of its own, and needs the single-threaded runtime (`server.worker_threads = 1`),
//! where one polling task keeps the only event loop turning.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The polling task and the request counter that keeps it polling.
#[derive(Debug)]
pub struct BusyPoll {
    window: Duration,
    /// Requests seen; the poller compares it between turns.
    requests: AtomicU64,
    /// The poller is waiting for a request instead of polling.
    parked: AtomicBool,
    wake: Notify,
    /// Turns polled and times parked, so tests can tell polling from sleeping.
    turns: AtomicU64,
    parks: AtomicU64,
}

impl BusyPoll {
    pub fn new(window: Duration) -> BusyPoll {
        BusyPoll {
            window,
            requests: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            wake: Notify::new(),
            turns: AtomicU64::new(0),
            parks: AtomicU64::new(0),
        }
    }

    /// A request arrived: keep polling for another window (and resume, if parked).
    pub fn touch(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.parked.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Whether the poller is waiting for a request.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// How many turns it has polled, and how many times it has parked.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.turns.load(Ordering::Relaxed),
            self.parks.load(Ordering::Relaxed),
        )
    }

    /// Polls until `stop`: each turn yields to the runtime, which then checks its sockets
    /// without blocking (a yielded task makes the scheduler poll its I/O driver with a zero
    /// timeout) and runs whatever became ready. After a window without requests, it parks
    /// until the next one.
    pub async fn run(&self, stop: CancellationToken) {
        let mut seen = self.requests.load(Ordering::SeqCst);
        let mut quiet_since = Instant::now();
        while !stop.is_cancelled() {
            let now = self.requests.load(Ordering::SeqCst);
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= self.window {
                self.parked.store(true, Ordering::SeqCst);
                self.parks.fetch_add(1, Ordering::Relaxed);
                // A request counted after `now` was read but before `parked` was set found
                // the flag clear and notified no one: look once more before waiting.
                if self.requests.load(Ordering::SeqCst) == seen {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = stop.cancelled() => return,
                    }
                }
                self.parked.store(false, Ordering::SeqCst);
                seen = self.requests.load(Ordering::SeqCst);
                quiet_since = Instant::now();
            }
            self.turns.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A poller with this window, running on the test's thread.
    fn start(
        window: Duration,
    ) -> (
        Arc<BusyPoll>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let poll = Arc::new(BusyPoll::new(window));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (poll, stop) = (poll.clone(), stop.clone());
            async move { poll.run(stop).await }
        });
        (poll, stop, task)
    }

    async fn wait_until(what: impl Fn() -> bool) {
        for _ in 0..1000 {
            if what() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached in 5 s");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn polls_while_requests_arrive_then_parks_and_resumes() {
        // A wide window, so a slow test machine's late timer is not taken for quiet.
        let (poll, stop, task) = start(Duration::from_millis(500));
        // Requests every 5 ms, inside the window: it polls turn after turn and never parks.
        for _ in 0..20 {
            poll.touch();
            let (turns, _) = poll.counts();
            tokio::time::sleep(Duration::from_millis(5)).await;
            let (later, parks) = poll.counts();
            assert!(later > turns + 1, "not polling: {turns} -> {later} turns");
            assert_eq!(parks, 0, "parked while requests kept arriving");
        }
        // Quiet for longer than the window: it parks, and stops turning.
        wait_until(|| poll.is_parked()).await;
        let (turns, parks) = poll.counts();
        assert_eq!(parks, 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(poll.counts().0, turns, "turning while parked");
        // The next request resumes it.
        poll.touch();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!poll.is_parked());
        assert!(poll.counts().0 > turns + 1);
        wait_until(|| poll.is_parked()).await;
        assert_eq!(poll.counts().1, 2);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the poller stops when cancelled while parked")
            .unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_poller_lets_other_tasks_run_and_stops_while_polling() {
        let (poll, stop, task) = start(Duration::from_secs(3600));
        poll.touch();
        // On a single thread, timers and other tasks still make progress beside it.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(()).unwrap();
        });
        tokio::time::timeout(Duration::from_secs(1), rx)
            .await
            .expect("a timer fired beside the poller")
            .unwrap();
        assert!(!poll.is_parked());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the poller stops when cancelled while polling")
            .unwrap();
    }
}
