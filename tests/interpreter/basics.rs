//! What a session does: logs, state, values, tracebacks, files in and out, figures, the
//! wall-clock limit, and the fail-closed paths.

use std::path::PathBuf;
use std::time::Duration;

use assistants_proxy::interpreter::local::Local;
use assistants_proxy::interpreter::{ExecError, Executor, InputFile, Output};
use bytes::Bytes;

use crate::support::{another_session_works, config, limits, local, logs, open, run};

#[tokio::test]
async fn a_computation_gives_its_logs_and_the_last_expressions_value() {
    let ex = local();
    assert_eq!(ex.name(), "local");
    ex.check().await.unwrap();
    let mut s = open(&ex).await;
    assert_eq!(s.data_dir(), "/mnt/data");
    let e = run(
        &mut s,
        "import sys\nprint(sum(range(10)))\nprint('warn', file=sys.stderr)\n2 + 2",
    )
    .await;
    assert_eq!(logs(&e), "45\nwarn\n4\n");
    assert!(!e.error && e.files.is_empty());
    // Statements only: no value; None is not shown.
    assert_eq!(logs(&run(&mut s, "x = 1").await), "");
    assert_eq!(logs(&run(&mut s, "None").await), "");
    // Output of a child process is captured too (and cannot reach the protocol).
    let e = run(
        &mut s,
        "import subprocess\nsubprocess.run(['echo', 'from a child'])\nNone",
    )
    .await;
    assert_eq!(logs(&e), "from a child\n");
    s.close().await;
}

#[tokio::test]
async fn state_is_kept_between_executions() {
    let ex = local();
    let mut s = open(&ex).await;
    run(
        &mut s,
        "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})\ncount = 1",
    )
    .await;
    run(&mut s, "count += 1").await;
    let e = run(&mut s, "print(count, int(df['a'].sum()))").await;
    assert_eq!(logs(&e), "2 6\n");
    s.close().await;
}

#[tokio::test]
async fn an_exception_gives_its_traceback_and_the_session_goes_on() {
    let ex = local();
    let mut s = open(&ex).await;
    let e = run(&mut s, "def f(x):\n    return 1 / x\nprint('before')\nf(0)").await;
    let l = logs(&e);
    assert!(e.error);
    assert!(
        l.starts_with("before\nTraceback (most recent call last):\n"),
        "{l}"
    );
    assert!(
        l.contains("line 2, in f") && l.ends_with("ZeroDivisionError: division by zero\n"),
        "{l}"
    );
    // None of the driver's frames.
    assert!(!l.contains("<string>") && !l.contains("run_cell"), "{l}");
    let e = run(&mut s, "print(\n").await;
    assert!(e.error && logs(&e).contains("SyntaxError"), "{}", logs(&e));
    let e = run(&mut s, "raise SystemExit(3)").await;
    assert!(
        e.error && logs(&e).contains("SystemExit: 3"),
        "{}",
        logs(&e)
    );
    let e = run(&mut s, "f(2)").await;
    assert_eq!(logs(&e), "0.5\n");
    assert!(!e.error);
    s.close().await;
}

#[tokio::test]
async fn a_csv_put_in_is_read_with_pandas() {
    let ex = local();
    let mut s = open(&ex).await;
    let csv = "city,people\nLyon,522\nNice,342\n";
    s.put_files(&[InputFile {
        name: "cities.csv".into(),
        bytes: Bytes::from(csv),
    }])
    .await
    .unwrap();
    let e = run(&mut s, "import pandas as pd\ndf = pd.read_csv('/mnt/data/cities.csv')\nprint(df['people'].sum(), list(df.city))").await;
    assert_eq!(logs(&e), "864 ['Lyon', 'Nice']\n");
    // A file put in is not reported back as written by the cell.
    assert!(e.files.is_empty(), "{:?}", e.files);
    let bad = s
        .put_files(&[InputFile {
            name: "../x".into(),
            bytes: Bytes::new(),
        }])
        .await;
    assert!(matches!(bad, Err(ExecError::Unavailable(_))), "{bad:?}");
    s.close().await;
}

