//! HTTP/1.1 message heads for the relay: parsing (httparse), hop-by-hop filtering, rewriting
//! for the other side, and the framing of the body that follows. Pure functions over bytes,
//! so every rule is unit-tested without a socket.
//!
//! A request the relay should not handle itself (anything but a plain HTTP/1.1 request with a
//! `Content-Length` body or none, whose route is forwarded) is reported as [`Planned::Handoff`]:
//! hyper's server then takes the connection, with everything read so far, and applies its own
//! rules (400s for malformed requests, chunked and streamed uploads, `Expect`, upgrades).

use std::mem::MaybeUninit;

use http::Method;

use crate::forward::is_hop_by_hop_name;

/// Headers per message the relay parses; a request with more goes to hyper (which allows 100).
pub const MAX_HEADERS: usize = 100;
/// A request head (with its body) the relay reads into memory at most; larger heads go to
/// hyper, whose limits answer them.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// A request body the relay forwards from memory; larger (or chunked) bodies stream through
/// hyper, which relays them as they arrive.
pub const MAX_REQUEST_BODY: u64 = 256 * 1024;
/// A response head larger than this is refused as a malformed upstream answer (hyper's client
/// allows about 400 KB of buffer; nothing legitimate comes close).
pub const MAX_RESPONSE_HEAD: usize = 256 * 1024;

/// Where and as whom the relay sends requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// Prefixed to every request target ("" for a bare origin; never ends in '/').
    pub base_path: Box<str>,
    /// The `Host` every upstream request carries.
    pub host: Box<[u8]>,
}

/// The outcome of looking at the bytes a client has sent so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Planned<T> {
    Ready(T),
    /// The head (or its body) is not complete yet: read more.
    Incomplete,
    /// hyper's server takes the connection from here.
    Handoff,
}

/// A request the relay forwards: its upstream head is in the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestPlan {
    /// Length of the client's head in the input.
    pub head_len: usize,
    /// Body bytes that follow the head (from `Content-Length`; 0 without one).
    pub body_len: usize,
    /// The client asked to close the connection after this exchange.
    pub close: bool,
    /// A HEAD request: its response has no body whatever its headers say.
    pub head: bool,
    /// The method may be sent again if a reused connection fails before any answer.
    pub idempotent: bool,
}

/// Parses the request at the start of `buf`. When the relay can forward it, writes the head to
/// send upstream into `out` (cleared first) and says where the body ends. `forwarded` is the
/// route table's verdict for (method, path).
pub fn plan_request(
    buf: &[u8],
    target: &Target,
    out: &mut Vec<u8>,
    forwarded: impl FnOnce(&Method, &str) -> bool,
) -> Planned<RequestPlan> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_HEAD => {
            return Planned::Incomplete;
        }
        // Too large, too many headers or malformed: hyper answers (431, 400).
        _ => return Planned::Handoff,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        // HTTP/1.0 keeps its own connection rules; hyper knows them.
        return Planned::Handoff;
    };
    // Origin form only, and only bytes `http::Uri` accepts too, so both paths agree on what
    // is a valid target (absolute form, `*` and odd bytes go to hyper).
    if !path.starts_with('/') || !path.bytes().all(is_target_byte) {
        return Planned::Handoff;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Planned::Handoff;
    };
    if method == Method::CONNECT {
        return Planned::Handoff;
    }
    let route_path = path.split_once('?').map_or(path, |(p, _)| p);
    if !forwarded(&method, route_path) {
        return Planned::Handoff;
    }

    // First pass: framing and connection options, and the names `Connection` lists.
    let mut content_length: Option<u64> = None;
    let mut close = false;
    let mut listed: Vec<&str> = Vec::new();
    let mut te_headers = 0usize;
    let mut te_trailers = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            match (content_length, parse_length(h.value)) {
                (None, Some(n)) => content_length = Some(n),
                // Repeated or invalid: hyper decides (400, or one agreed value).
                _ => return Planned::Handoff,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Planned::Handoff;
        } else if name.eq_ignore_ascii_case("connection") {
            let Ok(value) = std::str::from_utf8(h.value) else {
                return Planned::Handoff;
            };
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return Planned::Handoff;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case("keep-alive") {
                    listed.push(token);
                }
            }
        } else if name.eq_ignore_ascii_case("te") {
            te_headers += 1;
            te_trailers = h.value.eq_ignore_ascii_case(b"trailers");
        }
    }
    let body_len = match content_length {
        None => 0,
        Some(n) if n <= MAX_REQUEST_BODY => n as usize,
        Some(_) => return Planned::Handoff,
    };
    if buf.len() - head_len < body_len {
        return Planned::Incomplete;
    }

    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.base_path.as_bytes());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(&target.host);
    out.extend_from_slice(b"\r\n");
    // TE is hop-by-hop, but a lone "trailers" says the client accepts trailers; it is kept so
    // upstream trailers reach a client that asked for them.
    let keep_te = te_headers == 1 && te_trailers;
    for h in req.headers.iter() {
        let name = h.name;
        let drop = is_hop_by_hop_name(name)
            || name.eq_ignore_ascii_case("host")
            || (name.eq_ignore_ascii_case("te") && !keep_te)
            // Credentials for this proxy's store, never for the upstream.
            || name.eq_ignore_ascii_case(crate::tenancy::TOKEN_HEADER)
            || name.eq_ignore_ascii_case(crate::tenancy::DATABASE_HEADER)
            || listed.iter().any(|t| t.eq_ignore_ascii_case(name));
        if !drop {
            push_header(out, name, h.value);
        }
    }
    out.extend_from_slice(b"\r\n");
    Planned::Ready(RequestPlan {
        head_len,
        body_len,
        close,
        head: method == Method::HEAD,
        idempotent: method.is_idempotent(),
    })
}

