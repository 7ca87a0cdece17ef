//! SHA-256 digests in the OCI `sha256:<hex>` form.

use sha2::{Digest as _, Sha256};
use std::fmt;

/// A content digest, always `sha256:` followed by 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(data))
    }

    /// The digest of a value's JSON serialization, hashed as it is written (no intermediate
    /// string or `serde_json::Value`).
    pub fn of_json(value: &impl serde::Serialize) -> Digest {
        struct Hashing(Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut hashing = Hashing(Sha256::new());
        serde_json::to_writer(&mut hashing, value).expect("serializing into a hasher cannot fail");
        Digest::from_hasher(hashing.0)
    }

    /// Finishes a hasher into a digest.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest::from_sha256(hasher.finalize().into())
    }

    /// The digest whose SHA-256 is `bytes`.
    pub fn from_sha256(bytes: [u8; 32]) -> Digest {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for byte in bytes {
            s.push(HEX[usize::from(byte >> 4)] as char);
            s.push(HEX[usize::from(byte & 0xf)] as char);
        }
        Digest(s)
    }

    /// Parses `sha256:<64 hex>`; returns `None` for anything else.
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Digest(s.to_string()))
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32 bytes of the SHA-256 ([`Digest::from_sha256`]'s inverse).
    pub fn sha256(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex::decode_to_slice(self.hex(), &mut out).expect("a digest is 64 hex digits");
        out
    }

    /// The hex part without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_parse() {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(d.as_str()), Some(d.clone()));
        assert_eq!(Digest::parse("sha256:abc"), None);
        assert_eq!(Digest::parse(&d.as_str().to_uppercase()), None);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(
            Digest::of_json(&vec!["a", "b"]),
            Digest::of(br#"["a","b"]"#)
        );
    }
}
