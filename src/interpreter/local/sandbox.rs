//! How the local executor starts Python: the bubblewrap command line of a session's
//! sandbox (what is bound, what is private, which environment), the same Python without a
//! sandbox for `allow_unsandboxed`, and the probes behind `check()`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::config::{ExecLimits, LocalExecutor};

/// Where a session's files are, inside the sandbox.
pub(crate) const DATA_DIR: &str = "/mnt/data";
/// RLIMIT_NOFILE of the sandbox (not configurable: only a bound on fd exhaustion).
const MAX_OPEN_FILES: u64 = 1024;
/// The script that makes the Python environment, named by every "missing" error.
pub(crate) const ENV_SCRIPT: &str = "scripts/interpreter-env.sh";

/// The driver run inside every session.
pub(crate) const DRIVER: &str = include_str!("../driver.py");

/// Directories bound read-only besides /usr: the venv of `python` and its base
/// installation when that lies outside /usr (a pyenv or /opt build).
pub(crate) fn python_binds(python: &Path) -> Result<Vec<PathBuf>, String> {
    let missing = || {
        format!(
            "the sandbox's Python {} is missing: run {ENV_SCRIPT} (or point ASSISTANTS_PROXY_PYTHON / code_interpreter.local.python at its bin/python3)",
            python.display()
        )
    };
    if !python.is_absolute() {
        return Err(format!(
            "code_interpreter.local.python must be an absolute path, got {}",
            python.display()
        ));
    }
    let real = std::fs::canonicalize(python).map_err(|_| missing())?;
    let mut binds = Vec::new();
    let mut add = |dir: &Path| {
        if !dir.starts_with("/usr")
            && dir != Path::new("/")
            && !binds.iter().any(|b| dir.starts_with(b))
        {
            binds.retain(|b: &PathBuf| !b.starts_with(dir));
            binds.push(dir.to_path_buf());
        }
    };
    // `<prefix>/bin/python3`: the prefix is the venv (or the installation).
    if let Some(prefix) = python.parent().and_then(Path::parent) {
        add(prefix);
        if let Ok(cfg) = std::fs::read_to_string(prefix.join("pyvenv.cfg")) {
            for line in cfg.lines() {
                if let Some((k, v)) = line.split_once('=')
                    && k.trim() == "home"
                    && let Some(base) = Path::new(v.trim()).parent()
                {
                    add(base);
                }
            }
        }
    }
    if let Some(prefix) = real.parent().and_then(Path::parent) {
        add(prefix);
    }
    Ok(binds)
}

