//! The interpreter sessions this process holds: one per thread (tenant and thread id),
//! reused by later calls and runs on that thread so variables survive, closed after an
//! idle period, on thread delete, when the cap needs room (least recently used idle one
//! first) and at shutdown. A session that was lost or abandoned mid-execution is replaced
//! by a fresh one, and the caller is told state was reset.
//!
//! About 480 lines of rules; the rest are the registry's unit tests (with a counting
//! executor), kept beside them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::executor::{ExecError, Execution, Executor, InputFile, Session};
use crate::config::InterpreterConfig;

/// A thread's session key: (tenant, thread id).
pub type Key = (String, String);

/// A file the code should find in its data directory: the stored file's id and the name it
/// gets there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub file_id: String,
    pub name: String,
}

/// Loads a stored file's bytes (the engine's store access, given to `execute`).
pub type Loader<'a> =
    &'a (dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>> + Sync);

/// What one execution came to, for the run engine.
#[derive(Debug)]
pub struct Cell {
    pub result: Result<Execution, ExecError>,
    /// The session is not the one the thread had before (it expired, was lost, or this
    /// process never had one while `had_state` said the thread did): variables and files
    /// from earlier calls are gone.
    pub reset: bool,
    /// Where the code saw its files.
    pub data_dir: String,
}

#[derive(Default)]
struct Slot {
    session: Option<Box<dyn Session>>,
    /// Files already in the session's data directory, by file id.
    staged: HashMap<String, String>,
    /// This slot has had a session (a later fresh one is a reset).
    had_session: bool,
    /// An execution started and was never seen to end (its future was dropped: a cancel):
    /// the session's state is unknown, so it is replaced.
    busy: bool,
}

struct Entry {
    slot: Arc<tokio::sync::Mutex<Slot>>,
    last_used: Instant,
}

/// The sessions of this process and the executor that opens them.
pub struct Interpreter {
    config: InterpreterConfig,
    executor: Option<Arc<dyn Executor>>,
    /// Why code cannot run here, when the start-up check said so.
    unavailable: Mutex<Option<String>>,
    sessions: Mutex<HashMap<Key, Entry>>,
    /// Threads whose session this process closed for idleness or room, with when: their
    /// next session is a reset the model must hear of. Bounded (oldest forgotten first).
    gone: Mutex<HashMap<Key, Instant>>,
    /// A session opened ahead of need, and when (`prestart`).
    spare: Arc<Spare>,
    /// Closing sessions outside a request (eviction, abandoned executions): shutdown waits.
    tasks: TaskTracker,
}

impl Interpreter {
    /// `executor` is None when code_interpreter is off, `Err` when the configured one could
    /// not be set up (said in the log here; calls answer the reason).
    pub fn new(
        config: InterpreterConfig,
        executor: Result<Option<Arc<dyn Executor>>, String>,
        tasks: TaskTracker,
    ) -> Interpreter {
        let (executor, unavailable) = match executor {
            Ok(e) => (e, None),
            Err(why) => {
                tracing::error!(reason = %why, "code_interpreter's executor cannot be set up: calls answer this error in their output");
                (None, Some(why))
            }
        };
        Interpreter {
            config,
            executor,
            unavailable: Mutex::new(unavailable),
            sessions: Mutex::new(HashMap::new()),
            gone: Mutex::new(HashMap::new()),
            spare: Arc::default(),
            tasks,
        }
    }

    pub fn config(&self) -> &InterpreterConfig {
        &self.config
    }

    /// Checks the executor once (start-up) and says what it found in the log.
    pub async fn check(&self) {
        let Some(exec) = &self.executor else {
            tracing::info!("code_interpreter is off: calls answer an error in their output");
            return;
        };
        match exec.check().await {
            Ok(()) => {
                tracing::info!(executor = exec.name(), "code_interpreter ready");
                self.set_unavailable(None);
            }
            Err(why) => {
                tracing::warn!(executor = exec.name(), reason = %why,
                    "code_interpreter cannot run code here: calls answer this error in their output");
                self.set_unavailable(Some(why));
            }
        }
    }

