//! `GET /v1/files`: the caller's files, here and upstream, as one list.
//!
//! Uploads of purpose `batch`, `fine-tune` and `evals` go to the upstream (its jobs read them)
//! and the rest stay here, so neither side alone is the caller's list:
//! - a purpose only the upstream holds ([`UPSTREAM_PURPOSES`]) is forwarded, untouched;
//! - any other purpose is listed here only (the upstream's own `assistants` files are of no
//!   use to the local vector stores, and `GET /v1/files/{id}` still reaches them);
//! - no purpose: both lists merged, with OpenAI's semantics (`limit` up to 10,000, `order`
//!   by `created_at`, newest first by default, `after` = the last id of the previous page,
//!   from either side).
//!
//! The merged order is `created_at`; within one second the upstream's files come before the
//! local ones when newest first (after them when oldest first), each side in its own order.
//! Placing an `after` cursor takes its `created_at`: a local file is read here, another id is
//! retrieved upstream. Each side then goes on from the cursor: the cursor's own side from
//! the id, as its list does; the other side by `created_at`, the local list from a bound on
//! its creation-ordered ids, the upstream's from its start (at most [`MAX_SCAN_PAGES`]).
//!
//! A failing upstream does not hide local files: the page holds the local files alone, says
//! so in the [`PARTIAL_HEADER`] header and logs a warning. An upstream answering 404 has no
//! file API (vLLM, Ollama) and so no files: nothing is marked.

use std::cmp::Ordering;

use http::{HeaderValue, Response};
use serde_json::Value;

use super::service;
use crate::api::common::{self, ListParams};
use crate::api::ctx::{Ctx, Reply};
use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::ids::bound_at;
use crate::store::{ListQuery, Order, Page};
use crate::tenancy::Caller;
use crate::upstream::chat::{CallError, get_json};

/// Purposes only the upstream holds: uploads it owns and the files its jobs write.
pub const UPSTREAM_PURPOSES: &[&str] = &[
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "evals",
];

/// Set (to `unavailable`) on a merged list whose upstream half could not be read.
pub const PARTIAL_HEADER: &str = "x-assistants-proxy-upstream-files";

/// `/files` pages hold at most this many files, here and upstream.
const MAX_PAGE: usize = 10_000;

/// Upstream pages read to find where a local cursor falls in the upstream's list (100,000
/// files newer than it); beyond that the upstream half is reported unavailable.
const MAX_SCAN_PAGES: usize = 10;

/// Which list a file comes from; the derived order is the tie-break within one second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Local,
    Upstream,
}

/// A listed file: its object and its place in the merged order.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    created_at: i64,
    side: Side,
    id: String,
    value: Value,
}

impl Item {
    fn key(&self) -> (i64, Side) {
        (self.created_at, self.side)
    }

    /// An upstream file object; `None` if it lacks the id or time the merge needs.
    fn upstream(value: Value) -> Option<Item> {
        Some(Item {
            created_at: value["created_at"].as_i64()?,
            side: Side::Upstream,
            id: value["id"].as_str()?.to_owned(),
            value,
        })
    }
}

/// Whether a file with `key` comes after the cursor at `cursor` in the merged `order` (used
/// for the side the cursor is not on, where equal keys cannot occur).
fn follows(order: Order, key: (i64, Side), cursor: (i64, Side)) -> bool {
    match order {
        Order::Desc => key < cursor,
        Order::Asc => key > cursor,
    }
}

