//! The code_interpreter tool as the model and the client see it: the function it is
//! offered as, the names the run's files get in the sandbox, what the model is told an
//! execution gave, and the `file_path` annotations of `sandbox:` links. Pure; the engine
//! runs the code (`engine::code`) through `crate::interpreter`.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::interpreter::Staged;

/// The function name code_interpreter is offered under (a client function of that name
/// is refused when the tool is on: the API validates tools).
pub const TOOL_NAME: &str = "code_interpreter";

/// The tool as offered to the model this turn.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeOffer {
    /// Files placed in the data directory, with the ids they are stored under.
    pub files: Vec<Staged>,
    /// Where the code finds them (`/mnt/data` on the local executor).
    pub data_dir: String,
}

impl CodeOffer {
    pub fn definition(&self) -> Value {
        let mut description = format!(
            "Run Python 3 code in a stateful sandbox (like a Jupyter notebook: variables, \
             imports and files persist between calls on this conversation). It has numpy, \
             pandas and matplotlib, and no internet access. The value of the last expression \
             and everything printed are returned. Figures shown with matplotlib are returned \
             to the user as images. Files are in {dir}; save files the user should get to \
             {dir} and link them as sandbox:{dir}/<name>.",
            dir = self.data_dir
        );
        if !self.files.is_empty() {
            description.push_str(" Files available:");
            for f in &self.files {
                description.push_str(&format!(" {}/{} ({});", self.data_dir, f.name, f.file_id));
            }
        }
        json!({"type": "function", "function": {
            "name": TOOL_NAME,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string", "description": "The Python code to run."}},
                "required": ["code"],
                "additionalProperties": false
            }
        }})
    }
}

/// The names files get in the data directory: their own file names (made safe), with the
/// file id added before the extension where two would collide.
pub fn staged_names(files: &[(String, String)]) -> Vec<Staged> {
    let safe: Vec<String> = files.iter().map(|(_, name)| safe_name(name)).collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for n in &safe {
        *count.entry(n.as_str()).or_default() += 1;
    }
    files
        .iter()
        .zip(&safe)
        .map(|((id, _), name)| {
            let name = if count.get(name.as_str()).copied().unwrap_or(0) > 1 {
                match name.rsplit_once('.') {
                    Some((stem, ext)) if !stem.is_empty() => format!("{stem}-{id}.{ext}"),
                    _ => format!("{name}-{id}"),
                }
            } else {
                name.clone()
            };
            Staged {
                file_id: id.clone(),
                name,
            }
        })
        .collect()
}

/// A file name without directories or characters that would escape the data directory.
fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    match cleaned.trim() {
        "" | "." | ".." => "file".into(),
        s => s.to_owned(),
    }
}

/// What the model is told an execution gave: its logs, then a line per figure and per
/// file, so it can mention them (files by their `sandbox:` link).
pub fn model_text(logs: &str, images: &[String], files: &[(String, String)]) -> String {
    let mut out = if logs.is_empty() && images.is_empty() && files.is_empty() {
        "(no output)".to_owned()
    } else {
        logs.to_owned()
    };
    for id in images {
        push_line(&mut out, &format!("[figure shown to the user: {id}]"));
    }
    for (path, id) in files {
        push_line(&mut out, &format!("[file saved: sandbox:{path} ({id})]"));
    }
    out
}

fn push_line(out: &mut String, line: &str) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
}

/// `file_path` annotations for the `sandbox:<path>` links in `text` whose path this run's
/// code wrote (`files`: path → file id), with character offsets (as the SDKs index text).
pub fn file_path_annotations(text: &str, files: &HashMap<String, String>) -> Vec<Value> {
    const PREFIX: &str = "sandbox:";
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(PREFIX) {
        let start = from + pos;
        let path_start = start + PREFIX.len();
        let path_len = text[path_start..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, ')' | ']' | '"' | '\'' | '<' | '>' | '`')
            })
            .unwrap_or(text.len() - path_start);
        // A sentence's full stop or comma after the link is not part of the path.
        let path = text[path_start..path_start + path_len].trim_end_matches(['.', ',', ';', ':']);
        let end = path_start + path.len();
        if let Some(id) = files.get(path) {
            let start_index = text[..start].chars().count();
            out.push(json!({
                "type": "file_path",
                "text": &text[start..end],
                "start_index": start_index,
                "end_index": start_index + text[start..end].chars().count(),
                "file_path": {"file_id": id},
            }));
        }
        from = end.max(path_start);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_to_written_files_are_annotated_with_char_offsets() {
        let files = HashMap::from([
            ("/mnt/data/out.csv".to_owned(), "file-1".to_owned()),
            ("/mnt/data/é.png".to_owned(), "file-2".to_owned()),
        ]);
        let text = "Voilà: [out](sandbox:/mnt/data/out.csv). Also sandbox:/mnt/data/é.png, \
                    and sandbox:/mnt/data/missing.txt.";
        let anns = file_path_annotations(text, &files);
        assert_eq!(anns.len(), 2, "{anns:?}");
        let chars: Vec<char> = text.chars().collect();
        for (a, id) in anns.iter().zip(["file-1", "file-2"]) {
            let (s, e) = (
                a["start_index"].as_u64().unwrap() as usize,
                a["end_index"].as_u64().unwrap() as usize,
            );
            assert_eq!(
                chars[s..e].iter().collect::<String>(),
                a["text"].as_str().unwrap()
            );
            assert_eq!(a["file_path"]["file_id"], id);
            assert_eq!(a["type"], "file_path");
        }
        assert_eq!(anns[0]["text"], "sandbox:/mnt/data/out.csv");
        assert_eq!(anns[1]["text"], "sandbox:/mnt/data/é.png");
        assert!(file_path_annotations("no links", &files).is_empty());
    }

    #[test]
    fn colliding_and_unsafe_names_stay_apart_inside_the_data_directory() {
        let files = [
            ("file-a".to_owned(), "data.csv".to_owned()),
            ("file-b".to_owned(), "../../etc/data.csv".to_owned()),
            ("file-c".to_owned(), "..".to_owned()),
            ("file-d".to_owned(), "notes".to_owned()),
        ];
        let names: Vec<String> = staged_names(&files).into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["data-file-a.csv", "data-file-b.csv", "file", "notes"]
        );
    }

    #[test]
    fn the_model_is_told_logs_figures_and_file_links() {
        let t = model_text(
            "42\n",
            &["file-img".into()],
            &[("/mnt/data/out.csv".into(), "file-out".into())],
        );
        assert_eq!(
            t,
            "42\n[figure shown to the user: file-img]\n[file saved: sandbox:/mnt/data/out.csv (file-out)]"
        );
        assert_eq!(model_text("", &[], &[]), "(no output)");
        let offer = CodeOffer {
            files: staged_names(&[("file-a".into(), "sales.csv".into())]),
            data_dir: "/mnt/data".into(),
        };
        let d = offer.definition();
        assert_eq!(d["function"]["name"], TOOL_NAME);
        assert!(
            d["function"]["description"]
                .as_str()
                .unwrap()
                .contains("/mnt/data/sales.csv (file-a)")
        );
        assert_eq!(d["function"]["parameters"]["required"], json!(["code"]));
    }
}
