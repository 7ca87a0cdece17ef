//! Image references: Docker's normalization (`busybox` is `docker.io/library/busybox:latest`)
//! and the short names users see.

use oci_client::Reference;

/// Parses and normalizes a reference as Docker does.
pub fn parse(s: &str) -> Result<Reference, String> {
    Reference::try_from(s).map_err(|e| format!("invalid reference format {s:?}: {e}"))
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
    fn normalization() {
        assert_eq!(
            parse("busybox").unwrap().whole(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            parse("hello:1.0").unwrap().whole(),
            "docker.io/library/hello:1.0"
        );
        assert_eq!(
            parse("127.0.0.1:5000/library/busybox:1.35")
                .unwrap()
                .registry(),
            "127.0.0.1:5000"
        );
        assert!(parse("Upper/Case").is_err());
        assert_eq!(familiar("docker.io/library/hello:1.0"), "hello:1.0");
        assert_eq!(familiar("docker.io/me/x:1"), "me/x:1");
        assert_eq!(familiar("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
        assert!(
            is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:80")
        );
        assert!(!is_loopback("registry-1.docker.io") && !is_loopback("10.0.0.1:5000"));
    }
}
