//! Diagnostics: errors and warnings that point at the Dockerfile.
//!
//! The plain rendering is the one compilers use, so editors and CI logs can jump to it:
//!
//! ```text
//! Dockerfile:3:1: error: unknown instruction "COPPY" (did you mean "COPY"?)
//!     |
//!   3 | COPPY a b
//!     | ^^^^^
//! ```

use crate::source::{SourceFile, Span};
use std::fmt::Write as _;
use std::sync::Arc;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The build can go on.
    Warning,
    /// The build cannot go on.
    Error,
}

/// A build check (the rules are in `crate::lint`).
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// BuildKit's rule name.
    pub name: &'static str,
    /// What the rule wants.
    pub description: &'static str,
    /// Its documentation.
    pub url: &'static str,
}

/// One error or warning about a source file.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
    /// Where, if the problem has a place in the file.
    pub span: Option<Span>,
    /// A hint on how to fix it.
    pub help: Option<String>,
    /// The file.
    pub file: Arc<SourceFile>,
    /// The build check (lint rule) that found it, if any.
    pub rule: Option<&'static Rule>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(file: &Arc<SourceFile>, span: Option<Span>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            help: None,
            file: file.clone(),
            rule: None,
        }
    }

    /// A warning at `span`.
    pub fn warning(file: &Arc<SourceFile>, span: Option<Span>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, span, message)
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `file:line:col` (or just `file` without a span).
    pub fn location(&self) -> String {
        match self.span {
            Some(span) => {
                let pos = self.file.position(span.start);
                format!("{}:{}:{}", self.file.name, pos.line, pos.column)
            }
            None => self.file.name.clone(),
        }
    }

    /// The plain multi-line rendering: location, message, source line with carets, help.
    pub fn render(&self) -> String {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = match self.rule {
            Some(rule) => format!(
                "{}: {kind}: {} [{}]\n",
                self.location(),
                self.message,
                rule.name
            ),
            None => format!("{}: {kind}: {}\n", self.location(), self.message),
        };
        if let Some(span) = self.span {
            let start = self.file.position(span.start);
            let end = self.file.position(span.end.max(span.start));
            // A span ending at the start of a line does not cover that line.
            let last_line = if end.line > start.line && end.column == 1 {
                end.line - 1
            } else {
                end.line
            };
            let width = last_line.to_string().len();
            let _ = writeln!(out, "{:width$} |", "");
            if last_line == start.line {
                let text = self.file.line_text(start.line);
                let underline = if end.line == start.line {
                    (end.column - start.column).max(1)
                } else {
                    (text.chars().count() + 1 - start.column).max(1)
                };
                let (text, column, underline) = window(text, start.column, underline);
                let _ = writeln!(out, "{:>width$} | {}", start.line, text);
                let _ = writeln!(
                    out,
                    "{:width$} | {}{}",
                    "",
                    " ".repeat(column - 1),
                    "^".repeat(underline)
                );
            } else {
                // Several lines (a continued instruction): mark each, as BuildKit does.
                const MAX_LINES: usize = 8;
                for line in start.line..=last_line.min(start.line + MAX_LINES - 1) {
                    let (text, _, _) = window(self.file.line_text(line), 1, 0);
                    let _ = writeln!(out, "{line:>width$} | >>> {text}");
                }
                if last_line >= start.line + MAX_LINES {
                    let _ = writeln!(out, "{:width$} | ...", "");
                }
                let _ = writeln!(out, "{:width$} |", "");
            }
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        if let Some(rule) = self.rule {
            let _ = writeln!(out, "  = note: {} ({})", rule.description, rule.url);
        }
        out
    }
}

/// How many characters of a source line a diagnostic shows; a longer line (a generated
/// Dockerfile, a hostile one) is cut to a window around the span.
pub const MAX_SHOWN_LINE: usize = 160;

impl Diagnostic {
    /// Whether a line the span covers is longer than [`MAX_SHOWN_LINE`] (renderers that show
    /// whole lines should then use [`Diagnostic::render`], which cuts them).
    pub fn has_long_lines(&self) -> bool {
        let Some(span) = self.span else { return false };
        let first = self.file.position(span.start).line;
        let last = self.file.position(span.end.max(span.start)).line;
        (first..=last).any(|l| self.file.line_text(l).chars().count() > MAX_SHOWN_LINE)
    }
}

/// `text` cut to at most [`MAX_SHOWN_LINE`] characters around `column` (1-based), with `…`
/// where it was cut, and the column and underline length in the cut text.
fn window(text: &str, column: usize, underline: usize) -> (String, usize, usize) {
    let len = text.chars().count();
    if len <= MAX_SHOWN_LINE {
        return (text.to_string(), column, underline);
    }
    let from = column.saturating_sub(MAX_SHOWN_LINE / 4 + 1);
    let to = (from + MAX_SHOWN_LINE).min(len);
    let mut shown: String = text.chars().skip(from).take(to - from).collect();
    let mut column = column - from;
    if from > 0 {
        shown.insert(0, '…');
        column += 1;
    }
    if to < len {
        shown.push('…');
    }
    // The underline stops where the shown text does.
    let room = shown.chars().count() + 1 - column.min(shown.chars().count());
    (shown, column, underline.min(room).max(1))
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.render().trim_end())
    }
}

impl std::error::Error for Diagnostic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_around_the_span() {
        let mut text = b"FROM x\nENV A=".to_vec();
        text.extend(std::iter::repeat_n(b'a', 1000));
        text.extend(b" $B{");
        text.extend(std::iter::repeat_n(b'b', 1000));
        let file = SourceFile::new("Dockerfile", &text);
        let at = 7 + 6 + 1000 + 1;
        let d = Diagnostic::error(&file, Some(Span::new(at, at + 3)), "bad");
        assert!(d.has_long_lines());
        let rendered = d.render();
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[0], "Dockerfile:2:1008: error: bad");
        let shown = lines[2].strip_prefix("2 | ").unwrap();
        assert_eq!(shown.chars().count(), MAX_SHOWN_LINE + 2, "{shown}");
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        // The carets still point at `$B{`.
        let carets = lines[3].strip_prefix("  | ").unwrap();
        let col = carets.find('^').unwrap();
        let chars: Vec<char> = shown.chars().collect();
        assert_eq!(chars[col..col + 3].iter().collect::<String>(), "$B{");
        assert_eq!(carets.trim(), "^^^");
    }

    #[test]
    fn multi_line_spans_show_every_line() {
        let file = SourceFile::new("Dockerfile", b"FROM x\nRUN a && \\\n  b\nRUN c\n");
        let d = Diagnostic::error(&file, Some(Span::new(7, 20)), "exit code: 1");
        assert_eq!(
            d.render(),
            "Dockerfile:2:1: error: exit code: 1\n  |\n2 | >>> RUN a && \\\n3 | >>>   b\n  |\n"
        );
    }

    #[test]
    fn renders_location_source_and_carets() {
        let file = SourceFile::new("Dockerfile", b"FROM x\nCOPPY a b\n");
        let d = Diagnostic::error(
            &file,
            Some(Span::new(7, 12)),
            "unknown instruction \"COPPY\"",
        )
        .with_help("did you mean \"COPY\"?");
        assert_eq!(
            d.render(),
            "Dockerfile:2:1: error: unknown instruction \"COPPY\"\n  |\n2 | COPPY a b\n  | ^^^^^\n  = help: did you mean \"COPY\"?\n"
        );
    }
}
