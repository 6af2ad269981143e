//! Text extraction: a stored file's bytes → the plain text that gets chunked and embedded.
//!
//! The format is chosen by extension first and by sniffing the content second (uploads often
//! carry generic names such as `blob` or `upload`). Plain text, Markdown, JSON and source code
//! are text already; HTML goes through `html2text` (scripts, styles and tags dropped); PDF
//! through `pdf-extract`; DOCX is a zip whose `word/document.xml` is read with `quick-xml`.
//! Everything else fails with `unsupported_file`, a file with no text with `invalid_file`:
//! the two `last_error` codes OpenAI reports for the same situations.
//!
//! Pure and synchronous: callers run it on a blocking thread.

use std::io::{Cursor, Read};

use super::IngestError;

/// What a file is, as far as extraction cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text as is: plain text, Markdown, JSON, source code, anything UTF-8.
    Text,
    Html,
    Pdf,
    Docx,
}

/// Extensions whose content is text to embed as is. Unknown extensions are sniffed instead.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt",
    "text",
    "md",
    "markdown",
    "mdx",
    "rst",
    "adoc",
    "tex",
    "json",
    "jsonl",
    "ndjson",
    "yaml",
    "yml",
    "toml",
    "ini",
    "cfg",
    "conf",
    "csv",
    "tsv",
    "log",
    "xml",
    "svg",
    "c",
    "h",
    "cc",
    "cpp",
    "cxx",
    "hpp",
    "hh",
    "cs",
    "go",
    "java",
    "kt",
    "kts",
    "scala",
    "swift",
    "m",
    "mm",
    "js",
    "mjs",
    "cjs",
    "jsx",
    "ts",
    "tsx",
    "vue",
    "svelte",
    "py",
    "pyi",
    "rb",
    "php",
    "pl",
    "pm",
    "r",
    "lua",
    "rs",
    "sh",
    "bash",
    "zsh",
    "fish",
    "ps1",
    "bat",
    "sql",
    "css",
    "scss",
    "sass",
    "less",
    "dart",
    "ex",
    "exs",
    "erl",
    "hs",
    "ml",
    "clj",
    "groovy",
    "gradle",
    "proto",
    "graphql",
    "dockerfile",
    "makefile",
    "env",
];

/// Formats OpenAI accepts or that users commonly try, which this proxy cannot read: refused
/// by name so their bytes are never mistaken for text.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "doc", "ppt", "pptx", "xls", "xlsx", "odt", "ods", "odp", "rtf", "epub", "png", "jpg", "jpeg",
    "gif", "webp", "bmp", "tiff", "ico", "heic", "mp3", "mp4", "wav", "ogg", "webm", "mov", "avi",
    "zip", "gz", "tgz", "bz2", "xz", "7z", "rar", "tar", "exe", "dll", "so", "dylib", "bin", "iso",
    "dmg", "class", "jar", "wasm", "pyc", "sqlite", "db", "parquet",
];

/// Decompressed `word/document.xml` larger than this is refused (a zip bomb guard: the
/// archive itself is bounded by the upload limit, its inflated content is not).
const MAX_DOCX_XML_BYTES: u64 = 512 * 1024 * 1024;

fn extension(filename: &str) -> String {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    match base.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        // `Dockerfile`, `Makefile`, `.env`: the whole name is the type.
        _ => base.trim_start_matches('.').to_ascii_lowercase(),
    }
}

fn is_zip_with(bytes: &[u8], member: &str) -> bool {
    bytes.starts_with(b"PK\x03\x04")
        && zip::ZipArchive::new(Cursor::new(bytes))
            .map(|z| z.index_for_name(member).is_some())
            .unwrap_or(false)
}

fn looks_like_html(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1024)];
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    let head = head.trim_start_matches('\u{feff}').trim_start();
    head.starts_with("<!doctype html") || head.starts_with("<html")
}

