//! File names as rbuild's relative paths hold them: strings in which every byte that is not
//! part of valid UTF-8 stands as one character of Unicode's last private-use plane,
//! `U+10FF00 + byte`, so that a name that is not UTF-8 (Linux allows any bytes but `/` and
//! NUL) round-trips to the filesystem exactly, and is hashed, matched and copied as BuildKit,
//! whose paths are bytes, handles it.
//!
//! A wildcard matches such a byte as one character, as Go's `filepath.Match` (which BuildKit
//! uses) takes an invalid byte as one rune. The price: a name that really contains characters
//! of `U+10FF00..=U+10FFFF` would be read back as those bytes; no encoding in use puts them in
//! file names.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

const BASE: u32 = 0x10FF00;

/// A file name (or path) from the filesystem as a string, losslessly.
pub fn from_os(name: &OsStr) -> Cow<'_, str> {
    let bytes = name.as_bytes();
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(char::from_u32(BASE + u32::from(b)).expect("a valid code point"));
        }
    }
    Cow::Owned(out)
}

/// A string made by [`from_os`] as the bytes it stands for.
pub fn to_os(s: &str) -> Cow<'_, OsStr> {
    if !s.chars().any(|c| u32::from(c) >= BASE) {
        return Cow::Borrowed(OsStr::new(s));
    }
    let mut bytes = Vec::with_capacity(s.len());
    for c in s.chars() {
        match u32::from(c) {
            code if code >= BASE => bytes.push((code - BASE) as u8),
            _ => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Cow::Owned(OsString::from_vec(bytes))
}

/// `root` joined with the relative path `rel` (a string made by [`from_os`]).
pub fn join(root: &Path, rel: &str) -> PathBuf {
    root.join(to_os(rel))
}

/// A path as a string, losslessly (see [`from_os`]).
pub fn of_path(path: &Path) -> Cow<'_, str> {
    from_os(path.as_os_str())
}

/// Cleans a path the way Go's `path.Clean` does, relative to a root: no leading `/`, no `.`
/// segments, `..` resolved lexically and never above the root. The root itself is `""`.
pub fn clean_relative(path: &str) -> String {
    // Most paths are clean already: no empty, `.` or `..` segment.
    if path.split('/').all(|part| !matches!(part, "" | "." | "..")) {
        return path.to_string();
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_round_trip() {
        for bytes in [
            &b"plain"[..],
            b"caf\xc3\xa9",
            b"bad\xffname",
            b"\xfe\xff",
            b"half\xc3",
            b"\xe9t\xe9",
        ] {
            let name = OsStr::from_bytes(bytes);
            let s = from_os(name);
            assert_eq!(to_os(&s).as_bytes(), bytes, "{s:?}");
        }
        // Valid UTF-8 is kept as it is, invalid bytes become one character each.
        assert_eq!(from_os(OsStr::new("café")), "café");
        assert_eq!(from_os(OsStr::from_bytes(b"a\xffb")).chars().count(), 3);
        assert_eq!(
            join(Path::new("/r"), &from_os(OsStr::from_bytes(b"d\xfe/f")))
                .as_os_str()
                .as_bytes(),
            b"/r/d\xfe/f"
        );
    }
}
