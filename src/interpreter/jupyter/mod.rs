//! The `jupyter` executor: each session is a kernel on a Jupyter Kernel Gateway or
//! Enterprise Gateway, started, fed and deleted through the gateway's REST calls and the
//! kernel's WebSocket channels (messaging protocol 5.3).
//!
//! **Isolation is the gateway deployment's job, not ours.** On a plain Kernel Gateway every
//! kernel is an ordinary process running unsandboxed as the gateway's user, on the gateway's
//! filesystem and network: a cell can read anything that user can, reach any address, and
//! see other sessions' directories (each session is *told* only of its own,
//! `{data_root}/{session id}`, but nothing stops it from looking next door). Use a plain
//! Kernel Gateway only where the code it runs is trusted, or where the whole gateway sits
//! in a throwaway sandbox. For untrusted code run Enterprise Gateway with a container per
//! kernel (Kubernetes or Docker process proxies): the container is then the sandbox, the
//! network policy the firewall, and `data_root` can be `/mnt/data`.
//!
//! What we do limit, from inside the kernel (a set-up cell before any user code): RLIMIT_AS
//! (`memory_bytes`), RLIMIT_CPU (`cpu_seconds`, for the kernel's life: past it the kernel
//! dies and the session is lost), soft and hard, and RLIMIT_FSIZE (`file_bytes` soft; its
//! hard limit lets input files up to 512 MiB in, see `python::setup`). A kernel running as
//! root could raise them back. What we cannot limit here: RLIMIT_NPROC counts
//! every process of the gateway's *user*, so it would cap the gateway and all kernels
//! together (and root ignores it), and the network needs a namespace or a firewall, which a
//! process cannot impose on itself after the fact. `max_processes` and `disk_bytes` are
//! therefore not applied by this executor; the deployment must (cgroups, container limits,
//! a quota on `data_root`).
//!
//! Files go in and out through the kernel (KG has no contents API): input files as base64
//! in execute requests, output files by listing the data directory (name, size, mtime)
//! after each cell, comparing with the previous listing and reading changed files back in
//! a hidden cell. The listing rides on the cell's own request as a `user_expression` (each
//! request costs ~50 ms on KG 3.0.1 whatever it does); a cell that failed gets none, and a
//! hidden listing cell follows it instead. A cell past `limits.timeout` is interrupted (REST); if the kernel does not come back
//! within `INTERRUPT_GRACE` it is deleted and the session lost.

mod files;
mod gateway;
mod messages;
mod python;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::task::TaskTracker;

use self::gateway::{CallError, Channels, Gateway};
use self::messages::{Collector, Incoming, execute_request};
use crate::config::JupyterExecutor;
use crate::interpreter::executor::{
    ExecError, ExecLimits, Execution, Executor, InputFile, Session,
};

/// How long an interrupted cell may take to stop before its kernel is deleted.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);
/// Closing a session (removing its directory, deleting its kernel) takes at most this.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Our own cells (listings, file transfers) are given at least this long.
const HIDDEN_TIMEOUT: Duration = Duration::from_secs(30);
/// With no message at all for this long, ask the gateway whether the kernel still exists
/// (a kernel deleted behind our back does not always close the channels).
const PROBE_AFTER: Duration = Duration::from_secs(3);

/// The name of the user expression that lists the data directory after a user's cell.
const LISTING: &str = "__ap_listing";

/// Kernels on a Jupyter gateway (see the module header for what isolates them).
pub struct Jupyter {
    cfg: JupyterExecutor,
    limits: ExecLimits,
    start_timeout: Duration,
    gateway: Arc<Gateway>,
    /// Clean-ups of sessions dropped without `close`.
    cleanups: TaskTracker,
}

