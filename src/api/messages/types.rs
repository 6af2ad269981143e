//! Request bodies of the message routes (and of messages embedded in thread and run
//! creation), parsed into response-shaped content.

use serde_json::{Value, json};

use crate::api::fields::{
    Field, Fields, empty_array, empty_string, invalid_type, missing, string_too_long,
};
use crate::api::validate::ApiVersion;
use crate::error::Error;
use crate::model::{Attachment, Metadata};

/// Longest accepted text content, in characters, and the least: OpenAI's schema gave string
/// content `minLength: 1, maxLength: 256000` (the limit the API still applies; the array form
/// needs at least one part).
pub const MAX_CONTENT: usize = 256_000;
/// Attachments per message (the spec sets no number; this bounds the work one request causes).
pub const MAX_ATTACHMENTS: usize = 20;

/// A message to create, already normalized to the response shape.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub role: String,
    pub content: Vec<Value>,
    pub attachments: Vec<Attachment>,
    pub metadata: Metadata,
}

pub fn text_part(value: &str) -> Value {
    json!({"type": "text", "text": {"value": value, "annotations": []}})
}

/// Parses a CreateMessage object (also used for `messages` of create-thread and
/// `additional_messages` of create-run, where `param` names the position).
pub fn parse(mut f: Fields, version: ApiVersion) -> Result<NewMessage, Error> {
    let role = match f.enumeration("role", &["user", "assistant"])? {
        Field::Set(r) => r,
        _ => return Err(missing(&f.param("role"))),
    };
    let content_param = f.param("content");
    let content = match f.take("content") {
        Field::Set(Value::String(s)) => {
            if s.is_empty() {
                return Err(empty_string(&content_param));
            }
            let len = s.chars().count();
            if len > MAX_CONTENT {
                return Err(string_too_long(&content_param, MAX_CONTENT, len));
            }
            vec![text_part(&s)]
        }
        Field::Set(Value::Array(parts)) if version == ApiVersion::V2 => {
            if parts.is_empty() {
                return Err(empty_array(&content_param));
            }
            parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| content_part(p, &format!("{content_param}[{i}]")))
                .collect::<Result<_, _>>()?
        }
        Field::Set(other) => {
            let expected = match version {
                ApiVersion::V2 => "a string or an array",
                ApiVersion::V1 => "a string",
            };
            return Err(invalid_type(&content_param, expected, &other));
        }
        Field::Null | Field::Absent => return Err(missing(&content_param)),
    };
    let attachments = match version {
        ApiVersion::V2 => match f.array("attachments", MAX_ATTACHMENTS)? {
            Field::Set(items) => {
                let base = f.param("attachments");
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, a)| attachment(a, &format!("{base}[{i}]")))
                    .collect::<Result<_, _>>()?
            }
            _ => Vec::new(),
        },
        // v1 `file_ids` become file_search attachments (v1 message files served retrieval).
        ApiVersion::V1 => f
            .string_array("file_ids", 10)?
            .into_option()
            .unwrap_or_default()
            .into_iter()
            .map(|file_id| Attachment {
                file_id,
                tools: vec![json!({"type": "file_search"})],
            })
            .collect(),
    };
    let metadata = f.metadata()?.into_option().unwrap_or_default();
    f.finish()?;
    Ok(NewMessage {
        role,
        content,
        attachments,
        metadata,
    })
}

fn content_part(v: Value, param: &str) -> Result<Value, Error> {
    let mut f = Fields::nested(v, param)?;
    let kind = match f.enumeration("type", &["text", "image_file", "image_url"])? {
        Field::Set(k) => k,
        _ => return Err(missing(&format!("{param}.type"))),
    };
    let part = match kind.as_str() {
        "text" => {
            let text = f.required_string("text", MAX_CONTENT)?;
            text_part(&text)
        }
        "image_file" => {
            let mut img = match f.object("image_file")? {
                Field::Set(i) => i,
                _ => return Err(missing(&format!("{param}.image_file"))),
            };
            let file_id = img.required_string("file_id", 128)?;
            let detail = img.enumeration("detail", &["auto", "low", "high"])?;
            img.finish()?;
            match detail {
                Field::Set(d) => {
                    json!({"type": "image_file", "image_file": {"file_id": file_id, "detail": d}})
                }
                _ => json!({"type": "image_file", "image_file": {"file_id": file_id}}),
            }
        }
        _ => {
            let mut img = match f.object("image_url")? {
                Field::Set(i) => i,
                _ => return Err(missing(&format!("{param}.image_url"))),
            };
            let url = img.required_string("url", 4 * 1024 * 1024)?;
            let detail = img.enumeration("detail", &["auto", "low", "high"])?;
            img.finish()?;
            match detail {
                Field::Set(d) => {
                    json!({"type": "image_url", "image_url": {"url": url, "detail": d}})
                }
                _ => json!({"type": "image_url", "image_url": {"url": url}}),
            }
        }
    };
    f.finish()?;
    Ok(part)
}

fn attachment(v: Value, param: &str) -> Result<Attachment, Error> {
    let mut f = Fields::nested(v, param)?;
    let file_id = f.required_string("file_id", 128)?;
    let tools = match f.array("tools", 2)? {
        Field::Set(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let mut tf = Fields::nested(t, &format!("{param}.tools[{i}]"))?;
                let kind = match tf.enumeration("type", &["code_interpreter", "file_search"])? {
                    Field::Set(k) => k,
                    _ => return Err(missing(&tf.param("type"))),
                };
                tf.finish()?;
                Ok(json!({ "type": kind }))
            })
            .collect::<Result<Vec<_>, Error>>()?,
        _ => Vec::new(),
    };
    f.finish()?;
    Ok(Attachment { file_id, tools })
}
