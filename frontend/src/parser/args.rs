//! Argument parsers, one per instruction shape, with BuildKit's exact tokenizing rules.

use crate::ast::{Args, KeyValue};

/// Splits leading `--flag` words off an argument string. Returns the flags (text without
/// quotes, with their byte range in `line`), the rest, and the rest's offset in `line`. A bare
/// `--` ends the flags and is dropped.
pub fn extract_flags(line: &str) -> (Vec<(String, usize, usize)>, &str, usize) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(u8),
    }
    let bytes = line.as_bytes();
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut word_start = 0;
    let mut blank_ok = false;
    let mut pos = 0;
    let finish = |word: &mut Vec<u8>| String::from_utf8_lossy(&std::mem::take(word)).into_owned();
    loop {
        if phase == Phase::Spaces {
            if pos == bytes.len() {
                break;
            }
            let ch = bytes[pos];
            if (ch as char).is_ascii_whitespace() || ch == 0x0b {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == bytes.len() || bytes[pos + 1] != b'-' {
                return (flags, &line[pos..], pos);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if pos == bytes.len() {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                flags.push((finish(&mut word), word_start, pos));
            }
            break;
        }
        let ch = bytes[pos];
        match phase {
            Phase::Word => {
                if (ch as char).is_ascii_whitespace() || ch == 0x0b {
                    phase = Phase::Spaces;
                    if word == b"--" {
                        return (flags, &line[pos..], pos);
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push((finish(&mut word), word_start, pos));
                    }
                    word.clear();
                    blank_ok = false;
                    pos += 1;
                    continue;
                }
                if ch == b'\'' || ch == b'"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                    pos += 1;
                    continue;
                }
                if ch == b'\\' {
                    if pos + 1 == bytes.len() {
                        pos += 1;
                        continue;
                    }
                    pos += 1;
                }
                word.push(bytes[pos]);
                pos += 1;
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                    pos += 1;
                    continue;
                }
                if ch == b'\\' {
                    if pos + 1 == bytes.len() {
                        phase = Phase::Word;
                        pos += 1;
                        continue;
                    }
                    pos += 1;
                }
                word.push(bytes[pos]);
                pos += 1;
            }
            Phase::Spaces => unreachable!("handled above"),
        }
    }
    (flags, &line[line.len()..], line.len())
}

/// Parses the arguments of instruction `name` (lowercase). Unknown instructions keep their
/// arguments as text; the instruction layer reports them.
pub fn parse_args(name: &str, rest: &str, escape: char) -> Result<Args, String> {
    match name {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(rest),
        "arg" => Ok(words_or_empty(parse_words(rest, escape))),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(rest),
        "env" => parse_name_val(rest, "ENV", escape),
        "label" => parse_name_val(rest, "LABEL", escape),
        "expose" | "from" => Ok(whitespace_delimited(rest)),
        "healthcheck" => parse_healthcheck(rest),
        "maintainer" | "stopsignal" | "user" | "workdir" => Ok(text_or_empty(rest)),
        _ => Ok(text_or_empty(rest)),
    }
}

fn text_or_empty(rest: &str) -> Args {
    if rest.is_empty() {
        Args::Empty
    } else {
        Args::Text(rest.to_string())
    }
}

