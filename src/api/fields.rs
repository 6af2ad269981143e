//! Fields of a request body taken one by one, with OpenAI's exact error messages: types,
//! lengths, enums, integers, metadata, the tri-state of absent / `null` / value, and the
//! unknown-parameter check at the end (OpenAI's bodies are `additionalProperties: false`).

use serde_json::{Map, Value};

use crate::error::Error;
use crate::model::Metadata;

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn invalid_type(param: &str, expected: &str, got: &Value) -> Error {
    Error::invalid_code(
        format!(
            "Invalid type for '{param}': expected {expected}, but got {} instead.",
            type_name(got)
        ),
        Some(param),
        "invalid_type",
    )
}

pub fn invalid_value(param: &str, got: &str, allowed: &[&str]) -> Error {
    let list = match allowed {
        [] => String::new(),
        [one] => format!("'{one}'"),
        [init @ .., last] => format!(
            "{} and '{last}'",
            init.iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Error::invalid_code(
        format!("Invalid value: '{got}'. Supported values are: {list}."),
        Some(param),
        "invalid_value",
    )
}

pub fn missing(param: &str) -> Error {
    Error::invalid_code(
        format!("Missing required parameter: '{param}'."),
        Some(param),
        "missing_required_parameter",
    )
}

pub fn string_too_long(param: &str, max: usize, len: usize) -> Error {
    Error::invalid_code(
        format!(
            "Invalid '{param}': string too long. Expected a string with maximum length {max}, but got a string with length {len} instead."
        ),
        Some(param),
        "string_above_max_length",
    )
}

pub fn array_too_long(param: &str, max: usize, len: usize) -> Error {
    Error::invalid_code(
        format!(
            "Invalid '{param}': array too long. Expected an array with maximum length {max}, but got an array with length {len} instead."
        ),
        Some(param),
        "array_above_max_length",
    )
}

/// OpenAI's answer to an empty array where at least one item is required (`minItems: 1`).
pub fn empty_array(param: &str) -> Error {
    Error::invalid_code(
        format!(
            "Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead."
        ),
        Some(param),
        "empty_array",
    )
}

/// OpenAI's answer to an empty string where at least one character is required.
pub fn empty_string(param: &str) -> Error {
    Error::invalid_code(
        format!(
            "Invalid '{param}': empty string. Expected a string with minimum length 1, but got an empty string instead."
        ),
        Some(param),
        "empty_string",
    )
}

fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// The tri-state of a field in a request: absent, explicitly `null`, or a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<T> {
    Absent,
    Null,
    Set(T),
}

impl<T> Field<T> {
    /// Absent and null both mean "not given" on create.
    pub fn into_option(self) -> Option<T> {
        match self {
            Field::Set(v) => Some(v),
            Field::Absent | Field::Null => None,
        }
    }

    /// On modify: absent keeps `current`, null clears, a value replaces.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Field::Absent => current,
            Field::Null => None,
            Field::Set(v) => Some(v),
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Field<U> {
        match self {
            Field::Absent => Field::Absent,
            Field::Null => Field::Null,
            Field::Set(v) => Field::Set(f(v)),
        }
    }
}

/// A request object whose fields are taken one by one; whatever is left at `finish` is an
/// unknown parameter (OpenAI's bodies are `additionalProperties: false`).
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
    /// Path prefix for nested objects (`tools[0].`), so errors name the exact parameter.
    prefix: String,
}

impl Fields {
    pub fn new(map: Map<String, Value>) -> Fields {
        Fields {
            map,
            prefix: String::new(),
        }
    }

