//! One vector store's chunks in memory, as the search scans them: per embedding dimension a
//! [`Segment`] (one contiguous int8 array of the normalized vectors with their scales and
//! error bounds), and the (file, attributes) [`Groups`] a filter is evaluated against once
//! per group. Loading from SQLite and applying committed changes live here; searching in
//! `search.rs`.

use std::collections::HashMap;

use rusqlite::Connection;

use super::DbError;
use super::kernel::{self, Quantized};
use super::search::{IndexOp, StoreKey, read_epoch};
use crate::model::Attributes;

/// One store's chunks in memory.
#[derive(Default)]
pub(super) struct StoreIndex {
    /// The store's `vs_epochs.epoch` this index reflects.
    pub(super) epoch: i64,
    pub(super) groups: Groups,
    /// One per embedding dimension present (normally exactly one).
    pub(super) segments: Vec<Segment>,
}

/// (file, attributes) pairs; each vector points at one. `list` holds the attributes by group
/// id, `by_file` the group ids of each file, `free` the ids of removed groups for reuse.
#[derive(Default)]
pub(super) struct Groups {
    pub(super) list: Vec<Attributes>,
    pub(super) by_file: HashMap<String, Vec<u32>>,
    pub(super) free: Vec<u32>,
}

/// The vectors of one dimension, structure-of-arrays so the scan streams `codes` only.
pub(super) struct Segment {
    pub(super) dims: usize,
    pub(super) codes: Vec<i8>,
    pub(super) quant: Vec<Quantized>,
    pub(super) rowids: Vec<i64>,
    pub(super) groups: Vec<u32>,
}

