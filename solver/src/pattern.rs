//! Shell-style wildcard matching of one path segment, with the semantics of Go's
//! `filepath.Match` that Dockerfile `COPY` sources use: `*` matches any run of characters but
//! `/`, `?` one character but `/`, `[a-z]` and `[^a-z]` classes, and `\` escapes the next
//! character.

/// The pattern is malformed (an unclosed `[` or a trailing `\`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern {0:?}")]
pub struct BadPattern(pub String);

/// Whether `s` contains any wildcard character, i.e. whether it needs [`matches`] rather than a
/// plain comparison.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether `name` matches `pattern` as a whole.
pub fn matches(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let bad = || BadPattern(pattern.to_string());
    // Validate the whole pattern first so that a malformed tail is reported even when an earlier
    // part already fails to match, as Go does.
    validate(&p).map_err(|_| bad())?;
    Ok(match_from(&p, &n))
}

fn validate(p: &[char]) -> Result<(), ()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err(());
                }
                i += 2;
            }
            '[' => {
                i = scan_class(p, i, '\0')?.0;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Scans the class that starts at `p[start] == '['`: returns the index just past its closing `]`
/// and whether `c` is in the class. Errors like Go's `getEsc`: an unescaped `-` or `]` where a
/// character is expected, a trailing `\`, or a missing `]`.
fn scan_class(p: &[char], start: usize, c: char) -> Result<(usize, bool), ()> {
    let mut i = start + 1;
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut ranges = 0;
    loop {
        if p.get(i) == Some(&']') && ranges > 0 {
            return Ok((i + 1, matched != negated));
        }
        let lo = class_char(p, &mut i)?;
        let mut hi = lo;
        if p.get(i) == Some(&'-') {
            i += 1;
            hi = class_char(p, &mut i)?;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
        ranges += 1;
    }
}

/// Reads one possibly escaped character of a class at `p[*i]`.
fn class_char(p: &[char], i: &mut usize) -> Result<char, ()> {
    let mut c = *p.get(*i).ok_or(())?;
    if c == '-' || c == ']' {
        return Err(());
    }
    if c == '\\' {
        *i += 1;
        c = *p.get(*i).ok_or(())?;
    }
    *i += 1;
    if *i >= p.len() {
        return Err(());
    }
    Ok(c)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    // Backtracking point for the last `*`: (pattern index after it, name index it matched up to).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                '?' if ni < n.len() && n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' if ni < n.len() && n[ni] != '/' => {
                    let (end, matched) = scan_class(p, pi, n[ni]).expect("validated");
                    if matched {
                        pi = end;
                        ni += 1;
                        continue;
                    }
                }
                '\\' if ni < n.len() && n[ni] == p[pi + 1] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                c if !matches!(c, '?' | '[' | '\\') && ni < n.len() && n[ni] == c => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        } else if ni == n.len() {
            return true;
        }
        // Mismatch: let the last `*` swallow one more character, unless that would be a `/`.
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp;
                ni = sn + 1;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match_table() {
        // Cases from the behaviour of Go's filepath.Match.
        let cases: &[(&str, &str, Result<bool, ()>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(())),
            ("[-]", "-", Err(())),
            ("[x-]", "x", Err(())),
            ("[a-b-c]", "a", Err(())),
            ("[", "a", Err(())),
            ("[^", "a", Err(())),
            ("[^bc", "a", Err(())),
            ("a[", "a", Err(())),
            ("a[", "ab", Err(())),
            ("*x", "xxx", Ok(true)),
            ("a\\", "a", Err(())),
        ];
        for (pattern, name, want) in cases {
            let got = matches(pattern, name).map_err(|_| ());
            assert_eq!(&got, want, "pattern {pattern:?} name {name:?}");
        }
    }
}

/// `.dockerignore` matching with the semantics of Docker's pattern matcher (moby/patternmatcher),
/// which differ from `.gitignore`'s: patterns are anchored at the context root, `*` and `?` never
/// match `/`, `**` matches any number of directories, a pattern that matches a directory also
/// excludes everything below it, and `!pattern` re-includes what earlier patterns excluded (the
/// last matching pattern wins).
#[derive(Clone, Debug, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<IgnorePattern>,
}

/// See [`IgnoreMatcher::visit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visit {
    /// Not excluded.
    Include,
    /// Excluded.
    Skip,
    /// Not selected itself, but something below it may be: look inside, and create it (as a
    /// copy would) only if something below it is copied.
    WalkOnly,
}

