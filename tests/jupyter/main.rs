//! The jupyter executor against a real Jupyter Kernel Gateway started by
//! `scripts/kernel-gateway.sh start`: its address in `ASSISTANTS_PROXY_TEST_JUPYTER`, its token
//! in `KG_TOKEN`. Without them (or with the gateway down) these tests fail, naming the script.
//!
//! The kernels run on this machine, so the tests also look at the data directories on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use assistants_proxy::config::{ExecLimits, JupyterExecutor};
use assistants_proxy::interpreter::jupyter::Jupyter;
use assistants_proxy::interpreter::{ExecError, Execution, Executor, InputFile, Output, Session};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOW: &str = "start a gateway with `scripts/kernel-gateway.sh start` and export \
                   ASSISTANTS_PROXY_TEST_JUPYTER=http://127.0.0.1:8899 and KG_TOKEN (the script prints both)";

fn address() -> String {
    match std::env::var("ASSISTANTS_PROXY_TEST_JUPYTER") {
        Ok(a) if !a.is_empty() => a.trim_end_matches('/').to_owned(),
        _ => panic!("ASSISTANTS_PROXY_TEST_JUPYTER is not set: {HOW}"),
    }
}

fn token() -> String {
    match std::env::var("KG_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => panic!("KG_TOKEN is not set: {HOW}"),
    }
}

fn limits() -> ExecLimits {
    ExecLimits {
        timeout: Duration::from_secs(30),
        memory_bytes: 2 << 30,
        output_bytes: 64 * 1024,
        file_bytes: 1 << 20,
        ..ExecLimits::default()
    }
}

fn config(url: &str, token_env: Option<&str>, data_root: &std::path::Path) -> JupyterExecutor {
    JupyterExecutor {
        url: url.parse().unwrap(),
        token_env: token_env.map(str::to_owned),
        kernel_name: "python3".into(),
        data_root: data_root.to_str().unwrap().to_owned(),
    }
}

/// An executor on the test gateway, its kernels' files under a fresh directory.
async fn executor(limits: ExecLimits) -> (Jupyter, tempfile::TempDir) {
    token();
    let root = tempfile::tempdir().unwrap();
    let j = Jupyter::new(
        config(&address(), Some("KG_TOKEN"), root.path()),
        limits,
        Duration::from_secs(60),
    )
    .unwrap();
    if let Err(e) = j.check().await {
        panic!("the test gateway does not answer ({e}): {HOW}");
    }
    (j, root)
}

fn logs(x: &Execution) -> String {
    x.outputs
        .iter()
        .filter_map(|o| match o {
            Output::Logs(l) => Some(l.as_str()),
            Output::Image(_) => None,
        })
        .collect()
}

async fn run(s: &mut dyn Session, code: &str) -> Execution {
    match s.execute(code).await {
        Ok(x) => x,
        Err(e) => panic!("{code:?}: {e}"),
    }
}

