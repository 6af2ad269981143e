//! Validation of the option types several resources share: tools, tool resources,
//! response formats, tool choice, truncation and chunking strategies. Each returns the
//! normalized JSON the objects store, or an OpenAI-shaped 400 naming the exact parameter.

use serde_json::{Map, Value, json};

use super::fields::{Field, Fields, array_too_long, invalid_type, invalid_value, missing};
use crate::error::Error;
use crate::model::{CodeInterpreterResources, FileSearchResources, ToolResources};

pub use crate::tenancy::{ApiVersion, INVALID_BETA};

fn is_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// OpenAI's answer to a name (function, `json_schema`) outside `^[a-zA-Z0-9_-]+$`.
fn name_pattern_error(param: &str) -> Error {
    Error::invalid_code(
        format!(
            "Invalid '{param}': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
        ),
        Some(param),
        "invalid_value",
    )
}

/// Validates a tool list (`max` items) and returns the stored form. v1's `retrieval` tool is
/// accepted (and stored as `file_search`) when the request speaks v1.
pub fn tools(
    items: Vec<Value>,
    param: &str,
    max: usize,
    version: ApiVersion,
) -> Result<Vec<Value>, Error> {
    if items.len() > max {
        return Err(array_too_long(param, max, items.len()));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("{param}[{i}]");
        let mut f = Fields::nested(item, &path)?;
        let allowed: &[&str] = match version {
            ApiVersion::V1 => &["code_interpreter", "retrieval", "function"],
            ApiVersion::V2 => &["code_interpreter", "file_search", "function"],
        };
        let kind = match f.enumeration("type", allowed)? {
            Field::Set(k) => k,
            _ => return Err(missing(&format!("{path}.type"))),
        };
        let tool = match kind.as_str() {
            "code_interpreter" => json!({"type": "code_interpreter"}),
            "retrieval" => json!({"type": "file_search"}),
            "file_search" => {
                let mut tool = Map::new();
                tool.insert("type".into(), json!("file_search"));
                if let Field::Set(mut fs) = f.object("file_search")? {
                    let mut o = Map::new();
                    if let Field::Set(n) = fs.integer("max_num_results", 1, 50)? {
                        o.insert("max_num_results".into(), json!(n));
                    }
                    if let Field::Set(mut ro) = fs.object("ranking_options")? {
                        let mut r = Map::new();
                        if let Field::Set(ranker) =
                            ro.enumeration("ranker", &["auto", "default_2024_08_21"])?
                        {
                            r.insert("ranker".into(), json!(ranker));
                        }
                        match ro.number("score_threshold", 0.0, 1.0)? {
                            Field::Set(t) => {
                                r.insert("score_threshold".into(), json!(t));
                            }
                            _ => return Err(missing(&ro.param("score_threshold"))),
                        }
                        ro.finish()?;
                        o.insert("ranking_options".into(), Value::Object(r));
                    }
                    fs.finish()?;
                    tool.insert("file_search".into(), Value::Object(o));
                }
                Value::Object(tool)
            }
            _ => {
                let mut func = match f.object("function")? {
                    Field::Set(func) => func,
                    _ => return Err(missing(&format!("{path}.function"))),
                };
                let name = func.required_string("name", 64)?;
                if !is_function_name(&name) {
                    return Err(name_pattern_error(&func.param("name")));
                }
                let mut o = Map::new();
                o.insert("name".into(), json!(name));
                if let Field::Set(d) = func.string("description", 1024 * 1024)? {
                    o.insert("description".into(), json!(d));
                }
                match func.take("parameters") {
                    Field::Set(Value::Object(p)) => {
                        o.insert("parameters".into(), Value::Object(p));
                    }
                    Field::Set(other) => {
                        return Err(invalid_type(&func.param("parameters"), "an object", &other));
                    }
                    Field::Null | Field::Absent => {}
                }
                match func.boolean("strict")? {
                    Field::Set(b) => {
                        o.insert("strict".into(), json!(b));
                    }
                    Field::Null => {
                        o.insert("strict".into(), Value::Null);
                    }
                    Field::Absent => {}
                }
                func.finish()?;
                json!({"type": "function", "function": Value::Object(o)})
            }
        };
        f.finish()?;
        out.push(tool);
    }
    refuse_code_interpreter_function(&out, param)?;
    Ok(out)
}