/// `bwrap` as a path: as configured when it has a `/`, else looked up on PATH.
pub(crate) fn find_bwrap(bwrap: &Path) -> Result<PathBuf, String> {
    let missing = || {
        format!(
            "bubblewrap ({}) is not installed: install Debian's bubblewrap package ({ENV_SCRIPT} does it when run as root)",
            bwrap.display()
        )
    };
    if bwrap.components().count() > 1 {
        return if bwrap.is_file() {
            Ok(bwrap.to_path_buf())
        } else {
            Err(missing())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(bwrap))
        .find(|p| p.is_file())
        .ok_or_else(missing)
}

/// Whether this process is root (then the sandbox runs as the configured unprivileged uid:
/// root voids RLIMIT_NPROC).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The environment of the interpreter: nothing of the proxy's.
fn env(python: &Path, home: &str) -> Vec<(&'static str, String)> {
    let bin = python
        .parent()
        .map_or_else(String::new, |b| format!("{}:", b.display()));
    vec![
        ("PATH", format!("{bin}/usr/local/bin:/usr/bin:/bin")),
        ("HOME", home.to_string()),
        ("TMPDIR", "/tmp".into()),
        ("LANG", "C.UTF-8".into()),
        ("MPLBACKEND", "Agg".into()),
        ("MPLCONFIGDIR", format!("{home}/.config/matplotlib")),
        ("XDG_CACHE_HOME", format!("{home}/.cache")),
        // One thread each: threads count against RLIMIT_NPROC and each reserves address space.
        ("OPENBLAS_NUM_THREADS", "1".into()),
        ("OMP_NUM_THREADS", "1".into()),
        ("MKL_NUM_THREADS", "1".into()),
    ]
}

/// The driver's arguments: where the files are, the limits it applies to itself before any
/// user code runs, and whether it may end the cell's processes with kill(-1) (only in the
/// sandbox's own pid namespace).
///
/// RLIMIT_FSIZE is the disk size, not `file_bytes`: a file the cell cannot return whole is
/// still a file it may write (and report, without bytes); the tmpfs bounds the total.
pub(crate) fn session_args(data_dir: &str, limits: &ExecLimits, sandboxed: bool) -> String {
    serde_json::json!({
        "data_dir": data_dir,
        "reap": sandboxed,
        "timeout": limits.timeout.as_secs_f64(),
        "output_bytes": limits.output_bytes,
        "file_bytes": limits.file_bytes,
        "rlimits": {
            "RLIMIT_AS": limits.memory_bytes,
            "RLIMIT_CPU": limits.cpu_seconds,
            "RLIMIT_NPROC": limits.max_processes,
            "RLIMIT_FSIZE": limits.disk_bytes.max(limits.file_bytes),
            "RLIMIT_NOFILE": MAX_OPEN_FILES,
            "RLIMIT_CORE": 0,
        },
    })
    .to_string()
}

/// `bwrap … -- python -I -u -c <code> <args>`: private namespaces (no network, own pids),
/// read-only /usr and Python, size-bounded private /tmp, /dev/shm and /mnt/data, a
/// read-only root, and nothing of the host's /etc, /home, /root, /var or /proc.
pub(crate) fn sandboxed(
    bwrap: &Path,
    cfg: &LocalExecutor,
    limits: &ExecLimits,
    code: &str,
    args: Option<&str>,
) -> Result<Command, String> {
    let binds = python_binds(&cfg.python)?;
    let mut c = Command::new(bwrap);
    c.args([
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    for (link, target) in [
        ("/bin", "usr/bin"),
        ("/sbin", "usr/sbin"),
        ("/lib", "usr/lib"),
        ("/lib64", "usr/lib64"),
    ] {
        if Path::new("/usr").join(&target[4..]).exists() {
            c.args(["--symlink", target, link]);
        }
    }
    for b in &binds {
        c.arg("--ro-bind").arg(b).arg(b);
    }
    let size = limits.disk_bytes.to_string();
    c.args(["--proc", "/proc", "--dev", "/dev"]);
    for dir in ["/tmp", "/dev/shm", DATA_DIR] {
        c.args(["--size", &size, "--tmpfs", dir]);
    }
    // /dev is a tmpfs of its own: read-only too, or it would be unbounded scratch space.
    c.args([
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--chdir",
        DATA_DIR,
    ]);
    for (k, v) in env(&cfg.python, "/tmp") {
        c.args(["--setenv", k, &v]);
    }
    c.arg("--").arg(&cfg.python).args(["-I", "-u", "-c", code]);
    c.args(args);
    if running_as_root() {
        c.uid(cfg.uid).gid(cfg.gid);
    }
    c.current_dir("/");
    Ok(c)
}

/// The same interpreter without a sandbox (`allow_unsandboxed`): a cleared environment and
/// a private working directory; the driver still applies the rlimits.
pub(crate) fn unsandboxed(
    cfg: &LocalExecutor,
    dir: &Path,
    code: &str,
    args: Option<&str>,
) -> Command {
    let mut c = Command::new(&cfg.python);
    c.env_clear();
    let home = dir.join("home");
    for (k, v) in env(&cfg.python, &home.to_string_lossy()) {
        c.env(k, v);
    }
    c.args(["-I", "-u", "-c", code]).args(args).current_dir(dir);
    if running_as_root() {
        c.uid(cfg.uid).gid(cfg.gid);
    }
    c
}

/// Starts `cmd` with piped stdio, killed if dropped.
pub(crate) fn spawn(mut cmd: Command) -> Result<Child, String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn()
        .map_err(|e| format!("could not start the interpreter: {e}"))
}

/// Runs a one-shot probe to its end within `limit`: Ok, or its stderr explained.
pub(crate) async fn probe(cmd: Command, limit: Duration) -> Result<(), String> {
    let mut child = spawn(cmd)?;
    let mut err = Vec::new();
    let stderr = child.stderr.take();
    let run = async {
        if let Some(mut s) = stderr {
            let _ = s.read_to_end(&mut err).await;
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(limit, run).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("waiting for the probe: {e}")),
        Err(_) => return Err(format!("the probe did not finish within {limit:?}")),
    };
    if status.success() {
        return Ok(());
    }
    Err(explain(&String::from_utf8_lossy(&err), status))
}

/// Turns bwrap's or Python's complaint into a reason an operator can act on.
pub(crate) fn explain(stderr: &str, status: impl std::fmt::Display) -> String {
    let tail: String = {
        let t = stderr.trim();
        let start = t.char_indices().rev().nth(600).map_or(0, |(i, _)| i);
        t[start..].to_string()
    };
    if tail.starts_with("bwrap:")
        && (tail.contains("namespace")
            || tail.contains("uid map")
            || tail.contains("Operation not permitted"))
    {
        return format!(
            "this host does not let unprivileged processes create user namespaces, which the bubblewrap sandbox needs (enable kernel.unprivileged_userns_clone, or allow them in the AppArmor/Docker seccomp profile): {tail}"
        );
    }
    if tail.contains("ModuleNotFoundError") || tail.contains("ImportError") {
        return format!(
            "the sandbox's Python lacks numpy/pandas/matplotlib: run {ENV_SCRIPT} ({tail})"
        );
    }
    if tail.contains("execvp") || tail.contains("No such file") {
        return format!("the sandbox's Python could not be started: run {ENV_SCRIPT} ({tail})");
    }
    format!("the interpreter exited ({status}): {tail}")
}
