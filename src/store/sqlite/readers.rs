//! The short-read pool: one thread per core, each owning a reader connection, taking jobs
//! from one queue.
//!
//! Why not `spawn_blocking` for every read: a 20-message page costs ~60 µs of CPU to read and
//! decode, and handing it to tokio's blocking pool cost about as much again on 2 cores (a
//! task allocated and scheduled per read, up to four pool threads taking turns on two cores).
//! Here a thread that finishes a job takes the next one queued without sleeping, and there
//! are only as many threads as cores. Measured with 8 concurrent 20-row pages: 35–40% less
//! CPU per page than `spawn_blocking` (`cargo bench --bench store -- list_20`).
//!
//! Only *short* reads belong here — a key lookup or a page of at most a hundred rows — since
//! with both threads busy a job waits for one of them to finish. Long reads (vector searches,
//! whole file chunk sets, recovery scans, 10,000-row pages) keep using `spawn_blocking` with
//! connections of their own (see `Db::read_long`).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rusqlite::Connection;

/// A read to run on some reader's connection; it reports its own result (and panic).
pub(super) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

pub(super) struct ReadPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<ReadJob>,
    /// Threads waiting on `work`.
    sleeping: usize,
    closed: bool,
}

impl ReadPool {
    /// Starts one thread per connection.
    pub(super) fn start(connections: Vec<Connection>) -> std::io::Result<ReadPool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
        });
        let mut pool = ReadPool {
            shared: shared.clone(),
            threads: Vec::with_capacity(connections.len()),
        };
        for (i, conn) in connections.into_iter().enumerate() {
            let shared = shared.clone();
            // On a spawn failure `pool` is dropped, which stops the threads already started.
            pool.threads.push(
                std::thread::Builder::new()
                    .name(format!("sqlite-reader-{i}"))
                    .spawn(move || shared.serve(&conn))?,
            );
        }
        Ok(pool)
    }

    /// Queues a job. Returns it back if the pool is closed.
    pub(super) fn submit(&self, job: ReadJob) -> Result<(), ReadJob> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(job);
        }
        state.jobs.push_back(job);
        // A busy thread takes the job when it is done without being woken. A sleeping one is
        // woken even then: waiting for a busy thread would save a wake-up at the price of
        // queueing a short read behind a read that may be waiting on the disk (and measured,
        // the saving did not show).
        let wake = state.sleeping > 0;
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(())
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        for thread in self.threads.drain(..) {
            // Jobs already queued are run first (their callers are waiting on them); a panic
            // in a job was caught and reported to that job's caller.
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock, so a poisoned lock can only come from a panic in the
        // queue bookkeeping itself, which leaves the counters as they were.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn serve(&self, conn: &Connection) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                // The job catches its own closure's panic; this one guards the pool thread
                // against a panic in the reporting itself.
                let _ = catch_unwind(AssertUnwindSafe(|| job(conn)));
                state = self.lock();
            } else if state.closed {
                return;
            } else {
                state.sleeping += 1;
                state = self
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                state.sleeping -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn pool(n: usize) -> ReadPool {
        let conns = (0..n)
            .map(|_| Connection::open_in_memory().unwrap())
            .collect();
        ReadPool::start(conns).unwrap()
    }

    #[test]
    fn every_job_runs_once_under_concurrent_submitters() {
        let pool = Arc::new(pool(2));
        let (tx, rx) = mpsc::channel();
        let submitters: Vec<_> = (0..4)
            .map(|s| {
                let (pool, tx) = (pool.clone(), tx.clone());
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let tx = tx.clone();
                        let job: ReadJob = Box::new(move |conn: &Connection| {
                            let v: i64 = conn
                                .query_row("SELECT ?1", [s * 1000 + i], |r| r.get(0))
                                .unwrap();
                            tx.send(v).unwrap();
                        });
                        assert!(pool.submit(job).is_ok());
                    }
                })
            })
            .collect();
        for s in submitters {
            s.join().unwrap();
        }
        drop(tx);
        let mut got: Vec<i64> = rx.iter().collect();
        got.sort_unstable();
        let want: Vec<i64> = (0..4)
            .flat_map(|s| (0..500).map(move |i| s * 1000 + i))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_job_queued_beside_a_running_one_runs_on_a_sleeping_thread() {
        // The first job cannot finish before the second has run: the second must not wait
        // behind it while the other thread sleeps.
        let pool = pool(2);
        let (first_tx, first_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let d1 = done_tx.clone();
        pool.submit(Box::new(move |_: &Connection| {
            first_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            d1.send(1).unwrap();
        }))
        .ok()
        .unwrap();
        // Let the first job start before the second is queued.
        std::thread::sleep(Duration::from_millis(50));
        pool.submit(Box::new(move |_: &Connection| {
            // Reported before the first job is released, so the order below is not a race.
            done_tx.send(2).unwrap();
            first_tx.send(()).unwrap();
        }))
        .ok()
        .unwrap();
        let order: Vec<i32> = (0..2)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(order, vec![2, 1]);
    }

    #[test]
    fn dropping_the_pool_runs_the_jobs_already_queued() {
        let pool = pool(1);
        let (tx, rx) = mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            pool.submit(Box::new(move |_: &Connection| tx.send(i).unwrap()))
                .ok()
                .unwrap();
        }
        drop(pool);
        drop(tx);
        assert_eq!(rx.iter().count(), 100);
    }
}