/// Decides the format, or refuses the file.
pub fn detect(bytes: &[u8], filename: &str) -> Result<Format, IngestError> {
    let ext = extension(filename);
    match ext.as_str() {
        "pdf" => return Ok(Format::Pdf),
        "docx" => return Ok(Format::Docx),
        "html" | "htm" | "xhtml" => return Ok(Format::Html),
        e if TEXT_EXTENSIONS.contains(&e) => return Ok(Format::Text),
        e if KNOWN_UNSUPPORTED.contains(&e) => {
            return Err(IngestError::unsupported(format!(
                "Files with the extension [{e}] are not supported for file search."
            )));
        }
        _ => {}
    }
    if bytes.starts_with(b"%PDF-") {
        Ok(Format::Pdf)
    } else if is_zip_with(bytes, "word/document.xml") {
        Ok(Format::Docx)
    } else if looks_like_html(bytes) {
        Ok(Format::Html)
    } else if decode_text(bytes).is_some() {
        Ok(Format::Text)
    } else {
        Err(IngestError::unsupported(format!(
            "The file type of '{filename}' is not supported for file search: it is neither text nor a PDF or DOCX document."
        )))
    }
}

/// UTF-8 (BOM stripped) or BOM-marked UTF-16; `None` for binary data.
fn decode_text(bytes: &[u8]) -> Option<String> {
    if let Some(rest) = bytes.strip_prefix(b"\xef\xbb\xbf") {
        return std::str::from_utf8(rest).ok().map(str::to_owned);
    }
    let utf16 = |rest: &[u8], le: bool| -> Option<String> {
        let units = rest.chunks_exact(2).map(|p| {
            if le {
                u16::from_le_bytes([p[0], p[1]])
            } else {
                u16::from_be_bytes([p[0], p[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .ok()
    };
    if let Some(rest) = bytes.strip_prefix(b"\xff\xfe") {
        return utf16(rest, true);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xfe\xff") {
        return utf16(rest, false);
    }
    let text = std::str::from_utf8(bytes).ok()?;
    // Valid UTF-8 with NULs is a binary format that happens to decode (e.g. some archives).
    (!text.contains('\0')).then(|| text.to_owned())
}

/// Extracts the text of a file; an empty result is `invalid_file`.
pub fn extract(bytes: &[u8], filename: &str) -> Result<String, IngestError> {
    let text = match detect(bytes, filename)? {
        Format::Text => match decode_text(bytes) {
            Some(t) => t,
            // A text extension with bytes that are not UTF-8: legacy 8-bit encodings are far
            // more common than binary data under a .txt name.
            None if !bytes.contains(&0) => String::from_utf8_lossy(bytes).into_owned(),
            None => {
                return Err(IngestError::invalid(format!(
                    "'{filename}' is not valid text (it contains binary data)."
                )));
            }
        },
        Format::Html => html_text(bytes)?,
        Format::Pdf => pdf_text(bytes)?,
        Format::Docx => docx_text(bytes)?,
    };
    if text.trim().is_empty() {
        return Err(IngestError::invalid(format!(
            "No text could be extracted from '{filename}'."
        )));
    }
    Ok(text)
}

fn html_text(bytes: &[u8]) -> Result<String, IngestError> {
    // Wide lines: wrapping would only insert newlines inside sentences.
    html2text::config::plain_no_decorate()
        .link_footnotes(false)
        .raw_mode(true)
        .allow_width_overflow()
        .string_from_read(bytes, 1_000)
        .map_err(|e| IngestError::invalid(format!("The HTML document could not be read: {e}")))
}

fn pdf_text(bytes: &[u8]) -> Result<String, IngestError> {
    // pdf-extract panics on some malformed documents instead of returning an error; a panic
    // must fail this file, not the ingestion task.
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes));
    match result {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(IngestError::invalid(format!(
            "The PDF document could not be read: {e}"
        ))),
        Err(_) => Err(IngestError::invalid(
            "The PDF document could not be read: it is malformed or uses unsupported features.",
        )),
    }
}

fn docx_text(bytes: &[u8]) -> Result<String, IngestError> {
    let bad = |e: &dyn std::fmt::Display| {
        IngestError::invalid(format!("The DOCX document could not be read: {e}"))
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| bad(&e))?;
    let member = archive.by_name("word/document.xml").map_err(|e| bad(&e))?;
    let mut xml = String::new();
    member
        .take(MAX_DOCX_XML_BYTES)
        .read_to_string(&mut xml)
        .map_err(|e| bad(&e))?;
    docx_xml_text(&xml).map_err(|e| bad(&e))
}

/// The text of a WordprocessingML body: runs (`w:t`) in order, a newline per paragraph,
/// tabs and breaks kept.
pub fn docx_xml_text(xml: &str) -> Result<String, quick_xml::Error> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = String::new();
    let mut in_text = false;
    loop {
        match reader.read_event()? {
            Event::Start(e) if e.local_name().as_ref() == "t" => in_text = true,
            Event::End(e) => match e.local_name().as_ref() {
                "t" => in_text = false,
                "p" => out.push('\n'),
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                "tab" => out.push('\t'),
                "br" | "cr" => out.push('\n'),
                "p" => out.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => out.push_str(&t.xml10_content()),
            Event::CData(t) if in_text => out.push_str(&t.into_inner()),
            Event::GeneralRef(r) if in_text => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    out.push(c);
                } else if let Some(s) =
                    quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                {
                    out.push_str(s);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_formats_by_extension_and_sniffing() {
        assert_eq!(detect(b"hello", "a.md").unwrap(), Format::Text);
        assert_eq!(detect(b"fn main() {}", "main.rs").unwrap(), Format::Text);
        assert_eq!(detect(b"{\"a\":1}", "blob").unwrap(), Format::Text);
        assert_eq!(detect(b"FROM x", "Dockerfile").unwrap(), Format::Text);
        assert_eq!(
            detect(b"<!DOCTYPE html><p>x</p>", "upload").unwrap(),
            Format::Html
        );
        assert_eq!(detect(b"%PDF-1.4 ...", "upload").unwrap(), Format::Pdf);
        let e = detect(b"\x89PNG\r\n\x1a\n\0\0", "image.png").unwrap_err();
        assert_eq!(e.code, "unsupported_file");
        let e = detect(b"\x00\x01\x02\xff\xfe\x00", "data").unwrap_err();
        assert_eq!(e.code, "unsupported_file");
    }

    #[test]
    fn text_decoding() {
        assert_eq!(
            extract(b"\xef\xbb\xbfhi there", "a.txt").unwrap(),
            "hi there"
        );
        let utf16: Vec<u8> = b"\xff\xfe"
            .iter()
            .copied()
            .chain("héllo".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(extract(&utf16, "a.txt").unwrap(), "héllo");
        // Latin-1 under a text extension is decoded lossily rather than refused.
        assert!(
            extract(b"caf\xe9 au lait", "menu.txt")
                .unwrap()
                .starts_with("caf")
        );
        assert_eq!(
            extract(b"  \n\t ", "empty.txt").unwrap_err().code,
            "invalid_file"
        );
    }

    #[test]
    fn html_drops_markup_scripts_and_styles() {
        let html = b"<html><head><style>p{color:red}</style><script>var secret=1;</script></head>\
            <body><h1>Title here</h1><p>Some <b>bold</b> text &amp; more.</p></body></html>";
        let text = extract(html, "page.html").unwrap();
        assert!(text.contains("Title here"), "{text}");
        assert!(text.contains("Some bold text & more."), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains("color"), "{text}");
        assert!(!text.contains('<'), "{text}");
    }

    #[test]
    fn docx_body_text() {
        let xml = r#"<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
            <w:p><w:r><w:t>First</w:t></w:r><w:r><w:t xml:space="preserve"> paragraph &amp; more</w:t></w:r></w:p>
            <w:p><w:r><w:t>Second</w:t><w:tab/><w:t>cell</w:t></w:r></w:p></w:body></w:document>"#;
        let text = docx_xml_text(xml).unwrap();
        assert_eq!(text, "First paragraph & more\nSecond\tcell\n");
    }

    #[test]
    fn broken_documents_are_invalid_files() {
        assert_eq!(
            extract(b"%PDF-1.4 garbage", "x.pdf").unwrap_err().code,
            "invalid_file"
        );
        assert_eq!(
            extract(b"PK\x03\x04garbage", "x.docx").unwrap_err().code,
            "invalid_file"
        );
    }
}
