//! Sandbox escapes, each of which must fail: the proxy's files, environment and processes,
//! the network, writing outside /mnt/data and /tmp, another session's files, the rlimits.

use std::io::Write;

use crate::support::{local, logs, open, run};

/// A Python string literal of a host path.
fn lit(p: &std::path::Path) -> String {
    format!("{:?}", p.to_string_lossy())
}

#[tokio::test]
async fn the_proxys_database_and_configuration_are_not_visible() {
    // Stand-ins for the proxy's files, outside /tmp (the sandbox has a /tmp of its own).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = dir.path().join("proxy.db");
    let conf = dir.path().join("assistants-proxy.toml");
    std::fs::write(&db, b"SQLite format 3\0secret-row").unwrap();
    std::fs::File::create(&conf)
        .unwrap()
        .write_all(b"api_key = \"sk-config-secret\"\n")
        .unwrap();
    let ex = local();
    let mut s = open(&ex).await;
    for path in [&db, &conf, &dir.path().to_path_buf()] {
        let code = format!(
            "import os\np = {}\ntry:\n    print(open(p, 'rb').read() if os.path.isfile(p) else os.listdir(p))\nexcept OSError as e:\n    print('denied', type(e).__name__)",
            lit(path)
        );
        let l = logs(&run(&mut s, &code).await);
        assert!(l.starts_with("denied "), "{path:?}: {l}");
    }
    // Nor anything of the host's /etc, /root, /home, /var or the worktree.
    let e = run(&mut s, "import os\nsorted(os.listdir('/'))").await;
    let l = logs(&e);
    for absent in ["'etc'", "'root'", "'home'", "'var'", "'work'"] {
        assert!(!l.contains(absent), "{absent} in {l}");
    }
    let e = run(&mut s, "import os\nfound = []\nfor root, dirs, files in os.walk('/'):\n    if root.startswith(('/proc', '/sys', '/usr')):\n        dirs[:] = []\n        continue\n    found += [f for f in files if f in ('proxy.db', 'assistants-proxy.toml')]\nfound").await;
    assert_eq!(logs(&e), "[]\n");
    s.close().await;
}

#[tokio::test]
async fn no_environment_variable_or_process_of_the_host_is_visible() {
    // A process holding a key in its environment stands for the proxy (this test process's
    // own environment is checked too).
    let mut holder = std::process::Command::new("sleep")
        .arg("60")
        .env("OPENAI_API_KEY", "sk-fake-key-for-the-sandbox-test")
        .spawn()
        .unwrap();
    let ex = local();
    let mut s = open(&ex).await;
    let code = format!(
        "import os\nfor pid in ({}, {}):\n    try:\n        print(open(f'/proc/{{pid}}/environ', 'rb').read())\n    except OSError as e:\n        print('denied', type(e).__name__)\n    try:\n        os.kill(pid, 0)\n        print('signalled')\n    except OSError as e:\n        print('denied', type(e).__name__)\nprint(sorted(os.environ))\nprint([p for p in os.listdir('/proc') if p.isdigit()])",
        holder.id(),
        std::process::id()
    );
    let l = logs(&run(&mut s, &code).await);
    let lines: Vec<&str> = l.lines().collect();
    assert_eq!(
        &lines[..4],
        [
            "denied FileNotFoundError",
            "denied ProcessLookupError",
            "denied FileNotFoundError",
            "denied ProcessLookupError"
        ],
        "{l}"
    );
    assert!(!l.contains("sk-fake-key"), "{l}");
    // Only what the sandbox sets itself (plus what Python adds), nothing of ours.
    for (name, _) in std::env::vars() {
        if !["PATH", "HOME", "LANG", "TMPDIR", "PWD"].contains(&name.as_str()) {
            assert!(
                !lines[4].contains(&format!("'{name}'")),
                "{name} leaked: {}",
                lines[4]
            );
        }
    }
    // Its own pid namespace: a handful of processes (bwrap's init and the driver).
    let pids: Vec<&str> = lines[5]
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .collect();
    assert!(pids.len() <= 3, "{}", lines[5]);
    // The holder is alive: nothing reached it.
    assert!(holder.try_wait().unwrap().is_none());
    holder.kill().unwrap();
    holder.wait().unwrap();
    s.close().await;
}