/// How the body of a response is delimited on the upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    /// Relayed as it is, chunk framing and trailers included.
    Chunked,
    /// Until the upstream closes: the client's connection closes after it too.
    UntilClose,
}

/// A response head from the upstream, rewritten for the client into the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponsePlan {
    pub head_len: usize,
    pub status: u16,
    /// An interim (1xx) response: the final one follows on the same connection.
    pub interim: bool,
    pub framing: Framing,
    /// The upstream connection cannot carry another request after this one.
    pub upstream_close: bool,
    /// The client's connection closes after this response (asked, or forced by the framing).
    pub client_close: bool,
}

/// Why an upstream answer cannot be relayed.
#[derive(Debug, PartialEq, Eq)]
pub enum BadResponse {
    Incomplete,
    Malformed(&'static str),
}

/// Parses the response head at the start of `buf` and writes the head for the client into
/// `out` (cleared first). `head_request` says the request was HEAD; `close_client` that the
/// client's connection closes after this response whatever the upstream says.
pub fn plan_response(
    buf: &[u8],
    head_request: bool,
    close_client: bool,
    out: &mut Vec<u8>,
) -> Result<ResponsePlan, BadResponse> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => {
            return Err(BadResponse::Incomplete);
        }
        Ok(httparse::Status::Partial) => return Err(BadResponse::Malformed("head too large")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(BadResponse::Malformed("too many headers"));
        }
        Err(_) => return Err(BadResponse::Malformed("invalid response head")),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(BadResponse::Malformed("invalid status line"));
    };
    if status == 101 {
        // The relay never asks for an upgrade.
        return Err(BadResponse::Malformed("unrequested protocol switch"));
    }
    let interim = (100..200).contains(&status);

    let mut content_length: Option<u64> = None;
    let mut chunked = None;
    let mut upstream_close = version == 0;
    let mut listed: Vec<&str> = Vec::new();
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n =
                parse_length(h.value).ok_or(BadResponse::Malformed("invalid content-length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(BadResponse::Malformed("conflicting content-length"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides: chunked ends the message, anything else runs to close.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| BadResponse::Malformed("invalid connection header"))?;
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    upstream_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    if version == 0 {
                        upstream_close = false;
                    }
                } else if !token.is_empty() {
                    listed.push(token);
                }
            }
        }
    }
    let framing = if head_request || interim || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, content_length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    let client_close = !interim && (close_client || framing == Framing::UntilClose);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&itoa_status(status));
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let name = h.name;
        let drop = is_hop_by_hop_name(name)
            || name.eq_ignore_ascii_case("te")
            // With a transfer coding, a Content-Length is wrong by definition (RFC 9112 §6.3).
            || (chunked.is_some() && name.eq_ignore_ascii_case("content-length"))
            || listed.iter().any(|t| t.eq_ignore_ascii_case(name));
        if !drop {
            push_header(out, name, h.value);
        }
    }
    if chunked == Some(true) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if client_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(ResponsePlan {
        head_len,
        status,
        interim,
        framing,
        upstream_close: upstream_close || framing == Framing::UntilClose,
        client_close,
    })
}

pub(crate) fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: digits only, and small enough to count.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = trim(value);
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The bytes `http::Uri` accepts in a path and query (visible ASCII, no `#`).
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b'#'
}

