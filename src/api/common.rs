//! What every intercepted handler shares: reading a bounded body, query strings and list
//! parameters, path-id checks, and response shapes. Validating body fields with OpenAI's
//! exact messages is `api::fields`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::api::fields::{Fields, check_integer, invalid_value, type_name};
use crate::body::{self, ProxyBody};
use crate::error::Error;
use crate::store::{ListQuery, Order, Page};

/// Reads the whole body, refusing more than `limit` bytes with a 413 (after discarding the
/// rest, so the client sees the 413 rather than a reset), and a pause of `idle` between two
/// pieces with a 408 (the connection is then closed: the rest of the body is not awaited).
pub async fn read_body(
    body: Incoming,
    limit: u64,
    idle: std::time::Duration,
) -> Result<Bytes, Error> {
    let mut body = body::IdleTimeout::new(body, idle);
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(e.as_ref()))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                body::discard(body).await;
                return Err(Error::PayloadTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The answer to a request body that failed while being read: a 408 when it stalled, else a
/// 400 saying why it could not be read.
pub fn body_error(e: &(dyn std::error::Error + 'static)) -> Error {
    match body::timed_out(e) {
        Some(t) => Error::BodyTimeout {
            seconds: t.idle.as_secs(),
        },
        None => Error::invalid(format!("The request body could not be read: {e}"), None),
    }
}

/// Parses a JSON object body; an empty body is an empty object (several create endpoints
/// accept no body at all).
pub fn parse_object(bytes: &[u8]) -> Result<Fields, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Fields::new(Map::new()));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(Fields::new(map)),
        Ok(other) => Err(Error::invalid_code(
            format!(
                "Invalid type for request body: expected an object, but got {} instead.",
                type_name(&other)
            ),
            None,
            "invalid_type",
        )),
        Err(e) => Err(Error::invalid(
            format!(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON: {e}.)"
            ),
            None,
        )),
    }
}

/// Splits a query string into decoded pairs (`+` is a space, `%XX` decoded).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard list parameters (`limit`, `order`, `after`, `before`), plus the rest for the
/// endpoint's own filters.
#[derive(Debug)]
pub struct ListParams {
    pub query: ListQuery,
    pub extra: Vec<(String, String)>,
}

impl ListParams {
    pub fn parse(
        query: Option<&str>,
        default_limit: usize,
        max_limit: usize,
        allow_before: bool,
    ) -> Result<ListParams, Error> {
        let mut out = ListQuery {
            limit: default_limit,
            ..ListQuery::default()
        };
        let mut extra = Vec::new();
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| {
                        Error::invalid_code(
                            format!("Invalid 'limit': expected an integer, but got '{v}' instead."),
                            Some("limit"),
                            "invalid_type",
                        )
                    })?;
                    check_integer("limit", n, 1, max_limit as i64)?;
                    out.limit = n as usize;
                }
                "order" => {
                    out.order = match v.as_str() {
                        "asc" => Order::Asc,
                        "desc" => Order::Desc,
                        other => return Err(invalid_value("order", other, &["asc", "desc"])),
                    }
                }
                "after" if !v.is_empty() => out.after = Some(v),
                "before" if allow_before && !v.is_empty() => out.before = Some(v),
                _ => extra.push((k, v)),
            }
        }
        Ok(ListParams { query: out, extra })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The list envelope: `{object:"list", data, first_id, last_id, has_more}`.
pub fn list_response<'a, T, R: Serialize>(
    page: &'a Page<T>,
    id: impl Fn(&T) -> &str,
    render: impl Fn(&'a T) -> R,
) -> Response<ProxyBody> {
    /// The list envelope, serialized straight from the page (no `Value` tree in between).
    #[derive(Serialize)]
    struct List<'a, R> {
        object: &'static str,
        data: Vec<R>,
        first_id: Option<&'a str>,
        last_id: Option<&'a str>,
        has_more: bool,
    }
    json_response(
        StatusCode::OK,
        &List {
            object: "list",
            data: page.items.iter().map(render).collect(),
            first_id: page.items.first().map(&id),
            last_id: page.items.last().map(&id),
            has_more: page.has_more,
        },
    )
}

pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<ProxyBody> {
    json_body_response(status, body::json(value))
}

/// A response with an already encoded JSON body.
fn json_body_response(status: StatusCode, body: ProxyBody) -> Response<ProxyBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// 200 with the serialized object.
pub fn ok<T: Serialize>(value: &T) -> Result<Response<ProxyBody>, Error> {
    // Encoded once, straight from the object; an encoding error is still a 500.
    let bytes = serde_json::to_vec(value).map_err(|e| Error::internal(e.to_string()))?;
    Ok(json_body_response(StatusCode::OK, body::full(bytes)))
}

pub fn deleted(id: &str, object: &str) -> Response<ProxyBody> {
    json_response(
        StatusCode::OK,
        &json!({"id": id, "object": object, "deleted": true}),
    )
}

/// Tells the SDKs' polling helpers how long to wait before the next retrieve.
pub fn with_poll_hint(mut resp: Response<ProxyBody>, ms: u32) -> Response<ProxyBody> {
    if let Ok(v) = HeaderValue::from_str(&ms.to_string()) {
        resp.headers_mut().insert("openai-poll-after-ms", v);
    }
    resp
}

/// Checks a path id's prefix before any lookup, as OpenAI does.
pub fn check_id(param: &str, value: &str, prefix: &str) -> Result<(), Error> {
    if value.starts_with(prefix) && value.len() <= 128 {
        Ok(())
    } else {
        let bare = prefix.trim_end_matches(['_', '-']);
        Err(Error::invalid(
            format!("Invalid '{param}': '{value}'. Expected an ID that begins with '{bare}'."),
            Some(param),
        ))
    }
}

/// Paginates a small in-memory id list (v1 file sub-resources) like a store list: ids sort in
/// creation order, so the same cursor rules apply.
pub fn page_of_ids(ids: &[String], q: &ListQuery) -> Page<String> {
    let mut sorted: Vec<String> = ids.to_vec();
    sorted.sort();
    let forward = match (q.order, q.before.is_some()) {
        (Order::Asc, false) | (Order::Desc, true) => true,
        (Order::Desc, false) | (Order::Asc, true) => false,
    };
    if !forward {
        sorted.reverse();
    }
    let cursor = q.before.as_ref().or(q.after.as_ref());
    let rows: Vec<String> = sorted
        .into_iter()
        .filter(|id| match cursor {
            None => true,
            Some(c) if forward => id > c,
            Some(c) => id < c,
        })
        .take(q.limit + 1)
        .collect();
    Page::from_rows(rows, q.limit, q.before.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_params() {
        let p = ListParams::parse(
            Some("limit=5&order=asc&after=msg_1&run_id=run_x"),
            20,
            100,
            true,
        )
        .unwrap();
        assert_eq!(p.query.limit, 5);
        assert_eq!(p.query.order, Order::Asc);
        assert_eq!(p.query.after.as_deref(), Some("msg_1"));
        assert_eq!(p.get("run_id"), Some("run_x"));
        let e = ListParams::parse(Some("limit=101"), 20, 100, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid 'limit': integer above maximum value. Expected a value <= 100, but got 101 instead."
        );
        let e = ListParams::parse(Some("order=up"), 20, 100, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid value: 'up'. Supported values are: 'asc' and 'desc'."
        );
        assert_eq!(
            query_pairs(Some("include%5B%5D=a+b&x=%zz")),
            vec![
                ("include[]".to_owned(), "a b".to_owned()),
                ("x".to_owned(), "%zz".to_owned())
            ]
        );
    }

    #[test]
    fn id_prefixes() {
        assert!(check_id("thread_id", "thread_abc", "thread_").is_ok());
        let e = check_id("thread_id", "asst_1", "thread_").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid 'thread_id': 'asst_1'. Expected an ID that begins with 'thread'."
        );
    }
}