impl Segment {
    fn new(dims: usize) -> Segment {
        Segment {
            dims,
            codes: Vec::new(),
            quant: Vec::new(),
            rowids: Vec::new(),
            groups: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.rowids.len()
    }

    fn push(&mut self, rowid: i64, group: u32, v: &[f32]) {
        let q = kernel::quantize_into(v, &mut self.codes);
        self.quant.push(q);
        self.rowids.push(rowid);
        self.groups.push(group);
    }

    /// Removes every vector whose group is marked, moving the last vector into each hole
    /// (order does not matter to a scan).
    fn remove_groups(&mut self, doomed: &[bool]) {
        let mut i = 0;
        while i < self.len() {
            if doomed
                .get(self.groups[i] as usize)
                .copied()
                .unwrap_or(false)
            {
                let last = self.len() - 1;
                if i != last {
                    self.codes
                        .copy_within(last * self.dims..(last + 1) * self.dims, i * self.dims);
                }
                self.codes.truncate(last * self.dims);
                self.quant.swap_remove(i);
                self.rowids.swap_remove(i);
                self.groups.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.codes.capacity()
            + self.quant.capacity() * size_of::<Quantized>()
            + self.rowids.capacity() * size_of::<i64>()
            + self.groups.capacity() * size_of::<u32>()
    }
}

impl Groups {
    /// The group of (file, attributes), made if new.
    fn intern(&mut self, file_id: &str, attributes: &Attributes) -> u32 {
        let ids = self.by_file.entry(file_id.to_owned()).or_default();
        if let Some(&g) = ids.iter().find(|&&g| self.list[g as usize] == *attributes) {
            return g;
        }
        let group = attributes.clone();
        let g = match self.free.pop() {
            Some(g) => {
                self.list[g as usize] = group;
                g
            }
            None => {
                self.list.push(group);
                (self.list.len() - 1) as u32
            }
        };
        ids.push(g);
        g
    }

    /// Forgets the file's groups; returns a mark per group id of those removed.
    fn remove_file(&mut self, file_id: &str) -> Vec<bool> {
        let mut doomed = vec![false; self.list.len()];
        for g in self.by_file.remove(file_id).unwrap_or_default() {
            doomed[g as usize] = true;
            self.list[g as usize] = Attributes::new();
            self.free.push(g);
        }
        doomed
    }
}

impl StoreIndex {
    fn segment_mut(&mut self, dims: usize) -> &mut Segment {
        let at = match self.segments.iter().position(|s| s.dims == dims) {
            Some(at) => at,
            None => {
                self.segments.push(Segment::new(dims));
                self.segments.len() - 1
            }
        };
        &mut self.segments[at]
    }

    fn remove_file(&mut self, file_id: &str) {
        let doomed = self.groups.remove_file(file_id);
        if doomed.iter().any(|d| *d) {
            for s in &mut self.segments {
                s.remove_groups(&doomed);
            }
            self.segments.retain(|s| s.len() > 0);
        }
    }

    /// Applies a change made at `epoch`; false if the index is not at its predecessor (the
    /// caller then drops the index).
    pub(super) fn apply(&mut self, op: IndexOp) -> bool {
        let epoch = match &op {
            IndexOp::ReplaceFile { epoch, .. }
            | IndexOp::RemoveFile { epoch, .. }
            | IndexOp::SetAttributes { epoch, .. } => *epoch,
            IndexOp::DropStore { .. } => return false,
        };
        if self.epoch != epoch - 1 {
            return false;
        }
        self.epoch = epoch;
        match op {
            IndexOp::ReplaceFile {
                file_id,
                attributes,
                vectors,
                ..
            } => {
                self.remove_file(&file_id);
                if !vectors.is_empty() {
                    let g = self.groups.intern(&file_id, &attributes);
                    for (rowid, v) in vectors {
                        self.segment_mut(v.len()).push(rowid, g, &v);
                    }
                }
            }
            IndexOp::RemoveFile { file_id, .. } => self.remove_file(&file_id),
            IndexOp::SetAttributes {
                file_id,
                attributes,
                ..
            } => {
                for &g in self.groups.by_file.get(&file_id).into_iter().flatten() {
                    self.groups.list[g as usize] = attributes.clone();
                }
            }
            IndexOp::DropStore { .. } => {}
        }
        true
    }

    pub(super) fn bytes(&self) -> usize {
        self.segments.iter().map(Segment::bytes).sum::<usize>()
            + self.groups.list.len() * (size_of::<Attributes>() + 64)
    }

    /// Reads the store's epoch and chunks in one read transaction (a consistent snapshot).
    pub(super) fn load(conn: &Connection, key: &StoreKey) -> Result<StoreIndex, DbError> {
        let tx = conn.unchecked_transaction()?;
        let mut index = StoreIndex {
            epoch: read_epoch(&tx, key)?,
            ..StoreIndex::default()
        };
        let mut stmt = tx.prepare_cached(
            "SELECT rowid, file_id, attributes, embedding FROM chunks \
             WHERE tenant = ?1 AND vs_id = ?2",
        )?;
        let mut rows = stmt.query([&key.0, &key.1])?;
        // Rows come in key order, so a file's chunks are adjacent: parse its attributes once.
        let mut last: Option<(String, String, u32)> = None;
        let mut v = Vec::new();
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(0)?;
            let file_id = row.get_ref(1)?.as_str()?;
            let attrs = row.get_ref(2)?.as_str()?;
            let group = match &last {
                Some((f, a, g)) if f == file_id && a == attrs => *g,
                _ => {
                    let parsed: Attributes = serde_json::from_str(attrs)?;
                    let g = index.groups.intern(file_id, &parsed);
                    last = Some((file_id.to_owned(), attrs.to_owned(), g));
                    g
                }
            };
            decode_f32(row.get_ref(3)?.as_blob()?, &mut v);
            index.segment_mut(v.len()).push(rowid, group, &v);
        }
        drop(rows);
        drop(stmt);
        tx.commit()?;
        for s in &mut index.segments {
            // Growth by doubling can leave up to half of a large array unused.
            s.codes.shrink_to_fit();
            s.quant.shrink_to_fit();
            s.rowids.shrink_to_fit();
            s.groups.shrink_to_fit();
        }
        Ok(index)
    }
}

/// Little-endian f32 bytes into `out` (cleared first).
pub(crate) fn decode_f32(bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
}