    fn set_unavailable(&self, why: Option<String>) {
        if let Ok(mut u) = self.unavailable.lock() {
            *u = why;
        }
    }

    /// The directory the model is told its files are in.
    pub fn data_dir_hint(&self) -> String {
        match &self.config.executor {
            crate::config::ExecutorChoice::Jupyter(j) => format!("{}/<session>", j.data_root),
            _ => "/mnt/data".into(),
        }
    }

    /// Runs `code` in the thread's session (opened, or reopened, as needed), first placing
    /// `files` not yet in it. `had_state`: the thread used the interpreter before (in this
    /// run), so a fresh session is reported as a reset.
    pub async fn execute(
        &self,
        key: &Key,
        files: &[Staged],
        load: Loader<'_>,
        code: &str,
        had_state: bool,
    ) -> Cell {
        let unavailable = |why: String| Cell {
            result: Err(ExecError::Unavailable(why)),
            reset: false,
            data_dir: self.data_dir_hint(),
        };
        let Some(exec) = self.executor.clone() else {
            let why = self.unavailable.lock().ok().and_then(|u| u.clone());
            return unavailable(
                why.unwrap_or_else(|| "code_interpreter is turned off on this proxy".into()),
            );
        };
        let recheck = self.unavailable.lock().ok().and_then(|u| u.clone());
        if recheck.is_some() {
            // The host could not sandbox at start-up; it may since have been fixed.
            self.check().await;
            if let Some(why) = self.unavailable.lock().ok().and_then(|u| u.clone()) {
                return unavailable(why);
            }
        }
        let slot = self.slot(key);
        let mut guard = Busy::lock(slot, self.tasks.clone()).await;
        let mut reset = false;
        if guard.slot().busy {
            // The last execution was abandoned: its session may still be running it.
            guard.discard();
        }
        if guard.slot().session.is_none() {
            reset = guard.slot().had_session || had_state;
            match self.open(&exec).await {
                Ok(s) => {
                    let slot = guard.slot();
                    slot.session = Some(s);
                    slot.had_session = true;
                    slot.staged.clear();
                }
                Err(e) => {
                    return Cell {
                        result: Err(e),
                        reset,
                        data_dir: self.data_dir_hint(),
                    };
                }
            }
        }
        let result = guard.run(files, load, code).await;
        let data_dir = guard
            .slot()
            .session
            .as_ref()
            .map_or_else(|| self.data_dir_hint(), |s| s.data_dir().to_owned());
        if matches!(result, Err(ExecError::Lost(_))) {
            guard.discard();
        }
        self.touch(key);
        Cell {
            result,
            reset,
            data_dir,
        }
    }

    async fn open(&self, exec: &Arc<dyn Executor>) -> Result<Box<dyn Session>, ExecError> {
        if self.config.prestart {
            let ready = self.spare.take();
            self.refill(exec);
            if let Some((s, at)) = ready {
                // A kernel left idle long enough may have been culled by its gateway.
                if at.elapsed() < self.config.idle_timeout / 2 {
                    return Ok(s);
                }
                self.tasks.spawn(s.close());
            }
        }
        // The executor bounds its own start; this is the backstop.
        let limit = self.config.start_timeout + Duration::from_secs(5);
        match tokio::time::timeout(limit, exec.open()).await {
            Ok(r) => r,
            Err(_) => Err(ExecError::Unavailable(format!(
                "starting an interpreter took longer than {} s",
                limit.as_secs()
            ))),
        }
    }

