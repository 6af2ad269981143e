//! The open-loop mode (`rate`): requests at a fixed rate on one thread, paced by a timerfd and
//! driven by epoll, with latency measured from each request's scheduled time.
//!
//! Why not tokio: on a 2-core box the generator shares its core with the upstream, so every
//! microsecond it spends per request is queueing in front of whatever is measured. Tokio's
//! timer has 1 ms resolution, so pacing needs a thread of its own, and then every request
//! costs a sleep, a cross-thread wake-up and a runtime unpark (about 25 µs a request on the
//! EPYC VM of session 8, as much as the upstream itself). Here a request costs a write, a read
//! and its share of two `epoll_wait`s and a timerfd read, on one thread. A timerfd, unlike a
//! sleep or an epoll timeout, has no timer slack (50 µs by default), so a schedule of one
//! request every 40 µs stays one request every 40 µs rather than bursts.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};

/// The epoll key of the timerfd; connections use their index.
const TIMER: u64 = u64::MAX;

/// What a run measured: latencies in µs from each request's scheduled time, sorted, and the
/// generator's own CPU time in µs (its share of the core it shares with the upstream).
pub struct Outcome {
    pub latencies: Vec<u64>,
    pub errors: u64,
    pub cpu_us: u64,
}

/// This process's user + system CPU time so far, in µs (from /proc/self/stat: utime and
/// stime are fields 14 and 15, in clock ticks, counted after the parenthesised name).
fn own_cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks * 1_000_000 / rustix::param::clock_ticks_per_second().max(1)
}

/// One keep-alive connection and the request it is waiting on, if any.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
    /// The scheduled time of the request in flight.
    waiting: Option<Instant>,
}

/// A whole answer: whether it was a 2xx, and whether the server closes the connection after
/// it (nginx does after `keepalive_requests`, 1,000 by default: sending the next request on
/// that connection would lose it).
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub ok: bool,
    pub close: bool,
}

/// The answer in `buf`, once it holds a whole one (Content-Length or chunked).
pub fn complete(buf: &[u8]) -> Option<Answer> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
    let body = &buf[end + 4..];
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let done = match header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) => body.len() >= len,
        None => body.ends_with(b"0\r\n\r\n"),
    };
    done.then(|| Answer {
        ok: head.split(' ').nth(1).is_some_and(|s| s.starts_with('2')),
        close: header("connection:").is_some_and(|v| v.contains("close")),
    })
}

fn open(addr: &str) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_nonblocking(true)?;
    Ok(tcp)
}

