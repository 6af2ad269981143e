//! The layer check: no module of the crate imports one of a higher layer (the layering in
//! `LAYERS`, bottom to top), and modules of one layer do not import each other in a cycle. It reads every `src/**/*.rs`, leaves out comments, string
//! literals and `#[cfg(test)]` items, and collects the top-level modules each file names
//! through `crate::` paths (`use crate::{a, b}` groups included).
//!
//! Edges still to be removed are listed in `ALLOWED`, each with why; the check also fails when
//! one of them no longer occurs, so the list only shrinks. Plain std, no dependencies: it is
//! the one test a contributor can read in full.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The layers, bottom → top: a module may import from its own layer or below.
const LAYERS: &[&[&str]] = &[
    // Foundation: no business rules, no I/O of the proxy's own. `routes` (the route table,
    // path matching only) and `shutdown` (the cancellation watch) belong here too.
    &[
        "body",
        "ids",
        "model",
        "metrics",
        "tls",
        "busy_poll",
        "secrets",
        "clock",
        "routes",
        "shutdown",
    ],
    &["store"],
    // Moving whole stores; the CLI (`config::flags`) names its commands.
    &["transfer"],
    &["config", "error"],
    &["telemetry", "upstream"],
    &["forward", "tenancy"],
    &["retrieval", "interpreter"],
    &["runs"],
    &["app"],
    // The API: its services, then its handlers (one layer here).
    &["api"],
    &["server", "h1"],
];

/// Edges that break the layering today, each to be removed (the check fails once one is gone,
/// so remove it here then).
const ALLOWED: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// One `crate::` reference: the top-level module named, and the line it is on (1-based).
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    module: String,
    line: usize,
}