    /// The thread's slot, made if new; makes room under the cap first.
    fn slot(&self, key: &Key) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut evicted = Vec::new();
        let slot = {
            let Ok(mut map) = self.sessions.lock() else {
                return Arc::default();
            };
            if let Some(e) = map.get_mut(key) {
                e.last_used = Instant::now();
                e.slot.clone()
            } else {
                while map.len() >= self.config.max_sessions {
                    // The least recently used session not in use goes.
                    let idle = map
                        .iter()
                        .filter(|(_, e)| e.slot.try_lock().is_ok())
                        .min_by_key(|(_, e)| e.last_used)
                        .map(|(k, _)| k.clone());
                    let Some(k) = idle else { break };
                    if let Some(e) = map.remove(&k) {
                        tracing::info!(thread_id = %k.1, "closing the least recently used interpreter session (max_sessions)");
                        evicted.push((k, e.slot));
                    }
                }
                let slot = Slot {
                    had_session: self.forget_gone(key),
                    ..Slot::default()
                };
                let slot = Arc::new(tokio::sync::Mutex::new(slot));
                map.insert(
                    key.clone(),
                    Entry {
                        slot: slot.clone(),
                        last_used: Instant::now(),
                    },
                );
                slot
            }
        };
        for (k, s) in evicted {
            self.mark_gone(k);
            self.close_later(s);
        }
        slot
    }

    /// Remembers that `key`'s session was closed behind its thread's back.
    fn mark_gone(&self, key: Key) {
        if let Ok(mut gone) = self.gone.lock() {
            let cap = self.config.max_sessions.saturating_mul(16).max(1024);
            if gone.len() >= cap
                && let Some(oldest) = gone.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
            {
                gone.remove(&oldest);
            }
            gone.insert(key, Instant::now());
        }
    }

    /// Whether `key`'s last session was closed behind its thread's back (and forgets it).
    fn forget_gone(&self, key: &Key) -> bool {
        self.gone.lock().is_ok_and(|mut g| g.remove(key).is_some())
    }

    fn touch(&self, key: &Key) {
        if let Ok(mut map) = self.sessions.lock()
            && let Some(e) = map.get_mut(key)
        {
            e.last_used = Instant::now();
        }
    }

    /// Closes a slot's session in the background (tracked: shutdown waits).
    fn close_later(&self, slot: Arc<tokio::sync::Mutex<Slot>>) {
        self.tasks.spawn(async move {
            let session = slot.lock().await.session.take();
            if let Some(s) = session {
                s.close().await;
            }
        });
    }

    /// Closes the thread's session (thread deleted). Waits for an execution in progress
    /// no longer than the execution timeout; past that the close happens in the background.
    pub async fn close(&self, key: &Key) {
        let removed = self.sessions.lock().ok().and_then(|mut m| m.remove(key));
        if let Some(e) = removed {
            let wait = self.config.limits.timeout + Duration::from_secs(5);
            match tokio::time::timeout(wait, e.slot.clone().lock_owned()).await {
                Ok(mut slot) => {
                    if let Some(s) = slot.session.take() {
                        s.close().await;
                    }
                }
                Err(_) => self.close_later(e.slot),
            }
        }
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.sessions.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the sessions idle longer than `idle_timeout`.
    pub fn close_idle(&self) {
        let idle = self.config.idle_timeout;
        let expired: Vec<(Key, Arc<tokio::sync::Mutex<Slot>>)> = match self.sessions.lock() {
            Ok(mut map) => {
                let keys: Vec<Key> = map
                    .iter()
                    .filter(|(_, e)| e.last_used.elapsed() >= idle && e.slot.try_lock().is_ok())
                    .map(|(k, _)| k.clone())
                    .collect();
                keys.into_iter()
                    .filter_map(|k| map.remove(&k).map(|e| (k, e.slot)))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        for (k, s) in expired {
            self.mark_gone(k);
            self.close_later(s);
        }
    }

    /// Closes idle sessions every so often until `stop` fires (a daemon of the server).
    pub async fn reap(self: Arc<Self>, stop: CancellationToken) {
        let every =
            (self.config.idle_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => self.close_idle(),
            }
        }
    }

    /// Starts the spare session in the background, unless one is ready or on its way.
    fn refill(&self, exec: &Arc<dyn Executor>) {
        if self.spare.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let (spare, exec) = (self.spare.clone(), exec.clone());
        let limit = self.config.start_timeout + Duration::from_secs(5);
        self.tasks.spawn(async move {
            let opened = tokio::time::timeout(limit, exec.open()).await;
            let leftover = match opened {
                Ok(Ok(s)) => spare.put(s),
                _ => None,
            };
            spare.filling.store(false, Ordering::Release);
            if let Some(s) = leftover {
                s.close().await;
            }
        });
    }

    /// Closes every session (shutdown, after runs have stopped).
    pub async fn close_all(&self) {
        self.spare.closed.store(true, Ordering::Release);
        if let Some((s, _)) = self.spare.take() {
            s.close().await;
        }
        let all: Vec<Entry> = match self.sessions.lock() {
            Ok(mut map) => map.drain().map(|(_, e)| e).collect(),
            Err(_) => Vec::new(),
        };
        let closes = all.into_iter().map(|e| async move {
            if let Ok(mut slot) = e.slot.try_lock_owned()
                && let Some(s) = slot.session.take()
            {
                s.close().await;
            }
        });
        futures_util::future::join_all(closes).await;
    }
}

/// The session kept ready for the next thread.
#[derive(Default)]
struct Spare {
    ready: Mutex<Option<(Box<dyn Session>, Instant)>>,
    filling: AtomicBool,
    /// Shutdown: a session opened now is closed, not kept.
    closed: AtomicBool,
}

impl Spare {
    fn take(&self) -> Option<(Box<dyn Session>, Instant)> {
        self.ready.lock().ok().and_then(|mut r| r.take())
    }

    /// Keeps `s` ready; gives it back when it cannot be kept (one is ready, or shutdown).
    fn put(&self, s: Box<dyn Session>) -> Option<Box<dyn Session>> {
        if self.closed.load(Ordering::Acquire) {
            return Some(s);
        }
        match self.ready.lock() {
            Ok(mut r) if r.is_none() => {
                *r = Some((s, Instant::now()));
                None
            }
            _ => Some(s),
        }
    }
}

/// A locked slot, marked busy while an execution runs: if the execution's future is
/// dropped (a cancel), the guard's drop closes the session at once, so the abandoned code
/// stops now rather than when the thread is next used.
struct Busy {
    guard: OwnedMutexGuard<Slot>,
    tasks: TaskTracker,
}

impl Busy {
    async fn lock(slot: Arc<tokio::sync::Mutex<Slot>>, tasks: TaskTracker) -> Busy {
        Busy {
            guard: slot.lock_owned().await,
            tasks,
        }
    }

    fn slot(&mut self) -> &mut Slot {
        &mut self.guard
    }

    /// Closes the session (its state is not to be trusted) in the background.
    fn discard(&mut self) {
        let slot = &mut *self.guard;
        slot.busy = false;
        slot.staged.clear();
        if let Some(s) = slot.session.take() {
            self.tasks.spawn(s.close());
        }
    }

    async fn run(
        &mut self,
        files: &[Staged],
        load: Loader<'_>,
        code: &str,
    ) -> Result<Execution, ExecError> {
        self.guard.busy = true;
        let mut missing = Vec::new();
        for f in files {
            if self.guard.staged.contains_key(&f.file_id) {
                continue;
            }
            match load(f.file_id.clone()).await {
                Ok(bytes) => missing.push((
                    f.file_id.clone(),
                    InputFile {
                        name: f.name.clone(),
                        bytes,
                    },
                )),
                Err(e) => {
                    tracing::warn!(file_id = %f.file_id, error = %e, "a code_interpreter file could not be loaded");
                }
            }
        }
        let slot = &mut *self.guard;
        let Some(session) = slot.session.as_mut() else {
            return Err(ExecError::Lost("no session".into()));
        };
        if !missing.is_empty() {
            let inputs: Vec<InputFile> = missing.iter().map(|(_, f)| f.clone()).collect();
            session.put_files(&inputs).await?;
            for (id, f) in missing {
                slot.staged.insert(id, f.name);
            }
        }
        let result = session.execute(code).await;
        slot.busy = false;
        result
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.guard.busy {
            self.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::config::ExecutorChoice;
    use crate::interpreter::Output;

    /// Counts opens and closes; a cell `sleep` never ends, `lose` loses the session, any
    /// other cell echoes itself with the files the session holds.
    #[derive(Default)]
    struct Counting {
        opened: AtomicUsize,
        closed: Arc<AtomicUsize>,
    }

    struct CountingSession {
        closed: Arc<AtomicUsize>,
        files: Vec<String>,
    }

    #[async_trait]
    impl Executor for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn check(&self) -> Result<(), String> {
            Ok(())
        }
        async fn open(&self) -> Result<Box<dyn Session>, ExecError> {
            self.opened.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(CountingSession {
                closed: self.closed.clone(),
                files: Vec::new(),
            }))
        }
    }

    #[async_trait]
    impl Session for CountingSession {
        fn data_dir(&self) -> &str {
            "/mnt/data"
        }
        async fn put_files(&mut self, files: &[InputFile]) -> Result<(), ExecError> {
            self.files.extend(files.iter().map(|f| f.name.clone()));
            Ok(())
        }
        async fn execute(&mut self, code: &str) -> Result<Execution, ExecError> {
            match code {
                "sleep" => std::future::pending().await,
                "lose" => Err(ExecError::Lost("killed".into())),
                _ => Ok(Execution {
                    outputs: vec![Output::Logs(format!("{code} {:?}", self.files))],
                    ..Execution::default()
                }),
            }
        }
        async fn close(self: Box<Self>) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn interpreter(max_sessions: usize) -> (Arc<Interpreter>, Arc<Counting>, TaskTracker) {
        let exec = Arc::new(Counting::default());
        let tasks = TaskTracker::new();
        let config = InterpreterConfig {
            executor: ExecutorChoice::Off,
            max_sessions,
            prestart: false,
            ..InterpreterConfig::default()
        };
        let i = Interpreter::new(
            config,
            Ok(Some(exec.clone() as Arc<dyn Executor>)),
            tasks.clone(),
        );
        (Arc::new(i), exec, tasks)
    }

    fn key(t: &str) -> Key {
        ("tenant".into(), t.into())
    }

    fn no_load(id: String) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>> {
        Box::pin(async move { Ok(Bytes::from(id)) })
    }

    async fn run(i: &Interpreter, t: &str, code: &str, had_state: bool) -> Cell {
        let files = [Staged {
            file_id: "file-1".into(),
            name: "a.csv".into(),
        }];
        i.execute(&key(t), &files, &no_load, code, had_state).await
    }

    fn logs(c: &Cell) -> String {
        match &c.result {
            Ok(e) => match &e.outputs[0] {
                Output::Logs(l) => l.clone(),
                Output::Image(_) => String::new(),
            },
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn a_thread_keeps_its_session_and_files_are_placed_once() {
        let (i, exec, _) = interpreter(8);
        let a = run(&i, "t1", "one", false).await;
        let b = run(&i, "t1", "two", true).await;
        assert_eq!(logs(&a), "one [\"a.csv\"]");
        assert_eq!(logs(&b), "two [\"a.csv\"]");
        assert!(!a.reset && !b.reset);
        assert_eq!(exec.opened.load(Ordering::SeqCst), 1);
        // Another thread gets its own session.
        run(&i, "t2", "x", false).await;
        assert_eq!(exec.opened.load(Ordering::SeqCst), 2);
        assert_eq!(i.len(), 2);
        // A fresh session on a thread that used one in this run is a reset.
        i.close(&key("t1")).await;
        assert_eq!(exec.closed.load(Ordering::SeqCst), 1);
        assert!(run(&i, "t1", "again", true).await.reset);
    }

    #[tokio::test]
    async fn a_lost_session_is_replaced_and_reported_as_reset() {
        let (i, exec, tasks) = interpreter(8);
        run(&i, "t", "one", false).await;
        let lost = run(&i, "t", "lose", true).await;
        assert!(matches!(lost.result, Err(ExecError::Lost(_))));
        let next = run(&i, "t", "two", true).await;
        assert!(next.reset);
        assert_eq!(logs(&next), "two [\"a.csv\"]", "files are placed again");
        assert_eq!(exec.opened.load(Ordering::SeqCst), 2);
        tasks.close();
        tasks.wait().await;
        assert_eq!(exec.closed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_abandoned_execution_closes_its_session_at_once() {
        let (i, exec, tasks) = interpreter(8);
        let cut =
            tokio::time::timeout(Duration::from_millis(50), run(&i, "t", "sleep", false)).await;
        assert!(cut.is_err());
        tasks.close();
        tasks.wait().await;
        assert_eq!(
            exec.closed.load(Ordering::SeqCst),
            1,
            "closed on drop, not later"
        );
        let next = run(&i, "t", "after", true).await;
        assert!(next.reset);
        assert_eq!(exec.opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_cap_evicts_the_least_recently_used_and_idle_ones_expire() {
        let (i, exec, tasks) = interpreter(2);
        run(&i, "a", "1", false).await;
        run(&i, "b", "1", false).await;
        run(&i, "a", "2", false).await;
        run(&i, "c", "1", false).await;
        assert_eq!(i.len(), 2);
        // b was the least recently used: a kept its session; b's next one is a reset.
        run(&i, "a", "3", false).await;
        assert_eq!(exec.opened.load(Ordering::SeqCst), 3);
        assert!(run(&i, "b", "2", false).await.reset);
        i.close_all().await;
        assert!(i.is_empty());
        tasks.close();
        tasks.wait().await;
        assert_eq!(exec.closed.load(Ordering::SeqCst), 4);

        let (i, exec, tasks) = interpreter(8);
        let mut cfg = i.config().clone();
        cfg.idle_timeout = Duration::from_millis(1);
        let i = Interpreter::new(
            cfg,
            Ok(Some(exec.clone() as Arc<dyn Executor>)),
            tasks.clone(),
        );
        run(&i, "a", "1", false).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        i.close_idle();
        assert!(i.is_empty());
        // The thread's next session, in a later run, is a reset the model hears of.
        assert!(run(&i, "a", "2", false).await.reset);
        assert!(!run(&i, "a", "3", false).await.reset);
        i.close_all().await;
        tasks.close();
        tasks.wait().await;
        assert_eq!(exec.closed.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_spare_session_waits_for_the_next_thread_once_code_has_run() {
        let exec = Arc::new(Counting::default());
        let tasks = TaskTracker::new();
        let i = Interpreter::new(
            InterpreterConfig::default(),
            Ok(Some(exec.clone() as Arc<dyn Executor>)),
            tasks.clone(),
        );
        assert_eq!(
            exec.opened.load(Ordering::SeqCst),
            0,
            "nothing before code runs"
        );
        run(&i, "t1", "1", false).await;
        let spare_ready = || async {
            for _ in 0..200 {
                if i.spare.ready.lock().unwrap().is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("no spare session");
        };
        spare_ready().await;
        assert_eq!(exec.opened.load(Ordering::SeqCst), 2);
        // The next thread takes the spare (no open on its path) and a new spare follows.
        run(&i, "t2", "1", false).await;
        spare_ready().await;
        assert_eq!(exec.opened.load(Ordering::SeqCst), 3);
        assert_eq!(i.len(), 2);
        i.close_all().await;
        tasks.close();
        tasks.wait().await;
        assert_eq!(
            exec.closed.load(Ordering::SeqCst),
            3,
            "the spare is closed too"
        );
    }

    #[tokio::test]
    async fn no_executor_answers_unavailable() {
        let i = Interpreter::new(InterpreterConfig::default(), Ok(None), TaskTracker::new());
        let c = run(&i, "t", "print(1)", false).await;
        assert!(matches!(c.result, Err(ExecError::Unavailable(_))));
        assert_eq!(c.data_dir, "/mnt/data");
    }
}