fn itoa_status(status: u16) -> [u8; 3] {
    // httparse guarantees three digits.
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base: &str) -> Target {
        Target {
            base_path: base.into(),
            host: b"up.example:9000".to_vec().into(),
        }
    }

    fn plan(raw: &[u8]) -> (Planned<RequestPlan>, String) {
        let mut out = Vec::new();
        let p = plan_request(raw, &target(""), &mut out, |_, _| true);
        (p, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn forwards_a_plain_request_with_its_headers_in_order() {
        let raw = b"POST /v1/chat/completions?x=%20y HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer k\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: h\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n{}";
        let (p, out) = plan(raw);
        assert_eq!(
            p,
            Planned::Ready(RequestPlan {
                head_len: raw.len() - 2,
                body_len: 2,
                close: false,
                head: false,
                idempotent: false,
            })
        );
        assert_eq!(
            out,
            "POST /v1/chat/completions?x=%20y HTTP/1.1\r\nhost: up.example:9000\r\nAuthorization: Bearer k\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 2\r\nTE: trailers\r\n\r\n"
        );
    }

    #[test]
    fn base_path_prefixes_the_target_and_store_credentials_stay_behind() {
        let mut out = Vec::new();
        let raw =
            b"GET /v1/models HTTP/1.1\r\nastra-api-token: t\r\nAstra-DB-Id: d\r\nTE: gzip\r\n\r\n";
        let p = plan_request(raw, &target("/openai"), &mut out, |m, p| {
            assert_eq!((m, p), (&Method::GET, "/v1/models"));
            true
        });
        assert!(matches!(
            p,
            Planned::Ready(RequestPlan {
                idempotent: true,
                ..
            })
        ));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /openai/v1/models HTTP/1.1\r\nhost: up.example:9000\r\n\r\n"
        );
    }

    #[test]
    fn waits_for_the_whole_head_and_body() {
        assert_eq!(
            plan(b"GET /v1/models HTTP/1.1\r\nx: 1\r\n").0,
            Planned::Incomplete
        );
        assert_eq!(
            plan(b"POST /v1/x HTTP/1.1\r\ncontent-length: 5\r\n\r\nabc").0,
            Planned::Incomplete
        );
        let (p, _) = plan(b"POST /v1/x HTTP/1.1\r\ncontent-length: 5\r\n\r\nabcdeGET");
        assert!(matches!(p, Planned::Ready(RequestPlan { body_len: 5, .. })));
    }

    #[test]
    fn hands_everything_unusual_to_hyper() {
        for raw in [
            &b"GET /v1/x HTTP/1.0\r\n\r\n"[..],
            b"GET http://h/v1/x HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"CONNECT h:443 HTTP/1.1\r\n\r\n",
            b"POST /v1/x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST /v1/x HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx",
            b"POST /v1/x HTTP/1.1\r\ncontent-length: +1\r\n\r\nx",
            b"POST /v1/x HTTP/1.1\r\ncontent-length: 999999999\r\n\r\n",
            b"POST /v1/x HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            b"GET /v1/x HTTP/1.1\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
            b"GET /v1/x HTTP/1.1\r\nbad header\r\n\r\n",
            b"GET /v1/\xe2\x9c\x93 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                plan(raw).0,
                Planned::Handoff,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut out = Vec::new();
        let local = plan_request(
            b"GET /healthz HTTP/1.1\r\n\r\n",
            &target(""),
            &mut out,
            |_, _| false,
        );
        assert_eq!(local, Planned::Handoff);
        let huge = [
            b"GET / HTTP/1.1\r\nx: ".as_slice(),
            &[b'a'; MAX_REQUEST_HEAD],
        ]
        .concat();
        assert_eq!(plan(&huge).0, Planned::Handoff);
    }

    #[test]
    fn connection_close_is_noted_and_not_forwarded() {
        let (p, out) = plan(b"GET /v1/x HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(matches!(
            p,
            Planned::Ready(RequestPlan {
                close: true,
                head: false,
                ..
            })
        ));
        assert!(!out.to_ascii_lowercase().contains("connection"));
        let (p, _) = plan(b"HEAD /v1/x HTTP/1.1\r\n\r\n");
        assert!(matches!(p, Planned::Ready(RequestPlan { head: true, .. })));
    }

    fn respond(raw: &[u8], head: bool, close: bool) -> (Result<ResponsePlan, BadResponse>, String) {
        let mut out = Vec::new();
        let p = plan_response(raw, head, close, &mut out);
        (p, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let framing = |raw: &[u8], head: bool| respond(raw, head, false).0.map(|p| p.framing);
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", false),
            Ok(Framing::Length(12))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", true),
            Ok(Framing::Empty)
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            Ok(Framing::Empty)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
                false
            ),
            Ok(Framing::Empty)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
                false
            ),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
            Ok(Framing::UntilClose)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Ok(Framing::UntilClose)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                false
            ),
            Err(BadResponse::Malformed("conflicting content-length"))
        );
        assert!(framing(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", false).is_err());
        assert!(framing(b"HTTP/1.1 101 Switching\r\n\r\n", false).is_err());
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n", false),
            Err(BadResponse::Incomplete)
        );
        assert!(framing(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn response_head_is_rewritten_for_the_client() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\n5\r\nhello";
        let (p, out) = respond(raw, false, false);
        let p = p.unwrap();
        assert_eq!(p.head_len, raw.len() - 8);
        assert!(!p.upstream_close && !p.client_close && !p.interim);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nSet-Cookie: a\r\nSet-Cookie: b\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        // A body delimited by the close, or a client that asked to close: the client's
        // connection is told it closes.
        let (p, out) = respond(b"HTTP/1.0 200 OK\r\n\r\n", false, false);
        let p = p.unwrap();
        assert!(p.upstream_close && p.client_close);
        assert!(out.ends_with("connection: close\r\n\r\n"));
        let (p, _) = respond(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            false,
            false,
        );
        let p = p.unwrap();
        assert!(p.upstream_close && !p.client_close);
        let (p, _) = respond(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            false,
            true,
        );
        let p = p.unwrap();
        assert!(!p.upstream_close && p.client_close);
        let (p, out) = respond(
            b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
            false,
            true,
        );
        let p = p.unwrap();
        assert!(p.interim && !p.client_close);
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n");
    }
}