/// With the code_interpreter tool on, the model is offered it as a function named
/// `code_interpreter`: a client function of that name could not be told apart, so it is
/// refused here rather than silently shadowed.
fn refuse_code_interpreter_function(tools: &[Value], param: &str) -> Result<(), Error> {
    let has_tool = tools.iter().any(|t| t["type"] == "code_interpreter");
    let clash = tools.iter().position(|t| {
        t["type"] == "function" && t["function"]["name"] == crate::runs::code_interpreter::TOOL_NAME
    });
    match clash {
        Some(i) if has_tool => Err(Error::invalid(
            format!(
                "Invalid '{param}[{i}].function.name': 'code_interpreter' is the name of the code_interpreter tool; give the function another name or remove the code_interpreter tool."
            ),
            Some(&format!("{param}[{i}].function.name")),
        )),
        _ => Ok(()),
    }
}

/// Renders stored tools for a v1 caller (`file_search` shows as `retrieval`).
pub fn tools_for(version: ApiVersion, tools: &[Value]) -> Vec<Value> {
    match version {
        ApiVersion::V2 => tools.to_vec(),
        ApiVersion::V1 => tools
            .iter()
            .map(|t| {
                if t["type"] == "file_search" {
                    json!({"type": "retrieval"})
                } else {
                    t.clone()
                }
            })
            .collect(),
    }
}

/// A `vector_stores` helper inside `tool_resources.file_search`: create a store on the fly.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorStoreHelper {
    pub file_ids: Vec<String>,
    pub chunking_strategy: Option<Value>,
    pub metadata: Option<crate::model::Metadata>,
}

/// `tool_resources` of create requests (assistant, thread): ids, or (with `allow_helper`) one
/// `vector_stores` helper.
pub fn tool_resources(
    mut f: Fields,
    allow_helper: bool,
) -> Result<(ToolResources, Option<VectorStoreHelper>), Error> {
    let mut out = ToolResources::default();
    let mut helper = None;
    if let Field::Set(mut ci) = f.object("code_interpreter")? {
        let ids = ci
            .string_array("file_ids", 20)?
            .into_option()
            .unwrap_or_default();
        ci.finish()?;
        out.code_interpreter = Some(CodeInterpreterResources { file_ids: ids });
    }
    if let Field::Set(mut fs) = f.object("file_search")? {
        let ids = fs.string_array("vector_store_ids", 1)?;
        let stores = if allow_helper {
            fs.array("vector_stores", 1)?
        } else {
            Field::Absent
        };
        match (ids, stores) {
            (Field::Set(_), Field::Set(_)) => {
                return Err(Error::invalid(
                    "Only one of 'vector_store_ids' or 'vector_stores' may be provided.",
                    Some(&fs.param("vector_store_ids")),
                ));
            }
            (Field::Set(ids), _) => {
                out.file_search = Some(FileSearchResources {
                    vector_store_ids: ids,
                });
            }
            (_, Field::Set(stores)) => {
                if let Some(store) = stores.into_iter().next() {
                    let path = fs.param("vector_stores[0]");
                    let mut s = Fields::nested(store, &path)?;
                    let file_ids = s
                        .string_array("file_ids", 10_000)?
                        .into_option()
                        .unwrap_or_default();
                    let chunking_strategy = match s.take("chunking_strategy") {
                        Field::Set(v) => Some(chunking_strategy(v, &s.param("chunking_strategy"))?),
                        _ => None,
                    };
                    let metadata = s.metadata()?.into_option();
                    s.finish()?;
                    helper = Some(VectorStoreHelper {
                        file_ids,
                        chunking_strategy,
                        metadata,
                    });
                }
                out.file_search = Some(FileSearchResources::default());
            }
            _ => {
                out.file_search = Some(FileSearchResources::default());
            }
        }
        fs.finish()?;
    }
    f.finish()?;
    Ok((out, helper))
}

/// `response_format`: "auto", {type:text|json_object}, or {type:json_schema, json_schema:{…}}.
pub fn response_format(v: Value, param: &str) -> Result<Value, Error> {
    match v {
        Value::String(s) if s == "auto" => Ok(json!("auto")),
        Value::String(s) => Err(invalid_value(param, &s, &["auto"])),
        v @ Value::Object(_) => {
            let mut f = Fields::nested(v, param)?;
            let kind = match f.enumeration("type", &["text", "json_object", "json_schema"])? {
                Field::Set(k) => k,
                _ => return Err(missing(&format!("{param}.type"))),
            };
            let out = if kind == "json_schema" {
                let mut js = match f.object("json_schema")? {
                    Field::Set(js) => js,
                    _ => return Err(missing(&format!("{param}.json_schema"))),
                };
                let name = js.required_string("name", 64)?;
                if !is_function_name(&name) {
                    return Err(name_pattern_error(&js.param("name")));
                }
                let mut o = Map::new();
                o.insert("name".into(), json!(name));
                if let Field::Set(d) = js.string("description", 1024 * 1024)? {
                    o.insert("description".into(), json!(d));
                }
                match js.take("schema") {
                    Field::Set(Value::Object(s)) => {
                        o.insert("schema".into(), Value::Object(s));
                    }
                    Field::Set(other) => {
                        return Err(invalid_type(&js.param("schema"), "an object", &other));
                    }
                    _ => {}
                }
                match js.boolean("strict")? {
                    Field::Set(b) => {
                        o.insert("strict".into(), json!(b));
                    }
                    Field::Null => {
                        o.insert("strict".into(), Value::Null);
                    }
                    Field::Absent => {}
                }
                js.finish()?;
                json!({"type": "json_schema", "json_schema": Value::Object(o)})
            } else {
                json!({ "type": kind })
            };
            f.finish()?;
            Ok(out)
        }
        other => Err(invalid_type(param, "a string or an object", &other)),
    }
}