/// The source with comments and the contents of string and char literals blanked (newlines
/// kept, so lines still count), so neither a `crate::` in a doc comment nor a `"*/*"` in a
/// string misleads the scan.
fn blank_comments_and_strings(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !prev_is_ident(&chars, i)
            && raw_string_hashes(&chars, i + 1).is_some()
        {
            // r"…", r#"…"# (and br"…" through the `b` passed as code before it).
            let hashes = raw_string_hashes(&chars, i + 1).unwrap_or(0);
            let open = 2 + hashes;
            for _ in 0..open {
                out.push(' ');
            }
            i += open;
            while i < chars.len() {
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\''), or else a lifetime or label ('a), kept as is.
            let end = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&k| chars[k] == '\'' && k > i + 2)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    for _ in i..=end {
                        out.push(' ');
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    // `br"…"` is a raw byte string: its `b` does not make the `r` part of an identifier.
    i > 0
        && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
        && !(chars[i - 1] == 'b' && (i < 2 || !is_ident(chars[i - 2])))
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// After an `r`: the number of `#`s of a raw string opening there, if one does.
fn raw_string_hashes(chars: &[char], from: usize) -> Option<usize> {
    let hashes = chars[from..].iter().take_while(|&&c| c == '#').count();
    (chars.get(from + hashes) == Some(&'"')).then_some(hashes)
}

/// Blanks every item marked `#[cfg(test)]` (a test module, a test-only `use` or function);
/// a file marked `#![cfg(test)]` is blanked whole. Expects comments and strings blanked.
fn drop_test_items(code: &str) -> String {
    if code.contains("#![cfg(test)]") {
        return code
            .chars()
            .map(|c| if c == '\n' { c } else { ' ' })
            .collect();
    }
    let mut chars: Vec<char> = code.chars().collect();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= chars.len() {
        if chars[i..i + marker.len()] != marker[..] {
            i += 1;
            continue;
        }
        // The item runs to its first `;` outside braces, or to the brace closing its body.
        let start = i;
        let mut k = i + marker.len();
        let mut depth = 0usize;
        while k < chars.len() {
            match chars[k] {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                ';' if depth == 0 => break,
                _ => {}
            }
            k += 1;
        }
        let end = k.min(chars.len() - 1);
        for c in &mut chars[start..=end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = end + 1;
    }
    chars.into_iter().collect()
}

/// The top-level modules `code` names through `crate::` paths, with their lines.
fn crate_references(code: &str) -> Vec<Reference> {
    let chars: Vec<char> = code.chars().collect();
    let pattern: Vec<char> = "crate".chars().collect();
    let mut refs = Vec::new();
    let line_at = |pos: usize| 1 + chars[..pos].iter().filter(|&&c| c == '\n').count();
    let mut i = 0;
    while i + pattern.len() <= chars.len() {
        let is_word = chars[i..i + pattern.len()] == pattern[..]
            && (i == 0 || !is_ident(chars[i - 1]))
            && chars.get(i + pattern.len()).is_none_or(|&c| !is_ident(c));
        if !is_word {
            i += 1;
            continue;
        }
        let mut k = skip_space(&chars, i + pattern.len());
        if !(chars.get(k) == Some(&':') && chars.get(k + 1) == Some(&':')) {
            i += pattern.len();
            continue;
        }
        k = skip_space(&chars, k + 2);
        if chars.get(k) == Some(&'{') {
            // A group: the first name of each of its top-level entries.
            let mut depth = 0usize;
            let mut entry_start = true;
            while k < chars.len() {
                let c = chars[k];
                match c {
                    '{' => {
                        depth += 1;
                        if depth == 1 {
                            entry_start = true;
                        }
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => entry_start = true,
                    c if depth == 1 && entry_start && is_ident(c) => {
                        let (name, end) = ident_at(&chars, k);
                        refs.push(Reference {
                            module: name,
                            line: line_at(k),
                        });
                        entry_start = false;
                        k = end;
                        continue;
                    }
                    _ => {}
                }
                k += 1;
            }
            i = k;
        } else if chars.get(k).is_some_and(|&c| is_ident(c)) {
            let (name, end) = ident_at(&chars, k);
            refs.push(Reference {
                module: name,
                line: line_at(k),
            });
            i = end;
        } else {
            i = k;
        }
    }
    refs
}

fn skip_space(chars: &[char], mut k: usize) -> usize {
    while chars.get(k).is_some_and(|c| c.is_whitespace()) {
        k += 1;
    }
    k
}

fn ident_at(chars: &[char], start: usize) -> (String, usize) {
    let mut end = start;
    while chars.get(end).is_some_and(|&c| is_ident(c)) {
        end += 1;
    }
    (chars[start..end].iter().collect(), end)
}

/// The modules a source file imports (outside tests), as the check sees them.
fn imports(src: &str) -> Vec<Reference> {
    crate_references(&drop_test_items(&blank_comments_and_strings(src)))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to; `None` for the crate roots.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
    let mut problems = String::new();
    let mut allowed_seen = BTreeSet::new();
    // Every other edge between modules, with where it first occurs.
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src/");
        let Some(module) = module_of(relative) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            let _ = writeln!(
                problems,
                "src/{}: module `{module}` is in no layer: add it to LAYERS",
                relative.display()
            );
            continue;
        };
        let text = std::fs::read_to_string(file).expect("readable source");
        for r in imports(&text) {
            if r.module == module || matches!(r.module.as_str(), "self" | "super") {
                continue;
            }
            let Some(theirs) = layer_of(&r.module) else {
                let _ = writeln!(
                    problems,
                    "src/{}:{}: `crate::{}` is in no layer: add it to LAYERS",
                    relative.display(),
                    r.line,
                    r.module
                );
                continue;
            };
            if theirs <= own {
                edges
                    .entry((module.clone(), r.module.clone()))
                    .or_insert_with(|| format!("src/{}:{}", relative.display(), r.line));
                continue;
            }
            if ALLOWED.contains(&(module.as_str(), r.module.as_str())) {
                allowed_seen.insert((module.clone(), r.module.clone()));
                continue;
            }
            let _ = writeln!(
                problems,
                "src/{}:{}: `{module}` (layer {own}) imports `{}` (layer {theirs}), a higher layer",
                relative.display(),
                r.line,
                r.module
            );
        }
    }
    for ((from, to), at) in &edges {
        if let Some(path) = path_between(&edges, to, from) {
            let _ = writeln!(
                problems,
                "{at}: `{from}` imports `{to}`, which imports it back: {from} → {}",
                path.join(" → ")
            );
        }
    }
    for (from, to) in ALLOWED {
        if !allowed_seen.contains(&(from.to_string(), to.to_string())) {
            let _ = writeln!(
                problems,
                "`{from}` no longer imports `{to}`: remove the edge from ALLOWED"
            );
        }
    }
    assert!(problems.is_empty(), "layer check failed:\n{problems}");
}

/// A chain of imports from `from` to `to`, if there is one (breadth first: the shortest).
fn path_between(
    edges: &BTreeMap<(String, String), String>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut path = vec![to.to_owned()];
            let mut step = to;
            while step != from {
                step = came_from[step];
                path.push(step.to_owned());
            }
            path.reverse();
            return Some(path);
        }
        for (a, b) in edges.keys() {
            if a == at && b != from && !came_from.contains_key(b.as_str()) {
                came_from.insert(b, a);
                queue.push_back(b);
            }
        }
    }
    None
}

#[test]
fn layers_name_each_module_once() {
    let mut seen = BTreeSet::new();
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(seen.insert(*module), "`{module}` is in two layers");
    }
}