/// Registers `fd` with epoll for readability, level-triggered, under `key`.
fn watch(poll: &OwnedFd, fd: impl AsFd, key: u64) {
    epoll::add(
        poll,
        fd.as_fd(),
        epoll::EventData::new_u64(key),
        epoll::EventFlags::IN,
    )
    .expect("epoll_ctl");
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

/// Sends `rps` requests a second for `seconds` over `conns` keep-alive connections to `addr`
/// (`host:port`), each a GET of `target`. A request whose time comes while every connection
/// is busy waits for the first free one, its latency still counted from its scheduled time
/// (no coordinated omission). Answers still missing 10 s after the last send count as errors.
pub fn run(addr: &str, host: &str, target: &str, rps: u64, seconds: u64, conns: usize) -> Outcome {
    let cpu_before = own_cpu_us();
    let request = format!(
        "GET {target} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer sk-bench\r\nopenai-beta: assistants=v2\r\n\r\n"
    );
    let poll: OwnedFd = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create");
    let mut pool: Vec<Conn> = (0..conns.max(1))
        .map(|_| Conn {
            tcp: open(addr).expect("connect"),
            buf: Vec::with_capacity(4096),
            waiting: None,
        })
        .collect();
    for (i, c) in pool.iter().enumerate() {
        watch(&poll, &c.tcp, i as u64);
    }
    let mut idle: Vec<usize> = (0..pool.len()).rev().collect();

    let interval = Duration::from_nanos(1_000_000_000 / rps.max(1));
    let total = rps * seconds;
    let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC).expect("timerfd");
    watch(&poll, &timer, TIMER);
    // A relative first expiry one interval from now; `start` is taken just before, so the
    // schedule computed from it is never ahead of the timer.
    let start = Instant::now();
    timerfd_settime(
        &timer,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: timespec(interval),
            it_value: timespec(interval),
        },
    )
    .expect("timerfd_settime");

    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0u64;
    let mut scheduled = 0u64; // requests whose time has come
    let mut backlog: VecDeque<Instant> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut events = Vec::with_capacity(pool.len() + 1);
    let mut chunk = [0u8; 4096];
    let give_up = start + interval * total as u32 + Duration::from_secs(10);

    // Closes connection `i` and opens a new one in its place (the server closed it, or it
    // failed).
    let replace = |c: &mut Conn, i: usize| {
        let _ = epoll::delete(&poll, c.tcp.as_fd());
        c.waiting = None;
        c.buf.clear();
        c.tcp = open(addr).expect("reconnect");
        watch(&poll, &c.tcp, i as u64);
    };

    while scheduled < total || in_flight > 0 || !backlog.is_empty() {
        let now = Instant::now();
        if now > give_up {
            errors += (in_flight + backlog.len()) as u64;
            break;
        }
        events.clear();
        let timeout = timespec(Duration::from_millis(100));
        epoll::wait(
            &poll,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        )
        .or_else(|e| {
            if e == rustix::io::Errno::INTR {
                Ok(0)
            } else {
                Err(e)
            }
        })
        .expect("epoll_wait");
        for ev in events.iter() {
            let key = ev.data.u64();
            if key == TIMER {
                let mut expirations = [0u8; 8];
                let _ = rustix::io::read(&timer, &mut expirations);
                // The clock, not the expiration count, says how many are due: a late wake-up
                // sends everything due, each stamped with its own scheduled time.
                let due = ((Instant::now() - start).as_nanos() / interval.as_nanos()) as u64;
                while scheduled < due.min(total) {
                    scheduled += 1;
                    backlog.push_back(start + interval * scheduled as u32);
                }
                if scheduled == total {
                    // All sent: the rest is waiting for answers, without waking every interval.
                    let stop = timespec(Duration::ZERO);
                    let disarm = Itimerspec {
                        it_interval: stop,
                        it_value: stop,
                    };
                    let _ = timerfd_settime(&timer, TimerfdTimerFlags::empty(), &disarm);
                }
            } else {
                let i = key as usize;
                let c = &mut pool[i];
                match c.tcp.read(&mut chunk) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Ok(n) if n > 0 => {
                        c.buf.extend_from_slice(&chunk[..n]);
                        let Some(answer) = complete(&c.buf) else {
                            continue;
                        };
                        if let Some(at) = c.waiting.take() {
                            latencies.push(at.elapsed().as_micros() as u64);
                            in_flight -= 1;
                            idle.push(i);
                        }
                        errors += u64::from(!answer.ok);
                        if answer.close {
                            replace(c, i);
                        }
                    }
                    _ => {
                        // Closed or failed: a request in flight on it is lost.
                        if c.waiting.is_some() {
                            errors += 1;
                            in_flight -= 1;
                            idle.push(i);
                        }
                        replace(c, i);
                    }
                }
            }
        }
        while let (Some(&at), Some(&i)) = (backlog.front(), idle.last()) {
            backlog.pop_front();
            idle.pop();
            let c = &mut pool[i];
            c.buf.clear();
            // A request is ~150 bytes: an empty socket buffer takes it whole.
            if c.tcp.write(request.as_bytes()).ok() == Some(request.len()) {
                c.waiting = Some(at);
                in_flight += 1;
            } else {
                errors += 1;
                replace(c, i);
                idle.push(i);
            }
        }
    }
    latencies.sort_unstable();
    Outcome {
        latencies,
        errors,
        cpu_us: own_cpu_us() - cpu_before,
    }
}

#[cfg(test)]
mod tests {
    use super::{Answer, complete};

    #[test]
    fn an_answer_is_complete_by_its_length_or_its_last_chunk() {
        let ok = |close| Some(Answer { ok: true, close });
        assert_eq!(
            complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{"),
            None
        );
        assert_eq!(
            complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
            ok(false)
        );
        assert_eq!(
            complete(b"HTTP/1.1 502 Bad\r\ncontent-length: 0\r\n\r\n"),
            Some(Answer {
                ok: false,
                close: false
            })
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n";
        assert_eq!(complete(chunked), None);
        assert_eq!(complete(&[&chunked[..], b"0\r\n\r\n"].concat()), ok(false));
    }

    #[test]
    fn a_closing_answer_says_so() {
        let last = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        assert_eq!(
            complete(last),
            Some(Answer {
                ok: true,
                close: true
            })
        );
    }
}
