//! The Dockerfile syntax tree, as the parser produces it.
//!
//! The tree keeps what BuildKit's parser keeps (instruction, flags, arguments) plus spans, so
//! that every later error can point into the file. [`Instruction::dump`] renders an instruction
//! in BuildKit's AST dump format, which the conformance tests compare byte for byte.

use crate::source::{SourceFile, Span};
use std::sync::Arc;

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// The file it was parsed from.
    pub file: Arc<SourceFile>,
    /// Parser directives from the top of the file.
    pub directives: Directives,
    /// The instructions in file order.
    pub instructions: Vec<Instruction>,
    /// Empty lines inside continued instructions (allowed, but a build check warns of them).
    pub empty_continuations: Vec<Span>,
}

/// Parser directives (`# escape=`, `# syntax=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// The escape character, `\` or `` ` ``.
    pub escape: char,
    /// The `syntax` directive's value, if any.
    pub syntax: Option<String>,
    /// The `check` directive's value, if any.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
            check: None,
        }
    }
}

/// A `--name=value` or `--name` flag as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The flag text without quotes, e.g. `--from=build`.
    pub text: String,
    /// Where it is.
    pub span: Span,
}

/// A `key=value` pair of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, with quotes and escapes as written.
    pub key: String,
    /// The value, with quotes and escapes as written.
    pub value: String,
    /// `"="` for the `k=v` form, `""` for the legacy `k v` form.
    pub separator: &'static str,
}

/// The arguments of an instruction, in the shape its parser gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// No arguments.
    Empty,
    /// Whitespace- or quote-delimited words (FROM, EXPOSE, ARG, shell-form COPY/ADD/VOLUME).
    Words(Vec<String>),
    /// The whole rest of the line as one string (WORKDIR, USER, MAINTAINER, STOPSIGNAL, and
    /// unknown instructions).
    Text(String),
    /// A JSON array of strings (exec form).
    Json(Vec<String>),
    /// Shell form: the rest of the line, to be run by the shell.
    Shell(String),
    /// ENV and LABEL pairs.
    KeyValues(Vec<KeyValue>),
    /// HEALTHCHECK: the type (`CMD`, `NONE`) and the command.
    Healthcheck {
        /// `CMD` or `NONE` as written.
        kind: String,
        /// The command, if any.
        cmd: Box<Args>,
    },
    /// ONBUILD: the trigger instruction.
    OnBuild(Box<Instruction>),
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The keyword as written (`run`, `RUN`, `Copy`…).
    pub keyword: String,
    /// Where the keyword is.
    pub keyword_span: Span,
    /// Flags before the arguments.
    pub flags: Vec<Flag>,
    /// The arguments.
    pub args: Args,
    /// Where the arguments (after the flags) start and end; empty at the end of the line when
    /// there are none.
    pub args_span: Span,
    /// The logical line: continuation lines joined, comments inside removed.
    pub original: String,
    /// From the first byte of the keyword to the end of the last line.
    pub span: Span,
    /// First line (1-based).
    pub start_line: usize,
    /// Last line (1-based), the last heredoc terminator included.
    pub end_line: usize,
    /// Heredocs the instruction opens, in order (RUN, COPY and ADD only).
    pub heredocs: Vec<Heredoc>,
    /// The comment lines right before it (`#` and blanks stripped; an empty `#` line starts
    /// afresh, parser directives are not comments), as BuildKit's `PrevComment`: a stage's or
    /// ARG's description (`# name description`).
    pub comments: Vec<String>,
}

/// A here-document: `<<EOF` on an instruction line and the lines up to `EOF`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word, without quotes.
    pub name: String,
    /// The lines between the instruction and the terminator, each with its `\n`.
    pub content: String,
    /// Whether the body is expanded (the word was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are removed from the body and the terminator.
    pub chomp: bool,
    /// The file descriptor before `<<` (`2<<EOF`), 0 if none.
    pub fd: u32,
}

impl Instruction {
    /// The keyword in lowercase.
    pub fn name(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    /// The instruction in BuildKit's AST dump format, e.g. `(copy ["--from=a"] "x" "/y")`.
    pub fn dump(&self) -> String {
        format!("({})", self.dump_inner())
    }

    fn dump_inner(&self) -> String {
        let mut out = self.name();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(&f.text)).collect();
            out.push_str(&format!(" [{}]", flags.join(" ")));
        }
        dump_args(&self.args, &mut out);
        out.trim().to_string()
    }
}

fn dump_args(args: &Args, out: &mut String) {
    let mut push = |s: &str| {
        out.push(' ');
        out.push_str(&go_quote(s));
    };
    match args {
        Args::Empty => {}
        Args::Words(words) | Args::Json(words) => words.iter().for_each(|w| push(w)),
        Args::Text(text) | Args::Shell(text) => push(text),
        Args::KeyValues(pairs) => {
            for kv in pairs {
                push(&kv.key);
                push(&kv.value);
                push(kv.separator);
            }
        }
        Args::Healthcheck { kind, cmd } => {
            push(kind);
            dump_args(cmd, out);
        }
        Args::OnBuild(inner) => {
            out.push_str(&format!(" ({})", inner.dump_inner()));
        }
    }
}

/// Quotes a string the way Go's `strconv.Quote` does.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            '\u{FFFD}' => out.push('\u{FFFD}'),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and
/// the ASCII space are printable; other spaces, controls and unassigned code points are not.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let cp = c as u32;
    // Format characters, private use, surrogates and noncharacters.
    !matches!(cp, 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x200B..=0x200F | 0x202A..=0x202E
        | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF | 0xFFFE | 0xFFFF
        | 0xF0000..=0x10FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\u{0}"), r#""\t\n\x00""#);
        assert_eq!(go_quote("한국어 é"), "\"한국어 é\"");
        assert_eq!(go_quote("\u{200b}"), r#""\u200b""#);
    }
}
