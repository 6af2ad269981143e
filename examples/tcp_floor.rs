//! The latency floor of any proxy on a given machine: a byte relay that does no HTTP at all.
//! Each accepted connection gets its own upstream connection and two blocking threads that
//! copy bytes, one each way. A request through it costs two socket reads and two writes plus
//! whatever the machine charges to wake a thread on the proxy's core; with keep-alive HTTP
//! against a fixed-answer upstream that is the least any forwarding proxy can add, so
//! `scripts/bench-forward.sh latency` reports it beside nginx and assistants-proxy. Not a
//! product.
//!
//! usage: tcp_floor LISTEN UPSTREAM_HOST:PORT
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream) = match args.as_slice() {
        [_, l, u] => (l.clone(), u.clone()),
        _ => {
            eprintln!("usage: tcp_floor LISTEN UPSTREAM_HOST:PORT");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&listen).expect("bind");
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(up) = TcpStream::connect(&upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = up.set_nodelay(true);
        let (c2, u2) = (
            client.try_clone().expect("clone"),
            up.try_clone().expect("clone"),
        );
        std::thread::spawn(move || pump(client, up));
        std::thread::spawn(move || pump(u2, c2));
    }
}
