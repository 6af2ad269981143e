//! The `[code_interpreter]` section: which executor runs the model's Python, and the limits
//! every execution and session is held to.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, err};

/// Where scripts/interpreter-env.sh puts the sandbox's Python environment by default.
pub const DEFAULT_INTERPRETER_PYTHON: &str = "/opt/assistants-proxy/python/bin/python3";
/// The host user the local sandbox runs as when the proxy runs as root: `nobody`. (Root in
/// the sandbox would void RLIMIT_NPROC, so a fork bomb would reach the host.)
pub const DEFAULT_SANDBOX_UID: u32 = 65534;

/// Bounds on one execution and on what a session may hold (see `interpreter::executor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecLimits {
    /// Wall clock per execution. Past it the cell is interrupted and its logs end with a
    /// timeout error; if the interpreter does not come back within a grace period the
    /// session is killed (`ExecError::Lost`).
    pub timeout: Duration,
    /// CPU seconds per session process (RLIMIT_CPU: a spin loop ends even when the wall
    /// clock is generous).
    pub cpu_seconds: u64,
    /// Address space per process (RLIMIT_AS).
    pub memory_bytes: u64,
    /// Processes (threads included) the sandbox's user may run at once (RLIMIT_NPROC).
    pub max_processes: u64,
    /// Logs kept per execution; more is cut, with a note saying how much was dropped.
    pub output_bytes: usize,
    /// Size of `/mnt/data` (and, separately, of `/tmp`): writes past it fail with ENOSPC.
    pub disk_bytes: u64,
    /// Largest output file read back (and turned into a File); bigger ones are reported
    /// with `bytes: None` and the logs say so. (A cell may write files up to `disk_bytes`:
    /// that is the local sandbox's RLIMIT_FSIZE.)
    pub file_bytes: u64,
}

impl Default for ExecLimits {
    fn default() -> Self {
        ExecLimits {
            timeout: Duration::from_secs(60),
            cpu_seconds: 120,
            memory_bytes: 2 << 30,
            max_processes: 64,
            output_bytes: 64 * 1024,
            disk_bytes: 1 << 30,
            file_bytes: 256 << 20,
        }
    }
}

/// The local executor: a bubblewrap sandbox per session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalExecutor {
    /// The Python interpreter of the sandbox's environment (a venv made by
    /// scripts/interpreter-env.sh); its venv directory and base installation are bound
    /// read-only into the sandbox.
    pub python: PathBuf,
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// Host uid/gid the sandbox runs as when the proxy runs as root.
    pub uid: u32,
    pub gid: u32,
    /// Runs code without a sandbox when none can be had. Never the default: only for
    /// hosts where the operator has isolated the whole proxy some other way.
    pub allow_unsandboxed: bool,
}

/// The jupyter executor: kernels on a Jupyter Kernel Gateway or Enterprise Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JupyterExecutor {
    /// The gateway's base URL (`http://host:8888`, `https://…/gateway`).
    pub url: http::Uri,
    /// Environment variable holding the gateway's token (sent as `Authorization: token …`);
    /// the token itself never sits in the file.
    pub token_env: Option<String>,
    pub kernel_name: String,
    /// Where kernels see their files (each session gets a directory of its own under it
    /// unless kernels are isolated, see the jupyter module).
    pub data_root: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorChoice {
    Local(LocalExecutor),
    Jupyter(JupyterExecutor),
    /// code_interpreter answers a clear error in its tool output.
    Off,
}

/// Everything about code_interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpreterConfig {
    pub executor: ExecutorChoice,
    pub limits: ExecLimits,
    /// A thread's session unused this long is closed (OpenAI: an hour).
    pub idle_timeout: Duration,
    /// Sessions held at once; past it the least recently used idle one is closed.
    pub max_sessions: usize,
    /// Opening a session (sandbox, interpreter, the imports it preloads, or a kernel).
    pub start_timeout: Duration,
    /// Bytes of files one run may turn into `assistants_output` Files, all calls together.
    pub max_run_output_bytes: u64,
    /// Once code has run on this proxy, keep one session started ahead of need, so a new
    /// thread's first call does not wait for a sandbox and its imports.
    pub prestart: bool,
}

