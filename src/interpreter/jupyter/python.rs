//! The hidden cells the executor runs in a kernel around the user's code: setting a session
//! up (its data directory, rlimits), writing input files, listing the data directory and
//! reading changed files back, removing the directory at close.
//!
//! Each cell defines one function under a `__ap_` name, calls it and deletes it, so the
//! user's namespace keeps nothing of ours. Results come back as `display_data` of our own
//! MIME type (`HIDDEN_MIME`), not printed: the server's IOPub data-rate limit (1 MB/s by
//! default in jupyter_server) counts and drops `stream` output only, so a file read back
//! as printed base64 would be cut.

use crate::interpreter::executor::ExecLimits;

/// The MIME type of the hidden cells' results.
pub const HIDDEN_MIME: &str = "application/x-assistants-proxy";
/// Raw bytes per chunk of a file written into the kernel (its base64 goes in the code of
/// one `execute_request`; the gateway's WebSocket takes messages up to 10 MiB).
pub const PUT_CHUNK: usize = 3 << 20;
/// Raw bytes per `display_data` when a file is read back.
const READ_CHUNK: usize = 4 << 20;
/// The largest input file (OpenAI's per-file maximum): RLIMIT_FSIZE's hard limit, which
/// our own cells raise the soft limit to while writing input files (see `setup`).
pub const MAX_INPUT_BYTES: u64 = 512 << 20;
/// Files listed at most; a data directory holding more is listed in part.
const MAX_LISTED: usize = 10_000;

/// A Python string literal (JSON's escapes are Python's for the text we send).
pub fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "''".into())
}

fn wrap(name: &str, body: &str) -> String {
    format!("def {name}():\n{body}\ntry:\n    {name}()\nfinally:\n    del {name}\n")
}

/// Makes the data directory (it must not exist: every session gets a fresh one), makes it
/// the working directory, and lowers the kernel's rlimits (soft and hard). RLIMIT_FSIZE is
/// the exception: its soft limit is `file_bytes`, its hard one `MAX_INPUT_BYTES`, so input
/// files larger than what a cell may write can still be put in; user code could raise its
/// own soft limit that far, which bounds the damage all the same.
pub fn setup(dir: &str, limits: &ExecLimits) -> String {
    wrap(
        "__ap_setup",
        &format!(
            r#"    import os, resource
    d = {dir}
    os.makedirs(os.path.dirname(d) or "/", exist_ok=True)
    os.mkdir(d, 0o700)
    os.chdir(d)
    # One BLAS/OpenMP thread: each would reserve address space under RLIMIT_AS.
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = "1"
    for r, v, h in ((resource.RLIMIT_AS, {mem}, {mem}), (resource.RLIMIT_CPU, {cpu}, {cpu}), (resource.RLIMIT_FSIZE, {fsize}, {fsize_hard})):
        soft, hard = resource.getrlimit(r)
        if hard != resource.RLIM_INFINITY:
            v, h = min(v, hard), min(h, hard)
        resource.setrlimit(r, (v, h))"#,
            dir = lit(dir),
            mem = limits.memory_bytes,
            cpu = limits.cpu_seconds,
            fsize = limits.file_bytes,
            fsize_hard = limits.file_bytes.max(MAX_INPUT_BYTES),
        ),
    )
}

/// Writes one chunk of an input file: the first chunk truncates a `.ap-part` file, the last
/// renames it over the name, so a half-written file never has the real name.
pub fn put_chunk(dir: &str, name: &str, b64: &str, first: bool, last: bool) -> String {
    wrap(
        "__ap_put",
        &format!(
            r#"    import base64, os, resource
    p = os.path.join({dir}, {name})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    try:
        with open(p + ".ap-part", {mode}) as f:
            f.write(base64.b64decode({b64}))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    if {last}:
        os.replace(p + ".ap-part", p)"#,
            dir = lit(dir),
            name = lit(name),
            mode = if first { "'wb'" } else { "'ab'" },
            b64 = lit(b64),
            last = if last { "True" } else { "False" },
        ),
    )
}

