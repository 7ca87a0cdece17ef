//! The Dockerfile parser: bytes → [`Dockerfile`] plus diagnostics. It never panics and never
//! stops at the first problem.
//!
//! It follows BuildKit's parser step by step, because compatibility means accepting exactly the
//! same files with exactly the same meaning:
//!
//! 1. Parser directives (`# escape=`, `# syntax=`, `# check=`) are read from the top of the file
//!    until the first line that is not one.
//! 2. Physical lines are joined into logical lines: a line ending in the escape character
//!    (optionally followed by blanks) continues on the next; comment lines and empty lines inside
//!    a continuation are skipped (the latter with a warning). Leading whitespace is removed from
//!    the first line only.
//! 3. Each logical line is split into keyword, `--flags` and arguments, and the arguments are
//!    parsed in the shape the keyword needs ([`args`]).
//!
//! Every piece of a logical line remembers where it came from ([`LogicalLine`]), so spans of
//! keywords, flags and arguments point at the right line and column even across continuations.

pub mod args;

use crate::ast::{Args, Directives, Dockerfile, Flag, Heredoc, Instruction};
use crate::diagnostic::Diagnostic;
use crate::source::{SourceFile, Span};
use nom::IResult;
use nom::Parser as _;
use nom::bytes::complete::{take_till1, take_while};
use nom::character::complete::{char, satisfy, space0};
use std::sync::Arc;

/// The result of parsing: the tree and everything found wrong with the file.
#[derive(Debug)]
pub struct Parsed {
    /// The syntax tree. Instructions that could not be parsed are left out.
    pub dockerfile: Dockerfile,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == crate::diagnostic::Severity::Error)
    }
}

/// Parses a Dockerfile.
pub fn parse(file: &Arc<SourceFile>) -> Parsed {
    let mut parser = Parser {
        file: file.clone(),
        directives: Directives::default(),
        directives_done: false,
        seen_directives: Vec::new(),
        diagnostics: Vec::new(),
        empty_continuations: Vec::new(),
    };
    let instructions = parser.run();
    if instructions.is_empty() && !parser.has_errors() {
        parser
            .diagnostics
            .push(Diagnostic::error(file, None, "file with no instructions"));
    }
    Parsed {
        dockerfile: Dockerfile {
            file: file.clone(),
            directives: parser.directives,
            instructions,
            empty_continuations: parser.empty_continuations,
        },
        diagnostics: parser.diagnostics,
    }
}

/// A logical line: pieces of physical lines joined, each remembering its offset in the file.
#[derive(Debug, Default, Clone)]
pub struct LogicalLine {
    /// The joined text.
    pub text: String,
    /// `(offset in text, offset in file)` for the start of every piece.
    pieces: Vec<(usize, usize)>,
    /// Offset in the file just past the last piece's line.
    end: usize,
}

impl LogicalLine {
    fn push(&mut self, piece: &str, file_offset: usize) {
        self.pieces.push((self.text.len(), file_offset));
        self.text.push_str(piece);
        self.end = file_offset + piece.len();
    }

    /// The file offset of a byte offset in [`LogicalLine::text`].
    pub fn file_offset(&self, offset: usize) -> usize {
        let i = self.pieces.partition_point(|&(t, _)| t <= offset);
        if i == 0 {
            return self.pieces.first().map_or(0, |p| p.1);
        }
        let (t, f) = self.pieces[i - 1];
        f + (offset - t)
    }

    /// The file span of a byte range of [`LogicalLine::text`].
    pub fn span(&self, start: usize, end: usize) -> Span {
        let s = self.file_offset(start);
        let e = if end > start {
            self.file_offset(end - 1) + 1
        } else {
            s
        };
        Span::new(s, e.max(s))
    }
}

struct PhysicalLine<'a> {
    text: &'a str,
    offset: usize,
}

struct Parser {
    file: Arc<SourceFile>,
    directives: Directives,
    directives_done: bool,
    seen_directives: Vec<String>,
    diagnostics: Vec<Diagnostic>,
    empty_continuations: Vec<Span>,
}

fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// `[\t\v\f\r ]`, BuildKit's separator between keyword and arguments.
fn is_separator(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_newline(line)
        .trim_start_matches(is_space)
        .starts_with('#')
}

/// The Dockerfile syntax rbuild implements, as `# syntax=` names it.
pub const IMPLEMENTED_SYNTAX: &str = "docker/dockerfile:1";

/// For a `# syntax=` value that names another frontend than the stable Dockerfile syntax
/// (`docker/dockerfile`, `:1`, `:1.N`, `:1.N.M`, with or without `docker.io/` and a digest),
/// what to tell the user; `None` for the ones rbuild implements.
fn foreign_syntax(value: &str) -> Option<String> {
    let image = value.split('@').next().unwrap_or(value);
    let image = image
        .strip_prefix("docker.io/")
        .or_else(|| image.strip_prefix("index.docker.io/"))
        .unwrap_or(image);
    let tag = match image.split_once(':') {
        None if image == "docker/dockerfile" => return None,
        Some(("docker/dockerfile", tag)) => tag,
        _ => {
            return Some(format!(
                "{value} is another frontend: its own syntax and features are not available; \
                 remove the line or build with BuildKit"
            ));
        }
    };
    let stable = tag == "1"
        || tag.strip_prefix("1.").is_some_and(|rest| {
            rest.split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
    (!stable).then(|| {
        format!(
            "docker/dockerfile:{tag} is not the stable syntax (labs, upcoming or an old \
             version): what it adds to {IMPLEMENTED_SYNTAX} is not available"
        )
    })
}

/// `# name = value` at the top of the file.
fn directive(line: &str) -> IResult<&str, (&str, &str)> {
    let (rest, (_, _, first, tail, _, _, _)) = (
        char('#'),
        space0,
        satisfy(|c| c.is_ascii_alphabetic()),
        take_while(|c: char| c.is_ascii_alphanumeric()),
        space0,
        char('='),
        space0,
    )
        .parse(line)?;
    let name_len = first.len_utf8() + tail.len();
    let name_start = line.find(first).unwrap_or(0);
    Ok((
        "",
        (&line[name_start..name_start + name_len], rest.trim_end()),
    ))
}

/// The keyword and the rest of a logical line.
fn keyword(line: &str) -> IResult<&str, &str> {
    let (rest, kw) = take_till1(is_separator)(line)?;
    let (rest, _) = take_while(is_separator)(rest)?;
    Ok((rest, kw))
}

impl Parser {
    fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == crate::diagnostic::Severity::Error)
    }

    fn error(&mut self, span: Option<Span>, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(&self.file, span, message));
    }

    /// Reads a parser directive at the top of the file; returns whether `line` was one.
    fn possible_directive(&mut self, line: &str, offset: usize) -> bool {
        if self.directives_done {
            return false;
        }
        let Ok((_, (name, value))) = directive(line) else {
            self.directives_done = true;
            return false;
        };
        if value.is_empty() {
            self.directives_done = true;
            return false;
        }
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "escape" | "syntax" | "check") {
            self.directives_done = true;
            return false;
        }
        let span = Some(Span::new(offset, offset + line.len()));
        if self.seen_directives.contains(&name) {
            self.error(
                span,
                format!("only one {name} parser directive can be used"),
            );
            return true;
        }
        self.seen_directives.push(name.clone());
        match name.as_str() {
            "escape" => match value {
                "\\" => self.directives.escape = '\\',
                "`" => self.directives.escape = '`',
                other => self.error(
                    span,
                    format!("invalid escape token '{other}' does not match ` or \\"),
                ),
            },
            "syntax" => {
                if let Some(help) = foreign_syntax(value) {
                    let message = format!(
                        "# syntax={value}: rbuild does not run frontend images; it builds this \
                         Dockerfile with its own implementation of the Dockerfile syntax \
                         {IMPLEMENTED_SYNTAX}"
                    );
                    self.diagnostics
                        .push(Diagnostic::warning(&self.file, span, message).with_help(help));
                }
                self.directives.syntax = Some(value.to_string());
            }
            _ => self.directives.check = Some(value.to_string()),
        }
        true
    }

    /// BuildKit's `processLine`: trims the line break (and, for a first line, leading blanks),
    /// looks for a directive and blanks out a comment. Returns the text, its file offset and
    /// whether the line was a directive.
    fn process_line<'a>(
        &mut self,
        line: &PhysicalLine<'a>,
        strip_left: bool,
    ) -> (&'a str, usize, bool) {
        let mut text = trim_newline(line.text);
        let mut offset = line.offset;
        if strip_left {
            let trimmed = text.trim_start_matches(is_space);
            offset += text.len() - trimmed.len();
            text = trimmed;
        }
        let directive = self.possible_directive(text, offset);
        if text.starts_with('#') {
            return ("", offset, directive);
        }
        (text, offset, directive)
    }

    /// Removes a trailing escape character (and the blanks after it). Returns the text and
    /// whether the logical line ends here. Like BuildKit, an escape character preceded by
    /// another one (`foo \\`) is an escaped escape, not a continuation, unless it is alone on
    /// its line.
    fn trim_continuation<'a>(&self, text: &'a str) -> (&'a str, bool) {
        let without_blanks = text.trim_end_matches([' ', '\t']);
        match without_blanks.strip_suffix(self.directives.escape) {
            Some(rest) if rest.is_empty() || !rest.ends_with(self.directives.escape) => {
                (rest, false)
            }
            _ => (text, true),
        }
    }

    fn run(&mut self) -> Vec<Instruction> {
        let file = self.file.clone();
        let line_count = file.text.bytes().filter(|&b| b == b'\n').count() + 1;
        let mut lines = Vec::with_capacity(line_count);
        let mut offset = 0;
        for piece in file.text.split_inclusive('\n') {
            lines.push(PhysicalLine {
                text: piece,
                offset,
            });
            offset += piece.len();
        }
        if let Some(first) = lines.first_mut()
            && let Some(rest) = first.text.strip_prefix('\u{feff}')
        {
            first.text = rest;
            first.offset += '\u{feff}'.len_utf8();
        }

        let mut instructions = Vec::with_capacity(line_count / 2);
        let mut comments: Vec<String> = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            if is_comment(lines[i].text) {
                let text = trim_newline(lines[i].text).trim_start_matches(is_space);
                match text[1..].trim() {
                    "" => comments.clear(),
                    comment => comments.push(comment.to_string()),
                }
            }
            let (text, offset, directive) = self.process_line(&lines[i], true);
            if directive {
                comments.pop();
            }
            i += 1;
            let start_line = i;
            let (text, mut end_of_line) = self.trim_continuation(text);
            if end_of_line && text.is_empty() {
                continue;
            }
            let mut logical = LogicalLine::default();
            logical.push(text, offset);
            let mut empty_continuation = None;
            while !end_of_line && i < lines.len() {
                let raw = &lines[i];
                let (text, offset, _) = self.process_line(raw, false);
                i += 1;
                if is_comment(raw.text) {
                    continue;
                }
                if text.trim_start_matches(is_space).is_empty() {
                    empty_continuation.get_or_insert(raw.offset);
                    continue;
                }
                let (text, eol) = self.trim_continuation(text);
                end_of_line = eol;
                logical.push(text, offset);
            }
            if let Some(at) = empty_continuation {
                // Reported by the NoEmptyContinuation build check.
                self.empty_continuations.push(Span::new(at, at));
            }
            if let Some(mut instruction) = self.instruction(&logical, 0) {
                instruction.original = logical.text;
                if can_contain_heredoc(&instruction) {
                    self.read_heredocs(&mut instruction, &lines, &mut i);
                }
                instruction.start_line = start_line;
                instruction.end_line = i;
                let span_end = lines[i - 1].offset + trim_newline(lines[i - 1].text).len();
                instruction.span = Span::new(instruction.keyword_span.start, span_end);
                instruction.comments = std::mem::take(&mut comments);
                instructions.push(instruction);
            }
            comments.clear();
        }
        instructions
    }

    /// Reads the bodies of the heredocs an instruction opens (`<<EOF`, `<<-EOF`, `<<'EOF'`…)
    /// from the lines after it, each up to its terminator line.
    fn read_heredocs(
        &mut self,
        instruction: &mut Instruction,
        lines: &[PhysicalLine],
        i: &mut usize,
    ) {
        let markers = match crate::shell::Lexer::for_heredoc_markers()
            .process_words(&instruction.original, &Vec::<String>::new())
        {
            Ok(words) => words,
            Err(_) => return,
        };
        for word in markers {
            let mut heredoc = match parse_heredoc_word(&word) {
                None => continue,
                Some(Ok(h)) => h,
                Some(Err(message)) => {
                    self.error(Some(instruction.keyword_span), message);
                    return;
                }
            };
            let mut terminated = false;
            while *i < lines.len() {
                let line = trim_newline(lines[*i].text);
                *i += 1;
                let candidate = if heredoc.chomp {
                    line.trim_start_matches('\t')
                } else {
                    line
                };
                if candidate == heredoc.name {
                    terminated = true;
                    break;
                }
                heredoc.content.push_str(line);
                heredoc.content.push('\n');
            }
            if !terminated {
                self.error(
                    Some(instruction.keyword_span),
                    format!("unterminated heredoc: no line \"{}\" ends it", heredoc.name),
                );
                return;
            }
            instruction.heredocs.push(heredoc);
        }
    }

    /// Parses the logical line from byte `from` on (ONBUILD parses its trigger this way).
    fn instruction(&mut self, logical: &LogicalLine, from: usize) -> Option<Instruction> {
        let full = &logical.text[from..];
        let trimmed_start = full.trim_start_matches(is_space);
        let start = from + (full.len() - trimmed_start.len());
        let line = trimmed_start.trim_end_matches(is_space);
        let Ok((rest, kw)) = keyword(line) else {
            return None;
        };
        let kw_span = logical.span(start, start + kw.len());
        let rest_start = start + (line.len() - rest.len());
        let (flag_words, args_text, args_offset) = args::extract_flags(rest);
        let flags: Vec<Flag> = flag_words
            .into_iter()
            .map(|(text, s, e)| Flag {
                text,
                span: logical.span(rest_start + s, rest_start + e),
            })
            .collect();
        let args_untrimmed_start = rest_start + args_offset;
        let args_trimmed = args_text.trim_start_matches(is_space);
        let args_start = args_untrimmed_start + (args_text.len() - args_trimmed.len());
        let args_str = args_trimmed.trim_end_matches(is_space);
        let args_span = logical.span(args_start, args_start + args_str.len());
        // Unknown keywords parse as text; the error comes when the instruction is checked.
        let name = keyword_forms(kw).map_or("", |k| k.0);
        let escape = self.directives.escape;
        let parsed = match name {
            "onbuild" => {
                if args_str.is_empty() {
                    Ok(Args::Empty)
                } else {
                    match self.instruction(logical, args_start) {
                        Some(mut inner) => {
                            inner.original = logical.text.clone();
                            Ok(Args::OnBuild(Box::new(inner)))
                        }
                        None => return None,
                    }
                }
            }
            _ => args::parse_args(name, args_str, escape),
        };
        match parsed {
            Ok(args) => Some(Instruction {
                keyword: kw.to_string(),
                keyword_span: kw_span,
                flags,
                args,
                args_span,
                // Set by the caller, which owns the logical line.
                original: String::new(),
                span: Span::new(kw_span.start, logical.end),
                start_line: 0,
                end_line: 0,
                heredocs: Vec::new(),
                comments: Vec::new(),
            }),
            Err(message) => {
                let span = if args_str.is_empty() {
                    kw_span
                } else {
                    args_span
                };
                self.error(Some(span), message);
                None
            }
        }
    }
}

