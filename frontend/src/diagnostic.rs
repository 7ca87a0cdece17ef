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
    pub rule: Option<&'static crate::lint::Rule>,
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
                let _ = writeln!(out, "{:>width$} | {}", start.line, text);
                let _ = writeln!(
                    out,
                    "{:width$} | {}{}",
                    "",
                    " ".repeat(start.column - 1),
                    "^".repeat(underline)
                );
            } else {
                // Several lines (a continued instruction): mark each, as BuildKit does.
                const MAX_LINES: usize = 8;
                for line in start.line..=last_line.min(start.line + MAX_LINES - 1) {
                    let _ = writeln!(out, "{line:>width$} | >>> {}", self.file.line_text(line));
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
