//! Helpers of the files and vector-store tests: multipart bodies, generated PDF and DOCX
//! documents, uploads, and polling until ingestion ends.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::support::Api;

pub const BOUNDARY: &str = "----assistantsProxyTestBoundary7MA4YWxkTrZu0gW";

/// One form field: `(name, filename, content)`; a filename makes it a file part.
pub type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// A `multipart/form-data` body with [`BOUNDARY`].
pub fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, data) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => out.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

pub fn content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// POSTs a multipart body to `/v1/files`; returns status and parsed body.
pub async fn post_multipart(api: &Api, body: Vec<u8>) -> (http::StatusCode, Value) {
    let (status, _, out) = api
        .raw(
            http::Method::POST,
            "/v1/files",
            Some(&content_type()),
            Bytes::from(body),
        )
        .await;
    let v = serde_json::from_slice(&out)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out).into_owned()));
    (status, v)
}

/// Uploads a file (purpose first, as the Python SDK does) and returns the File object.
pub async fn upload(api: &Api, filename: &str, purpose: &str, data: &[u8]) -> Value {
    let body = multipart(&[
        ("purpose", None, purpose.as_bytes()),
        ("file", Some(filename), data),
    ]);
    let (status, v) = post_multipart(api, body).await;
    assert_eq!(status, 200, "upload {filename}: {v}");
    v
}

/// Polls a vector-store file until it leaves `in_progress`.
pub async fn wait_file(api: &Api, vs_id: &str, file_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, v) = api
            .get(&format!("/v1/vector_stores/{vs_id}/files/{file_id}"))
            .await;
        assert_eq!(status, 200, "{v}");
        if v["status"] != "in_progress" {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "file {file_id} still in progress: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls a vector store until no file is in progress (as the Python SDK's poller does).
pub async fn wait_store(api: &Api, vs_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, v) = api.get(&format!("/v1/vector_stores/{vs_id}")).await;
        assert_eq!(status, 200, "{v}");
        if v["file_counts"]["in_progress"] == 0 {
            return v;
        }
        assert!(Instant::now() < deadline, "store still in progress: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls a batch until its status is terminal (as the Node SDK's poller does).
pub async fn wait_batch(api: &Api, vs_id: &str, batch_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, v) = api
            .get(&format!(
                "/v1/vector_stores/{vs_id}/file_batches/{batch_id}"
            ))
            .await;
        assert_eq!(status, 200, "{v}");
        if v["status"] != "in_progress" {
            return v;
        }
        assert!(Instant::now() < deadline, "batch still in progress: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A PDF with one page per string, each drawn in Courier (a standard font, no embedding).
pub fn pdf(pages: &[&str]) -> Vec<u8> {
    pdf_with(pages, true)
}

/// [`pdf`], with the page streams deflated or left as plain text (larger files).
pub fn pdf_with(pages: &[&str], compress: bool) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};

    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font",
        "Subtype" => "Type1",
        "BaseFont" => "Courier",
    });
    let resources_id = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => font_id },
    });
    let mut kids: Vec<Object> = Vec::new();
    for text in pages {
        let mut ops = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 10.into()]),
            Operation::new("TL", vec![12.into()]),
            Operation::new("Td", vec![40.into(), 800.into()]),
        ];
        // One line per ~80 characters, so long pages stay on the page.
        let words: Vec<&str> = text.split_whitespace().collect();
        for line in words.chunks(12) {
            ops.push(Operation::new(
                "Tj",
                vec![Object::string_literal(line.join(" "))],
            ));
            ops.push(Operation::new("T*", vec![]));
        }
        ops.push(Operation::new("ET", vec![]));
        let content = Content { operations: ops };
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page",
            "Parent" => pages_id,
            "Contents" => content_id,
        });
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => kids,
            "Count" => count,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! {
        "Type" => "Catalog",
        "Pages" => pages_id,
    });
    doc.trailer.set("Root", catalog_id);
    if compress {
        doc.compress();
    }
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// A minimal DOCX (WordprocessingML in a zip) with one paragraph per string.
pub fn docx(paragraphs: &[&str]) -> Vec<u8> {
    let mut body = String::new();
    for p in paragraphs {
        body.push_str("<w:p><w:r><w:t xml:space=\"preserve\">");
        body.push_str(&p.replace('&', "&amp;").replace('<', "&lt;"));
        body.push_str("</w:t></w:r></w:p>");
    }
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
    );
    let content_types = r#"<?xml version="1.0" encoding="UTF-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#;
    let rels = r#"<?xml version="1.0" encoding="UTF-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in [
        ("[Content_Types].xml", content_types),
        ("_rels/.rels", rels),
        ("word/document.xml", document.as_str()),
    ] {
        zip.start_file(name, opts).unwrap();
        zip.write_all(data.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// The store tenant of an API key (to reach the store directly, as a crash would leave it).
pub fn tenant_of(api: &Api) -> assistants_proxy::store::Tenant {
    assistants_proxy::store::Tenant::new(assistants_proxy::tenancy::key_tenant(&api.key))
}