/// Whether an instruction may open heredocs: RUN, COPY and ADD in shell form.
fn can_contain_heredoc(instruction: &Instruction) -> bool {
    ["run", "copy", "add"]
        .iter()
        .any(|k| instruction.keyword.eq_ignore_ascii_case(k))
        && !matches!(instruction.args, Args::Json(_))
        && instruction.original.contains("<<")
}

/// Recognizes one word as a heredoc marker, as BuildKit's `ParseHeredoc` does:
/// `[fd]<<[-]WORD`, where quoting any part of WORD turns expansion of the body off.
pub fn parse_heredoc_word(word: &str) -> Option<Result<Heredoc, String>> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let fd: u32 = word[..digits].parse().unwrap_or(0);
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let none: Vec<String> = Vec::new();
    let mut lexer = crate::shell::Lexer {
        skip_unset: true,
        ..crate::shell::Lexer::default()
    };
    let words = match lexer.process_words(rest, &none) {
        Ok(w) => w,
        Err(e) => return Some(Err(e.to_string())),
    };
    if words.len() != 1 {
        return None;
    }
    lexer.raw_quotes = true;
    let raw = match lexer.process_words(rest, &none) {
        Ok(w) => w,
        Err(e) => return Some(Err(e.to_string())),
    };
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    Some(Ok(Heredoc {
        expand: raw.len() == 1 && quotes(&words[0]) == quotes(&raw[0]),
        name: words[0].clone(),
        content: String::new(),
        chomp,
        fd,
    }))
}

