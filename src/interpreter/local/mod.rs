//! The `local` code_interpreter executor: one bubblewrap sandbox per session, holding a
//! Python driver (driver.py) that runs cells and speaks a framed protocol (`frame`) on its
//! stdin/stdout. The driver interrupts a cell at the wall-clock limit; this side keeps a
//! hard watchdog (limit + grace) that kills the sandbox when the driver does not come back.
//!
//! The sandbox (`sandbox`): no network, its own pids, a read-only /usr and Python, private
//! size-bounded /tmp and /mnt/data, rlimits set by the driver before any user code runs, and
//! the configured unprivileged uid when the proxy runs as root. Without a working sandbox it
//! fails closed (`ExecError::Unavailable`) unless `allow_unsandboxed` is set.

mod frame;
mod sandbox;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::OnceCell;

use self::frame::{Bounds, Reply, Request};
use super::executor::{
    ExecError, ExecLimits, Execution, Executor, InputFile, Output, OutputFile, Session,
};
use crate::config::LocalExecutor;

/// How long past `limits.timeout` the driver has to report a timed-out cell (and collect
/// its figures and files) before the sandbox is killed.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long `close` waits for the driver to leave before killing it.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Finds the packages without importing them: every proxy start runs this check (tests
/// start hundreds), and a sandbox that can start Python and see them is what it must show.
const CHECK_CODE: &str = "import importlib.util as u, sys; missing = [m for m in ('numpy', 'pandas', 'matplotlib') if u.find_spec(m) is None]; sys.exit('missing: ' + ', '.join(missing) if missing else 0)";
/// Bytes of the interpreter's own stderr (bwrap's errors, a Python crash) kept for messages.
const STDERR_KEEP: usize = 4096;

/// Starts sandboxed Python sessions.
pub struct Local {
    cfg: LocalExecutor,
    limits: ExecLimits,
    start_timeout: Duration,
    /// Set once a sandbox has been seen to start (not cached when it fails: the operator
    /// may fix the host while the proxy runs).
    sandbox_ok: OnceCell<()>,
}

impl Local {
    pub fn new(cfg: LocalExecutor, limits: ExecLimits, start_timeout: Duration) -> Local {
        Local {
            cfg,
            limits,
            start_timeout,
            sandbox_ok: OnceCell::new(),
        }
    }

    /// Whether a sandboxed Python starts here (cached once it did).
    async fn sandbox_works(&self) -> Result<(), String> {
        self.sandbox_ok
            .get_or_try_init(|| async {
                let bwrap = sandbox::find_bwrap(&self.cfg.bwrap)?;
                let cmd = sandbox::sandboxed(&bwrap, &self.cfg, &self.limits, "pass", None)?;
                sandbox::probe(cmd, self.start_timeout).await
            })
            .await
            .map(|_| ())
    }

    /// Starts the driver, sandboxed or (when allowed and needed) not, and waits for it to be
    /// ready.
    async fn start(&self) -> Result<LocalSession, String> {
        let unsandboxed = match self.sandbox_works().await {
            Ok(()) => None,
            Err(why) if self.cfg.allow_unsandboxed => {
                tracing::warn!(reason = %why, "code_interpreter: no working sandbox; running code WITHOUT one (allow_unsandboxed = true)");
                Some(why)
            }
            Err(why) => return Err(why),
        };
        let (cmd, dir, data_dir) = match unsandboxed {
            None => {
                let bwrap = sandbox::find_bwrap(&self.cfg.bwrap)?;
                let args = sandbox::session_args(sandbox::DATA_DIR, &self.limits, true);
                let cmd = sandbox::sandboxed(
                    &bwrap,
                    &self.cfg,
                    &self.limits,
                    sandbox::DRIVER,
                    Some(&args),
                )?;
                (cmd, None, sandbox::DATA_DIR.to_string())
            }
            Some(_) => {
                let dir = unsandboxed_dir(&self.cfg)?;
                let data = dir.path().join("data");
                let data_dir = data.to_string_lossy().into_owned();
                let args = sandbox::session_args(&data_dir, &self.limits, false);
                let cmd = sandbox::unsandboxed(&self.cfg, dir.path(), sandbox::DRIVER, Some(&args));
                (cmd, Some(dir), data_dir)
            }
        };
        let mut child = sandbox::spawn(cmd)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the interpreter's pipes are missing".into());
        };
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(keep_tail(stderr, stderr_tail.clone()));
        let mut s = LocalSession {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            stderr_tail,
            limits: self.limits.clone(),
            data_dir,
            lost: None,
            busy: false,
            _dir: dir,
        };
        match s.receive().await {
            Ok((r, _)) if r.op == "ready" => Ok(s),
            Ok((r, _)) => Err(format!("protocol error: {:?} before ready", r.op)),
            Err(e) => Err(s.bury(&e).await),
        }
    }
}