/// `tool_choice`: none | auto | required | {type, function?:{name}}.
pub fn tool_choice(v: Value, param: &str) -> Result<Value, Error> {
    match v {
        Value::String(s) if ["none", "auto", "required"].contains(&s.as_str()) => Ok(json!(s)),
        Value::String(s) => Err(invalid_value(param, &s, &["none", "auto", "required"])),
        v @ Value::Object(_) => {
            let mut f = Fields::nested(v, param)?;
            let kind =
                match f.enumeration("type", &["function", "code_interpreter", "file_search"])? {
                    Field::Set(k) => k,
                    _ => return Err(missing(&format!("{param}.type"))),
                };
            let out = if kind == "function" {
                let mut func = match f.object("function")? {
                    Field::Set(func) => func,
                    _ => return Err(missing(&format!("{param}.function"))),
                };
                let name = func.required_string("name", 64)?;
                func.finish()?;
                json!({"type": "function", "function": {"name": name}})
            } else {
                json!({ "type": kind })
            };
            f.finish()?;
            Ok(out)
        }
        other => Err(invalid_type(param, "a string or an object", &other)),
    }
}

/// `truncation_strategy`: {type: auto|last_messages, last_messages: int ≥ 1 | null}.
/// `last_messages` is optional in the schema for either type: `last_messages` without a
/// count keeps as many of the newest messages as fit, like `auto` sizes itself.
pub fn truncation_strategy(v: Value, param: &str) -> Result<Value, Error> {
    let mut f = Fields::nested(v, param)?;
    let kind = match f.enumeration("type", &["auto", "last_messages"])? {
        Field::Set(k) => k,
        _ => return Err(missing(&format!("{param}.type"))),
    };
    let last = f
        .integer("last_messages", 1, i64::from(i32::MAX))?
        .into_option();
    f.finish()?;
    Ok(json!({"type": kind, "last_messages": last}))
}

