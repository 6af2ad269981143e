//! `--verify`: per kind, the number of rows and an order-independent checksum on both
//! sides. The checksum of a kind is the wrapping sum of the first 128 bits of SHA-256 over
//! each record's canonical JSON (tenant included, file bytes included), so the two backends'
//! different scan orders do not matter while any changed, missing or extra row does.

use sha2::{Digest, Sha256};

use super::Failure;
use crate::store::dump::{DumpStore, Kind};
use crate::store::{StoreResult, Tenant};

/// Rows and checksum of one kind on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub count: u64,
    pub checksum: u128,
}

/// One kind on both sides.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub kind: Kind,
    pub source: Tally,
    pub target: Tally,
}

impl Comparison {
    pub fn matches(&self) -> bool {
        self.source == self.target
    }
}

/// Reads a kind whole (page by page) and tallies it.
pub async fn tally(
    store: &dyn DumpStore,
    kind: Kind,
    tenant: Option<&Tenant>,
) -> StoreResult<Tally> {
    let mut t = Tally::default();
    let mut cursor = None;
    loop {
        let page = store
            .scan(kind, tenant, cursor.as_ref(), kind.page_size())
            .await?;
        for r in &page.records {
            let line = serde_json::to_vec(r)
                .map_err(|e| crate::store::StoreError::Other(format!("encoding a record: {e}")))?;
            let digest = Sha256::digest(&line);
            let mut head = [0u8; 16];
            head.copy_from_slice(&digest[..16]);
            t.count += 1;
            t.checksum = t.checksum.wrapping_add(u128::from_be_bytes(head));
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(t),
        }
    }
}

/// Compares every kind of the two stores.
pub async fn compare(
    source: &dyn DumpStore,
    target: &dyn DumpStore,
    tenant: Option<&Tenant>,
) -> Result<Vec<Comparison>, Failure> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let fail = |side: &str, e: crate::store::StoreError| {
            Failure::new(format!(
                "verify: reading {} from the {side}: {e}",
                kind.name()
            ))
        };
        let (s, t) = tokio::join!(tally(source, kind, tenant), tally(target, kind, tenant));
        out.push(Comparison {
            kind,
            source: s.map_err(|e| fail("source", e))?,
            target: t.map_err(|e| fail("target", e))?,
        });
    }
    Ok(out)
}

/// The report lines, one per kind, and whether everything matched.
pub fn report(comparisons: &[Comparison]) -> (String, bool) {
    let mut text = String::new();
    let mut ok = true;
    for c in comparisons {
        let verdict = if c.matches() {
            "ok"
        } else {
            ok = false;
            if c.source.count != c.target.count {
                "MISMATCH (counts differ)"
            } else {
                "MISMATCH (contents differ)"
            }
        };
        text.push_str(&format!(
            "verify {:<18} source {:>9} target {:>9}  {verdict}\n",
            c.kind.name(),
            c.source.count,
            c.target.count
        ));
    }
    (text, ok)
}
