//! Platforms (`os/arch[/variant]`) as BuildKit and containerd spell and normalize them:
//! `--platform` values, `FROM --platform`, the predefined platform ARGs, and the choice of an
//! image from a multi-platform index.

use std::fmt;

/// An OS, CPU architecture and optional CPU variant, normalized (`linux/arm64`,
/// `linux/arm/v7`, `linux/amd64`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`, ...
    pub architecture: String,
    /// `v7`, `v6`, `v8`..., empty when the architecture has none (or its default, as arm64's v8).
    pub variant: String,
}

const KNOWN_OS: [&str; 14] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "solaris",
    "windows",
];

const KNOWN_ARCH: [&str; 30] = [
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
    // Spellings normalized below.
    "aarch64",
    "x86_64",
    "x86-64",
    "i386",
    "armhf",
    "armel",
];

impl Platform {
    /// A platform from its parts, normalized.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform {
            os: normalize_os(os),
            architecture,
            variant,
        }
    }

    /// The platform this process runs on (the build platform).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch, "")
    }

    /// Parses a platform specifier as containerd does: `os/arch[/variant]`, or a lone OS (with
    /// the host's architecture) or architecture (with the host's OS), normalized
    /// (`aarch64` → `arm64`, `armhf` → `arm/v7`, `x86_64` → `amd64`, `linux/arm` →
    /// `linux/arm/v7`...).
    pub fn parse(specifier: &str) -> Result<Platform, String> {
        let invalid = |why: &str| format!("{specifier:?}: {why}");
        if specifier.contains('*') {
            return Err(invalid("wildcards are not allowed"));
        }
        let parts: Vec<&str> = specifier.split('/').collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if parts.len() > 3 || !parts.iter().all(|p| valid(p)) {
            return Err(invalid(
                "invalid platform: expected os/arch[/variant], as linux/arm64",
            ));
        }
        let host = Platform::host();
        Ok(match parts[..] {
            [one] => {
                let lower = one.to_ascii_lowercase();
                if KNOWN_OS.contains(&normalize_os(&lower).as_str()) {
                    Platform::new(&lower, &host.architecture, &host.variant)
                } else if KNOWN_ARCH.contains(&lower.as_str()) {
                    Platform::new(&host.os, &lower, "")
                } else {
                    return Err(invalid("unknown operating system or architecture"));
                }
            }
            [os, arch] => Platform::new(os, arch, ""),
            [os, arch, variant] => Platform::new(os, arch, variant),
            _ => unreachable!("1 to 3 parts"),
        })
    }

    /// Parses a comma-separated `--platform` list (`linux/amd64,linux/arm64`), dropping
    /// repeats.
    pub fn parse_list(list: &str) -> Result<Vec<Platform>, String> {
        let mut out: Vec<Platform> = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let p = Platform::parse(item)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Whether an image or index entry for `os`/`architecture`/`variant` is this platform.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let other = Platform::new(os, architecture, variant.unwrap_or(""));
        other.os == self.os
            && other.architecture == self.architecture
            && (other.variant == self.variant
                // An entry that does not name its variant serves the architecture's default.
                || (variant.unwrap_or("").is_empty() && self.is_default_variant()))
    }

    fn is_default_variant(&self) -> bool {
        self.variant.is_empty() || (self.architecture == "arm" && self.variant == "v7")
    }

    /// `variant` as an image config writes it (absent when empty).
    pub fn variant(&self) -> Option<String> {
        (!self.variant.is_empty()).then(|| self.variant.clone())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    match os.as_str() {
        "macos" => "darwin".into(),
        _ => os,
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    let (arch, variant) = match arch.as_str() {
        "i386" => ("386", variant),
        "x86_64" | "x86-64" | "amd64" => match variant.as_str() {
            "v1" => ("amd64", String::new()),
            _ => ("amd64", variant),
        },
        "aarch64" | "arm64" => match variant.as_str() {
            "8" | "v8" | "v8.0" => ("arm64", String::new()),
            "9" | "9.0" | "v9.0" => ("arm64", "v9".into()),
            _ => ("arm64", variant),
        },
        "armhf" => ("arm", "v7".into()),
        "armel" => ("arm", "v6".into()),
        "arm" => match variant.as_str() {
            "" | "7" => ("arm", "v7".into()),
            "5" | "6" | "8" => ("arm", format!("v{variant}")),
            _ => ("arm", variant),
        },
        other => (other, variant),
    };
    (arch.to_string(), variant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Platform::parse(s).unwrap().to_string()
    }

    #[test]
    fn parses_and_normalizes_like_containerd() {
        assert_eq!(p("linux/amd64"), "linux/amd64");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/arm/v6"), "linux/arm/v6");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("Linux/ARM64"), "linux/arm64");
        assert_eq!(p("linux/386"), "linux/386");
        assert_eq!(p("linux/i386"), "linux/386");
        assert_eq!(p("linux/riscv64"), "linux/riscv64");
        let host = Platform::host();
        assert_eq!(p("arm64"), format!("{}/arm64", host.os));
        assert_eq!(
            p("linux"),
            Platform::new("linux", &host.architecture, "").to_string()
        );
        for bad in [
            "",
            "linux/",
            "/amd64",
            "a/b/c/d",
            "linux/*",
            "nonsense",
            "linux/am d64",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn lists_drop_repeats() {
        let list = Platform::parse_list("linux/amd64, linux/arm64,linux/x86_64").unwrap();
        let shown: Vec<String> = list.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown, ["linux/amd64", "linux/arm64"]);
    }

    #[test]
    fn matching_index_entries() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert!(arm64.matches("linux", "arm64", None));
        assert!(arm64.matches("linux", "arm64", Some("v8")));
        assert!(!arm64.matches("linux", "amd64", None));
        assert!(!arm64.matches("unknown", "unknown", None));
        let arm = Platform::parse("linux/arm").unwrap();
        assert!(arm.matches("linux", "arm", Some("v7")));
        assert!(arm.matches("linux", "arm", None));
        assert!(!arm.matches("linux", "arm", Some("v6")));
        let v6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(v6.matches("linux", "arm", Some("v6")));
        assert!(!v6.matches("linux", "arm", None));
    }
}