/// Merges two lists, each already in `order`, into one in `order`.
fn merge(order: Order, local: Vec<Item>, upstream: Vec<Item>) -> Vec<Item> {
    let mut out = Vec::with_capacity(local.len() + upstream.len());
    let (mut l, mut u) = (
        local.into_iter().peekable(),
        upstream.into_iter().peekable(),
    );
    loop {
        let take_local = match (l.peek(), u.peek()) {
            (Some(a), Some(b)) => {
                let c = a.key().cmp(&b.key());
                match order {
                    Order::Asc => c != Ordering::Greater,
                    Order::Desc => c == Ordering::Greater,
                }
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        let next = if take_local { l.next() } else { u.next() };
        out.extend(next);
    }
}

/// Files read from one side: up to the number wanted, and whether more may follow.
#[derive(Debug, Default)]
struct Fetched {
    items: Vec<Item>,
    more: bool,
}

/// Where the previous page ended.
struct Cursor {
    created_at: i64,
    side: Side,
    id: String,
}

impl Cursor {
    fn key(&self) -> (i64, Side) {
        (self.created_at, self.side)
    }
}

pub async fn list(ctx: Ctx<'_>) -> Reply {
    // `/files` is the odd list: up to 10 000 per page, 10 000 by default, no `before`.
    let p = ListParams::parse(ctx.query(), MAX_PAGE, MAX_PAGE, false)?;
    let purpose = p.get("purpose").filter(|v| !v.is_empty());
    if purpose.is_some_and(|p| UPSTREAM_PURPOSES.contains(&p)) {
        return super::forward_ctx(ctx).await;
    }
    let (state, caller) = (ctx.state, &ctx.caller);
    if let Some(purpose) = purpose {
        let page = caller
            .store
            .files
            .list_files(&caller.tenant, Some(purpose), &p.query)
            .await?;
        let page = Page {
            items: service::visible(page.items),
            has_more: page.has_more,
        };
        return Ok(common::list_response(
            &page,
            |f| &f.id,
            |f| serde_json::to_value(f).unwrap_or_default(),
        ));
    }
    merged(state, caller, &p.query).await
}

/// Both sides merged (no purpose filter).
async fn merged(
    state: &AppState,
    caller: &Caller,
    q: &ListQuery,
) -> Result<Response<ProxyBody>, Error> {
    let (order, limit) = (q.order, q.limit);
    let want = limit.saturating_add(1);
    let cursor = match &q.after {
        Some(id) => Some(place(state, caller, id).await?),
        None => None,
    };
    let local = match &cursor {
        None => local_files(caller, order, None, want, |_| true).await?,
        Some(c) if c.side == Side::Local => {
            local_files(caller, order, Some(c.id.clone()), want, |_| true).await?
        }
        Some(c) => {
            let start = local_bound(order, c.created_at);
            local_files(caller, order, Some(start), want, |i| {
                follows(order, i.key(), c.key())
            })
            .await?
        }
    };
    let upstream = match &cursor {
        None => upstream_files(state, caller, order, None, want, None).await,
        Some(c) if c.side == Side::Upstream => {
            upstream_files(state, caller, order, Some(&c.id), want, None).await
        }
        Some(c) => upstream_files(state, caller, order, None, want, Some(c)).await,
    };
    let (upstream, partial) = match upstream {
        Ok(f) => (f, false),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "the upstream's file list is unavailable; listing local files only"
            );
            (Fetched::default(), true)
        }
    };
    let more = local.more || upstream.more;
    let mut items = merge(order, local.items, upstream.items);
    let page = Page {
        has_more: more || items.len() > limit,
        items: {
            items.truncate(limit);
            items
        },
    };
    let mut resp = common::list_response(&page, |i| i.id.as_str(), |i| &i.value);
    if partial {
        resp.headers_mut()
            .insert(PARTIAL_HEADER, HeaderValue::from_static("unavailable"));
    }
    Ok(resp)
}

/// Finds where `after` falls: a local file, or else one the upstream knows.
async fn place(state: &AppState, caller: &Caller, id: &str) -> Result<Cursor, Error> {
    if let Some(f) = super::local(state, caller, id).await? {
        return Ok(Cursor {
            created_at: f.created_at,
            side: Side::Local,
            id: f.id,
        });
    }
    let path = format!("/v1/files/{}", encode(id));
    match get_json(&state.upstream, &path, &caller.upstream_headers).await {
        Ok(v) => match v["created_at"].as_i64() {
            Some(created_at) => Ok(Cursor {
                created_at,
                side: Side::Upstream,
                id: id.to_owned(),
            }),
            None => Err(Error::UpstreamUnavailable {
                message: format!("The upstream's file '{id}' has no created_at."),
                code: "upstream_error",
            }),
        },
        Err(e) if e.status == Some(404) => Err(Error::NotFound {
            message: format!("No such File object: {id}"),
            param: Some("after".into()),
        }),
        // The page after an upstream file cannot be placed without the upstream: saying so
        // beats a page that silently starts elsewhere.
        Err(e) => Err(Error::UpstreamUnavailable {
            message: format!(
                "'after' names a file that is not stored here, and the upstream could not be asked where it is: {e}"
            ),
            code: "upstream_error",
        }),
    }
}

/// The id bound the local list starts after to reach files on the far side of an upstream
/// cursor made at `created_at`. A local file's `created_at` is the second its id was made in
/// or the next (an upload takes both at once), so a bound a second wider than that skips only
/// files the cursor has passed; the exact test is `follows`.
fn local_bound(order: Order, created_at: i64) -> String {
    let millis = |secs: i64| u64::try_from(secs.saturating_mul(1000)).unwrap_or(0);
    match order {
        // Newest first: files with created_at <= c have ids made before second c + 1.
        Order::Desc => bound_at("file-", millis(created_at.saturating_add(2)), false),
        // Oldest first: files with created_at > c have ids made from second c on.
        Order::Asc => bound_at("file-", millis(created_at - 1).saturating_sub(1), true),
    }
}

/// Local files in `order` after the id `after`, keeping those `keep` accepts, until `want`.
async fn local_files(
    caller: &Caller,
    order: Order,
    after: Option<String>,
    want: usize,
    keep: impl Fn(&Item) -> bool,
) -> Result<Fetched, Error> {
    let mut q = ListQuery {
        limit: want.min(MAX_PAGE),
        order,
        after,
        before: None,
    };
    let mut out = Fetched::default();
    loop {
        let page = caller
            .store
            .files
            .list_files(&caller.tenant, None, &q)
            .await?;
        let last = page.items.last().map(|f| f.id.clone());
        for f in service::visible(page.items) {
            let item = Item {
                created_at: f.created_at,
                side: Side::Local,
                id: f.id.clone(),
                value: serde_json::to_value(&f).map_err(|e| Error::internal(e.to_string()))?,
            };
            if keep(&item) {
                out.items.push(item);
                if out.items.len() >= want {
                    out.more = true;
                    return Ok(out);
                }
            }
        }
        match (page.has_more, last) {
            (true, Some(last)) => q.after = Some(last),
            _ => return Ok(out),
        }
    }
}