#[tokio::test]
async fn files_written_or_changed_come_back_byte_for_byte() {
    let ex = local();
    let mut s = open(&ex).await;
    s.put_files(&[
        InputFile {
            name: "keep.txt".into(),
            bytes: Bytes::from_static(b"same"),
        },
        InputFile {
            name: "edit.txt".into(),
            bytes: Bytes::from_static(b"old"),
        },
    ])
    .await
    .unwrap();
    let code = "import os\n\
        open('edit.txt', 'a').write('+new')\n\
        os.makedirs('plots', exist_ok=True)\n\
        open('plots/raw.bin', 'wb').write(bytes(range(256)) * 4)\n\
        open('/mnt/data/big.bin', 'wb').write(b'x' * (2 << 20))\n\
        open('/tmp/scratch.txt', 'w').write('not data')\n\
        None";
    let e = run(&mut s, code).await;
    assert!(!e.error, "{}", logs(&e));
    let names: Vec<&str> = e.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["big.bin", "edit.txt", "plots/raw.bin"]);
    assert_eq!(e.files[0].size, 2 << 20);
    assert_eq!(
        e.files[0].bytes, None,
        "over file_bytes: reported without bytes"
    );
    assert_eq!(e.files[1].bytes.as_deref(), Some(&b"old+new"[..]));
    let raw: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    assert_eq!(e.files[2].bytes.as_deref(), Some(&raw[..]));
    assert_eq!(e.files[2].size, 1024);
    // Nothing changed: nothing reported.
    assert!(run(&mut s, "1").await.files.is_empty());
    s.close().await;
}

#[tokio::test]
async fn an_open_figure_comes_back_as_png_and_is_closed() {
    let ex = local();
    let mut s = open(&ex).await;
    let e = run(
        &mut s,
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()\nprint('drawn')",
    )
    .await;
    assert!(!e.error, "{}", logs(&e));
    let images: Vec<&Bytes> = e
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Image(b) => Some(b),
            Output::Logs(_) => None,
        })
        .collect();
    assert_eq!(images.len(), 1);
    assert!(images[0].starts_with(b"\x89PNG\r\n\x1a\n") && images[0].len() > 1000);
    assert_eq!(e.outputs[0], Output::Logs("drawn\n".into()));
    let again = run(&mut s, "len(plt.get_fignums())").await;
    assert_eq!(again.outputs, vec![Output::Logs("0\n".into())]);
    s.close().await;
}

#[tokio::test]
async fn the_time_limit_interrupts_a_cell_and_the_session_survives() {
    let ex = local();
    let mut s = open(&ex).await;
    run(&mut s, "kept = 'yes'").await;
    let e = run(&mut s, "import time\nprint('start')\ntry:\n    time.sleep(30)\nexcept Exception:\n    print('caught')").await;
    let l = logs(&e);
    assert!(e.error);
    assert!(l.starts_with("start\n") && !l.contains("caught"), "{l}");
    assert!(
        l.ends_with(
            "TimeoutError: the execution exceeded its time limit of 3 s and was interrupted\n"
        ),
        "{l}"
    );
    assert_eq!(logs(&run(&mut s, "print(kept)").await), "yes\n");
    s.close().await;
}

#[tokio::test]
async fn a_cell_that_blocks_the_interrupt_loses_the_session_and_a_new_one_works() {
    let ex = local();
    let mut s = open(&ex).await;
    let started = std::time::Instant::now();
    let e = s
        .execute(
            "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",
        )
        .await;
    let Err(ExecError::Lost(why)) = e else {
        panic!("{e:?}")
    };
    assert!(
        why.contains("time limit") && why.contains("killed"),
        "{why}"
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
    // The dead session stays dead; closing it is fine.
    assert!(matches!(s.execute("1").await, Err(ExecError::Lost(_))));
    s.close().await;
    another_session_works(&ex).await;
}

#[tokio::test]
async fn a_missing_sandbox_or_python_fails_closed_naming_the_fix() {
    let mut cfg = config();
    cfg.bwrap = PathBuf::from("/nonexistent/bwrap");
    let ex = Local::new(cfg.clone(), limits(), Duration::from_secs(30));
    let why = ex.check().await.unwrap_err();
    assert!(why.contains("bubblewrap"), "{why}");
    match ex.open().await {
        Err(ExecError::Unavailable(why)) => assert!(why.contains("bubblewrap"), "{why}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut no_python = config();
    no_python.python = PathBuf::from("/nonexistent/venv/bin/python3");
    let ex = Local::new(no_python, limits(), Duration::from_secs(30));
    let why = ex.check().await.unwrap_err();
    assert!(why.contains("scripts/interpreter-env.sh"), "{why}");
    assert!(matches!(ex.open().await, Err(ExecError::Unavailable(_))));
}

#[tokio::test]
async fn allow_unsandboxed_runs_the_driver_directly_with_its_rlimits() {
    let mut cfg = config();
    cfg.bwrap = PathBuf::from("/nonexistent/bwrap");
    cfg.allow_unsandboxed = true;
    let ex = Local::new(cfg, limits(), Duration::from_secs(60));
    ex.check().await.unwrap();
    let mut s = open(&ex).await;
    assert_ne!(s.data_dir(), "/mnt/data");
    let e = run(&mut s, "import os, resource\nopen('o.txt', 'w').write('u')\nprint(os.getcwd() == os.environ.get('HOME', '')[:-5] + '/data', resource.getrlimit(resource.RLIMIT_AS)[1])").await;
    assert_eq!(logs(&e), format!("True {}\n", 512u64 << 20));
    assert_eq!(e.files.len(), 1);
    s.close().await;
}