    /// A nested object, with parameter names prefixed by `path.`.
    pub fn nested(value: Value, path: &str) -> Result<Fields, Error> {
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                prefix: format!("{path}."),
            }),
            other => Err(invalid_type(path, "an object", &other)),
        }
    }

    pub fn param(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The raw value of a field.
    pub fn take(&mut self, key: &str) -> Field<Value> {
        match self.map.remove(key) {
            None => Field::Absent,
            Some(Value::Null) => Field::Null,
            Some(v) => Field::Set(v),
        }
    }

    pub fn string(&mut self, key: &str, max_len: usize) -> Result<Field<String>, Error> {
        match self.take(key) {
            Field::Set(Value::String(s)) => {
                let len = s.chars().count();
                if len > max_len {
                    return Err(string_too_long(&self.param(key), max_len, len));
                }
                Ok(Field::Set(s))
            }
            Field::Set(other) => Err(invalid_type(&self.param(key), "a string", &other)),
            Field::Null => Ok(Field::Null),
            Field::Absent => Ok(Field::Absent),
        }
    }

    /// A string that, when given, has at least one character.
    pub fn non_empty_string(&mut self, key: &str, max_len: usize) -> Result<Field<String>, Error> {
        let field = self.string(key, max_len)?;
        if matches!(&field, Field::Set(s) if s.is_empty()) {
            return Err(empty_string(&self.param(key)));
        }
        Ok(field)
    }

    pub fn required_string(&mut self, key: &str, max_len: usize) -> Result<String, Error> {
        match self.string(key, max_len)? {
            Field::Set(s) => Ok(s),
            Field::Absent | Field::Null => Err(missing(&self.param(key))),
        }
    }

    /// A string restricted to an enumeration.
    pub fn enumeration(&mut self, key: &str, allowed: &[&str]) -> Result<Field<String>, Error> {
        let field = self.string(key, 1024)?;
        if let Field::Set(v) = &field
            && !allowed.contains(&v.as_str())
        {
            return Err(invalid_value(&self.param(key), v, allowed));
        }
        Ok(field)
    }

    pub fn number(&mut self, key: &str, min: f64, max: f64) -> Result<Field<f64>, Error> {
        match self.take(key) {
            Field::Set(Value::Number(n)) => {
                let v = n.as_f64().unwrap_or(f64::NAN);
                let param = self.param(key);
                if v > max {
                    return Err(Error::invalid_code(
                        format!(
                            "Invalid '{param}': decimal above maximum value. Expected a value <= {}, but got {} instead.",
                            number_text(max),
                            number_text(v)
                        ),
                        Some(&param),
                        "decimal_above_max_value",
                    ));
                }
                if v < min || v.is_nan() {
                    return Err(Error::invalid_code(
                        format!(
                            "Invalid '{param}': decimal below minimum value. Expected a value >= {}, but got {} instead.",
                            number_text(min),
                            number_text(v)
                        ),
                        Some(&param),
                        "decimal_below_min_value",
                    ));
                }
                Ok(Field::Set(v))
            }
            Field::Set(other) => Err(invalid_type(&self.param(key), "a number", &other)),
            Field::Null => Ok(Field::Null),
            Field::Absent => Ok(Field::Absent),
        }
    }

    pub fn integer(&mut self, key: &str, min: i64, max: i64) -> Result<Field<i64>, Error> {
        match self.take(key) {
            Field::Set(Value::Number(n)) if n.as_i64().is_some() || n.as_u64().is_some() => {
                let v = n.as_i64().unwrap_or(i64::MAX);
                check_integer(&self.param(key), v, min, max)?;
                Ok(Field::Set(v))
            }
            Field::Set(other) => Err(invalid_type(&self.param(key), "an integer", &other)),
            Field::Null => Ok(Field::Null),
            Field::Absent => Ok(Field::Absent),
        }
    }

    pub fn boolean(&mut self, key: &str) -> Result<Field<bool>, Error> {
        match self.take(key) {
            Field::Set(Value::Bool(b)) => Ok(Field::Set(b)),
            Field::Set(other) => Err(invalid_type(&self.param(key), "a boolean", &other)),
            Field::Null => Ok(Field::Null),
            Field::Absent => Ok(Field::Absent),
        }
    }

    pub fn array(&mut self, key: &str, max_len: usize) -> Result<Field<Vec<Value>>, Error> {
        match self.take(key) {
            Field::Set(Value::Array(items)) => {
                if items.len() > max_len {
                    return Err(array_too_long(&self.param(key), max_len, items.len()));
                }
                Ok(Field::Set(items))
            }
            Field::Set(other) => Err(invalid_type(&self.param(key), "an array", &other)),
            Field::Null => Ok(Field::Null),
            Field::Absent => Ok(Field::Absent),
        }
    }

    /// An array of strings (ids), each at most `max_item_len` long.
    pub fn string_array(&mut self, key: &str, max_len: usize) -> Result<Field<Vec<String>>, Error> {
        let param = self.param(key);
        Ok(match self.array(key, max_len)? {
            Field::Set(items) => Field::Set(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s),
                        other => Err(invalid_type(&format!("{param}[{i}]"), "a string", &other)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Field::Null => Field::Null,
            Field::Absent => Field::Absent,
        })
    }

    pub fn object(&mut self, key: &str) -> Result<Field<Fields>, Error> {
        let param = self.param(key);
        Ok(match self.take(key) {
            Field::Set(v) => Field::Set(Fields::nested(v, &param)?),
            Field::Null => Field::Null,
            Field::Absent => Field::Absent,
        })
    }

    /// `metadata`: ≤16 pairs, keys ≤64 characters, string values ≤512.
    pub fn metadata(&mut self) -> Result<Field<Metadata>, Error> {
        let param = self.param("metadata");
        match self.take("metadata") {
            Field::Set(Value::Object(map)) => Ok(Field::Set(validate_metadata(&param, map)?)),
            Field::Set(other) => Err(invalid_type(&param, "an object", &other)),
            Field::Null => Ok(Field::Null),
            Field::Absent => Ok(Field::Absent),
        }
    }

    /// Ends parsing: any field not taken is an unknown parameter.
    pub fn finish(self) -> Result<(), Error> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(key) => {
                let param = format!("{}{key}", self.prefix);
                Err(Error::invalid_code(
                    format!("Unknown parameter: '{param}'."),
                    Some(&param),
                    "unknown_parameter",
                ))
            }
        }
    }
}

