//! Word expansion with the semantics of BuildKit's shell lexer: quotes, escapes and `$VAR` /
//! `${VAR…}` substitution as Dockerfile instructions (not the shell) perform it.
//!
//! [`Lexer::process_word`] turns one word into one string (ENV values, WORKDIR, USER…);
//! [`Lexer::process_words`] also splits the result into words where unquoted whitespace, or
//! whitespace produced by an unquoted substitution, separates them.

use std::borrow::Cow;

/// Looks up variables during expansion.
pub trait Env {
    /// The value of `name`, or `None` if it is not set (set-but-empty is `Some("")`).
    fn get(&self, name: &str) -> Option<Cow<'_, str>>;

    /// Whether `name` is known even without a value (an ARG declared without a default).
    fn declared(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The names known here, for "did you mean" suggestions.
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// `KEY=value` strings, later entries winning, as BuildKit passes environments.
impl Env for [String] {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (k == name).then_some(Cow::Borrowed(v))
        })
    }
}

impl Env for Vec<String> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        Env::get(self.as_slice(), name)
    }
}

impl Env for &[(String, String)] {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        Env::get(*self, name)
    }
}

impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.iter()
            .rev()
            .find_map(|(k, v)| (k == name).then_some(Cow::Borrowed(v.as_str())))
    }
}

/// Expands words.
#[derive(Clone, Copy, Debug)]
pub struct Lexer {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Keep quote characters in the result (for display).
    pub raw_quotes: bool,
    /// Leave references to unset variables as written instead of expanding them to nothing
    /// (for display).
    pub skip_unset: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (heredoc bodies).
    pub skip_quotes: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

/// An expansion error, e.g. an unterminated quote or `${X:?message}` with X unset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {:?}: {message}", abbreviated(source_word))]
pub struct ExpandError {
    /// The word being expanded.
    pub source_word: String,
    /// What went wrong.
    pub message: String,
}

/// A word as an error message quotes it: whole up to 100 characters, else its start and end.
fn abbreviated(word: &str) -> Cow<'_, str> {
    let len = word.chars().count();
    if len <= 100 {
        return Cow::Borrowed(word);
    }
    let head: String = word.chars().take(60).collect();
    let tail: String = word.chars().skip(len - 30).collect();
    Cow::Owned(format!("{head}…({} characters)…{tail}", len - 90))
}

impl Lexer {
    /// A lexer with this escape character.
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            skip_unset: false,
            raw_escapes: false,
            skip_quotes: false,
        }
    }

    /// The lexer BuildKit uses to show an instruction in progress output: variables that are
    /// set are expanded, everything else stays as written.
    pub fn for_display(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: true,
            skip_unset: true,
            raw_escapes: false,
            skip_quotes: false,
        }
    }

    /// The lexer that finds heredoc markers in an instruction: quotes and escapes are kept, so
    /// `<<"EOF"` stays one word that says it was quoted.
    pub fn for_heredoc_markers() -> Lexer {
        Lexer {
            escape: '\\',
            raw_quotes: true,
            skip_unset: true,
            raw_escapes: true,
            skip_quotes: false,
        }
    }

    /// The lexer that expands the body of an unquoted `COPY`/`ADD` heredoc: variables are
    /// expanded, quotes are ordinary characters.
    pub fn for_heredoc_body(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            skip_unset: false,
            raw_escapes: false,
            skip_quotes: true,
        }
    }

    /// Expands `word` into one string.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        if self.is_plain(word) {
            return Ok(word.to_string());
        }
        self.process(word, env).map(|(w, _)| w)
    }

    /// Whether expanding `word` into one string leaves it as it is: no variable, quote or
    /// escape character (most words of most Dockerfiles).
    fn is_plain(&self, word: &str) -> bool {
        !word.contains(['$', '\'', '"', self.escape])
    }

    /// Expands `word` and splits it into words.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        self.process_recording(word, env, None, true)
            .map(|(_, ws)| ws)
    }

    /// Expands `word` into one string, and also returns the variables it refers to plainly
    /// (`$X`, `${X}`) that `env` does not set; references with a modifier such as `${X:-y}` handle
    /// the unset case themselves and are not returned.
    pub fn process_word_checked(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<(String, Vec<String>), ExpandError> {
        if self.is_plain(word) {
            return Ok((word.to_string(), Vec::new()));
        }
        let mut undefined = Vec::new();
        let (w, _) = self.process_recording(word, env, Some(&mut undefined), false)?;
        Ok((w, undefined))
    }

    fn process(&self, word: &str, env: &dyn Env) -> Result<(String, Vec<String>), ExpandError> {
        self.process_recording(word, env, None, false)
    }

    fn process_recording(
        &self,
        word: &str,
        env: &dyn Env,
        undefined: Option<&mut Vec<String>>,
        collect_words: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut state = State {
            collect_words,
            src: word,
            pos: 0,
            escape: self.escape,
            raw_escapes: false,
            raw_quotes: self.raw_quotes,
            skip_unset: self.skip_unset,
            skip_quotes: self.skip_quotes,
            env,
            undefined,
            depth: 0,
        };
        state
            .process_stop_on(None, self.raw_escapes)
            .map_err(|message| ExpandError {
                source_word: word.to_string(),
                message,
            })
    }
}

