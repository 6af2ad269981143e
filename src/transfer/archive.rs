//! `export` and `import`: a store as a versioned JSON-lines file (docs/export-format.md),
//! streamed both ways: a header line, one line per record (a file's content in pieces of at
//! most 1 MiB, base64; one line per chunk), and an `end` line with the record count, so a
//! truncated file is detected. Memory stays at one page of records (and, on import, one
//! file's chunks, which a store writes together).

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::Failure;
use super::progress::Progress;
use crate::store::dump::{Kind, Record, write_page};
use crate::store::{Store, Tenant};

pub const FORMAT: &str = "assistants-proxy-export";
pub const VERSION: u32 = 1;
/// The longest line import accepts: a 1 MiB piece in base64 is ~1.4 MB; a chunk with an
/// 8,192-float embedding is well under this.
const MAX_LINE: usize = 8 * 1024 * 1024;
/// Records written per page on import, and the content bytes that also close a page.
const IMPORT_PAGE: usize = 500;
const IMPORT_PAGE_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// The one tenant exported, or None for all.
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct End {
    kind: EndTag,
    records: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum EndTag {
    #[serde(rename = "end")]
    End,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::new(format!("{what}: {e}"))
}

/// Writes every record of `store` (of `tenant`, or all) to `out`; the count per kind.
pub async fn export(
    store: &Store,
    tenant: Option<&Tenant>,
    out: &mut dyn Write,
) -> Result<Vec<(Kind, u64)>, Failure> {
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
        tenant: tenant.map(|t| t.as_str().to_owned()),
    };
    let encode = |e: serde_json::Error| Failure::new(format!("encoding: {e}"));
    serde_json::to_writer(&mut *out, &header).map_err(encode)?;
    out.write_all(b"\n").map_err(io("writing the export"))?;
    let progress = Progress::new("export");
    let mut counts = Vec::new();
    let mut total = 0u64;
    for kind in Kind::ALL {
        let count = store.dump.count(kind, tenant).await.ok();
        let mut bar = progress.kind(kind.name(), count, 0, 0);
        let mut cursor = None;
        let mut n = 0u64;
        loop {
            let page = store
                .dump
                .scan(kind, tenant, cursor.as_ref(), kind.page_size())
                .await
                .map_err(|e| Failure::new(format!("reading {}: {e}", kind.name())))?;
            let bytes: u64 = page.records.iter().map(|r| r.content_bytes()).sum();
            for r in &page.records {
                serde_json::to_writer(&mut *out, r).map_err(encode)?;
                out.write_all(b"\n").map_err(io("writing the export"))?;
            }
            n += page.records.len() as u64;
            bar.advance(page.records.len() as u64, bytes);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        bar.finish();
        total += n;
        counts.push((kind, n));
    }
    serde_json::to_writer(
        &mut *out,
        &End {
            kind: EndTag::End,
            records: total,
        },
    )
    .map_err(encode)?;
    out.write_all(b"\n").map_err(io("writing the export"))?;
    out.flush().map_err(io("writing the export"))?;
    Ok(counts)
}

/// Reads one line (without its newline) into `buf`; false at the end of the input.
fn read_line(input: &mut dyn BufRead, buf: &mut Vec<u8>, line_no: u64) -> Result<bool, Failure> {
    buf.clear();
    let mut limited = std::io::Read::take(&mut *input, MAX_LINE as u64 + 1);
    let n = limited
        .read_until(b'\n', buf)
        .map_err(io("reading the import"))?;
    if n == 0 {
        return Ok(false);
    }
    if buf.len() > MAX_LINE {
        return Err(Failure::new(format!(
            "line {line_no}: longer than {MAX_LINE} bytes"
        )));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(true)
}

/// Whether `r` continues the chunks of the file `last` holds (a file's chunks are one write).
fn same_file(last: Option<&Record>, r: &Record) -> bool {
    match (last, r) {
        (
            Some(Record::Chunk {
                tenant: t1,
                vector_store_id: v1,
                file_id: f1,
                ..
            }),
            Record::Chunk {
                tenant: t2,
                vector_store_id: v2,
                file_id: f2,
                ..
            },
        ) => t1 == t2 && v1 == v2 && f1 == f2,
        _ => false,
    }
}

/// Loads an export into `store` (of `tenant` only, if given); the count per kind.
/// Idempotent: every record is an upsert by tenant and id.
pub async fn import(
    store: &Store,
    tenant: Option<&Tenant>,
    input: &mut dyn BufRead,
) -> Result<Vec<(Kind, u64)>, Failure> {
    let mut buf = Vec::new();
    if !read_line(input, &mut buf, 1)? {
        return Err(Failure::new("the import is empty (no header line)"));
    }
    let header: Header = serde_json::from_slice(&buf)
        .map_err(|e| Failure::new(format!("line 1 is not an export header: {e}")))?;
    if header.format != FORMAT {
        return Err(Failure::new(format!(
            "line 1: format {:?}, expected {FORMAT:?}",
            header.format
        )));
    }
    if header.version != VERSION {
        return Err(Failure::new(format!(
            "line 1: format version {}, this binary reads version {VERSION}",
            header.version
        )));
    }
    let progress = Progress::new("import");
    let mut bar = progress.kind("records", None, 0, 0);
    let mut counts: Vec<(Kind, u64)> = Kind::ALL.iter().map(|k| (*k, 0)).collect();
    let mut page: Vec<Record> = Vec::new();
    let mut page_bytes = 0u64;
    let mut seen = 0u64;
    let mut line_no = 1u64;
    let mut ended = None;
    loop {
        line_no += 1;
        if !read_line(input, &mut buf, line_no)? {
            break;
        }
        if buf.is_empty() {
            continue;
        }
        if ended.is_some() {
            return Err(Failure::new(format!(
                "line {line_no}: data after the end line"
            )));
        }
        let bad = |e: serde_json::Error| Failure::new(format!("line {line_no}: not a record: {e}"));
        if Record::kind_of(&buf).map_err(bad)? == "end" {
            let end: End = serde_json::from_slice(&buf).map_err(bad)?;
            ended = Some(end.records);
            continue;
        }
        let record = Record::from_line(&buf).map_err(bad)?;
        seen += 1;
        if tenant.is_some_and(|t| t.as_str() != record.tenant()) {
            continue;
        }
        let full = page.len() >= IMPORT_PAGE || page_bytes >= IMPORT_PAGE_BYTES;
        if full && !same_file(page.last(), &record) {
            flush(store, &mut page, &mut counts, &mut bar).await?;
            page_bytes = 0;
        }
        page_bytes += record.content_bytes();
        page.push(record);
    }
    flush(store, &mut page, &mut counts, &mut bar).await?;
    bar.finish();
    match ended {
        Some(n) if n == seen => Ok(counts),
        Some(n) => Err(Failure::new(format!(
            "the end line counts {n} records but the file holds {seen}"
        ))),
        None => Err(Failure::new(format!(
            "the import ends without its end line after {seen} records (truncated?); what \
             was read is written, and importing a whole file again is safe"
        ))),
    }
}

async fn flush(
    store: &Store,
    page: &mut Vec<Record>,
    counts: &mut [(Kind, u64)],
    bar: &mut super::progress::KindBar,
) -> Result<(), Failure> {
    if page.is_empty() {
        return Ok(());
    }
    let records = std::mem::take(page);
    let bytes: u64 = records.iter().map(|r| r.content_bytes()).sum();
    let n = records.len() as u64;
    for r in &records {
        if let Some(c) = counts.iter_mut().find(|(k, _)| *k == r.kind()) {
            c.1 += 1;
        }
    }
    write_page(store, records)
        .await
        .map_err(|e| Failure::new(format!("writing: {e}")))?;
    bar.advance(n, bytes);
    Ok(())
}