pub fn check_integer(param: &str, v: i64, min: i64, max: i64) -> Result<(), Error> {
    if v > max {
        return Err(Error::invalid_code(
            format!(
                "Invalid '{param}': integer above maximum value. Expected a value <= {max}, but got {v} instead."
            ),
            Some(param),
            "integer_above_max_value",
        ));
    }
    if v < min {
        return Err(Error::invalid_code(
            format!(
                "Invalid '{param}': integer below minimum value. Expected a value >= {min}, but got {v} instead."
            ),
            Some(param),
            "integer_below_min_value",
        ));
    }
    Ok(())
}

pub fn validate_metadata(param: &str, map: Map<String, Value>) -> Result<Metadata, Error> {
    if map.len() > 16 {
        return Err(Error::invalid_code(
            format!(
                "Invalid '{param}': too many properties. Expected an object with at most 16 properties, but got an object with {} properties instead.",
                map.len()
            ),
            Some(param),
            "object_above_max_properties",
        ));
    }
    let mut out = Metadata::new();
    for (k, v) in map {
        let key_len = k.chars().count();
        if key_len > 64 {
            return Err(string_too_long(&format!("{param}.{k}"), 64, key_len).with_message(
                format!(
                    "Invalid '{param}': metadata key too long. Expected keys with maximum length 64, but got a key with length {key_len} instead."
                ),
            ));
        }
        match v {
            Value::String(s) => {
                let len = s.chars().count();
                if len > 512 {
                    return Err(string_too_long(&format!("{param}.{k}"), 512, len));
                }
                out.insert(k, s);
            }
            other => return Err(invalid_type(&format!("{param}.{k}"), "a string", &other)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        match v {
            Value::Object(m) => Fields::new(m),
            _ => panic!(),
        }
    }

    #[test]
    fn openai_style_messages() {
        let mut f = fields(json!({"name": "x".repeat(300), "n": 3, "t": 2.5, "extra": 1}));
        let e = f.string("name", 256).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid 'name': string too long. Expected a string with maximum length 256, but got a string with length 300 instead."
        );
        assert_eq!(e.code(), Some("string_above_max_length"));
        assert_eq!(e.param(), Some("name"));
        let e = f.integer("n", 1, 2).unwrap_err();
        assert_eq!(e.code(), Some("integer_above_max_value"));
        let e = f.number("t", 0.0, 2.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid 't': decimal above maximum value. Expected a value <= 2, but got 2.5 instead."
        );
        let e = f.finish().unwrap_err();
        assert_eq!(e.to_string(), "Unknown parameter: 'extra'.");
        assert_eq!(e.code(), Some("unknown_parameter"));
        let mut f = fields(json!({"model": ""}));
        let e = f.non_empty_string("model", 256).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid 'model': empty string. Expected a string with minimum length 1, but got an empty string instead."
        );
        assert_eq!((e.code(), e.param()), (Some("empty_string"), Some("model")));
        assert_eq!(
            empty_array("content").to_string(),
            "Invalid 'content': empty array. Expected an array with minimum length 1, but got an empty array instead."
        );
    }

    #[test]
    fn nested_params_are_named_by_path() {
        let mut f = fields(json!({"tools": [{"type": 3}]}));
        let tools = match f.array("tools", 128).unwrap() {
            Field::Set(t) => t,
            _ => panic!(),
        };
        let mut tool = Fields::nested(tools[0].clone(), "tools[0]").unwrap();
        let e = tool.string("type", 64).unwrap_err();
        assert_eq!(e.param(), Some("tools[0].type"));
        assert!(
            e.to_string()
                .contains("expected a string, but got an integer")
        );
    }

    #[test]
    fn metadata_limits() {
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        let e = validate_metadata("metadata", many).unwrap_err();
        assert_eq!(e.code(), Some("object_above_max_properties"));
        let mut long = Map::new();
        long.insert("k".repeat(65), json!("v"));
        assert!(validate_metadata("metadata", long).is_err());
        let mut bad = Map::new();
        bad.insert("k".into(), json!(1));
        assert_eq!(
            validate_metadata("metadata", bad).unwrap_err().code(),
            Some("invalid_type")
        );
    }
}