/// A private working directory for an unsandboxed session, owned by the uid it runs as.
fn unsandboxed_dir(cfg: &LocalExecutor) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("assistants-proxy-ci-")
        .tempdir()
        .map_err(|e| format!("could not make a session directory: {e}"))?;
    for sub in ["data", "home"] {
        let p = dir.path().join(sub);
        std::fs::create_dir(&p).map_err(|e| format!("could not make {}: {e}", p.display()))?;
    }
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        for p in [
            dir.path().to_path_buf(),
            dir.path().join("data"),
            dir.path().join("home"),
        ] {
            std::os::unix::fs::chown(&p, Some(cfg.uid), Some(cfg.gid))
                .map_err(|e| format!("could not hand {} to uid {}: {e}", p.display(), cfg.uid))?;
        }
    }
    Ok(dir)
}

async fn keep_tail(mut from: tokio::process::ChildStderr, into: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        if let Ok(mut t) = into.lock() {
            t.extend_from_slice(&buf[..n]);
            let excess = t.len().saturating_sub(STDERR_KEEP);
            t.drain(..excess);
        }
    }
}

#[async_trait]
impl Executor for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn check(&self) -> Result<(), String> {
        let sandboxed = match self.sandbox_works().await {
            Ok(()) => {
                let bwrap = sandbox::find_bwrap(&self.cfg.bwrap)?;
                sandbox::sandboxed(&bwrap, &self.cfg, &self.limits, CHECK_CODE, None)?
            }
            Err(why) if self.cfg.allow_unsandboxed => {
                tracing::warn!(reason = %why, "code_interpreter: no working sandbox; code will run WITHOUT one (allow_unsandboxed = true)");
                sandbox::python_binds(&self.cfg.python)?;
                let dir = unsandboxed_dir(&self.cfg)?;
                let cmd = sandbox::unsandboxed(&self.cfg, dir.path(), CHECK_CODE, None);
                return sandbox::probe(cmd, self.start_timeout).await;
            }
            Err(why) => return Err(why),
        };
        sandbox::probe(sandboxed, self.start_timeout).await
    }

    async fn open(&self) -> Result<Box<dyn Session>, ExecError> {
        match tokio::time::timeout(self.start_timeout, self.start()).await {
            Ok(Ok(s)) => Ok(Box::new(s)),
            Ok(Err(why)) => Err(ExecError::Unavailable(why)),
            Err(_) => Err(ExecError::Unavailable(format!(
                "the sandbox did not start within {:?} (start_timeout)",
                self.start_timeout
            ))),
        }
    }
}

/// One sandbox and its driver.
pub struct LocalSession {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    limits: ExecLimits,
    data_dir: String,
    /// Why the session died; every later call answers `Lost` with it.
    lost: Option<String>,
    /// A request is in flight (its future may have been dropped: the stream is mid-frame).
    busy: bool,
    /// The unsandboxed session's directory, removed on drop.
    _dir: Option<tempfile::TempDir>,
}

impl LocalSession {
    fn bounds(&self) -> Bounds {
        let l = &self.limits;
        Bounds {
            // Logs JSON-escaped (at most 6 bytes per byte) plus file names.
            header: l.output_bytes.saturating_mul(6).saturating_add(1 << 20),
            blob: l.file_bytes.max(64 << 20),
            total: l.disk_bytes.saturating_mul(2).saturating_add(256 << 20),
        }
    }

    async fn receive(&mut self) -> Result<(Reply, Vec<Vec<u8>>), String> {
        let bounds = self.bounds();
        frame::read_frame(&mut self.stdout, bounds).await
    }