/// A bare HTTP/1.1 call to the gateway (what an operator or another client might do).
async fn gateway_call(method: &str, path: &str) -> u16 {
    let addr = address();
    let hostport = addr.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(hostport).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: token {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        token()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let head = String::from_utf8_lossy(&out);
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_computation_keeps_its_state_and_shows_the_last_value() {
    let (j, root) = executor(limits()).await;
    assert_eq!(j.name(), "jupyter");
    let mut s = j.open().await.unwrap();
    let dir = s.data_dir().to_owned();
    assert!(dir.starts_with(root.path().to_str().unwrap()), "{dir}");
    assert!(std::path::Path::new(&dir).is_dir());

    let x = run(&mut *s, "x = 6 * 7\nprint('x is', x)").await;
    assert_eq!(x.outputs, vec![Output::Logs("x is 42\n".into())]);
    assert!(!x.error && x.files.is_empty());

    let x = run(&mut *s, "import os\nprint(os.getcwd())\nx + 1").await;
    assert_eq!(logs(&x), format!("{dir}\n43"));

    // The limits of the set-up cell hold in the kernel.
    let x = run(
        &mut *s,
        "import resource\n[resource.getrlimit(r)[0] for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE)]",
    )
    .await;
    assert_eq!(logs(&x), format!("[{}, 120, {}]", 2u64 << 30, 1 << 20));
    let x = run(&mut *s, "b = bytearray(3 << 30)").await;
    assert!(x.error && logs(&x).contains("MemoryError"), "{}", logs(&x));

    s.close().await;
    assert!(!std::path::Path::new(&dir).exists(), "close removes {dir}");
}

#[tokio::test]
async fn an_exception_gives_a_plain_traceback_and_the_session_goes_on() {
    let (j, _root) = executor(limits()).await;
    let mut s = j.open().await.unwrap();
    let x = run(&mut *s, "y = 1\ndef f():\n    return 1 / 0\nf()").await;
    assert!(x.error);
    let l = logs(&x);
    assert!(
        l.contains("ZeroDivisionError") && l.contains("return 1 / 0"),
        "{l}"
    );
    assert!(!l.contains('\u{1b}'), "ANSI codes left: {l:?}");
    let x = run(&mut *s, "print('still here', y)").await;
    assert!(!x.error);
    assert_eq!(logs(&x), "still here 1\n");
    s.close().await;
}

#[tokio::test]
async fn files_go_in_and_come_back_byte_for_byte() {
    let (j, _root) = executor(limits()).await;
    let mut s = j.open().await.unwrap();
    let dir = s.data_dir().to_owned();
    let csv = "city,people\nOslo,700000\nBergen,290000\n";
    let blob: Vec<u8> = (0..3_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.put_files(&[
        InputFile {
            name: "cities.csv".into(),
            bytes: Bytes::from(csv),
        },
        // Bigger than one transfer chunk, and bigger than file_bytes (which bounds what
        // is read back, not what goes in).
        InputFile {
            name: "blob.bin".into(),
            bytes: Bytes::from(blob.clone()),
        },
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read(format!("{dir}/blob.bin")).unwrap(), blob);

    let x = run(
        &mut *s,
        "import pandas as pd\ndf = pd.read_csv('cities.csv')\nprint(int(df.people.sum()))",
    )
    .await;
    assert_eq!(logs(&x), "990000\n");
    assert!(
        x.files.is_empty(),
        "input files are not outputs: {:?}",
        x.files
    );

    // A new file (every byte value), a changed one, one in a subdirectory.
    let x = run(
        &mut *s,
        "open('all.bin', 'wb').write(bytes(range(256)) * 3)\n\
         df.to_csv('cities.csv', index=False)\n\
         import os\nos.makedirs('plots', exist_ok=True)\nopen('plots/n.txt', 'w').write('n')",
    )
    .await;
    assert!(!x.error, "{}", logs(&x));
    let names: Vec<&str> = x.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["all.bin", "cities.csv", "plots/n.txt"]);
    let all: Vec<u8> = (0..=255u8).cycle().take(768).collect();
    assert_eq!(x.files[0].bytes.as_deref(), Some(&all[..]));
    assert_eq!(x.files[0].size, 768);
    assert_eq!(
        x.files[1].bytes.as_deref(),
        Some(
            std::fs::read(format!("{dir}/cities.csv"))
                .unwrap()
                .as_slice()
        )
    );
    assert_eq!(x.files[2].bytes.as_deref(), Some(&b"n"[..]));

    // Unchanged files are not reported again.
    let x = run(&mut *s, "1").await;
    assert!(x.files.is_empty(), "{:?}", x.files);

    // A cell cannot write past file_bytes (RLIMIT_FSIZE) ...
    let x = run(&mut *s, "open('big.bin', 'wb').write(b'x' * (2 << 20))").await;
    assert!(
        x.error && logs(&x).contains("File too large"),
        "{}",
        logs(&x)
    );
    // ... and a file that got bigger some other way is reported without its bytes.
    std::fs::write(format!("{dir}/shared.bin"), vec![1u8; (1 << 20) + 1]).unwrap();
    let x = run(&mut *s, "2").await;
    let big: Vec<_> = x.files.iter().filter(|f| f.name != "big.bin").collect();
    assert_eq!(big.len(), 1, "{:?}", x.files);
    assert_eq!(
        (big[0].name.as_str(), big[0].size, big[0].bytes.is_none()),
        ("shared.bin", (1 << 20) + 1, true)
    );
    s.close().await;
}

#[tokio::test]
async fn a_matplotlib_figure_becomes_a_png() {
    let (j, _root) = executor(limits()).await;
    let mut s = j.open().await.unwrap();
    let x = run(
        &mut *s,
        "import matplotlib.pyplot as plt\nprint('plotting')\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares');",
    )
    .await;
    assert!(!x.error, "{}", logs(&x));
    let images: Vec<&Bytes> = x
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Image(b) => Some(b),
            Output::Logs(_) => None,
        })
        .collect();
    assert_eq!(images.len(), 1, "{:?}", x.outputs.len());
    assert!(images[0].starts_with(b"\x89PNG\r\n\x1a\n") && images[0].len() > 1000);
    assert_eq!(x.outputs[0], Output::Logs("plotting\n".into()));
    assert!(!logs(&x).contains("<Figure"), "{}", logs(&x));
    s.close().await;
}

#[tokio::test]
async fn sessions_are_told_of_different_directories() {
    let (j, _root) = executor(limits()).await;
    let (a, b) = tokio::join!(j.open(), j.open());
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.data_dir(), b.data_dir());
    let x = run(&mut *a, "open('secret.txt', 'w').write('a')").await;
    assert_eq!(x.files.len(), 1);
    let code = format!(
        "import os\nprint(sorted(os.listdir({:?})), sorted(os.listdir('.')))",
        b.data_dir()
    );
    let x = run(&mut *b, &code).await;
    assert_eq!(logs(&x), "[] []\n");
    assert!(x.files.is_empty());
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_timeout_interrupts_the_cell_and_keeps_the_session() {
    let (j, _root) = executor(ExecLimits {
        timeout: Duration::from_secs(3),
        ..limits()
    })
    .await;
    let mut s = j.open().await.unwrap();
    run(&mut *s, "kept = 'yes'").await;
    let x = run(
        &mut *s,
        "import time\nprint('before', flush=True)\nopen('partial.txt', 'w').write('p')\ntime.sleep(60)",
    )
    .await;
    assert!(x.error);
    let l = logs(&x);
    assert!(
        l.starts_with("before\n") && l.contains("KeyboardInterrupt"),
        "{l}"
    );
    assert!(
        l.trim_end()
            .ends_with("was interrupted (variables are kept)")
            && l.contains("TimeoutError"),
        "{l}"
    );
    // A cell that failed gets no listing with its reply: the separate listing cell runs.
    assert_eq!(
        x.files.len(),
        1,
        "files written before the timeout come back"
    );
    let x = run(&mut *s, "print(kept)").await;
    assert_eq!(logs(&x), "yes\n");
    s.close().await;
}

#[tokio::test]
async fn a_cell_ignoring_the_interrupt_loses_the_session() {
    let (j, _root) = executor(ExecLimits {
        timeout: Duration::from_secs(2),
        ..limits()
    })
    .await;
    let mut s = j.open_session().await.unwrap();
    let kernel = s.kernel_id().to_owned();
    let r = s
        .execute(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)",
        )
        .await;
    let Err(ExecError::Lost(why)) = r else {
        panic!("{r:?}")
    };
    assert!(why.contains("did not stop when interrupted"), "{why}");
    assert_eq!(
        gateway_call("GET", &format!("/api/kernels/{kernel}")).await,
        404
    );
    assert!(matches!(s.execute("1").await, Err(ExecError::Lost(_))));
    Box::new(s).close().await;

    let mut fresh = j.open().await.unwrap();
    assert_eq!(logs(&run(&mut *fresh, "1 + 1").await), "2");
    fresh.close().await;
}