impl Jupyter {
    /// Reads the token from `cfg.token_env` (an error when named but unset).
    pub fn new(
        cfg: JupyterExecutor,
        limits: ExecLimits,
        start_timeout: Duration,
    ) -> Result<Jupyter, String> {
        let token = match &cfg.token_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(t) if !t.is_empty() => Some(t),
                _ => {
                    return Err(format!(
                        "code_interpreter.jupyter.token_env names {var}, which is not set"
                    ));
                }
            },
        };
        let gateway = Gateway::new(&cfg.url, token, start_timeout.max(Duration::from_secs(1)))?;
        Ok(Jupyter {
            cfg,
            limits,
            start_timeout,
            gateway: Arc::new(gateway),
            cleanups: TaskTracker::new(),
        })
    }

    /// Waits (at most `within`) for the clean-ups of sessions dropped without `close`.
    pub async fn wait_cleanups(&self, within: Duration) {
        self.cleanups.close();
        let _ = tokio::time::timeout(within, self.cleanups.wait()).await;
        self.cleanups.reopen();
    }

    /// `open`, with the concrete type (its kernel id).
    pub async fn open_session(&self) -> Result<JupyterSession, ExecError> {
        let base = self.gateway.base().to_owned();
        let work = async {
            let kernel = self
                .gateway
                .start_kernel(&self.cfg.kernel_name)
                .await
                .map_err(|e| unavailable(&base, "cannot start a kernel", e))?;
            let session = crate::ids::new_id("ci_");
            let data_dir = format!("{}/{session}", self.cfg.data_root.trim_end_matches('/'));
            // From here on, dropping `s` (a failure, or the timeout below) deletes the kernel.
            let mut s = JupyterSession {
                gateway: self.gateway.clone(),
                limits: self.limits.clone(),
                kernel,
                session,
                data_dir,
                ws: None,
                known: HashMap::new(),
                cleanups: self.cleanups.clone(),
                done: None,
            };
            s.ws = Some(
                self.gateway
                    .channels(&s.kernel, &s.session)
                    .await
                    .map_err(|e| unavailable(&base, "cannot open the kernel's channels", e))?,
            );
            let col = s
                .hidden(&python::setup(&s.data_dir, &s.limits))
                .await
                .map_err(|e| ExecError::Unavailable(format!("setting the kernel up: {e}")))?;
            if col.error {
                return Err(ExecError::Unavailable(format!(
                    "setting the kernel up ({}) failed: {}",
                    s.data_dir,
                    col.error_text.unwrap_or_default()
                )));
            }
            Ok(s)
        };
        match tokio::time::timeout(self.start_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ExecError::Unavailable(format!(
                "the Jupyter gateway at {base} gave no ready kernel within {} s",
                self.start_timeout.as_secs_f32()
            ))),
        }
    }
}

fn unavailable(base: &str, what: &str, e: CallError) -> ExecError {
    ExecError::Unavailable(match e {
        CallError::Unreachable(m) => format!("the Jupyter gateway at {base} is unreachable: {m}"),
        CallError::Refused(m) => format!(
            "{what}: {m} (the token comes from the variable named by code_interpreter.jupyter.token_env)"
        ),
        e => format!("{what} on the Jupyter gateway at {base}: {e}"),
    })
}

#[async_trait]
impl Executor for Jupyter {
    fn name(&self) -> &'static str {
        "jupyter"
    }

    async fn check(&self) -> Result<(), String> {
        let base = self.gateway.base();
        self.gateway.check().await.map_err(|e| match e {
            CallError::Unreachable(m) => {
                format!("the Jupyter gateway at {base} is unreachable: {m}")
            }
            e => format!("the Jupyter gateway at {base}: {e}"),
        })
    }

    async fn open(&self) -> Result<Box<dyn Session>, ExecError> {
        Ok(Box::new(self.open_session().await?))
    }
}

/// One kernel, its channels, and the last listing of its data directory.
pub struct JupyterSession {
    gateway: Arc<Gateway>,
    limits: ExecLimits,
    kernel: String,
    /// The Jupyter session id of our messages, also the data directory's name.
    session: String,
    data_dir: String,
    ws: Option<Channels>,
    /// path → (size, mtime ns) at the last listing.
    known: HashMap<String, (u64, i64)>,
    cleanups: TaskTracker,
    /// Set once the kernel is deleted (closed, or lost: then why).
    done: Option<String>,
}

/// What a cell's wait ended with.
enum Waited {
    Done,
    TimedOut,
}

impl JupyterSession {
    /// The gateway's id of this session's kernel.
    pub fn kernel_id(&self) -> &str {
        &self.kernel
    }

