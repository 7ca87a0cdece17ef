//! What the rooms' error enums share: a failed file or system operation ([`Io`]) and JSON
//! that does not parse ([`Json`]), each with what rbuild was doing, and [`chain`], which says
//! an error with all its causes.
//!
//! The rule for every error of the builder: the message says what rbuild was doing, the cause
//! is the error's `source` (never formatted into the message as well), so a chain reads
//! `outer: inner: root cause` with each part once.

/// A file or system operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Io {
    /// What rbuild was doing (`reading …/index.json`).
    pub what: String,
    /// The system's error.
    #[source]
    pub source: std::io::Error,
}

/// JSON that does not parse, or is not what it should be.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Json {
    /// What rbuild was reading.
    pub what: String,
    /// The parser's error.
    #[source]
    pub source: serde_json::Error,
}

/// For `map_err`: an [`Io`] error saying `what` rbuild was doing.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Io {
    let what = what.into();
    move |source| Io { what, source }
}

/// For `map_err`: a [`Json`] error saying `what` rbuild was reading.
pub fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Json {
    let what = what.into();
    move |source| Json { what, source }
}

/// An error with its causes, `outer: inner: root cause`, each said once (reqwest hides
/// "connection refused" in its sources, and some errors repeat their source's text).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        // A cause already said, or said again behind a code ("Error code 13: database or
        // disk is full" under "database or disk is full"), adds nothing.
        let last = text.rsplit(": ").next().unwrap_or_default();
        let repeated = last.len() > 8 && part.ends_with(last);
        if !repeated && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_say_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper: {0}")]
        struct Repeats(#[source] std::io::Error);
        let root = || std::io::Error::other("root cause");
        assert_eq!(chain(&io("outer")(root())), "outer: root cause");
        assert_eq!(chain(&Repeats(root())), "wrapper: root cause");
        #[derive(Debug, thiserror::Error)]
        #[error("cache index: {0}")]
        struct Coded(#[source] Code);
        #[derive(Debug, thiserror::Error)]
        #[error("Error code 13: database or disk is full")]
        struct Code;
        assert_eq!(
            chain(&Coded(Code)),
            "cache index: Error code 13: database or disk is full"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("database or disk is full")]
        struct Said(#[source] Code);
        assert_eq!(
            chain(&io("cache index")(std::io::Error::other(Said(Code)))),
            "cache index: database or disk is full"
        );
        let bad = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(chain(&json("parsing it")(bad)).starts_with("parsing it: expected value"));
    }
}