struct State<'a> {
    collect_words: bool,
    /// The word; `pos` is a byte offset into it.
    src: &'a str,
    pos: usize,
    escape: char,
    raw_escapes: bool,
    raw_quotes: bool,
    skip_unset: bool,
    skip_quotes: bool,
    env: &'a dyn Env,
    undefined: Option<&'a mut Vec<String>>,
    /// How many `${…}` and quotes the lexer is inside.
    depth: usize,
}

/// How deeply `${…}` and quotes may nest in one word. BuildKit's lexer recurses on a Go stack,
/// which grows to 1 GiB, and takes words nested tens of thousands deep; rbuild's grows on the
/// heap as it recurses ([`grow_stack`]) and stops here with an error, which no real Dockerfile
/// comes near, rather than recurse until memory runs out.
pub const MAX_NESTING: usize = 100_000;

/// Runs `f`, first moving to a new stack segment on the heap when less than 128 KiB of the
/// current one is left. The recursive parts of the frontend (the word lexer, stages lowered
/// before the stages that need them) go through it, so that no input overflows the stack of
/// the thread that parses, whatever its size.
pub(crate) fn grow_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(128 * 1024, 4 * 1024 * 1024, f)
}

#[derive(Default)]
struct Words {
    /// Only top-level words of `process_words` are wanted; everywhere else splitting is skipped.
    enabled: bool,
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        if self.enabled {
            s.chars().for_each(|c| self.add_char(c));
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        if !self.enabled {
            return;
        }
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

const SPECIAL_PARAMS: &str = "@*#?-$!0";

impl<'a> State<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if let Some(c) = c {
            self.pos += c.len_utf8();
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        // Every recursion of the lexer (`${…}` inside `${…}`, quotes inside them) comes
        // through here.
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "the word nests more than {MAX_NESTING} levels of ${{…}} or quotes"
            ));
        }
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        self.depth += 1;
        let result = grow_stack(|| self.process_stop_on_inner(stop));
        self.depth -= 1;
        self.raw_escapes = saved;
        result
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), String> {
        // At the top, room for the rest of the word and some growth from expanded variables;
        // a nested part is usually short (and reserving the rest of the word at every level
        // of a deeply nested word would take memory quadratic in its length).
        let capacity = match stop {
            None => self.src.len() - self.pos + 32,
            Some(_) => 0,
        };
        let mut result = String::with_capacity(capacity);
        let mut words = Words {
            enabled: self.collect_words && stop.is_none(),
            ..Words::default()
        };
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '\'' if !self.skip_quotes => {
                    let value = self.process_single_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' if !self.skip_quotes => {
                    let value = self.process_double_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ if !words.enabled && ch != self.escape => {
                    // A run of ordinary characters is copied at once.
                    let rest = &self.src[self.pos..];
                    let len = rest
                        .find(|c: char| {
                            c == '$'
                                || c == self.escape
                                || Some(c) == stop
                                || (!self.skip_quotes && (c == '\'' || c == '"'))
                        })
                        .unwrap_or(rest.len());
                    result.push_str(&rest[..len]);
                    self.pos += len;
                }
                _ => {
                    let mut ch = self.next().expect("peeked");
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        match self.next() {
                            None => break,
                            Some(c) => ch = c,
                        }
                        words.add_raw_char(ch);
                    } else {
                        words.add_char(ch);
                    }
                    result.push(ch);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        self.next();
        // Everything up to the closing quote is literal.
        let rest = &self.src[self.pos..];
        let Some(len) = rest.find('\'') else {
            self.pos = self.src.len();
            return Err(
                "unexpected end of statement while looking for matching single-quote".into(),
            );
        };
        self.pos += len + 1;
        if self.raw_quotes {
            let mut result = String::with_capacity(len + 2);
            result.push('\'');
            result.push_str(&rest[..len]);
            result.push('\'');
            Ok(result)
        } else {
            Ok(rest[..len].to_string())
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut result = String::new();
        if self.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(c) if c != self.escape => {
                    // A run of ordinary characters is copied at once.
                    let rest = &self.src[self.pos..];
                    let len = rest.find(['"', '$', self.escape]).unwrap_or(rest.len());
                    result.push_str(&rest[..len]);
                    self.pos += len;
                }
                Some(_) => {
                    let mut ch = self.next().expect("peeked");
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                ch = self.next().expect("peeked");
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// Reads a variable name (a run of letters, digits and `_`; a run of digits; or one special
    /// parameter character) and returns it as a slice of the word.
    fn process_name(&mut self) -> &'a str {
        let start = self.pos;
        match self.peek() {
            Some(ch) if ch.is_ascii_digit() => {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.next();
                }
            }
            Some(ch) if SPECIAL_PARAMS.contains(ch) => {
                self.next();
            }
            _ => {
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.next();
                }
            }
        }
        &self.src[start..self.pos]
    }

    fn record_undefined(&mut self, name: &str) {
        if let Some(list) = self.undefined.as_deref_mut()
            && !list.iter().any(|n| n == name)
        {
            list.push(name.to_string());
        }
    }

    fn get_env(&self, name: &str) -> Option<String> {
        self.env.get(name).map(Cow::into_owned)
    }

    fn process_dollar(&mut self) -> Result<Cow<'a, str>, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok(Cow::Borrowed("$"));
            }
            let env = self.env;
            return Ok(match env.get(name) {
                Some(v) => v,
                None => {
                    self.record_undefined(name);
                    if self.skip_unset {
                        Cow::Owned(format!("${name}"))
                    } else {
                        Cow::Borrowed("")
                    }
                }
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.process_name();
        let Some(ch) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        if ch == '}' {
            let env = self.env;
            return Ok(match env.get(name) {
                Some(v) => v,
                None => {
                    self.record_undefined(name);
                    if self.skip_unset {
                        Cow::Owned(format!("${{{name}}}"))
                    } else {
                        Cow::Borrowed("")
                    }
                }
            });
        }
        self.process_modifier(name, ch).map(Cow::Owned)
    }

    /// `${name<modifier>…}` once `name` and the modifier's first character are read.
    fn process_modifier(&mut self, name: &str, mut ch: char) -> Result<String, String> {
        let mut modifier = ch.to_string();
        match ch {
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = ch == ':';
                if null_is_unset {
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            modifier.push(c);
                        }
                        None => return Err("syntax error: missing '}'".into()),
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({modifier}) in substitution"));
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(name);
                if value.is_none() && self.skip_unset {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let unset =
                    |v: &Option<String>| v.is_none() || (null_is_unset && v.as_deref() == Some(""));
                match ch {
                    '-' => Ok(if unset(&value) {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if unset(&value) { String::new() } else { word }),
                    '?' => match value {
                        None => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            }
                        )),
                        Some(v) if null_is_unset && v.is_empty() => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            }
                        )),
                        Some(v) => Ok(v),
                    },
                    '#' | '%' => {
                        let mut pattern: &str = &word;
                        let greedy = pattern.starts_with(ch);
                        if greedy {
                            pattern = &pattern[1..];
                        }
                        let value = value.unwrap_or_default();
                        let pattern: Vec<char> = pattern.chars().collect();
                        Ok(if ch == '#' {
                            trim_prefix(&pattern, &value, greedy, self.escape)
                        } else {
                            trim_suffix(&pattern, &value, greedy, self.escape)
                        })
                    }
                    _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((p, _)) => p,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '/' in ${}".into());
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((r, _)) => r,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(name).unwrap_or_default();
                let pattern: Vec<char> = pattern.chars().collect();
                Ok(replace(&pattern, &value, &replacement, all, self.escape))
            }
            _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }
}

