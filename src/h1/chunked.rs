//! The end of a chunked body (RFC 9112 §7.1), found while the body is relayed unchanged: a
//! byte-at-a-time state machine, so a body split anywhere across reads is scanned the same.

/// Finds the end of a chunked body while it is relayed unchanged: a state machine over the
/// chunk-size lines, data, last chunk and trailer section (RFC 9112 §7.1).
#[derive(Debug, Default)]
pub struct ChunkedScanner {
    state: ChunkState,
    /// Data bytes left in the current chunk, or the size being read.
    size: u64,
    digits: u8,
    /// Data bytes seen so far, without the framing (what the metrics count as body bytes).
    data: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer line, or of the final empty line.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl ChunkedScanner {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The chunks' data bytes scanned so far (chunk-size lines, CRLFs and trailers excluded).
    pub fn data_len(&self) -> u64 {
        self.data
    }

    /// Consumes `buf`; returns how many of its bytes belong to the body (all of them until
    /// the end of the body is in `buf`).
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                ChunkState::Size => match hex(b) {
                    Some(d) => {
                        if self.size > u64::MAX >> 4 {
                            return Err("chunk size overflows");
                        }
                        self.size = self.size << 4 | u64::from(d);
                        self.digits = self.digits.saturating_add(1);
                    }
                    None if self.digits == 0 => return Err("chunk size missing"),
                    None => match b {
                        b' ' | b'\t' => self.state = ChunkState::SizeSpace,
                        b';' => self.state = ChunkState::Extension,
                        b'\r' => self.state = ChunkState::SizeLf,
                        _ => return Err("invalid chunk size"),
                    },
                },
                ChunkState::SizeSpace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    _ => return Err("invalid chunk size line"),
                },
                ChunkState::Extension => {
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    } else if b == b'\n' {
                        return Err("bare LF in chunk extension");
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err("chunk size line without LF");
                    }
                    self.digits = 0;
                    self.state = if self.size == 0 {
                        ChunkState::TrailerStart
                    } else {
                        ChunkState::Data
                    };
                }
                ChunkState::Data => {
                    // Skip the chunk's data at once.
                    let take =
                        (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= take as u64;
                    self.data += take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err("chunk data longer than its size");
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err("chunk data without CRLF");
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => {
                    self.state = if b == b'\r' {
                        ChunkState::EndLf
                    } else {
                        ChunkState::TrailerLine
                    };
                }
                ChunkState::TrailerLine => {
                    if b == b'\r' {
                        self.state = ChunkState::TrailerLf;
                    }
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err("trailer line without LF");
                    }
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return Err("chunked body without final LF");
                    }
                    self.state = ChunkState::Done;
                    return Ok(i + 1);
                }
                ChunkState::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_scanner_finds_the_end_however_the_bytes_are_split() {
        let body = b"5;ext=1\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-checksum: 1\r\nx-more: 2\r\n\r\n";
        let mut next = b"GET /next".to_vec();
        let mut all = body.to_vec();
        all.append(&mut next);
        let mut s = ChunkedScanner::default();
        assert_eq!(s.scan(&all), Ok(body.len()));
        assert!(s.is_done());
        for split in 1..body.len() {
            let mut s = ChunkedScanner::default();
            assert_eq!(s.scan(&all[..split]), Ok(split));
            assert!(!s.is_done(), "split {split}");
            assert_eq!(
                s.scan(&all[split..]),
                Ok(body.len() - split),
                "split {split}"
            );
            assert!(s.is_done());
            // 5 + 0x1A data bytes, however the framing was split.
            assert_eq!(s.data_len(), 31, "split {split}");
        }
        let mut s = ChunkedScanner::default();
        for b in body {
            assert!(!s.is_done());
            assert_eq!(s.scan(std::slice::from_ref(b)), Ok(1));
        }
        assert!(s.is_done());
        let mut s = ChunkedScanner::default();
        assert_eq!(s.scan(b"0\r\n\r\n"), Ok(5));
        assert!(s.is_done());
    }

    #[test]
    fn chunked_scanner_refuses_malformed_bodies() {
        for bad in [
            &b"\r\n"[..],
            b"z\r\n",
            b"5\r\nhelloX",
            b"5\nhello",
            b"11111111111111111\r\n",
            b"0\r\n\rX",
        ] {
            let mut s = ChunkedScanner::default();
            assert!(s.scan(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
