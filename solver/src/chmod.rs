//! Symbolic modes for `COPY --chmod` (Dockerfile 1.14 accepts them besides octal numbers):
//! chmod(1)'s grammar, applied to each copied file's own mode, without a umask.
//!
//! ```text
//! mode   := clause (',' clause)*
//! clause := [ugoa]* (op (perms | [ugo]))+      op := '+' | '-' | '='
//! perms  := [rwxXst]*
//! ```
//! No `who` means `a`. `X` is execute for directories and for files that are executable by
//! someone already; `u`, `g`, `o` after an operator copy that class's current permissions.

use serde::{Deserialize, Serialize};

/// What `COPY --chmod` gives: permission bits, or a symbolic mode applied to each file's own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Chmod {
    /// An octal mode (at most 0o7777).
    Octal(u32),
    /// A symbolic mode (`u+x`, `a=rX,u+w`).
    Symbolic(SymbolicMode),
}

impl Chmod {
    /// The permission bits, for an octal mode.
    pub fn octal(&self) -> Option<u32> {
        match self {
            Chmod::Octal(m) => Some(*m),
            Chmod::Symbolic(_) => None,
        }
    }

    /// The symbolic mode, for one.
    pub fn symbolic(&self) -> Option<&SymbolicMode> {
        match self {
            Chmod::Octal(_) => None,
            Chmod::Symbolic(m) => Some(m),
        }
    }
}

/// A parsed symbolic mode. It keeps the text it was parsed from, which is what it serializes
/// to (so a graph's op definitions, and the cache keys made from them, hold the mode as
/// written).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SymbolicMode {
    text: String,
    clauses: Vec<Clause>,
}

impl TryFrom<String> for SymbolicMode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        SymbolicMode::parse(&text)
    }
}

impl From<SymbolicMode> for String {
    fn from(mode: SymbolicMode) -> String {
        mode.text
    }
}

impl std::fmt::Display for SymbolicMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Clause {
    /// Bits of the classes named (`u` = 0o4700, `g` = 0o2070, `o` = 0o1007).
    who: u32,
    actions: Vec<(u8, Perms)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Perms {
    /// Letters of `rwxXst`.
    Letters(Vec<u8>),
    /// Copy from the class `u`, `g` or `o`.
    Copy(u8),
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;

impl SymbolicMode {
    /// Parses `spec`; the error names what is wrong.
    pub fn parse(spec: &str) -> Result<SymbolicMode, String> {
        let bad = |why: &str| format!("invalid mode {spec:?}: {why}");
        let mut clauses = Vec::new();
        for text in spec.split(',') {
            let bytes = text.as_bytes();
            let mut i = 0;
            let mut who = 0;
            while i < bytes.len() && b"ugoa".contains(&bytes[i]) {
                who |= match bytes[i] {
                    b'u' => USER,
                    b'g' => GROUP,
                    b'o' => OTHER,
                    _ => USER | GROUP | OTHER,
                };
                i += 1;
            }
            if who == 0 {
                who = USER | GROUP | OTHER;
            }
            let mut actions = Vec::new();
            while i < bytes.len() {
                let op = bytes[i];
                if !b"+-=".contains(&op) {
                    return Err(bad("expected +, - or = after who (u, g, o, a)"));
                }
                i += 1;
                let perms = if i < bytes.len() && b"ugo".contains(&bytes[i]) {
                    i += 1;
                    Perms::Copy(bytes[i - 1])
                } else {
                    let start = i;
                    while i < bytes.len() && b"rwxXst".contains(&bytes[i]) {
                        i += 1;
                    }
                    Perms::Letters(bytes[start..i].to_vec())
                };
                actions.push((op, perms));
            }
            if actions.is_empty() {
                return Err(bad("a clause needs an operator (+, - or =)"));
            }
            clauses.push(Clause { who, actions });
        }
        Ok(SymbolicMode {
            text: spec.to_string(),
            clauses,
        })
    }

    /// The permission bits (0o7777) that `mode` becomes.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut mode = mode & 0o7777;
        for clause in &self.clauses {
            for (op, perms) in &clause.actions {
                let bits = match perms {
                    Perms::Copy(class) => {
                        let rwx = match class {
                            b'u' => (mode >> 6) & 7,
                            b'g' => (mode >> 3) & 7,
                            _ => mode & 7,
                        };
                        rwx * 0o111
                    }
                    Perms::Letters(letters) => letters.iter().fold(0, |acc, l| {
                        acc | match l {
                            b'r' => 0o444,
                            b'w' => 0o222,
                            b'x' => 0o111,
                            b'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            b's' => 0o6000,
                            b't' => 0o1000,
                            _ => 0,
                        }
                    }),
                } & clause.who;
                mode = match op {
                    b'+' => mode | bits,
                    b'-' => mode & !bits,
                    _ => (mode & !clause.who) | bits,
                };
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(spec: &str, mode: u32, dir: bool) -> u32 {
        SymbolicMode::parse(spec).unwrap().apply(mode, dir)
    }

    #[test]
    fn like_chmod() {
        assert_eq!(chmod("u+x", 0o644, false), 0o744);
        assert_eq!(chmod("+x", 0o644, false), 0o755);
        assert_eq!(chmod("go-w", 0o666, false), 0o644);
        assert_eq!(chmod("a=r", 0o755, false), 0o444);
        assert_eq!(chmod("u=rwx,g=rx,o=", 0o600, false), 0o750);
        assert_eq!(chmod("a=rX", 0o640, false), 0o444);
        assert_eq!(chmod("a=rX", 0o640, true), 0o555);
        assert_eq!(chmod("a=rX", 0o740, false), 0o555);
        assert_eq!(chmod("u+s,g+s", 0o755, false), 0o6755);
        assert_eq!(chmod("+t", 0o777, true), 0o1777);
        assert_eq!(chmod("g=u", 0o740, false), 0o770);
        assert_eq!(chmod("o=u-w", 0o750, false), 0o755);
        assert_eq!(chmod("u=", 0o4755, false), 0o055);
        for bad in ["", "x", "u", "q+x", "u+x,"] {
            assert!(SymbolicMode::parse(bad).is_err(), "{bad:?}");
        }
    }
}