/// Default chunking: 800 tokens with 400 overlap.
pub fn default_chunking() -> Value {
    json!({"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}})
}

/// `chunking_strategy`: {type:auto} or {type:static, static:{max_chunk_size_tokens 100..4096,
/// chunk_overlap_tokens ≤ max/2}}; always stored as the static form.
pub fn chunking_strategy(v: Value, param: &str) -> Result<Value, Error> {
    let mut f = Fields::nested(v, param)?;
    let kind = match f.enumeration("type", &["auto", "static"])? {
        Field::Set(k) => k,
        _ => return Err(missing(&format!("{param}.type"))),
    };
    let out = if kind == "auto" {
        default_chunking()
    } else {
        let mut s = match f.object("static")? {
            Field::Set(s) => s,
            _ => return Err(missing(&format!("{param}.static"))),
        };
        let max = match s.integer("max_chunk_size_tokens", 100, 4096)? {
            Field::Set(n) => n,
            _ => return Err(missing(&s.param("max_chunk_size_tokens"))),
        };
        let overlap = match s.integer("chunk_overlap_tokens", 0, 4096)? {
            Field::Set(n) => n,
            _ => return Err(missing(&s.param("chunk_overlap_tokens"))),
        };
        if overlap > max / 2 {
            return Err(Error::invalid(
                format!(
                    "Invalid '{}': chunk_overlap_tokens must be less than or equal to half of max_chunk_size_tokens ({}), but got {overlap}.",
                    s.param("chunk_overlap_tokens"),
                    max / 2
                ),
                Some(&s.param("chunk_overlap_tokens")),
            ));
        }
        s.finish()?;
        json!({"type": "static", "static": {"max_chunk_size_tokens": max, "chunk_overlap_tokens": overlap}})
    };
    f.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_validated_and_normalized() {
        let t = tools(
            vec![
                json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}),
                json!({"type": "file_search", "file_search": {"max_num_results": 5}}),
                json!({"type": "code_interpreter"}),
            ],
            "tools",
            128,
            ApiVersion::V2,
        )
        .unwrap();
        assert_eq!(t[0]["function"]["name"], "get_weather");
        assert_eq!(t[1]["file_search"]["max_num_results"], 5);
        let e = tools(
            vec![json!({"type": "retrieval"})],
            "tools",
            128,
            ApiVersion::V2,
        )
        .unwrap_err();
        assert_eq!(e.code(), Some("invalid_value"));
        let v1 = tools(
            vec![json!({"type": "retrieval"})],
            "tools",
            128,
            ApiVersion::V1,
        )
        .unwrap();
        assert_eq!(v1[0]["type"], "file_search");
        assert_eq!(tools_for(ApiVersion::V1, &v1)[0]["type"], "retrieval");
        let e = tools(
            vec![json!({"type": "function", "function": {"name": "bad name"}})],
            "tools",
            128,
            ApiVersion::V2,
        )
        .unwrap_err();
        assert_eq!(e.param(), Some("tools[0].function.name"));
        let e = tools(
            vec![json!({"type": "code_interpreter"}); 129],
            "tools",
            128,
            ApiVersion::V2,
        )
        .unwrap_err();
        assert_eq!(e.code(), Some("array_above_max_length"));
    }

    #[test]
    fn chunking_rules() {
        let ok = chunking_strategy(
            json!({"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 100}}),
            "chunking_strategy",
        )
        .unwrap();
        assert_eq!(ok["static"]["max_chunk_size_tokens"], 200);
        assert!(chunking_strategy(
            json!({"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 101}}),
            "chunking_strategy"
        )
        .is_err());
        assert!(chunking_strategy(
            json!({"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}}),
            "chunking_strategy"
        )
        .is_err());
        assert_eq!(
            chunking_strategy(json!({"type": "auto"}), "c").unwrap(),
            default_chunking()
        );
    }

    #[test]
    fn response_formats_and_choices() {
        assert_eq!(response_format(json!("auto"), "rf").unwrap(), json!("auto"));
        let js = response_format(
            json!({"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}}),
            "rf",
        )
        .unwrap();
        assert_eq!(js["json_schema"]["strict"], true);
        assert!(response_format(json!({"type": "json_schema"}), "rf").is_err());
        assert_eq!(
            tool_choice(json!("required"), "tc").unwrap(),
            json!("required")
        );
        assert!(tool_choice(json!({"type": "function"}), "tc").is_err());
        assert_eq!(
            truncation_strategy(json!({"type": "last_messages", "last_messages": 3}), "ts")
                .unwrap(),
            json!({"type": "last_messages", "last_messages": 3})
        );
        // The count is optional: the newest messages that fit.
        assert_eq!(
            truncation_strategy(json!({"type": "last_messages"}), "ts").unwrap(),
            json!({"type": "last_messages", "last_messages": null})
        );
        assert_eq!(
            truncation_strategy(json!({"type": "last_messages", "last_messages": 0}), "ts")
                .unwrap_err()
                .code(),
            Some("integer_below_min_value")
        );
    }

    #[test]
    fn json_schema_names_follow_openai_rules() {
        let rf = |name: &str| {
            response_format(
                json!({"type": "json_schema", "json_schema": {"name": name}}),
                "response_format",
            )
        };
        assert!(rf("out_1-a").is_ok());
        let e = rf("bad name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
        );
        assert_eq!(e.param(), Some("response_format.json_schema.name"));
        assert_eq!(e.code(), Some("invalid_value"));
        let e = rf(&"x".repeat(65)).unwrap_err();
        assert_eq!(e.code(), Some("string_above_max_length"));
        assert!(e.to_string().contains("maximum length 64"), "{e}");
    }

    #[test]
    fn tool_resources_helper_is_exclusive() {
        let f = |v: Value| Fields::nested(v, "tool_resources").unwrap();
        let (tr, helper) = tool_resources(
            f(json!({"file_search": {"vector_stores": [{"file_ids": ["file-1"]}]}})),
            true,
        )
        .unwrap();
        assert_eq!(helper.unwrap().file_ids, vec!["file-1"]);
        assert!(tr.file_search.is_some());
        assert!(
            tool_resources(
                f(json!({"file_search": {"vector_store_ids": ["vs_1"], "vector_stores": [{}]}})),
                true
            )
            .is_err()
        );
        assert!(
            tool_resources(
                f(json!({"file_search": {"vector_store_ids": ["a", "b"]}})),
                true
            )
            .is_err()
        );
        assert!(tool_resources(f(json!({"file_search": {"vector_stores": [{}]}})), false).is_err());
    }
}