    /// One request and its reply within `limit`; any failure kills the session.
    async fn call(
        &mut self,
        req: Request<'_>,
        blobs: &[&[u8]],
        limit: Duration,
    ) -> Result<(Reply, Vec<Vec<u8>>), ExecError> {
        if let Some(why) = &self.lost {
            return Err(ExecError::Lost(why.clone()));
        }
        self.busy = true;
        let run = async {
            frame::write_frame(&mut self.stdin, &req, blobs).await?;
            let bounds = self.bounds();
            frame::read_frame(&mut self.stdout, bounds).await
        };
        let res = match tokio::time::timeout(limit, run).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "the execution did not end within its {} s time limit plus {} s of grace, so the sandbox was killed",
                self.limits.timeout.as_secs_f64(),
                GRACE.as_secs()
            )),
        };
        match res {
            Ok(reply) => {
                self.busy = false;
                Ok(reply)
            }
            Err(e) => {
                let why = self.bury(&e).await;
                self.lost = Some(why.clone());
                Err(ExecError::Lost(why))
            }
        }
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(CLOSE_WAIT, self.child.wait()).await;
    }

    /// The reason given for a dead session: what went wrong, how the process ended (when
    /// it ended by itself), and what it said on its own stderr. Kills it afterwards.
    async fn bury(&mut self, what: &str) -> String {
        // A moment for a dying driver's exit to be seen before it is killed.
        let ended = tokio::time::timeout(Duration::from_millis(200), self.child.wait()).await;
        let status = match ended {
            Ok(Ok(s)) => exit_reason(&s),
            _ => String::new(),
        };
        self.kill().await;
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| String::from_utf8_lossy(&t).trim().to_string())
            .unwrap_or_default();
        if tail.is_empty() {
            format!("{what}{status}; its state is gone")
        } else {
            format!(
                "{}{status}; its state is gone",
                sandbox::explain(&tail, what)
            )
        }
    }
}

/// How a sandbox ended, in words. bwrap passes a killed interpreter on as 128 + signal.
fn exit_reason(s: &std::process::ExitStatus) -> String {
    let signal = std::os::unix::process::ExitStatusExt::signal(s)
        .or_else(|| s.code().filter(|c| *c > 128).map(|c| c - 128));
    match (signal, s.code()) {
        (Some(9), _) => " (killed by SIGKILL: out of memory?)".into(),
        (Some(24), _) => " (killed by SIGXCPU: the session used up its CPU seconds)".into(),
        (Some(sig), _) => format!(" (killed by signal {sig})"),
        (None, Some(code)) => format!(" (exit status {code})"),
        (None, None) => String::new(),
    }
}

#[async_trait]
impl Session for LocalSession {
    fn data_dir(&self) -> &str {
        &self.data_dir
    }

    async fn put_files(&mut self, files: &[InputFile]) -> Result<(), ExecError> {
        if let Some(f) = files.iter().find(|f| !valid_name(&f.name)) {
            return Err(ExecError::Unavailable(format!(
                "bad file name {:?}",
                f.name
            )));
        }
        let req = Request {
            op: "put",
            code: None,
            names: files.iter().map(|f| f.name.as_str()).collect(),
            blobs: files.iter().map(|f| f.bytes.len()).collect(),
        };
        let blobs: Vec<&[u8]> = files.iter().map(|f| &f.bytes[..]).collect();
        let limit = self.limits.timeout + GRACE;
        let (reply, _) = self.call(req, &blobs, limit).await?;
        match reply.op.as_str() {
            "ok" => Ok(()),
            // The session is fine (a full disk, a file over the size limit): only this put failed.
            _ => Err(ExecError::Unavailable(format!(
                "could not put files into the session: {}",
                reply.reason
            ))),
        }
    }

    async fn execute(&mut self, code: &str) -> Result<Execution, ExecError> {
        let req = Request {
            op: "exec",
            code: Some(code),
            names: Vec::new(),
            blobs: Vec::new(),
        };
        let limit = self.limits.timeout + GRACE;
        let (reply, blobs) = self.call(req, &[], limit).await?;
        match to_execution(reply, blobs, self.limits.output_bytes) {
            Ok(e) => Ok(e),
            Err(e) => {
                let why = self.bury(&e).await;
                self.lost = Some(why.clone());
                Err(ExecError::Lost(why))
            }
        }
    }

