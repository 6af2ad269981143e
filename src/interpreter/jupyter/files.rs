//! Files in and out of a kernel: input files written through execute requests (base64
//! chunks), and after each cell the data directory listed and compared with the listing
//! before, the new and changed files read back (up to `file_bytes` each).

use std::collections::HashMap;

use base64::Engine;
use bytes::Bytes;

use super::{JupyterSession, python};
use crate::interpreter::executor::{ExecError, InputFile, OutputFile};

/// path → (size, mtime ns).
pub(super) type Listing = HashMap<String, (u64, i64)>;

fn parse_listing(json: &str) -> Option<Listing> {
    let entries: Vec<(String, u64, i64)> = serde_json::from_str(json).ok()?;
    Some(entries.into_iter().map(|(n, s, m)| (n, (s, m))).collect())
}

impl JupyterSession {
    /// The data directory now: path → (size, mtime ns).
    pub(super) async fn list(&mut self) -> Result<Listing, ExecError> {
        let col = self.hidden(&python::listing(&self.data_dir)).await?;
        let Some(json) = col.hidden.first() else {
            // A user who replaced IPython's display or removed the directory: no files.
            tracing::warn!(kernel = %self.kernel, error = ?col.error_text, "the data directory listing answered nothing");
            return Ok(HashMap::new());
        };
        Ok(parse_listing(json).unwrap_or_default())
    }

    /// Files created or changed since the last listing, read back when not too big.
    /// `listed`: the listing that came with the cell's reply, if it could be made there.
    pub(super) async fn changed_files(
        &mut self,
        listed: Option<String>,
    ) -> Result<Vec<OutputFile>, ExecError> {
        let now = match listed.as_deref().and_then(parse_listing) {
            Some(now) => now,
            None => self.list().await?,
        };
        let mut changed: Vec<(&String, u64)> = now
            .iter()
            .filter(|(name, v)| self.known.get(*name) != Some(v))
            .map(|(name, (size, _))| (name, *size))
            .collect();
        changed.sort();
        let max = self.limits.file_bytes;
        let to_read: Vec<&str> = changed
            .iter()
            .filter(|(_, size)| *size <= max)
            .map(|(n, _)| n.as_str())
            .collect();
        let mut read: HashMap<String, Option<Vec<u8>>> = HashMap::new();
        if !to_read.is_empty() {
            let col = self
                .hidden(&python::read_files(&self.data_dir, &to_read, max))
                .await?;
            let mut bufs: Vec<Option<Vec<u8>>> = vec![None; to_read.len()];
            for piece in &col.hidden {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(piece) else {
                    continue;
                };
                let Some(i) = v[0]
                    .as_u64()
                    .map(|i| i as usize)
                    .filter(|i| *i < bufs.len())
                else {
                    continue;
                };
                match v[1].as_str() {
                    Some(b64) => {
                        let buf = bufs[i].get_or_insert_with(Vec::new);
                        match base64::engine::general_purpose::STANDARD.decode(b64) {
                            Ok(b) => buf.extend_from_slice(&b),
                            Err(_) => bufs[i] = None,
                        }
                    }
                    None => bufs[i] = None,
                }
            }
            for (name, buf) in to_read.iter().zip(bufs) {
                read.insert((*name).to_owned(), buf);
            }
        }
        let files = changed
            .iter()
            .map(|(name, size)| {
                let bytes = read.remove(name.as_str()).flatten().map(Bytes::from);
                OutputFile {
                    name: (*name).clone(),
                    size: bytes.as_ref().map_or(*size, |b| b.len() as u64),
                    bytes,
                }
            })
            .collect();
        self.known = now;
        Ok(files)
    }

    pub(super) async fn put_inner(&mut self, files: &[InputFile]) -> Result<(), ExecError> {
        for f in files {
            if f.name.is_empty() || f.name == "." || f.name == ".." || f.name.contains(['/', '\0'])
            {
                return Err(ExecError::Unavailable(format!(
                    "input file name {:?} is not a plain file name",
                    f.name
                )));
            }
            let chunks: Vec<&[u8]> = if f.bytes.is_empty() {
                vec![&[]]
            } else {
                f.bytes.chunks(python::PUT_CHUNK).collect()
            };
            let last = chunks.len() - 1;
            for (i, chunk) in chunks.into_iter().enumerate() {
                let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
                let code = python::put_chunk(&self.data_dir, &f.name, &b64, i == 0, i == last);
                let col = self.hidden(&code).await?;
                if col.error {
                    return Err(ExecError::Unavailable(format!(
                        "writing {} into the session failed: {}",
                        f.name,
                        col.error_text.unwrap_or_default()
                    )));
                }
            }
        }
        // Input files are not outputs.
        self.known = self.list().await?;
        Ok(())
    }
}