/// Lists the regular files under the data directory as one JSON array of
/// `[relative path, size, mtime in ns]` (symbolic links and non-UTF-8 names left out).
pub fn listing(dir: &str) -> String {
    wrap(
        "__ap_list",
        &format!(
            r#"    import os, json, stat
    from IPython.display import display
    d = {dir}
    out = []
    for root, dirs, files in os.walk(d):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            try:
                st = os.lstat(p)
                rel = os.path.relpath(p, d)
                rel.encode("utf-8")
            except (OSError, UnicodeError):
                continue
            if stat.S_ISREG(st.st_mode) and not rel.endswith(".ap-part"):
                out.append([rel, st.st_size, st.st_mtime_ns])
            if len(out) >= {max}:
                break
        if len(out) >= {max}:
            break
    display({{{mime}: json.dumps(out)}}, raw=True)"#,
            dir = lit(dir),
            mime = lit(HIDDEN_MIME),
            max = MAX_LISTED,
        ),
    )
}

/// The listing of `listing` as one expression (evaluated as a `user_expression` of the
/// user's own request, it saves a round trip per cell): base64 of the same JSON, so its
/// `text/plain` (a repr) needs no unquoting beyond `listing_from_repr`. It fails as a whole
/// on a file vanishing mid-walk or a non-UTF-8 name; the caller then runs `listing`.
pub fn listing_expr(dir: &str) -> String {
    format!(
        "(lambda os, json, stat, base64, itertools, d={dir}: base64.b64encode(json.dumps(list(itertools.islice(\
((os.path.relpath(p, d), s.st_size, s.st_mtime_ns) for r, ds, fs in os.walk(d) for p in (os.path.join(r, f) for f in fs) \
for s in [os.lstat(p)] if stat.S_ISREG(s.st_mode) and not p.endswith('.ap-part')), {max})), ensure_ascii=False).encode()).decode())\
(*map(__import__, ['os', 'json', 'stat', 'base64', 'itertools']))",
        dir = lit(dir),
        max = MAX_LISTED,
    )
}

/// The JSON listing out of `listing_expr`'s repr (`'eyJ…'`, or split over lines in
/// parentheses by a pretty printer).
pub fn listing_from_repr(repr: &str) -> Option<String> {
    let b64: String = repr
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '\'' | '"' | '(' | ')'))
        .collect();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// Reads files back: for each name (by its index in `names`) JSON `[index, base64 chunk]`
/// pieces in order, or `[index, null, size]` when it grew past `max_bytes` since the
/// listing, or `[index, null, -1]` when it cannot be read.
pub fn read_files(dir: &str, names: &[&str], max_bytes: u64) -> String {
    let names = serde_json::to_string(names).unwrap_or_else(|_| "[]".into());
    wrap(
        "__ap_read",
        &format!(
            r#"    import os, json, base64
    from IPython.display import display
    d = {dir}
    for i, n in enumerate({names}):
        try:
            with open(os.path.join(d, n), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > {max}:
                    display({{{mime}: json.dumps([i, None, size])}}, raw=True)
                    continue
                display({{{mime}: json.dumps([i, ""])}}, raw=True)
                while True:
                    b = f.read({chunk})
                    if not b:
                        break
                    display({{{mime}: json.dumps([i, base64.b64encode(b).decode()])}}, raw=True)
        except OSError:
            display({{{mime}: json.dumps([i, None, -1])}}, raw=True)"#,
            dir = lit(dir),
            mime = lit(HIDDEN_MIME),
            max = max_bytes,
            chunk = READ_CHUNK,
        ),
    )
}

/// Removes the data directory (at close).
pub fn cleanup(dir: &str) -> String {
    wrap(
        "__ap_cleanup",
        &format!(
            r#"    import os, shutil
    os.chdir("/")
    shutil.rmtree({dir}, ignore_errors=True)"#,
            dir = lit(dir),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_python_literals_whatever_they_hold() {
        assert_eq!(lit("a\"b\\c\n"), r#""a\"b\\c\n""#);
        let code = put_chunk("/mnt/data/s1", "x'); import os #", "", true, true);
        assert!(code.contains(r#"os.path.join("/mnt/data/s1", "x'); import os #")"#));
        assert!(code.ends_with("    del __ap_put\n"));
        assert_eq!(
            listing_from_repr("('W1si\n 'YSIsIDEsIDJdXQ==')").as_deref(),
            Some("[[\"a\", 1, 2]]")
        );
        assert!(setup("/d", &ExecLimits::default()).contains("(resource.RLIMIT_CPU, 120, 120)"));
    }
}