#[tokio::test]
async fn no_network_neither_the_hosts_loopback_nor_outside() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let ex = local();
    let mut s = open(&ex).await;
    let code = format!(
        "import socket\nfor addr in [('127.0.0.1', {port}), ('1.1.1.1', 443), ('8.8.8.8', 53)]:\n    try:\n        socket.create_connection(addr, timeout=2)\n        print('connected', addr)\n    except OSError as e:\n        print('refused', e.errno)\ntry:\n    socket.getaddrinfo('api.openai.com', 443)\n    print('resolved')\nexcept OSError as e:\n    print('no dns')"
    );
    let l = logs(&run(&mut s, &code).await);
    assert!(!l.contains("connected") && !l.contains("resolved"), "{l}");
    assert_eq!(l.matches("refused").count(), 3, "{l}");
    assert!(l.ends_with("no dns\n"), "{l}");
    assert!(
        listener.accept().is_err(),
        "nothing reached the host's listener"
    );
    s.close().await;
}

#[tokio::test]
async fn writes_outside_mnt_data_and_tmp_fail() {
    let ex = local();
    let mut s = open(&ex).await;
    let python_dir = crate::support::python();
    let venv = python_dir.parent().unwrap().parent().unwrap();
    let code = format!(
        "import os\nfor p in ['/x', '/usr/x', '/usr/lib/x', '/etc/x', '/dev/x', '/proc/x', '/mnt/x', {}]:\n    try:\n        open(p, 'w').write('x')\n        print('wrote', p)\n    except OSError as e:\n        print('denied', p)\nfor p in ['/mnt/data/ok', '/tmp/ok', '/dev/shm/ok']:\n    open(p, 'w').write('x')\n    print('ok', p)",
        lit(&venv.join("x"))
    );
    let l = logs(&run(&mut s, &code).await);
    assert!(!l.contains("wrote"), "{l}");
    assert_eq!(l.matches("denied").count(), 8, "{l}");
    assert_eq!(l.matches("ok /").count(), 3, "{l}");
    assert!(!venv.join("x").exists());
    s.close().await;
}

#[tokio::test]
async fn a_session_does_not_see_another_sessions_files() {
    let ex = local();
    let mut a = open(&ex).await;
    let mut b = open(&ex).await;
    let e = run(
        &mut a,
        "open('/mnt/data/secret-a.txt', 'w').write('a'); open('/tmp/secret-a.tmp', 'w').write('a')",
    )
    .await;
    assert_eq!(e.files.len(), 1);
    let l = logs(&run(&mut b, "import os\nprint(os.listdir('/mnt/data'), os.listdir('/tmp'))\nos.path.exists('/mnt/data/secret-a.txt')").await);
    assert!(!l.contains("secret-a"), "{l}");
    assert!(l.ends_with("False\n"), "{l}");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn rlimits_are_set_and_cannot_be_raised() {
    let ex = local();
    let mut s = open(&ex).await;
    let code = "import resource\n\
        names = ['RLIMIT_AS', 'RLIMIT_CPU', 'RLIMIT_NPROC', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_CORE']\n\
        for n in names:\n    r = getattr(resource, n)\n    soft, hard = resource.getrlimit(r)\n    print(n, soft, hard)\n\
        \x20   for new in [(hard, hard + 1), (resource.RLIM_INFINITY, resource.RLIM_INFINITY)]:\n\
        \x20       try:\n            resource.setrlimit(r, new)\n            print('raised', n)\n\
        \x20       except (ValueError, OSError):\n            pass\n\
        print(resource.getrlimit(resource.RLIMIT_AS))";
    let l = logs(&run(&mut s, code).await);
    let limits = crate::support::limits();
    for line in [
        format!("RLIMIT_AS {0} {0}", limits.memory_bytes),
        format!("RLIMIT_CPU {0} {0}", limits.cpu_seconds),
        format!("RLIMIT_NPROC {0} {0}", limits.max_processes),
        format!("RLIMIT_FSIZE {0} {0}", limits.disk_bytes),
        "RLIMIT_NOFILE 1024 1024".to_string(),
        "RLIMIT_CORE 0 0".to_string(),
    ] {
        assert!(l.contains(&format!("{line}\n")), "{line} not in {l}");
    }
    assert!(!l.contains("raised"), "{l}");
    assert!(
        l.ends_with(&format!("({0}, {0})\n", limits.memory_bytes)),
        "{l}"
    );
    // Not in a child process either (a shell's ulimit).
    let l = logs(&run(&mut s, "import subprocess\nprint(subprocess.run(['sh', '-c', 'ulimit -v unlimited; echo $?; ulimit -v'], capture_output=True, text=True).stdout)").await);
    assert!(
        l.contains(&format!("{}", limits.memory_bytes / 1024)),
        "{l}"
    );
    assert!(!l.contains("unlimited"), "{l}");
    s.close().await;
}
