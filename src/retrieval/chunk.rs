//! Token chunking: text → overlapping windows of at most `max_tokens` tokens, each starting
//! `max_tokens - overlap_tokens` tokens after the previous one (OpenAI's static strategy).
//!
//! Tokens are counted with tiktoken's `cl100k_base` (via `tiktoken-rs`): it is the encoding of
//! the `text-embedding-3-*` and `ada-002` embedding models, so a chunk's token count is exactly
//! what the embeddings endpoint counts against its per-input and per-request limits.
//!
//! Chunk text is cut from the original string at token boundaries (BPE is lossless, so the
//! tokens' bytes concatenate back to the text) rather than decoded from token ids: no
//! replacement characters appear where a token splits a multi-byte character; such a cut
//! moves outwards to the enclosing character boundary.
//!
//! Pure and synchronous: callers run it on a blocking thread.

use serde_json::Value;

use super::IngestError;

/// A static chunking strategy, validated by the API layer (100..=4096, overlap ≤ max/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpec {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkSpec {
    /// OpenAI's default (`auto`): 800 tokens with 400 overlap.
    fn default() -> Self {
        ChunkSpec {
            max_tokens: 800,
            overlap_tokens: 400,
        }
    }
}

impl ChunkSpec {
    /// Reads the stored `{type:"static", static:{…}}` form; anything else is the default.
    pub fn from_strategy(strategy: &Value) -> ChunkSpec {
        let s = &strategy["static"];
        match (
            s["max_chunk_size_tokens"].as_u64(),
            s["chunk_overlap_tokens"].as_u64(),
        ) {
            (Some(max), Some(overlap)) if max > 0 && overlap < max => ChunkSpec {
                max_tokens: max as usize,
                overlap_tokens: overlap as usize,
            },
            _ => ChunkSpec::default(),
        }
    }
}

/// One chunk of a file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    pub text: String,
    /// Tokens in the chunk (`cl100k_base`).
    pub tokens: usize,
}

/// The tokenizer every chunk and token budget uses.
pub fn tokenizer() -> &'static tiktoken_rs::CoreBPE {
    tiktoken_rs::cl100k_base_singleton()
}

/// Number of tokens in `text`.
pub fn count_tokens(text: &str) -> usize {
    tokenizer().encode_ordinary(text).len()
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Splits `text` into token windows. `max_tokens_total`, if given, refuses texts with more
/// tokens (OpenAI caps a file at a token budget).
pub fn chunk(
    text: &str,
    spec: ChunkSpec,
    max_tokens_total: Option<usize>,
) -> Result<Vec<TextChunk>, IngestError> {
    let bpe = tokenizer();
    // The regex pre-tokenizer can panic on pathological input (a backtracking limit); that
    // fails the file, not the process.
    let tokens = std::panic::catch_unwind(|| bpe.encode_ordinary(text))
        .map_err(|_| IngestError::invalid("The file's text could not be tokenized."))?;
    if let Some(limit) = max_tokens_total
        && tokens.len() > limit
    {
        return Err(IngestError::invalid(format!(
            "The file contains {} tokens; at most {limit} tokens per file can be indexed.",
            tokens.len()
        )));
    }
    let max = spec.max_tokens.max(1);
    let step = max.saturating_sub(spec.overlap_tokens).max(1);
    let byte_len = |toks: &[u32]| -> Result<usize, IngestError> {
        bpe.decode_bytes(toks)
            .map(|b| b.len())
            .map_err(|e| IngestError::server(format!("tokenizer: {e}")))
    };
    let mut out = Vec::new();
    let mut start = 0usize;
    // Byte offset of token `start` in `text`.
    let mut start_byte = 0usize;
    while start < tokens.len() {
        let end = (start + max).min(tokens.len());
        let end_byte = start_byte + byte_len(&tokens[start..end])?;
        let a = floor_boundary(text, start_byte);
        let b = ceil_boundary(text, end_byte);
        let piece = &text[a..b];
        if !piece.trim().is_empty() {
            out.push(TextChunk {
                text: piece.to_owned(),
                tokens: end - start,
            });
        }
        if end == tokens.len() {
            break;
        }
        let next = start + step;
        start_byte += byte_len(&tokens[start..next])?;
        start = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(max: usize, overlap: usize) -> ChunkSpec {
        ChunkSpec {
            max_tokens: max,
            overlap_tokens: overlap,
        }
    }

    #[test]
    fn short_text_is_one_chunk() {
        let c = chunk("hello world", ChunkSpec::default(), None).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, "hello world");
        assert_eq!(c[0].tokens, 2);
        assert!(chunk("", ChunkSpec::default(), None).unwrap().is_empty());
    }

    #[test]
    fn windows_overlap_and_respect_the_token_budget() {
        let words: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        let total = count_tokens(&text);
        let c = chunk(&text, spec(100, 50), None).unwrap();
        for ch in &c {
            assert!(ch.tokens <= 100);
            assert!(count_tokens(&ch.text) <= 101, "{}", ch.text);
        }
        // Windows start every 50 tokens until one reaches the end.
        assert_eq!(c.len(), total.div_ceil(50) - 1);
        // Consecutive chunks overlap: the second half of one is the first half of the next.
        let tail: String = c[0].text.chars().skip(c[0].text.len() / 2 + 5).collect();
        assert!(c[1].text.contains(tail.trim()), "{tail:?}");
        // Everything is covered: the first chunk starts the text, the last ends it.
        assert!(text.starts_with(&c[0].text));
        assert!(text.ends_with(&c[c.len() - 1].text));
    }

    #[test]
    fn no_overlap_partitions_the_text() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(200);
        let c = chunk(&text, spec(100, 0), None).unwrap();
        let joined: String = c.iter().map(|c| c.text.as_str()).collect();
        // Only a whitespace-only tail chunk may be dropped.
        assert!(
            joined == text || joined == text.trim_end(),
            "chunks do not partition the text"
        );
    }

    #[test]
    fn multibyte_text_never_breaks_characters() {
        let text = "日本語のテキストと絵文字🎉🎉🎉が混ざった文章です。".repeat(100);
        let c = chunk(&text, spec(100, 30), None).unwrap();
        assert!(c.len() > 2);
        for ch in &c {
            assert!(!ch.text.contains('\u{fffd}'));
            assert!(text.contains(&ch.text));
        }
    }

    #[test]
    fn token_budget_is_enforced() {
        let e = chunk(&"word ".repeat(500), ChunkSpec::default(), Some(100)).unwrap_err();
        assert_eq!(e.code, "invalid_file");
    }

    #[test]
    fn strategy_parsing() {
        let s = ChunkSpec::from_strategy(
            &json!({"type": "static", "static": {"max_chunk_size_tokens": 300, "chunk_overlap_tokens": 100}}),
        );
        assert_eq!(s, spec(300, 100));
        assert_eq!(
            ChunkSpec::from_strategy(&json!({"type": "other"})),
            ChunkSpec::default()
        );
    }
}
