//! The contract every code_interpreter executor keeps (`local`: a bubblewrap sandbox per
//! session; `jupyter`: a kernel on a Kernel/Enterprise Gateway): a session takes files and
//! cells of Python, and gives back what a cell printed, the figures it showed and the files
//! it wrote. The run engine maps that onto run steps; executors know nothing of runs.

use async_trait::async_trait;
use bytes::Bytes;

pub use crate::config::ExecLimits;

/// A file put into the session's data directory before code runs.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// File name inside the data directory (no `/`; the caller makes names unique).
    pub name: String,
    pub bytes: Bytes,
}

/// One output of an execution, in the order produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// What the cell printed (stdout and stderr), the value of its last expression
    /// (notebook-style), and the traceback of an exception (no ANSI colour codes).
    Logs(String),
    /// A figure the cell showed (every matplotlib figure still open at its end), as PNG.
    Image(Bytes),
}

/// A file under the data directory that the execution created or changed.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    /// Path relative to the data directory (`out.csv`, `plots/a.png`).
    pub name: String,
    pub size: u64,
    /// `None` when the file is larger than `ExecLimits::file_bytes` (it is not read back).
    pub bytes: Option<Bytes>,
}

/// What one execution gave back. An exception in the user's code is a normal result (its
/// traceback is in the logs, `error` is true); only losing the session is an `ExecError`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Execution {
    pub outputs: Vec<Output>,
    pub files: Vec<OutputFile>,
    /// The cell raised (or was interrupted by the timeout).
    pub error: bool,
}

/// Why an executor could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// The executor cannot run code here at all (no sandbox on this host, the gateway is
    /// unreachable, the Python environment is missing). Said to the model as the tool's
    /// output; nothing is run.
    Unavailable(String),
    /// The session died (killed after a timeout, out of memory, crashed, gateway restarted):
    /// its state is gone. The caller opens a new session next time and tells the model.
    Lost(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Unavailable(why) => write!(f, "code interpreter unavailable: {why}"),
            ExecError::Lost(why) => write!(f, "code interpreter session lost: {why}"),
        }
    }
}

/// Starts sessions. One per process, chosen by the configuration.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// `local` or `jupyter`.
    fn name(&self) -> &'static str;

    /// Whether this executor can run code here, checked once at start-up (the proxy logs
    /// the answer) and again when a session is opened: `Err` says why not.
    async fn check(&self) -> Result<(), String>;

    /// Opens a fresh session with an empty data directory. Bounded by the executor's own
    /// start timeout.
    async fn open(&self) -> Result<Box<dyn Session>, ExecError>;
}

/// One interpreter with its state (variables, imports, files). Calls on one session never
/// overlap (the caller holds it exclusively).
///
/// Cancellation: if a future returned by `put_files` or `execute` is dropped before it
/// completes, the caller only ever calls `close` on that session afterwards, and dropping
/// the session without `close` must still end its process or kernel (kill on drop, or a
/// tracked clean-up), so nothing outlives it.
#[async_trait]
pub trait Session: Send {
    /// Where the code sees its files (`/mnt/data` on the local executor).
    fn data_dir(&self) -> &str;

    /// Writes files into the data directory (replacing files of the same name).
    async fn put_files(&mut self, files: &[InputFile]) -> Result<(), ExecError>;

    /// Runs one cell of Python within the executor's limits.
    async fn execute(&mut self, code: &str) -> Result<Execution, ExecError>;

    /// Ends the session and frees what it held (process, kernel, data directory). Bounded
    /// in time; never fails (a failure to clean up is logged).
    async fn close(self: Box<Self>);
}