/// Removes the leading tabs of every line (`<<-` heredocs).
pub fn chomp_heredoc(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

/// Every instruction keyword, lower and upper case (for matching without allocating, and for
/// "did you mean" suggestions).
pub const KEYWORDS: &[(&str, &str)] = &[
    ("add", "ADD"),
    ("arg", "ARG"),
    ("cmd", "CMD"),
    ("copy", "COPY"),
    ("entrypoint", "ENTRYPOINT"),
    ("env", "ENV"),
    ("expose", "EXPOSE"),
    ("from", "FROM"),
    ("healthcheck", "HEALTHCHECK"),
    ("label", "LABEL"),
    ("maintainer", "MAINTAINER"),
    ("onbuild", "ONBUILD"),
    ("run", "RUN"),
    ("shell", "SHELL"),
    ("stopsignal", "STOPSIGNAL"),
    ("user", "USER"),
    ("volume", "VOLUME"),
    ("workdir", "WORKDIR"),
];

/// The lower and upper case forms of an instruction keyword written in any case, or `None` if
/// it is no keyword.
pub fn keyword_forms(keyword: &str) -> Option<(&'static str, &'static str)> {
    KEYWORDS
        .iter()
        .find(|(lower, _)| lower.eq_ignore_ascii_case(keyword))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredocs_are_read_after_their_instruction() {
        let p = parse_str(
            "FROM x\nRUN <<EOF\necho $A\n  EOF\nEOF\nCOPY <<-\"ONE\" <<TWO /dest/\n\tfirst\n\tONE\nsecond\nTWO\nRUN [\"<<EOF\"]\nRUN echo done\n",
        );
        assert!(!p.has_errors(), "{:?}", p.diagnostics);
        let ins = &p.dockerfile.instructions;
        assert_eq!(ins.len(), 5);
        assert_eq!(ins[1].heredocs[0].name, "EOF");
        assert_eq!(ins[1].heredocs[0].content, "echo $A\n  EOF\n");
        assert!(ins[1].heredocs[0].expand);
        assert_eq!((ins[1].start_line, ins[1].end_line), (2, 5));
        let copy = &ins[2].heredocs;
        assert_eq!(
            (copy[0].name.as_str(), copy[0].expand, copy[0].chomp),
            ("ONE", false, true)
        );
        assert_eq!(copy[0].content, "\tfirst\n");
        assert_eq!(chomp_heredoc(&copy[0].content), "first\n");
        assert_eq!(
            (copy[1].name.as_str(), copy[1].content.as_str()),
            ("TWO", "second\n")
        );
        assert!(ins[3].heredocs.is_empty(), "JSON form has no heredocs");
        assert_eq!(ins[4].args, Args::Shell("echo done".into()));
        let bad = parse_str("FROM x\nRUN <<EOF\necho\n");
        assert!(bad.diagnostics[0].message.contains("unterminated heredoc"));
        assert!(parse_heredoc_word("<<").is_none() && parse_heredoc_word("a<<b").is_none());
        assert_eq!(parse_heredoc_word("2<<x").unwrap().unwrap().fd, 2);
    }

    fn parse_str(s: &str) -> Parsed {
        parse(&SourceFile::new("Dockerfile", s.as_bytes()))
    }

    #[test]
    fn a_syntax_directive_naming_another_frontend_is_a_warning() {
        for ours in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7",
            "docker.io/docker/dockerfile:1.4.3",
            "docker/dockerfile",
            "docker/dockerfile:1@sha256:abc",
        ] {
            let p = parse_str(&format!("# syntax={ours}\nFROM x\n"));
            assert!(p.diagnostics.is_empty(), "{ours}: {:?}", p.diagnostics);
        }
        for foreign in [
            "docker/dockerfile:1-labs",
            "tonistiigi/dockerfile:x",
            "docker/dockerfile:0.9",
        ] {
            let p = parse_str(&format!("# syntax={foreign}\nFROM x\n"));
            assert!(!p.has_errors());
            let d = &p.diagnostics[0];
            assert!(d.message.contains(foreign), "{}", d.message);
            assert!(d.message.contains("docker/dockerfile:1"), "{}", d.message);
            assert_eq!(d.span.map(|s| s.start), Some(0), "at the directive");
        }
    }

    #[test]
    fn comments_before_an_instruction_are_kept() {
        let p = parse_str(
            "# syntax=docker/dockerfile:1\n# a\n\n#   b  \nFROM x\n# c\n#\n# d\nRUN \\\n# not kept\n  true\nRUN x\n",
        );
        let ins = &p.dockerfile.instructions;
        assert_eq!(ins[0].comments, ["a", "b"]);
        assert_eq!(ins[1].comments, ["d"], "an empty comment starts afresh");
        assert!(
            ins[2].comments.is_empty(),
            "comments inside a continuation are not"
        );
    }

    #[test]
    fn spans_survive_continuations() {
        let p = parse_str("FROM x\nRUN echo a \\\n  && echo --bad\n  COPY --from=b a /c\n");
        assert!(!p.has_errors(), "{:?}", p.diagnostics);
        let ins = &p.dockerfile.instructions;
        assert_eq!(ins.len(), 3);
        assert_eq!((ins[1].start_line, ins[1].end_line), (2, 3));
        assert_eq!(ins[1].args, Args::Shell("echo a   && echo --bad".into()));
        let file = &p.dockerfile.file;
        let copy = &ins[2];
        let pos = file.position(copy.flags[0].span.start);
        assert_eq!((pos.line, pos.column), (4, 8));
        assert_eq!(
            &file.text[copy.flags[0].span.start..copy.flags[0].span.end],
            "--from=b"
        );
        assert_eq!(file.position(copy.keyword_span.start).column, 3);
    }

    #[test]
    fn directives_and_escape() {
        let p = parse_str("# escape=`\nFROM x\nRUN a `\n b\n");
        assert_eq!(p.dockerfile.directives.escape, '`');
        assert_eq!(
            p.dockerfile.instructions[1].args,
            Args::Shell("a  b".into())
        );
        let p = parse_str("# escape=x\nFROM x\n");
        assert!(p.has_errors());
    }

    #[test]
    fn empty_and_comment_only_files_are_errors() {
        assert!(parse_str("").has_errors());
        assert!(parse_str("# just a comment\n\n").has_errors());
        assert!(parse_str("ENV PATH\n").has_errors());
    }

    #[test]
    fn parser_never_panics_on_odd_input() {
        for input in [
            "\u{feff}FROM x",
            "FROM x\\",
            "RUN [\"a\", 1]",
            "ONBUILD",
            "ONBUILD ONBUILD RUN x",
            "HEALTHCHECK",
            "\\\n\\\n",
            "ENV =x",
            "LABEL \"",
            "COPY --",
            "X --a=\"b",
            "\r\n\r\nFROM\tx\r\n",
            "FROM x\n\\",
        ] {
            let _ = parse_str(input);
        }
    }
}