    async fn close(mut self: Box<Self>) {
        if self.lost.is_none() && !self.busy {
            let req = Request {
                op: "close",
                code: None,
                names: Vec::new(),
                blobs: Vec::new(),
            };
            let _ =
                tokio::time::timeout(CLOSE_WAIT, frame::write_frame(&mut self.stdin, &req, &[]))
                    .await;
            if let Ok(Ok(_)) = tokio::time::timeout(CLOSE_WAIT, self.child.wait()).await {
                return;
            }
        }
        self.kill().await;
        if let Ok(None) = self.child.try_wait() {
            tracing::warn!("code_interpreter: a local session's process did not end after SIGKILL");
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The driver's reply as an `Execution`: logs, then the figures, then the files.
fn to_execution(
    reply: Reply,
    blobs: Vec<Vec<u8>>,
    output_bytes: usize,
) -> Result<Execution, String> {
    if reply.op != "result" {
        return Err(format!("protocol error: {:?} in reply to exec", reply.op));
    }
    let with_bytes = reply.files.iter().filter(|f| f.bytes).count();
    if reply.images + with_bytes != blobs.len() {
        return Err("protocol error: blob count does not match".into());
    }
    let mut blobs = blobs.into_iter();
    let mut outputs = Vec::new();
    let mut logs = reply.logs;
    // The driver caps logs; this only guards against one that does not.
    if logs.len() > output_bytes.saturating_mul(2) {
        let mut cut = output_bytes;
        while !logs.is_char_boundary(cut) {
            cut -= 1;
        }
        logs.truncate(cut);
    }
    if !logs.is_empty() {
        outputs.push(Output::Logs(logs));
    }
    for png in blobs.by_ref().take(reply.images) {
        outputs.push(Output::Image(Bytes::from(png)));
    }
    let mut files = Vec::new();
    for f in reply.files {
        if !valid_relative(&f.name) {
            return Err(format!("protocol error: file name {:?}", f.name));
        }
        let bytes = if f.bytes {
            blobs.next().map(Bytes::from)
        } else {
            None
        };
        files.push(OutputFile {
            name: f.name,
            size: bytes.as_ref().map_or(f.size, |b| b.len() as u64),
            bytes,
        });
    }
    Ok(Execution {
        outputs,
        files,
        error: reply.error,
    })
}

/// A path relative to the data directory that stays inside it.
fn valid_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\0')
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_data_directory_are_refused() {
        for ok in ["a.csv", "file-abc", ".hidden"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "/etc", "a\0b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_relative("plots/a.png"));
        for bad in ["../x", "/x", "a//b", "a/./b", "a/../b", ""] {
            assert!(!valid_relative(bad), "{bad:?}");
        }
    }

    #[test]
    fn an_exit_is_told_in_words_with_bwraps_128_plus_signal() {
        use std::os::unix::process::ExitStatusExt;
        let st = std::process::ExitStatus::from_raw;
        assert!(exit_reason(&st(137 << 8)).contains("SIGKILL"));
        assert!(exit_reason(&st(9)).contains("SIGKILL"));
        assert!(exit_reason(&st(152 << 8)).contains("CPU seconds"));
        assert_eq!(exit_reason(&st(3 << 8)), " (exit status 3)");
    }

    #[test]
    fn a_reply_becomes_logs_then_images_then_files() {
        let reply: Reply = serde_json::from_value(serde_json::json!({
            "op": "result", "logs": "4\n", "error": false, "images": 1,
            "files": [{"name": "big.bin", "size": 99, "bytes": false}, {"name": "o/a.csv", "size": 3, "bytes": true}],
        }))
        .unwrap();
        let e = to_execution(reply, vec![b"png".to_vec(), b"1,2".to_vec()], 100).unwrap();
        assert_eq!(
            e.outputs,
            vec![
                Output::Logs("4\n".into()),
                Output::Image(Bytes::from_static(b"png"))
            ]
        );
        assert_eq!(
            e.files[0],
            OutputFile {
                name: "big.bin".into(),
                size: 99,
                bytes: None
            }
        );
        assert_eq!(e.files[1].bytes.as_deref(), Some(&b"1,2"[..]));
        let bad: Reply =
            serde_json::from_value(serde_json::json!({"op": "result", "images": 2})).unwrap();
        assert!(to_execution(bad, vec![], 100).is_err());
        let escape: Reply = serde_json::from_value(serde_json::json!({
            "op": "result", "files": [{"name": "../x", "size": 1, "bytes": false}],
        }))
        .unwrap();
        assert!(to_execution(escape, vec![], 100).is_err());
    }
}