/// Upstream files in `order` after the id `after`, until `want`. A `scan` keeps only the
/// files past `scan`'s cursor, read from the start in whole pages, at most MAX_SCAN_PAGES.
async fn upstream_files(
    state: &AppState,
    caller: &Caller,
    order: Order,
    after: Option<&str>,
    want: usize,
    scan: Option<&Cursor>,
) -> Result<Fetched, CallError> {
    let mut after = after.map(str::to_owned);
    let mut out = Fetched::default();
    for _ in 0..MAX_SCAN_PAGES {
        let limit = match scan {
            Some(_) => MAX_PAGE,
            None => want.saturating_sub(out.items.len()).clamp(1, MAX_PAGE),
        };
        let mut path = format!(
            "/v1/files?limit={limit}&order={}",
            match order {
                Order::Asc => "asc",
                Order::Desc => "desc",
            }
        );
        if let Some(a) = &after {
            path.push_str(&format!("&after={}", encode(a)));
        }
        let page = match get_json(&state.upstream, &path, &caller.upstream_headers).await {
            Ok(page) => page,
            Err(e) if e.status == Some(404) => {
                tracing::debug!(error = %e, "the upstream has no file list");
                return Ok(out);
            }
            Err(e) => return Err(e),
        };
        let Some(data) = page["data"].as_array() else {
            return Err(malformed("it has no 'data' list"));
        };
        let mut last = None;
        for v in data {
            let item = Item::upstream(v.clone())
                .ok_or_else(|| malformed("a file lacks its id or created_at"))?;
            last = Some(item.id.clone());
            if scan.is_none_or(|c| follows(order, item.key(), c.key())) {
                out.items.push(item);
                if out.items.len() >= want {
                    out.more = true;
                    return Ok(out);
                }
            }
        }
        match (page["has_more"].as_bool().unwrap_or(false), last) {
            (true, Some(last)) => after = Some(last),
            _ => return Ok(out),
        }
    }
    Err(CallError::server(format!(
        "more than {} upstream files had to be read to place the page",
        MAX_SCAN_PAGES * MAX_PAGE
    )))
}

fn malformed(what: &str) -> CallError {
    CallError::server(format!("The upstream's file list is malformed: {what}."))
}

/// Percent-encodes a query or path value (ids are plain, but they come from the client).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(side: Side, id: &str, created_at: i64) -> Item {
        Item {
            created_at,
            side,
            id: id.to_owned(),
            value: json!({"id": id}),
        }
    }

    fn ids(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn merge_orders_by_time_with_upstream_first_in_a_tie_when_newest_first() {
        let local = vec![item(Side::Local, "l3", 30), item(Side::Local, "l1", 10)];
        let up = vec![
            item(Side::Upstream, "u3", 30),
            item(Side::Upstream, "u2", 20),
        ];
        assert_eq!(
            ids(&merge(Order::Desc, local.clone(), up.clone())),
            ["u3", "l3", "u2", "l1"]
        );
        let rev = |v: Vec<Item>| v.into_iter().rev().collect::<Vec<_>>();
        assert_eq!(
            ids(&merge(Order::Asc, rev(local), rev(up))),
            ["l1", "u2", "l3", "u3"]
        );
    }

    #[test]
    fn the_other_side_follows_a_cursor_by_time_and_tie_rule() {
        let (l, u) = (Side::Local, Side::Upstream);
        // Newest first, cursor on a local file at 30: upstream files at 30 came before it.
        assert!(!follows(Order::Desc, (30, u), (30, l)));
        assert!(follows(Order::Desc, (29, u), (30, l)));
        // Cursor on an upstream file at 30: local files at 30 come after it.
        assert!(follows(Order::Desc, (30, l), (30, u)));
        assert!(!follows(Order::Desc, (31, l), (30, u)));
        // Oldest first mirrors it.
        assert!(follows(Order::Asc, (30, u), (30, l)));
        assert!(!follows(Order::Asc, (30, l), (30, u)));
    }

    #[test]
    fn local_bounds_enclose_the_files_past_the_cursor() {
        let c = 1_700_000_000i64;
        // A local file made at second c (id) with created_at c or c + 1.
        let made = |secs: i64| bound_at("file-", u64::try_from(secs * 1000 + 500).unwrap(), false);
        // Newest first: ids below the bound include every file with created_at <= c.
        assert!(made(c) < local_bound(Order::Desc, c));
        assert!(made(c - 1) < local_bound(Order::Desc, c));
        // Oldest first: ids above the bound include every file with created_at > c.
        assert!(made(c) > local_bound(Order::Asc, c));
        assert!(made(c + 1) > local_bound(Order::Asc, c));
        assert_eq!(encode("file-a b/c"), "file-a%20b%2Fc");
    }
}