#[tokio::test]
async fn a_kernel_deleted_behind_our_back_is_lost() {
    let (j, _root) = executor(limits()).await;
    let mut s = j.open_session().await.unwrap();
    run(&mut s, "z = 1").await;
    assert_eq!(
        gateway_call("DELETE", &format!("/api/kernels/{}", s.kernel_id())).await,
        204
    );
    let r = s.execute("print(z)").await;
    assert!(matches!(r, Err(ExecError::Lost(_))), "{r:?}");
    Box::new(s).close().await;
}

#[tokio::test]
async fn a_dropped_session_deletes_its_kernel() {
    let (j, _root) = executor(limits()).await;
    let s = j.open_session().await.unwrap();
    let kernel = s.kernel_id().to_owned();
    let dir = s.data_dir().to_owned();
    assert_eq!(
        gateway_call("GET", &format!("/api/kernels/{kernel}")).await,
        200
    );
    drop(s);
    j.wait_cleanups(Duration::from_secs(15)).await;
    assert_eq!(
        gateway_call("GET", &format!("/api/kernels/{kernel}")).await,
        404
    );
    assert!(!std::path::Path::new(&dir).exists());
}

#[tokio::test]
async fn an_output_flood_is_capped() {
    let (j, _root) = executor(ExecLimits {
        output_bytes: 4096,
        ..limits()
    })
    .await;
    let mut s = j.open().await.unwrap();
    let x = run(&mut *s, "for i in range(50000):\n    print(i)").await;
    let l = logs(&x);
    assert!(l.starts_with("0\n1\n2\n"), "{}", &l[..20]);
    let (kept, note) = l.split_at(l.find("[output truncated").unwrap());
    assert!(kept.len() <= 4096 + 1, "{}", kept.len());
    // 50000 lines of digits and newlines: 288890 bytes.
    assert!(
        note.contains(&format!(
            "{} more bytes were dropped",
            288_890 - (kept.len() - 1)
        )) || note.contains(&format!("{} more bytes were dropped", 288_890 - kept.len())),
        "{note}"
    );
    // The session is fine afterwards.
    assert_eq!(logs(&run(&mut *s, "'ok'").await), "'ok'");
    s.close().await;
}

