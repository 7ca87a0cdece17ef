//! Image references with Docker's grammar and normalization (`busybox` is
//! `docker.io/library/busybox:latest`), and the short names users see.
//!
//! rbuild parses references itself rather than with oci-client's `Reference::try_from`: that one
//! compiles a large Unicode regular expression on first use, which cost ~50 ms of CPU in every
//! build. The grammar is small enough to check by hand.

use oci_client::Reference;
use std::fmt;

/// A normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, with port (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Digest (`sha256:…`).
    pub digest: Option<String>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// The full normalized form, `registry/repository[:tag][@digest]`.
    pub fn whole(&self) -> String {
        self.to_string()
    }

    /// The same reference for oci-client.
    pub fn to_oci(&self) -> Reference {
        let (registry, repository) = (self.registry.clone(), self.repository.clone());
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => {
                Reference::with_tag_and_digest(registry, repository, t.clone(), d.clone())
            }
            (None, Some(d)) => Reference::with_digest(registry, repository, d.clone()),
            (Some(t), None) => Reference::with_tag(registry, repository, t.clone()),
            (None, None) => Reference::with_tag(registry, repository, "latest".into()),
        }
    }
}

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn valid_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0] as char) || !is_alnum_lower(b[b.len() - 1] as char) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if is_alnum_lower(c) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i] as char) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-')) {
            return false;
        }
    }
    true
}

/// A registry host: DNS labels separated by dots, or a bracketed IPv6 address, with an
/// optional `:port`.
fn valid_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (None, tail.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    match host {
        None => true,
        Some(h) => {
            !h.is_empty()
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        }
    }
}

/// Parses and normalizes a reference as Docker does.
pub fn parse(s: &str) -> Result<ImageRef, String> {
    let bad = |why: &str| format!("invalid reference format {s:?}: {why}");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            let hex = d
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("only sha256 digests are supported"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad("malformed digest"));
            }
            (r, Some(d.to_string()))
        }
        None => (s, None),
    };
    // A tag follows the last ':' unless that ':' is part of the registry's port.
    let (name, tag) = match rest.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
        _ => (rest, None),
    };
    if let Some(t) = &tag {
        let ok = t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(bad("malformed tag"));
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let registry = if parts.len() > 1
        && (parts[0].contains(['.', ':']) || parts[0] == "localhost" || parts[0].starts_with('['))
    {
        let domain = parts.remove(0);
        if !valid_domain(domain) {
            return Err(bad("malformed registry host"));
        }
        // Docker's grammar takes any digits as a port; the connection would fail later with
        // a confusing error (Go's "invalid port", a Rust HTTP client's worse).
        if let Some((_, port)) = domain.rsplit_once(':')
            && !port.contains(']')
            && !port.parse::<u16>().is_ok_and(|p| p > 0)
        {
            return Err(format!(
                "invalid reference {s:?}: the registry address {domain} has an invalid port \
                 {port} (1 to 65535)"
            ));
        }
        domain.to_string()
    } else {
        "docker.io".to_string()
    };
    if let Some(p) = parts.iter().find(|p| !valid_path_component(p)) {
        return Err(if p.chars().any(|c| c.is_ascii_uppercase()) {
            bad("repository name must be lowercase")
        } else {
            bad("malformed repository name")
        });
    }
    let mut repository = parts.join("/");
    if registry == "docker.io" && parts.len() == 1 {
        repository = format!("library/{repository}");
    }
    if registry.len() + 1 + repository.len() > 255 {
        return Err(bad("repository name must not be more than 255 characters"));
    }
    let tag = if tag.is_none() && digest.is_none() {
        Some("latest".to_string())
    } else {
        tag
    };
    Ok(ImageRef {
        registry,
        repository,
        tag,
        digest,
    })
}

/// The name Docker shows for a normalized reference: `docker.io/library/x:1` is `x:1`,
/// `docker.io/u/x:1` is `u/x:1`; other registries stay as they are.
pub fn familiar(full: &str) -> String {
    let rest = match full.strip_prefix("docker.io/") {
        Some(rest) => rest,
        None => return full.to_string(),
    };
    rest.strip_prefix("library/").unwrap_or(rest).to_string()
}

/// Whether a registry host is on the loopback interface, where Docker allows plain HTTP.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_like_docker() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("hello:1.0", "docker.io/library/hello:1.0"),
            ("me/app", "docker.io/me/app:latest"),
            (
                "127.0.0.1:5000/library/busybox:1.35",
                "127.0.0.1:5000/library/busybox:1.35",
            ),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
            ("ghcr.io/o/r:v1.2-3_x", "ghcr.io/o/r:v1.2-3_x"),
            ("[::1]:5000/x:1", "[::1]:5000/x:1"),
            ("a__b/c-d--e.f", "docker.io/a__b/c-d--e.f:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).unwrap().whole(), want, "{input}");
            // oci-client's own (slow) parser agrees where it accepts the input; it does not know
            // bracketed IPv6 registries.
            if let Ok(theirs) = Reference::try_from(input) {
                assert_eq!(theirs.whole(), want, "{input}");
            } else {
                assert!(input.starts_with('['), "oci-client rejects {input}");
            }
        }
        let pinned = parse(&format!("busybox@{digest}")).unwrap();
        assert_eq!(
            (pinned.tag.as_deref(), pinned.digest.as_deref()),
            (None, Some(digest.as_str()))
        );
        assert_eq!(
            pinned.to_oci().whole(),
            format!("docker.io/library/busybox@{digest}")
        );
        for bad in [
            "",
            "Upper/Case",
            "a//b",
            "-a",
            "a:",
            "a:-t",
            "a@sha256:abc",
            "host:port:x/a",
            "a/b_",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse("Busybox").unwrap_err().contains("must be lowercase"));
    }

    #[test]
    fn ports_out_of_range_are_refused() {
        let e = parse("127.0.0.1:99999/x").unwrap_err();
        assert!(e.contains("invalid port 99999"), "{e}");
        assert!(parse("127.0.0.1:0/x").is_err());
        assert_eq!(
            parse("127.0.0.1:65535/x").unwrap().registry,
            "127.0.0.1:65535"
        );
        assert_eq!(parse("[::1]:5000/x").unwrap().registry, "[::1]:5000");
    }

    #[test]
    fn short_names_and_loopback() {
        assert_eq!(familiar("docker.io/library/hello:1.0"), "hello:1.0");
        assert_eq!(familiar("docker.io/me/x:1"), "me/x:1");
        assert_eq!(familiar("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
        assert!(
            is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:80")
        );
        assert!(!is_loopback("registry-1.docker.io") && !is_loopback("10.0.0.1:5000"));
    }
}