/// Which entries below a copy's source paths are taken, by the rules BuildKit applies: the
/// context's `.dockerignore` (matched against paths relative to the root), and the copy's
/// include patterns (`COPY --parents`) and exclude patterns (`--exclude`), both matched against
/// paths relative to the source path being copied. Hashing and copying decide with the same
/// filter, so a copy's cache key covers exactly the files it copies.
#[derive(Clone, Debug, Default)]
pub struct CopyFilter {
    ignore: IgnoreMatcher,
    include: Option<IgnoreMatcher>,
    exclude: IgnoreMatcher,
    /// Include patterns without wildcards: paths that must exist below a source path.
    required: Vec<String>,
}

impl CopyFilter {
    /// Compiles the three pattern lists; an empty `include` selects everything.
    pub fn new(ignore: &[String], include: &[String], exclude: &[String]) -> CopyFilter {
        CopyFilter {
            ignore: IgnoreMatcher::new(ignore),
            include: (!include.is_empty()).then(|| IgnoreMatcher::new(include)),
            exclude: IgnoreMatcher::new(exclude),
            required: include
                .iter()
                .filter(|p| !has_wildcard(p))
                .map(|p| crate::pathname::clean_relative(p))
                .collect(),
        }
    }

    /// The `.dockerignore` part alone, which also decides which source paths exist at all.
    pub fn ignore(&self) -> &IgnoreMatcher {
        &self.ignore
    }

    /// What a copy does with an entry below a source path: `rel` is its path relative to the
    /// root, `below` its path relative to the source path.
    pub fn visit(&self, rel: &str, below: &str, is_dir: bool) -> Visit {
        let mut visit = self.ignore.visit(rel, is_dir);
        match self.exclude.visit(below, is_dir) {
            Visit::Skip => return Visit::Skip,
            Visit::WalkOnly => visit = visit.max_walk(),
            Visit::Include => {}
        }
        if visit == Visit::Skip {
            return Visit::Skip;
        }
        if let Some(include) = &self.include
            && !include.is_excluded(below)
        {
            // Not matched (yet): a directory may hold matches, a file is left out.
            return if is_dir { Visit::WalkOnly } else { Visit::Skip };
        }
        visit
    }

    /// Paths (relative to a source path) that must exist below a source path that was named
    /// without wildcards: BuildKit's "required paths" of `COPY --parents` without wildcards.
    pub fn required(&self) -> &[String] {
        &self.required
    }
}

impl Visit {
    /// `WalkOnly` unless already `Skip`.
    fn max_walk(self) -> Visit {
        match self {
            Visit::Skip => Visit::Skip,
            _ => Visit::WalkOnly,
        }
    }
}

#[derive(Clone, Debug)]
struct IgnorePattern {
    /// The cleaned pattern, without `!`.
    text: String,
    exclusion: bool,
    kind: MatchKind,
}