#[tokio::test]
async fn an_unreachable_gateway_is_unavailable() {
    let root = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let j = Jupyter::new(
        config(&url, None, root.path()),
        limits(),
        Duration::from_secs(5),
    )
    .unwrap();
    let e = j.check().await.unwrap_err();
    assert!(e.contains("unreachable") && e.contains(&url), "{e}");
    let Err(ExecError::Unavailable(why)) = j.open().await else {
        panic!("open on an unreachable gateway")
    };
    assert!(why.contains("unreachable"), "{why}");
}

#[tokio::test]
async fn the_token_is_required() {
    token();
    let root = tempfile::tempdir().unwrap();
    let url = address();
    // No token, then a wrong one (an environment variable that holds something else).
    for token_env in [None, Some("PATH")] {
        let j = Jupyter::new(
            config(&url, token_env, root.path()),
            limits(),
            Duration::from_secs(10),
        )
        .unwrap();
        let e = j.check().await.unwrap_err();
        assert!(e.contains("refused") && e.contains("token"), "{e}");
        let Err(ExecError::Unavailable(why)) = j.open().await else {
            panic!("open without the token")
        };
        assert!(why.contains("token"), "{why}");
    }
    let e = Jupyter::new(
        config(
            &url,
            Some("ASSISTANTS_PROXY_TEST_NO_SUCH_VARIABLE"),
            root.path(),
        ),
        limits(),
        Duration::from_secs(10),
    )
    .err()
    .unwrap();
    assert!(e.contains("ASSISTANTS_PROXY_TEST_NO_SUCH_VARIABLE"), "{e}");
}

#[tokio::test]
async fn a_kernel_that_dies_is_lost() {
    let (j, _root) = executor(limits()).await;
    let mut s = j.open_session().await.unwrap();
    let kernel = s.kernel_id().to_owned();
    // What the CPU limit or the kernel's OOM killer would do.
    let r = s
        .execute("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        .await;
    let Err(ExecError::Lost(why)) = r else {
        panic!("{r:?}")
    };
    assert!(why.contains("died"), "{why}");
    // The gateway's restarted, empty kernel is not left behind.
    assert_eq!(
        gateway_call("GET", &format!("/api/kernels/{kernel}")).await,
        404
    );
    Box::new(s).close().await;
}