/// The scan itself, on small inline sources.
mod scan {
    use super::*;

    fn modules(src: &str) -> Vec<(String, usize)> {
        imports(src)
            .into_iter()
            .map(|r| (r.module, r.line))
            .collect()
    }

    #[test]
    fn a_grouped_use_names_each_top_level_module() {
        let src = "use std::fmt;\nuse crate::{\n    app::AppState,\n    store::{Store, Tenant},\n    ids,\n};\n";
        assert_eq!(
            modules(src),
            vec![("app".into(), 3), ("store".into(), 4), ("ids".into(), 5)]
        );
    }

    #[test]
    fn paths_in_code_count_and_lookalikes_do_not() {
        let src = "fn f() { let x = crate::ids::new_id(\"a_\"); my_crate::api::f(); }\n\
                   pub(crate) fn g(s: &crate :: model::Run) {}\n";
        assert_eq!(modules(src), vec![("ids".into(), 1), ("model".into(), 2)]);
    }

    #[test]
    fn comments_and_strings_are_not_imports() {
        let src = "//! Calls `crate::api` (doc).\n/* crate::server /* nested */ crate::h1 */\n\
                   const ACCEPT: &str = \"*/* crate::app\";\nconst R: &str = r#\"crate::runs\"#;\n\
                   const C: char = '\"';\nuse crate::store::Store; // not crate::api\n";
        assert_eq!(modules(src), vec![("store".into(), 6)]);
    }

    #[test]
    fn test_items_are_left_out() {
        let src = "use crate::ids;\n#[cfg(test)]\nmod tests {\n    use crate::api::x;\n    fn f() { if true { crate::app::y(); } }\n}\n\
                   #[cfg(test)]\nuse crate::server::z;\nfn after<'a>(x: &'a str) { crate::model::m(x); }\n";
        assert_eq!(modules(src), vec![("ids".into(), 1), ("model".into(), 9)]);
    }

    #[test]
    fn a_cycle_is_found_with_its_path() {
        let edges: BTreeMap<(String, String), String> = [
            ("h1", "server"),
            ("server", "app"),
            ("app", "h1"),
            ("app", "store"),
        ]
        .into_iter()
        .map(|(a, b)| ((a.to_owned(), b.to_owned()), String::new()))
        .collect();
        assert_eq!(
            path_between(&edges, "server", "h1"),
            Some(vec!["server".into(), "app".into(), "h1".into()])
        );
        assert_eq!(path_between(&edges, "store", "app"), None);
    }

    #[test]
    fn a_test_only_file_has_no_imports() {
        assert!(modules("#![cfg(test)]\nuse crate::api;\n").is_empty());
    }
}