#[derive(Clone, Debug)]
enum MatchKind {
    Exact,
    /// `foo**`: paths starting with `foo`.
    Prefix(String),
    /// `**foo`: paths ending with `foo` (and `**/foo` also matches `foo`).
    Suffix(String),
    Tokens(Vec<Token>),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Char(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    One,
    /// `**/` (or `**` before more pattern): `(.*/)?`.
    AnyDirs,
    /// `**` at the end: `.*`.
    Any,
    /// `[...]`: a character class.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl IgnoreMatcher {
    /// Compiles patterns as they come from [`crate::pattern`]'s callers: already cleaned,
    /// relative, with `!` marking exceptions. Empty patterns are ignored.
    pub fn new(patterns: &[String]) -> IgnoreMatcher {
        let patterns = patterns
            .iter()
            .filter_map(|p| {
                let (exclusion, text) = match p.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, p.as_str()),
                };
                // Paths above the context can never match a path in it.
                if text == ".." || text.starts_with("../") {
                    return None;
                }
                let text = crate::pathname::clean_relative(text);
                if text.is_empty() {
                    return None;
                }
                let kind = compile(&text);
                Some(IgnorePattern {
                    text,
                    exclusion,
                    kind,
                })
            })
            .collect();
        IgnoreMatcher { patterns }
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative to the context root, `/`-separated) is excluded, because a
    /// pattern matches it or one of its parent directories.
    pub fn is_excluded(&self, path: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let path = crate::pathname::clean_relative(path);
        if path.is_empty() {
            return false;
        }
        let parents: Vec<&str> = path.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            // An exception only matters once something matched, and vice versa.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = pattern.matches(&path);
            if !hit && parents.len() > 1 {
                for i in 1..parents.len() {
                    if pattern.matches(&parents[..i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// What a walk of the context does with `path`: include it, skip it (and, for a directory,
    /// everything below), or, for an excluded directory that an exception may reach into, walk
    /// it anyway. Hashing and copying both decide with this, so they see the same files.
    pub fn visit(&self, path: &str, is_dir: bool) -> Visit {
        if !self.is_excluded(path) {
            Visit::Include
        } else if is_dir && self.may_include_below(path) {
            Visit::WalkOnly
        } else {
            Visit::Skip
        }
    }

    /// Whether an excluded directory must still be walked because an exception pattern could
    /// re-include something below it (Docker's own test: an exception that starts with the
    /// directory's path).
    pub fn may_include_below(&self, dir: &str) -> bool {
        let prefix = format!("{}/", crate::pathname::clean_relative(dir));
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.text).starts_with(&prefix))
    }
}

impl IgnorePattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            MatchKind::Exact => path == self.text,
            MatchKind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            MatchKind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            MatchKind::Tokens(tokens) => {
                let chars: Vec<char> = path.chars().collect();
                match_tokens(tokens, &chars)
            }
        }
    }
}

fn compile(pattern: &str) -> MatchKind {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        tokens.push(Token::Any);
                        kind = Kind::Regexp;
                    }
                } else {
                    tokens.push(Token::AnyDirs);
                    kind = Kind::Regexp;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star);
                kind = Kind::Regexp;
            }
            '?' => {
                tokens.push(Token::One);
                kind = Kind::Regexp;
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    tokens.push(Token::Char(next));
                    i += 1;
                }
                None => tokens.push(Token::Char('\\')),
            },
            '[' => {
                kind = Kind::Regexp;
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut first_in_class = true;
                while i < chars.len() && (chars[i] != ']' || first_in_class) {
                    first_in_class = false;
                    let mut lo = chars[i];
                    if lo == '\\' && i + 1 < chars.len() {
                        i += 1;
                        lo = chars[i];
                    }
                    i += 1;
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
                        hi = chars[i + 1];
                        i += 2;
                    }
                    ranges.push((lo, hi));
                }
                i += 1; // the closing ']'
                tokens.push(Token::Class { negated, ranges });
            }
            c => tokens.push(Token::Char(c)),
        }
        first = false;
    }
    match kind {
        Kind::Exact => MatchKind::Exact,
        Kind::Prefix => MatchKind::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => MatchKind::Suffix(pattern[2..].to_string()),
        Kind::Regexp => MatchKind::Tokens(tokens),
    }
}

