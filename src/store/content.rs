//! A file's content as the store keeps it: pieces of at most [`PART_SIZE`] bytes, read back
//! piece by piece (a download) or whole (an ingestion).

use bytes::Bytes;

use super::{Store, StoreError, StoreResult, Tenant};
use crate::model::FileObject;

/// Size of a stored content piece: the store contract's upper bound, and the most an upload or
/// download holds in memory per file at once.
pub const PART_SIZE: usize = 1024 * 1024;

/// Number of stored pieces of a file of `bytes` bytes.
pub fn part_count(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(PART_SIZE as u64)).unwrap_or(u32::MAX)
}

/// The whole content in memory (ingestion needs it whole: PDF and DOCX are random-access).
pub async fn read_all(store: &Store, tenant: &Tenant, f: &FileObject) -> StoreResult<Vec<u8>> {
    let mut out = Vec::with_capacity(usize::try_from(f.bytes).unwrap_or(0));
    for i in 0..part_count(f.bytes) {
        out.extend_from_slice(&read_part(store, tenant, &f.id, i).await?);
    }
    Ok(out)
}

/// One piece; a listed file missing one is corrupt.
pub async fn read_part(store: &Store, tenant: &Tenant, id: &str, index: u32) -> StoreResult<Bytes> {
    store
        .files
        .get_file_part(tenant, id, index)
        .await?
        .ok_or_else(|| StoreError::Other(format!("file {id} is missing content piece {index}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_content_exactly() {
        assert_eq!(part_count(0), 0);
        assert_eq!(part_count(1), 1);
        assert_eq!(part_count(PART_SIZE as u64), 1);
        assert_eq!(part_count(PART_SIZE as u64 + 1), 2);
    }
}
