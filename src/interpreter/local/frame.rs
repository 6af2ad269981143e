//! The framed protocol between the local executor and its in-sandbox driver (driver.py): a
//! u32 big-endian header length, a JSON header, then the raw bytes of each blob the header
//! lists in `blobs`. Everything read is bounded, so a driver taken over by the user's code
//! can make the session fail but not make the proxy allocate without limit.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the driver sends back (one shape for every reply; absent fields default).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Reply {
    pub op: String,
    #[serde(default)]
    pub blobs: Vec<u64>,
    #[serde(default)]
    pub logs: String,
    #[serde(default)]
    pub error: bool,
    #[serde(default)]
    pub images: usize,
    #[serde(default)]
    pub files: Vec<FileMeta>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FileMeta {
    pub name: String,
    pub size: u64,
    /// Whether the file's bytes follow as a blob (false: over `file_bytes`).
    pub bytes: bool,
}

/// Limits on one reply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub header: usize,
    pub blob: u64,
    pub total: u64,
}

#[derive(Serialize)]
pub(crate) struct Request<'a> {
    pub op: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<&'a str>,
    pub blobs: Vec<usize>,
}

pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    req: &Request<'_>,
    blobs: &[&[u8]],
) -> Result<(), String> {
    let head = serde_json::to_vec(req).map_err(|e| format!("encoding a request: {e}"))?;
    let len = u32::try_from(head.len()).map_err(|_| "request header over 4 GiB".to_string())?;
    let io = |e: std::io::Error| format!("writing to the interpreter: {e}");
    w.write_all(&len.to_be_bytes()).await.map_err(io)?;
    w.write_all(&head).await.map_err(io)?;
    for b in blobs {
        w.write_all(b).await.map_err(io)?;
    }
    w.flush().await.map_err(io)
}

pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    bounds: Bounds,
) -> Result<(Reply, Vec<Vec<u8>>), String> {
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the interpreter process ended".to_string()
        } else {
            format!("reading from the interpreter: {e}")
        }
    };
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.map_err(io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > bounds.header {
        return Err(format!(
            "protocol error: a {len}-byte header (limit {})",
            bounds.header
        ));
    }
    let mut head = vec![0u8; len];
    r.read_exact(&mut head).await.map_err(io)?;
    let reply: Reply =
        serde_json::from_slice(&head).map_err(|e| format!("protocol error: bad header: {e}"))?;
    let mut total = 0u64;
    for &n in &reply.blobs {
        total = total.saturating_add(n);
        if n > bounds.blob || total > bounds.total {
            return Err(format!(
                "protocol error: {total} bytes of blobs (limits {} each, {} in all)",
                bounds.blob, bounds.total
            ));
        }
    }
    let mut blobs = Vec::with_capacity(reply.blobs.len());
    for &n in &reply.blobs {
        let mut b = vec![0u8; n as usize];
        r.read_exact(&mut b).await.map_err(io)?;
        blobs.push(b);
    }
    Ok((reply, blobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(head: &str, blobs: &[&[u8]]) -> Vec<u8> {
        let mut out = (head.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(head.as_bytes());
        for b in blobs {
            out.extend_from_slice(b);
        }
        out
    }

    const B: Bounds = Bounds {
        header: 1024,
        blob: 8,
        total: 12,
    };

    #[tokio::test]
    async fn a_reply_with_blobs_round_trips_and_oversized_frames_are_refused() {
        let data = frame(
            r#"{"op":"result","logs":"hi","images":1,"blobs":[3,2]}"#,
            &[b"png", b"ab"],
        );
        let (r, blobs) = read_frame(&mut &data[..], B).await.unwrap();
        assert_eq!(
            (r.op.as_str(), r.logs.as_str(), r.images),
            ("result", "hi", 1)
        );
        assert_eq!(blobs, vec![b"png".to_vec(), b"ab".to_vec()]);

        let big_blob = frame(r#"{"op":"result","blobs":[9]}"#, &[]);
        let e = read_frame(&mut &big_blob[..], B).await.unwrap_err();
        assert!(e.contains("protocol error"), "{e}");
        let too_many = frame(r#"{"op":"result","blobs":[8,8]}"#, &[]);
        assert!(read_frame(&mut &too_many[..], B).await.is_err());
        let mut huge = 5000u32.to_be_bytes().to_vec();
        huge.extend_from_slice(&[b'x'; 10]);
        let e = read_frame(&mut &huge[..], B).await.unwrap_err();
        assert!(e.contains("5000-byte header"), "{e}");
        let cut = frame(r#"{"op":"result","blobs":[3]}"#, &[b"p"]);
        let e = read_frame(&mut &cut[..], B).await.unwrap_err();
        assert!(e.contains("ended"), "{e}");
        let garbage = frame("not json", &[]);
        assert!(read_frame(&mut &garbage[..], B).await.is_err());
    }

    #[tokio::test]
    async fn a_request_is_framed_with_its_blob_lengths() {
        let mut out = Vec::new();
        let req = Request {
            op: "put",
            code: None,
            names: vec!["a.csv"],
            blobs: vec![3],
        };
        write_frame(&mut out, &req, &[b"1,2"]).await.unwrap();
        let n = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        let head: serde_json::Value = serde_json::from_slice(&out[4..4 + n]).unwrap();
        assert_eq!(
            head,
            serde_json::json!({"op": "put", "names": ["a.csv"], "blobs": [3]})
        );
        assert_eq!(&out[4 + n..], b"1,2");
    }
}
