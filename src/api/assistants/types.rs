//! Request bodies of the assistant routes, parsed and validated into typed values.

use serde_json::Value;

use crate::api::fields::{Field, Fields, missing};
use crate::api::validate::{self, ApiVersion, VectorStoreHelper};
use crate::error::Error;
use crate::model::{Metadata, ToolResources};

/// Limits from the spec (§2).
pub const MAX_NAME: usize = 256;
pub const MAX_DESCRIPTION: usize = 512;
pub const MAX_INSTRUCTIONS: usize = 256_000;
pub const MAX_TOOLS: usize = 128;
pub const REASONING_EFFORTS: &[&str] =
    &["none", "minimal", "low", "medium", "high", "xhigh", "max"];

/// Fields of create and modify; on create `Absent` and `Null` both mean "not given".
#[derive(Debug)]
pub struct AssistantFields {
    pub model: Field<String>,
    pub name: Field<String>,
    pub description: Field<String>,
    pub instructions: Field<String>,
    pub tools: Field<Vec<Value>>,
    pub tool_resources: Field<ToolResources>,
    pub vector_store_helper: Option<VectorStoreHelper>,
    pub metadata: Field<Metadata>,
    pub temperature: Field<f64>,
    pub top_p: Field<f64>,
    pub response_format: Field<Value>,
    /// v1 only: files attached to the assistant.
    pub file_ids: Field<Vec<String>>,
    pub reasoning_effort: Field<String>,
}

/// Parses a create (`creating = true`) or modify body.
pub fn parse(mut f: Fields, version: ApiVersion, creating: bool) -> Result<AssistantFields, Error> {
    let model = if creating {
        match f.non_empty_string("model", 256)? {
            Field::Set(m) => Field::Set(m),
            Field::Absent | Field::Null => return Err(missing("model")),
        }
    } else {
        f.non_empty_string("model", 256)?
    };
    let name = f.string("name", MAX_NAME)?;
    let description = f.string("description", MAX_DESCRIPTION)?;
    let instructions = f.string("instructions", MAX_INSTRUCTIONS)?;
    // Not part of the Assistant object, but kept: the assistant's runs send it upstream.
    let reasoning_effort = f.enumeration("reasoning_effort", REASONING_EFFORTS)?;
    let tools = match f.array("tools", MAX_TOOLS)? {
        Field::Set(items) => Field::Set(validate::tools(items, "tools", MAX_TOOLS, version)?),
        Field::Null => Field::Null,
        Field::Absent => Field::Absent,
    };
    let (tool_resources, vector_store_helper) = match f.object("tool_resources")? {
        Field::Set(tr) => {
            let (tr, helper) = validate::tool_resources(tr, creating)?;
            (Field::Set(tr), helper)
        }
        Field::Null => (Field::Null, None),
        Field::Absent => (Field::Absent, None),
    };
    let metadata = f.metadata()?;
    let temperature = f.number("temperature", 0.0, 2.0)?;
    let top_p = f.number("top_p", 0.0, 1.0)?;
    let response_format = match f.take("response_format") {
        Field::Set(v) => Field::Set(validate::response_format(v, "response_format")?),
        Field::Null => Field::Null,
        Field::Absent => Field::Absent,
    };
    let file_ids = if version == ApiVersion::V1 {
        f.string_array("file_ids", 20)?
    } else {
        Field::Absent
    };
    f.finish()?;
    Ok(AssistantFields {
        model,
        name,
        description,
        instructions,
        tools,
        tool_resources,
        vector_store_helper,
        metadata,
        temperature,
        top_p,
        response_format,
        file_ids,
        reasoning_effort,
    })
}