    /// Sends one execute request, reconnecting once if the channels were closed meanwhile
    /// (an idle WebSocket may be dropped by a proxy in between; the kernel lives on).
    async fn send(&mut self, text: String) -> Result<(), ExecError> {
        if let Some(ws) = &mut self.ws {
            // Frames left from earlier cells (and pings, which this answers) go first.
            loop {
                match ws.next().now_or_never() {
                    Some(Some(Ok(_))) => continue,
                    Some(None | Some(Err(_))) => {
                        self.ws = None;
                        break;
                    }
                    None => break,
                }
            }
        }
        for attempt in 0..2 {
            if self.ws.is_none() {
                self.ws = Some(
                    self.gateway
                        .channels(&self.kernel, &self.session)
                        .await
                        .map_err(|e| match e {
                            CallError::NotFound => ExecError::Lost(
                                "the kernel is gone (deleted, culled, or the gateway restarted)"
                                    .into(),
                            ),
                            e => {
                                ExecError::Lost(format!("cannot reach the kernel's channels: {e}"))
                            }
                        })?,
                );
            }
            let Some(ws) = &mut self.ws else { continue };
            match ws.send(Message::text(text.clone())).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 1 => {
                    return Err(ExecError::Lost(format!(
                        "the kernel's channels failed: {e}"
                    )));
                }
                Err(_) => self.ws = None,
            }
        }
        Err(ExecError::Lost("the kernel's channels failed".into()))
    }

    /// Reads the channels into `col` until the request is done or `until`.
    async fn wait(
        &mut self,
        msg_id: &str,
        col: &mut Collector,
        until: Instant,
    ) -> Result<Waited, ExecError> {
        let mut probe_at = Instant::now() + PROBE_AFTER;
        loop {
            if col.done() {
                return Ok(Waited::Done);
            }
            let Some(ws) = &mut self.ws else {
                return Err(ExecError::Lost("the kernel's channels are closed".into()));
            };
            let next = tokio::time::timeout_at(until.min(probe_at), ws.next()).await;
            let frame = match next {
                Err(_) if Instant::now() >= until => return Ok(Waited::TimedOut),
                Err(_) => {
                    probe_at = Instant::now() + PROBE_AFTER;
                    let probe = self.gateway.kernel(&self.kernel);
                    if let Ok(Err(CallError::NotFound)) =
                        tokio::time::timeout(PROBE_AFTER, probe).await
                    {
                        return Err(ExecError::Lost(
                            "the kernel is gone (deleted, culled, or the gateway restarted)".into(),
                        ));
                    }
                    continue;
                }
                Ok(None) => {
                    self.ws = None;
                    return Err(ExecError::Lost(
                        "the gateway closed the kernel's channels".into(),
                    ));
                }
                Ok(Some(Err(e))) => {
                    self.ws = None;
                    return Err(ExecError::Lost(format!(
                        "the kernel's channels failed: {e}"
                    )));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            probe_at = Instant::now() + PROBE_AFTER;
            match frame {
                Message::Text(text) => {
                    if let Some(msg) = Incoming::parse(&text) {
                        col.take(&msg, msg_id);
                    }
                }
                Message::Close(_) => {
                    self.ws = None;
                    return Err(ExecError::Lost(
                        "the gateway closed the kernel's channels".into(),
                    ));
                }
                _ => {}
            }
        }
    }

    /// Runs a cell; past `timeout` interrupts it and gives it `INTERRUPT_GRACE` to stop.
    /// Answers the collector and whether the timeout struck.
    async fn run(
        &mut self,
        code: &str,
        user: bool,
        cap: usize,
        timeout: Duration,
    ) -> Result<(Collector, bool), ExecError> {
        let msg_id = crate::ids::new_body();
        let listing = user.then(|| python::listing_expr(&self.data_dir));
        let expressions: Vec<(&str, &str)> = listing
            .as_deref()
            .map(|l| vec![(LISTING, l)])
            .unwrap_or_default();
        self.send(execute_request(
            &msg_id,
            &self.session,
            code,
            user,
            &expressions,
        ))
        .await?;
        let mut col = Collector::new(cap);
        let timed_out = match self
            .wait(&msg_id, &mut col, Instant::now() + timeout)
            .await?
        {
            Waited::Done => false,
            Waited::TimedOut => {
                match self.gateway.interrupt(&self.kernel).await {
                    Ok(()) => {}
                    Err(CallError::NotFound) => {
                        return Err(ExecError::Lost("the kernel is gone".into()));
                    }
                    Err(e) => {
                        return Err(ExecError::Lost(format!(
                            "the cell ran past its time limit and could not be interrupted: {e}"
                        )));
                    }
                }
                let grace = Instant::now() + INTERRUPT_GRACE;
                if let Waited::TimedOut = self.wait(&msg_id, &mut col, grace).await? {
                    return Err(ExecError::Lost(format!(
                        "the cell ran past its time limit of {} s and did not stop when interrupted; the kernel was deleted",
                        timeout.as_secs_f32()
                    )));
                }
                true
            }
        };
        if col.died {
            return Err(ExecError::Lost(
                "the kernel died (out of memory, past its CPU time limit, or crashed); its state is gone"
                    .into(),
            ));
        }
        Ok((col, timed_out))
    }

    /// One of our own cells, uncapped; a timeout loses the session.
    pub(super) async fn hidden(&mut self, code: &str) -> Result<Collector, ExecError> {
        let timeout = self.limits.timeout.max(HIDDEN_TIMEOUT);
        let (col, timed_out) = self.run(code, false, 0, timeout).await?;
        if timed_out {
            return Err(ExecError::Lost(
                "the kernel did not answer the executor's own cell in time".into(),
            ));
        }
        Ok(col)
    }

    async fn execute_inner(&mut self, code: &str) -> Result<Execution, ExecError> {
        let timeout = self.limits.timeout;
        let (mut col, timed_out) = self
            .run(code, true, self.limits.output_bytes, timeout)
            .await?;
        if timed_out {
            col.error = true;
            col.note(&format!(
                "TimeoutError: the execution exceeded its time limit of {} s and was interrupted (variables are kept)",
                timeout.as_secs_f32()
            ));
        }
        let listed = col.expression(LISTING).and_then(python::listing_from_repr);
        let (outputs, error) = col.finish();
        let files = self.changed_files(listed).await?;
        Ok(Execution {
            outputs,
            files,
            error,
        })
    }

    /// After a loss: delete the kernel (bounded) and answer the same error from now on.
    async fn lose(&mut self, e: ExecError) -> ExecError {
        if let ExecError::Lost(why) = &e {
            tracing::warn!(kernel = %self.kernel, why = %why, "jupyter session lost");
            self.done = Some(why.clone());
            let closing = self.closing();
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing.run(false)).await;
        }
        e
    }

    fn closing(&mut self) -> Closing {
        Closing {
            gateway: self.gateway.clone(),
            kernel: self.kernel.clone(),
            session: self.session.clone(),
            data_dir: self.data_dir.clone(),
            ws: self.ws.take(),
        }
    }

    fn check_open(&self) -> Result<(), ExecError> {
        match &self.done {
            Some(why) => Err(ExecError::Lost(why.clone())),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Session for JupyterSession {
    fn data_dir(&self) -> &str {
        &self.data_dir
    }

    async fn put_files(&mut self, files: &[InputFile]) -> Result<(), ExecError> {
        self.check_open()?;
        match self.put_inner(files).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.lose(e).await),
        }
    }

    async fn execute(&mut self, code: &str) -> Result<Execution, ExecError> {
        self.check_open()?;
        match self.execute_inner(code).await {
            Ok(x) => Ok(x),
            Err(e) => Err(self.lose(e).await),
        }
    }

    async fn close(mut self: Box<Self>) {
        if self.done.is_some() {
            return;
        }
        self.done = Some("the session was closed".into());
        let closing = self.closing();
        if tokio::time::timeout(CLOSE_TIMEOUT, closing.run(true))
            .await
            .is_err()
        {
            tracing::warn!(kernel = %self.kernel, "closing a jupyter session timed out");
        }
    }
}

impl Drop for JupyterSession {
    /// A session dropped without `close` (a cancelled run, a failed open) still deletes its
    /// kernel: the clean-up is spawned, bounded, and tracked by the executor.
    fn drop(&mut self) {
        if self.done.is_some() {
            return;
        }
        let closing = self.closing();
        let kernel = self.kernel.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                self.cleanups.spawn_on(
                    async move {
                        if tokio::time::timeout(CLOSE_TIMEOUT, closing.run(true))
                            .await
                            .is_err()
                        {
                            tracing::warn!(kernel = %kernel, "cleaning up a dropped jupyter session timed out");
                        }
                    },
                    &handle,
                );
            }
            Err(_) => {
                tracing::warn!(kernel = %self.kernel, "a jupyter session was dropped outside a runtime; its kernel is left to the gateway's culling");
            }
        }
    }
}

/// What ending a session needs, apart from the session.
struct Closing {
    gateway: Arc<Gateway>,
    kernel: String,
    session: String,
    data_dir: String,
    ws: Option<Channels>,
}

impl Closing {
    /// Removes the data directory (when `tidy` and the kernel still answers) and deletes the
    /// kernel. Failures are logged.
    async fn run(self, tidy: bool) {
        if tidy && let Some(mut ws) = self.ws {
            let msg_id = crate::ids::new_body();
            let req = execute_request(
                &msg_id,
                &self.session,
                &python::cleanup(&self.data_dir),
                false,
                &[],
            );
            if ws.send(Message::text(req)).await.is_ok() {
                let mut col = Collector::new(0);
                let until = Instant::now() + CLOSE_TIMEOUT / 2;
                while !col.done() {
                    match tokio::time::timeout_at(until, ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => {
                            if let Some(m) = Incoming::parse(&t) {
                                col.take(&m, &msg_id);
                            }
                        }
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
            }
            let _ = ws.close(None).await;
        }
        if let Err(e) = self.gateway.delete_kernel(&self.kernel).await {
            tracing::warn!(kernel = %self.kernel, error = %e, "deleting a jupyter kernel failed");
        }
    }
}
