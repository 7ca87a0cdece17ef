//! Source files and byte spans, and turning spans into `line:column` positions.

use std::sync::Arc;

/// A file the frontend read: its display name and its bytes as text.
#[derive(Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics (the path as the user gave it).
    pub name: String,
    /// The text. Invalid UTF-8 was replaced (U+FFFD) when the file was read.
    pub text: String,
    /// Byte offsets of line starts, computed when a position is first asked for (most parses
    /// never need one).
    line_starts: std::sync::OnceLock<Vec<usize>>,
}

/// A byte range in a [`SourceFile`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset just past the last byte.
    pub end: usize,
}

impl Span {
    /// The span `start..end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
}

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Line number, from 1.
    pub line: usize,
    /// Column number, from 1.
    pub column: usize,
}

impl SourceFile {
    /// A source file from raw bytes.
    pub fn new(name: impl Into<String>, bytes: &[u8]) -> Arc<SourceFile> {
        // Checking is much faster than the lossy conversion, and almost every file is valid.
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text.to_string(),
            Err(_) => String::from_utf8_lossy(bytes).into_owned(),
        };
        Arc::new(SourceFile {
            name: name.into(),
            text,
            line_starts: std::sync::OnceLock::new(),
        })
    }

    fn line_starts(&self) -> &[usize] {
        self.line_starts.get_or_init(|| {
            let mut starts = vec![0];
            starts.extend(self.text.match_indices('\n').map(|(i, _)| i + 1));
            starts
        })
    }

    /// The line and column of a byte offset.
    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = self.line_starts().partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts()[line];
        let column = self.text[start..floor_char_boundary(&self.text, offset)]
            .chars()
            .count()
            + 1;
        Position {
            line: line + 1,
            column,
        }
    }

    /// The text of a 1-based line, without its line break.
    pub fn line_text(&self, line: usize) -> &str {
        let Some(&start) = self.line_starts().get(line.wrapping_sub(1)) else {
            return "";
        };
        let end = self
            .line_starts()
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    /// Number of lines (a final line break does not start a new line).
    pub fn line_count(&self) -> usize {
        if self.text.ends_with('\n') {
            self.line_starts().len() - 1
        } else {
            self.line_starts().len()
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters() {
        let f = SourceFile::new("Dockerfile", "FROM x\nRUN é ok\n".as_bytes());
        assert_eq!(f.position(0), Position { line: 1, column: 1 });
        assert_eq!(f.position(7), Position { line: 2, column: 1 });
        let ok = f.text.find("ok").unwrap();
        assert_eq!(f.position(ok), Position { line: 2, column: 7 });
        assert_eq!(f.line_text(2), "RUN é ok");
        assert_eq!(f.line_count(), 2);
    }
}