/// Whether `text` matches the shell pattern `p` as a whole (`*` matches anything, `/`
/// included; `?` one character; `[...]` a class; the escape character quotes).
fn glob(p: &[char], text: &[char], escape: char) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            let c = p[pi];
            if c == '*' {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            if ti < text.len() {
                let (matched, next) = if c == '?' {
                    (true, pi + 1)
                } else if c == '[' {
                    match class(p, pi, text[ti], escape) {
                        Some((m, end)) => (m, end),
                        None => (text[ti] == '[', pi + 1),
                    }
                } else if c == escape && pi + 1 < p.len() {
                    (text[ti] == p[pi + 1], pi + 2)
                } else {
                    (text[ti] == c, pi + 1)
                };
                if matched {
                    pi = next;
                    ti += 1;
                    continue;
                }
            }
        } else if ti == text.len() {
            return true;
        }
        match star {
            Some((sp, st)) if st < text.len() => {
                star = Some((sp, st + 1));
                pi = sp;
                ti = st + 1;
            }
            _ => return false,
        }
    }
}

/// Matches `c` against the class starting at `p[start] == '['`; `None` if it is not a class.
fn class(p: &[char], start: usize, c: char, escape: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = matches!(p.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if lo == escape {
            i += 1;
            lo = *p.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&c| c != ']') {
            hi = p[i + 1];
            i += 2;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

fn trim_prefix(pattern: &[char], value: &str, greedy: bool, escape: char) -> String {
    let chars: Vec<char> = value.chars().collect();
    let lens: Box<dyn Iterator<Item = usize>> = if greedy {
        Box::new((0..=chars.len()).rev())
    } else {
        Box::new(0..=chars.len())
    };
    for n in lens {
        if glob(pattern, &chars[..n], escape) {
            return chars[n..].iter().collect();
        }
    }
    value.to_string()
}

fn trim_suffix(pattern: &[char], value: &str, greedy: bool, escape: char) -> String {
    let chars: Vec<char> = value.chars().collect();
    let starts: Box<dyn Iterator<Item = usize>> = if greedy {
        Box::new(0..=chars.len())
    } else {
        Box::new((0..=chars.len()).rev())
    };
    for s in starts {
        if glob(pattern, &chars[s..], escape) {
            return chars[..s].iter().collect();
        }
    }
    value.to_string()
}

/// `${VAR/pattern/replacement}`: the leftmost, longest match is replaced (every
/// non-overlapping one with `//`).
fn replace(pattern: &[char], value: &str, replacement: &str, all: bool, escape: char) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    while i <= chars.len() {
        if replaced && !all {
            out.extend(&chars[i..]);
            return out;
        }
        let found = (i..=chars.len())
            .rev()
            .find(|&end| glob(pattern, &chars[i..end], escape));
        match found {
            Some(end) => {
                out.push_str(replacement);
                replaced = true;
                if end == i {
                    if i < chars.len() {
                        out.push(chars[i]);
                    }
                    i += 1;
                } else {
                    i = end;
                }
            }
            None => {
                if i < chars.len() {
                    out.push(chars[i]);
                }
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<String> {
        vec![
            "A=abc".into(),
            "E=".into(),
            "P=/usr/local/bin:/usr/bin".into(),
        ]
    }

    fn word(s: &str) -> Result<String, String> {
        Lexer::default()
            .process_word(s, &env())
            .map_err(|e| e.message)
    }

    #[test]
    fn undefined_plain_references_are_reported() {
        let (w, undefined) = Lexer::default()
            .process_word_checked("$A $NOPE ${ALSO} ${X:-d} '$QUOTED'", &env())
            .unwrap();
        assert_eq!(w, "abc   d $QUOTED");
        assert_eq!(undefined, ["NOPE", "ALSO"]);
    }

    #[test]
    fn modifiers() {
        assert_eq!(word("${A:-x}").unwrap(), "abc");
        assert_eq!(word("${E:-x}").unwrap(), "x");
        assert_eq!(word("${E-x}").unwrap(), "");
        assert_eq!(word("${U-x}").unwrap(), "x");
        assert_eq!(word("${A:+y}").unwrap(), "y");
        assert_eq!(word("${E:+y}").unwrap(), "");
        assert_eq!(word("${E+y}").unwrap(), "y");
        assert!(
            word("${U:?must be set}")
                .unwrap_err()
                .contains("must be set")
        );
        assert_eq!(word("${P#*/}").unwrap(), "usr/local/bin:/usr/bin");
        assert_eq!(word("${P##*/}").unwrap(), "bin");
        assert_eq!(word("${P%:*}").unwrap(), "/usr/local/bin");
        assert_eq!(word("${P%%:*}").unwrap(), "/usr/local/bin");
        assert_eq!(word("${P%%/*}").unwrap(), "");
        assert_eq!(word("${P/usr/opt}").unwrap(), "/opt/local/bin:/usr/bin");
        assert_eq!(word("${P//usr/opt}").unwrap(), "/opt/local/bin:/opt/bin");
    }
}