fn match_tokens(tokens: &[Token], s: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match first {
        Token::Char(c) => s.first() == Some(c) && match_tokens(rest, &s[1..]),
        Token::One => s.first().is_some_and(|c| *c != '/') && match_tokens(rest, &s[1..]),
        Token::Class { negated, ranges } => {
            s.first()
                .is_some_and(|&c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                && match_tokens(rest, &s[1..])
        }
        Token::Star => {
            for n in 0..=s.len() {
                if match_tokens(rest, &s[n..]) {
                    return true;
                }
                if n < s.len() && s[n] == '/' {
                    return false;
                }
            }
            false
        }
        Token::Any => true,
        Token::AnyDirs => {
            // `(.*/)?`: nothing, or anything that ends with a `/`.
            if match_tokens(rest, s) {
                return true;
            }
            (0..s.len()).any(|i| s[i] == '/' && match_tokens(rest, &s[i + 1..]))
        }
    }
}

#[cfg(test)]
mod ignore_tests {
    use super::{CopyFilter, IgnoreMatcher, Visit};

    fn m(patterns: &[&str]) -> IgnoreMatcher {
        IgnoreMatcher::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn docker_documentation_rules() {
        // Examples from Docker's .dockerignore documentation and moby/patternmatcher's tests.
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*/temp*"], "somedir/temporary.txt", true),
            (&["*/temp*"], "somedir/temp", true),
            (&["*/temp*"], "temp", false),
            (&["*/*/temp*"], "somedir/subdir/temporary.txt", true),
            (&["*/*/temp*"], "somedir/temporary.txt", false),
            (&["temp?"], "tempa", true),
            (&["temp?"], "temp", false),
            (&["temp?"], "temp/x", false),
            (&["**/*.go"], "a/b/c.go", true),
            (&["**/*.go"], "c.go", true),
            (&["**/*.go"], "c.gox", false),
            (
                &["*.md", "!README*.md", "README-secret.md"],
                "README-secret.md",
                true,
            ),
            (
                &["*.md", "!README*.md", "README-secret.md"],
                "README.md",
                false,
            ),
            (
                &["*.md", "!README*.md", "README-secret.md"],
                "CHANGES.md",
                true,
            ),
            (
                &["*.md", "README-secret.md", "!README*.md"],
                "README-secret.md",
                false,
            ),
            // A matching directory excludes its contents.
            (&["node_modules"], "node_modules/a/b.js", true),
            (&["/node_modules"], "node_modules/a", true),
            (&["./build/"], "build/out.o", true),
            (&["build"], "src/build", false),
            (&["**/build"], "src/build/x", true),
            (&["**"], "anything/at/all", true),
            (&["*", "!keep"], "keep", false),
            (&["*", "!keep"], "other", true),
            (&["a/**"], "a/b/c", true),
            (&["a/**"], "ab", false),
            (&["a**"], "ab/c", true),
            (&["a/**/b"], "a/b", true),
            (&["a/**/b"], "a/x/y/b", true),
            (&["a/**/b"], "a/x/y/bc", false),
            (&["[a-c]*.txt"], "b1.txt", true),
            (&["[a-c]*.txt"], "d1.txt", false),
            (&["[^a-c]*.txt"], "d1.txt", true),
            // Docker quirk: an escape alone does not make a pattern a regexp, so `\*.txt` is
            // compared literally, backslash included.
            (&["\\*.txt"], "*.txt", false),
            (&["\\*.txt"], "a.txt", false),
            (&["\\*?.txt"], "*a.txt", true),
            (&["dir/*.txt"], "dir/sub/a.txt", false),
            (&["#notacomment"], "#notacomment", true),
        ];
        for (patterns, path, want) in cases {
            assert_eq!(
                m(patterns).is_excluded(path),
                *want,
                "{patterns:?} on {path}"
            );
        }
    }

    #[test]
    fn walking_into_excluded_directories() {
        let matcher = m(&["docs", "!docs/keep.md"]);
        assert!(matcher.is_excluded("docs/other.md"));
        assert!(!matcher.is_excluded("docs/keep.md"));
        assert!(matcher.may_include_below("docs"));
        assert!(!m(&["docs"]).may_include_below("docs"));
    }

    #[test]
    fn copy_filter_combines_ignore_include_and_exclude() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Copying `app` (so `below` is relative to it) from a context ignoring `app/tmp`.
        let f = CopyFilter::new(
            &strings(&["app/tmp"]),
            &strings(&["src/**/*.rs", "README"]),
            &strings(&["src/gen", "*.bak"]),
        );
        let cases: &[(&str, &str, bool, Visit)] = &[
            ("app/src", "src", true, Visit::WalkOnly),
            ("app/src/x/y.rs", "src/x/y.rs", false, Visit::Include),
            ("app/src/x/y.txt", "src/x/y.txt", false, Visit::Skip),
            ("app/src/gen", "src/gen", true, Visit::Skip),
            ("app/README", "README", false, Visit::Include),
            ("app/README.bak", "README.bak", false, Visit::Skip),
            ("app/tmp", "tmp", true, Visit::Skip),
        ];
        for (rel, below, is_dir, want) in cases {
            assert_eq!(f.visit(rel, below, *is_dir), *want, "{rel}");
        }
        assert_eq!(f.required(), ["README"]);
        // Without include patterns everything not excluded is taken, and exclusions with
        // exceptions still walk the directory.
        let f = CopyFilter::new(&[], &[], &strings(&["docs", "!docs/keep.md"]));
        assert_eq!(f.visit("x/docs", "docs", true), Visit::WalkOnly);
        assert_eq!(
            f.visit("x/docs/keep.md", "docs/keep.md", false),
            Visit::Include
        );
        assert_eq!(f.visit("x/docs/other", "docs/other", false), Visit::Skip);
        assert_eq!(f.visit("x/main.c", "main.c", false), Visit::Include);
    }
}