impl Default for InterpreterConfig {
    fn default() -> Self {
        InterpreterConfig {
            executor: ExecutorChoice::Off,
            limits: ExecLimits::default(),
            idle_timeout: Duration::from_secs(3600),
            max_sessions: 64,
            start_timeout: Duration::from_secs(30),
            max_run_output_bytes: 1 << 30,
            prestart: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInterpreter {
    /// "local" (default), "jupyter" or "off".
    pub executor: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub memory_mb: Option<u64>,
    pub max_processes: Option<u64>,
    pub max_log_bytes: Option<usize>,
    pub disk_mb: Option<u64>,
    pub max_file_mb: Option<u64>,
    pub max_run_output_mb: Option<u64>,
    pub idle_timeout_seconds: Option<u64>,
    pub max_sessions: Option<usize>,
    pub start_timeout_seconds: Option<u64>,
    pub prestart_session: Option<bool>,
    #[serde(default)]
    pub local: FileLocal,
    #[serde(default)]
    pub jupyter: FileJupyter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLocal {
    pub python: Option<PathBuf>,
    pub bwrap: Option<PathBuf>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub allow_unsandboxed: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileJupyter {
    pub url: Option<String>,
    pub token_env: Option<String>,
    pub kernel_name: Option<String>,
    pub data_root: Option<String>,
}

const MB: u64 = 1024 * 1024;

/// Applies defaults to the file's section and validates it. `python_env` is
/// `ASSISTANTS_PROXY_PYTHON`, which wins over the file (tests and the Docker image use it).
pub fn resolve_interpreter(
    f: FileInterpreter,
    python_env: Option<PathBuf>,
) -> Result<InterpreterConfig, ConfigError> {
    let d = InterpreterConfig::default();
    let dl = ExecLimits::default();
    let limits = ExecLimits {
        timeout: f.timeout_seconds.map_or(dl.timeout, Duration::from_secs),
        cpu_seconds: f.cpu_seconds.unwrap_or(dl.cpu_seconds),
        memory_bytes: f.memory_mb.map_or(dl.memory_bytes, |m| m * MB),
        max_processes: f.max_processes.unwrap_or(dl.max_processes),
        output_bytes: f.max_log_bytes.unwrap_or(dl.output_bytes),
        disk_bytes: f.disk_mb.map_or(dl.disk_bytes, |m| m * MB),
        file_bytes: f.max_file_mb.map_or(dl.file_bytes, |m| m * MB),
    };
    if limits.timeout.is_zero()
        || limits.cpu_seconds == 0
        || limits.memory_bytes == 0
        || limits.max_processes == 0
        || limits.output_bytes < 256
        || limits.disk_bytes == 0
        || limits.file_bytes == 0
    {
        return err(
            "code_interpreter: timeout_seconds, cpu_seconds, memory_mb, max_processes, disk_mb and max_file_mb must be > 0, max_log_bytes >= 256",
        );
    }
    let executor = match f.executor.as_deref().unwrap_or("local") {
        "local" => ExecutorChoice::Local(LocalExecutor {
            python: python_env
                .or(f.local.python)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_INTERPRETER_PYTHON)),
            bwrap: f.local.bwrap.unwrap_or_else(|| PathBuf::from("bwrap")),
            uid: f.local.uid.unwrap_or(DEFAULT_SANDBOX_UID),
            gid: f.local.gid.or(f.local.uid).unwrap_or(DEFAULT_SANDBOX_UID),
            allow_unsandboxed: f.local.allow_unsandboxed.unwrap_or(false),
        }),
        "jupyter" => {
            let Some(url) = f.jupyter.url else {
                return err(
                    "code_interpreter.executor = \"jupyter\" needs code_interpreter.jupyter.url",
                );
            };
            let url: http::Uri = match url.trim_end_matches('/').parse() {
                Ok(u) => u,
                Err(e) => return err(format!("code_interpreter.jupyter.url {url:?}: {e}")),
            };
            if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
                return err(format!(
                    "code_interpreter.jupyter.url {url} must be an http:// or https:// URL"
                ));
            }
            ExecutorChoice::Jupyter(JupyterExecutor {
                url,
                token_env: f.jupyter.token_env,
                kernel_name: f.jupyter.kernel_name.unwrap_or_else(|| "python3".into()),
                data_root: f.jupyter.data_root.unwrap_or_else(|| "/mnt/data".into()),
            })
        }
        "off" => ExecutorChoice::Off,
        other => {
            return err(format!(
                "code_interpreter.executor {other:?}: expected \"local\", \"jupyter\" or \"off\""
            ));
        }
    };
    let out = InterpreterConfig {
        executor,
        limits,
        idle_timeout: f
            .idle_timeout_seconds
            .map_or(d.idle_timeout, Duration::from_secs),
        max_sessions: f.max_sessions.unwrap_or(d.max_sessions),
        start_timeout: f
            .start_timeout_seconds
            .map_or(d.start_timeout, Duration::from_secs),
        max_run_output_bytes: f
            .max_run_output_mb
            .map_or(d.max_run_output_bytes, |m| m * MB),
        prestart: f.prestart_session.unwrap_or(d.prestart),
    };
    if out.idle_timeout.is_zero() || out.max_sessions == 0 || out.start_timeout.is_zero() {
        return err(
            "code_interpreter: idle_timeout_seconds, max_sessions and start_timeout_seconds must be > 0",
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<InterpreterConfig, ConfigError> {
        let f: FileInterpreter = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        resolve_interpreter(f, None)
    }

    #[test]
    fn the_default_is_the_local_sandbox_with_the_documented_limits() {
        let c = parse("").unwrap();
        let ExecutorChoice::Local(l) = &c.executor else {
            panic!("{c:?}")
        };
        assert_eq!(l.python, PathBuf::from(DEFAULT_INTERPRETER_PYTHON));
        assert_eq!((l.uid, l.gid, l.allow_unsandboxed), (65534, 65534, false));
        assert_eq!(c.limits, ExecLimits::default());
        assert_eq!(c.idle_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn the_environment_names_the_python_over_the_file() {
        let f: FileInterpreter = toml::from_str("[local]\npython = \"/a/python3\"").unwrap();
        let c = resolve_interpreter(f, Some("/b/python3".into())).unwrap();
        let ExecutorChoice::Local(l) = c.executor else {
            panic!()
        };
        assert_eq!(l.python, PathBuf::from("/b/python3"));
    }

    #[test]
    fn jupyter_needs_an_http_url_and_bad_values_are_refused() {
        let c = parse("executor = \"jupyter\"\n[jupyter]\nurl = \"http://127.0.0.1:8888/\"\ntoken_env = \"KG_TOKEN\"").unwrap();
        let ExecutorChoice::Jupyter(j) = c.executor else {
            panic!()
        };
        assert_eq!(j.url.to_string(), "http://127.0.0.1:8888/");
        assert_eq!(j.token_env.as_deref(), Some("KG_TOKEN"));
        for bad in [
            "executor = \"jupyter\"",
            "executor = \"jupyter\"\n[jupyter]\nurl = \"ftp://x\"",
            "executor = \"docker\"",
            "timeout_seconds = 0",
            "max_sessions = 0",
            "max_log_bytes = 10",
            "unknown = 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse("executor = \"off\"").unwrap().executor,
            ExecutorChoice::Off
        );
        let c = parse("timeout_seconds = 5\nmemory_mb = 512\nmax_file_mb = 1").unwrap();
        assert_eq!(c.limits.timeout, Duration::from_secs(5));
        assert_eq!(c.limits.memory_bytes, 512 * MB);
        assert_eq!(c.limits.file_bytes, MB);
    }
}
