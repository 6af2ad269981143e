//! Resource bombs: each ends its execution with a clear error (or loses that session), and
//! the host and other sessions go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use assistants_proxy::interpreter::ExecError;

use crate::support::{another_session_works, limits, local, logs, open, run, sandbox_processes};

const TIMED_OUT: &str =
    "TimeoutError: the execution exceeded its time limit of 3 s and was interrupted\n";

#[tokio::test]
async fn an_infinite_loop_ends_at_the_time_limit() {
    let ex = local();
    let mut s = open(&ex).await;
    let e = run(&mut s, "n = 0\nwhile True:\n    n += 1").await;
    assert!(e.error && logs(&e).ends_with(TIMED_OUT), "{}", logs(&e));
    assert_eq!(logs(&run(&mut s, "n > 0").await), "True\n");
    s.close().await;
}

#[tokio::test]
async fn a_fork_bomb_stays_within_the_process_limit() {
    let ex = local();
    let mut s = open(&ex).await;
    let before = sandbox_processes();
    let peak = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(sandbox_processes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let e = s
        .execute("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
        .await;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    match e {
        Ok(e) => assert!(e.error && logs(&e).ends_with(TIMED_OUT), "{}", logs(&e)),
        Err(ExecError::Lost(why)) => assert!(why.contains("killed"), "{why}"),
        Err(other) => panic!("{other}"),
    }
    let peak = peak.load(Ordering::Relaxed);
    // Other tests' sessions run as the same uid at the same time: a few each.
    let bound = before + limits().max_processes as usize + 24;
    assert!(
        peak <= bound,
        "peak {peak} processes of uid 65534 (before {before}, bound {bound})"
    );
    // The bomb's processes did not outlive the cell: the session can fork again.
    if let Ok(e) = s
        .execute("import subprocess\nsubprocess.run(['true']).returncode")
        .await
    {
        assert_eq!(logs(&e), "0\n");
    }
    s.close().await;
    another_session_works(&ex).await;
}

#[tokio::test]
async fn a_memory_bomb_gets_a_memory_error() {
    let ex = local();
    let mut s = open(&ex).await;
    let e = run(
        &mut s,
        "hog = []\nwhile True:\n    hog.append(bytearray(10 << 20))",
    )
    .await;
    assert!(
        e.error && logs(&e).ends_with("MemoryError\n"),
        "{}",
        logs(&e)
    );
    let e = run(
        &mut s,
        "del hog\nimport numpy as np\nnp.ones((100000, 100000))",
    )
    .await;
    assert!(
        e.error && logs(&e).contains("Unable to allocate"),
        "{}",
        logs(&e)
    );
    assert_eq!(logs(&run(&mut s, "print('alive')").await), "alive\n");
    s.close().await;
    another_session_works(&ex).await;
}

#[tokio::test]
async fn a_10_gb_write_fails_when_the_disk_is_full() {
    let ex = local();
    let mut s = open(&ex).await;
    let e = run(&mut s, "chunk = b'0' * (1 << 20)\nwith open('/mnt/data/huge.bin', 'wb') as f:\n    for _ in range(10 * 1024):\n        f.write(chunk)").await;
    let l = logs(&e);
    // Whichever comes first: the tmpfs is full, or the file reaches RLIMIT_FSIZE.
    let full = |l: &str| l.contains("No space left on device") || l.contains("File too large");
    assert!(e.error && full(&l), "{l}");
    let huge = e
        .files
        .iter()
        .find(|f| f.name == "huge.bin")
        .expect("reported");
    assert!(huge.bytes.is_none() && huge.size <= limits().disk_bytes);
    let e = run(&mut s, "import os\nos.remove('/mnt/data/huge.bin')\nwith open('/tmp/huge', 'wb') as f:\n    for _ in range(10 * 1024):\n        f.write(chunk)").await;
    assert!(
        e.error && logs(&e).contains("No space left on device"),
        "{}",
        logs(&e)
    );
    assert_eq!(logs(&run(&mut s, "print('alive')").await), "alive\n");
    s.close().await;
    another_session_works(&ex).await;
}

#[tokio::test]
async fn a_flood_of_output_is_cut_with_a_note() {
    let ex = local();
    let mut s = open(&ex).await;
    let cap = limits().output_bytes;
    let e = run(
        &mut s,
        "import sys\nsys.stdout.write('y' * (50 << 20))\nprint()\nprint('end')",
    )
    .await;
    let l = logs(&e);
    assert!(!e.error && l.len() <= cap + 200, "{}", l.len());
    assert!(
        l.contains("bytes of output dropped: the limit is 16384 bytes per execution"),
        "{}",
        &l[l.len() - 200..]
    );
    let e = run(&mut s, "while True:\n    print('flood' * 100)").await;
    let l = logs(&e);
    assert!(
        e.error && l.ends_with(TIMED_OUT) && l.len() <= cap + 200,
        "{}",
        &l[l.len().saturating_sub(300)..]
    );
    assert!(l.contains("bytes of output dropped"));
    assert_eq!(logs(&run(&mut s, "print('alive')").await), "alive\n");
    s.close().await;
}