fn words_or_empty(words: Vec<String>) -> Args {
    if words.is_empty() {
        Args::Empty
    } else {
        Args::Words(words)
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]` (Go's `regexp.Split`, so leading/trailing separators give
/// empty words, which BuildKit keeps).
fn split_separators(rest: &str, limit: Option<usize>) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if limit.is_some_and(|l| out.len() + 1 >= l) {
            break;
        }
        if is_separator(c) {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if !is_separator(d) {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            out.push(&rest[start..i]);
            start = end;
        }
    }
    out.push(&rest[start..]);
    out
}

fn whitespace_delimited(rest: &str) -> Args {
    if rest.is_empty() {
        return Args::Empty;
    }
    Args::Words(
        split_separators(rest, None)
            .into_iter()
            .map(str::to_string)
            .collect(),
    )
}

enum JsonResult {
    Strings(Vec<String>),
    NotStrings,
    NotJson,
}

fn parse_json(rest: &str) -> JsonResult {
    let rest = rest.trim_start_matches(char::is_whitespace);
    if !rest.starts_with('[') {
        return JsonResult::NotJson;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Ok(values) => {
            let mut strings = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => strings.push(s),
                    _ => return JsonResult::NotStrings,
                }
            }
            JsonResult::Strings(strings)
        }
        Err(_) => JsonResult::NotJson,
    }
}

const NOT_STRING_ARRAY: &str = "dockerfile: JSON arguments must be an array of strings";

fn parse_maybe_json(rest: &str) -> Result<Args, String> {
    if rest.is_empty() {
        return Ok(Args::Empty);
    }
    match parse_json(rest) {
        JsonResult::Strings(s) => Ok(Args::Json(s)),
        JsonResult::NotStrings => Err(NOT_STRING_ARRAY.into()),
        JsonResult::NotJson => Ok(Args::Shell(rest.to_string())),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<Args, String> {
    match parse_json(rest) {
        JsonResult::Strings(s) => Ok(Args::Json(s)),
        JsonResult::NotStrings => Err(NOT_STRING_ARRAY.into()),
        JsonResult::NotJson => Ok(whitespace_delimited(rest)),
    }
}

fn parse_healthcheck(rest: &str) -> Result<Args, String> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Args::Empty);
    }
    let after = rest[sep..].trim_start_matches(char::is_whitespace);
    Ok(Args::Healthcheck {
        kind: rest[..sep].to_string(),
        cmd: Box::new(parse_maybe_json(after)?),
    })
}

/// BuildKit's `parseWords`: splits on whitespace outside quotes, keeping quotes and escapes in
/// the words (they are removed later, by word expansion).
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    word_slices(rest, escape)
        .into_iter()
        .map(String::from)
        .collect()
}

/// [`parse_words`] as slices of `rest`: every word is a contiguous piece of the input, except
/// that an escape character at the very end of the input is dropped, as BuildKit drops it.
pub fn word_slices(rest: &str, escape: char) -> Vec<&str> {
    let mut words = Vec::new();
    let mut chars = rest.char_indices().peekable();
    // Start of the current word, and the quote it is inside, if any.
    let mut start: Option<usize> = None;
    let mut quote: Option<char> = None;
    while let Some((i, ch)) = chars.next() {
        let Some(word_start) = start else {
            if ch.is_whitespace() {
                continue;
            }
            start = Some(i);
            // The first character of a word is handled below like the others.
            if ch == '\'' || ch == '"' {
                quote = Some(ch);
            } else if ch == escape && chars.next().is_none() {
                start = None; // a lone trailing escape
            }
            continue;
        };
        match quote {
            None => {
                if ch.is_whitespace() {
                    words.push(&rest[word_start..i]);
                    start = None;
                } else if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                } else if ch == escape && chars.next().is_none() {
                    words.push(&rest[word_start..i]);
                    return words;
                }
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                } else if ch == escape && q != '\'' && chars.next().is_none() {
                    words.push(&rest[word_start..i]);
                    return words;
                }
            }
        }
    }
    if let Some(word_start) = start {
        words.push(&rest[word_start..]);
    }
    words.retain(|w| !w.is_empty());
    words
}

fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Args, String> {
    let words = word_slices(rest, escape);
    if words.is_empty() {
        return Ok(Args::Empty);
    }
    if !words[0].contains('=') {
        let parts = split_separators(rest, Some(2));
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(Args::KeyValues(vec![KeyValue {
            key: parts[0].to_string(),
            value: parts[1].to_string(),
            separator: "",
        }]));
    }
    let mut pairs = Vec::new();
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "syntax error - can't find = in {word:?}; must be of the form: name=value"
            ));
        };
        if k.is_empty() {
            return Err(format!("{key} names can not be blank"));
        }
        pairs.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
            separator: "=",
        });
    }
    Ok(Args::KeyValues(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BuildKit's `parseWords` transliterated character by character: the reference the
    /// slicing implementation is checked against.
    fn reference_parse_words(rest: &str, escape: char) -> Vec<String> {
        #[derive(PartialEq)]
        enum Phase {
            Spaces,
            Word,
            Quote(char),
        }
        let chars: Vec<char> = rest.chars().collect();
        let mut words = Vec::new();
        let mut phase = Phase::Spaces;
        let mut word = String::new();
        let mut blank_ok = false;
        let mut pos = 0;
        loop {
            if phase == Phase::Spaces {
                if pos == chars.len() {
                    break;
                }
                if chars[pos].is_whitespace() {
                    pos += 1;
                    continue;
                }
                phase = Phase::Word;
            }
            if pos == chars.len() {
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                break;
            }
            let mut ch = chars[pos];
            match phase {
                Phase::Word => {
                    if ch.is_whitespace() {
                        phase = Phase::Spaces;
                        if blank_ok || !word.is_empty() {
                            words.push(std::mem::take(&mut word));
                        }
                        word.clear();
                        blank_ok = false;
                        pos += 1;
                        continue;
                    }
                    if ch == '\'' || ch == '"' {
                        phase = Phase::Quote(ch);
                        blank_ok = true;
                    }
                    if ch == escape {
                        if pos + 1 == chars.len() {
                            pos += 1;
                            continue;
                        }
                        word.push(ch);
                        pos += 1;
                        ch = chars[pos];
                    }
                    word.push(ch);
                    pos += 1;
                }
                Phase::Quote(q) => {
                    if ch == q {
                        phase = Phase::Word;
                    }
                    if ch == escape && q != '\'' {
                        if pos + 1 == chars.len() {
                            phase = Phase::Word;
                            pos += 1;
                            continue;
                        }
                        pos += 1;
                        word.push(ch);
                        ch = chars[pos];
                    }
                    word.push(ch);
                    pos += 1;
                }
                Phase::Spaces => unreachable!("handled above"),
            }
        }
        words
    }

    #[test]
    fn word_slices_agree_with_the_reference() {
        use proptest::prelude::*;
        let alphabet = ["a", "b", " ", "\t", "\\", "`", "'", "\"", "=", "é", "$"];
        proptest!(ProptestConfig::with_cases(4000), |(picks in proptest::collection::vec(0..alphabet.len(), 0..24))| {
            let text: String = picks.iter().map(|&i| alphabet[i]).collect();
            for escape in ['\\', '`'] {
                prop_assert_eq!(parse_words(&text, escape), reference_parse_words(&text, escape), "{:?}", text);
            }
        });
    }

    #[test]
    fn flags_like_buildkit() {
        let (flags, rest, off) = extract_flags("--from=a --chown=\"x y\" src dst");
        let texts: Vec<&str> = flags.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(texts, ["--from=a", "--chown=x y"]);
        assert_eq!(rest, "src dst");
        assert_eq!(off, 23);
        let (flags, rest, _) = extract_flags("--doit=true -- foo /tmp/");
        assert_eq!(flags.len(), 1);
        assert_eq!(rest, " foo /tmp/");
        let (flags, rest, _) = extract_flags("-- foo");
        assert!(flags.is_empty());
        assert_eq!(rest, " foo");
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            parse_words(r#"a="b c" d\ e"#, '\\'),
            [r#"a="b c""#, r"d\ e"]
        );
    }

    #[test]
    fn separators_split_like_go_regexp() {
        assert_eq!(split_separators("a  b\tc", None), ["a", "b", "c"]);
        assert_eq!(split_separators("a  b c", Some(2)), ["a", "b c"]);
    }
}
