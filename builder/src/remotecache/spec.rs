//! `--cache-to` and `--cache-from` in BuildKit's syntax: comma-separated `key=value` fields
//! with a `type=` (`registry`, `local`, `inline`), or a bare image reference, which buildx
//! takes as `type=registry,ref=REF`.

use crate::export::compress::Compression;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which steps an export writes (`mode=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The steps whose results make up the exported image (BuildKit's default).
    #[default]
    Min,
    /// Every step of every stage that was built.
    Max,
}

/// Where a cache is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A registry repository and tag (`ref=`).
    Registry(String),
    /// An OCI layout directory (`dest=` to write, `src=` to read) and the tag in it.
    Local {
        /// The directory.
        dir: PathBuf,
        /// The tag (`tag=`, default `latest`).
        tag: String,
    },
    /// In the pushed image itself (`type=inline`).
    Inline,
}

/// A `--cache-to`.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheTo {
    /// Where to write.
    pub location: Location,
    /// Which steps.
    pub mode: Mode,
    /// How layers are compressed (`compression=`, `compression-level=`,
    /// `force-compression=`).
    pub compression: Compression,
    /// Fail the build when the export fails (`ignore-error=false`); by default a failed
    /// export is a warning.
    pub fail_on_error: bool,
    /// Export the contents of `RUN --mount=type=cache` directories too (`cache-mounts=true`).
    pub cache_mounts: bool,
}

/// A `--cache-from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheFrom {
    /// Where to read.
    pub location: Location,
}

fn fields(flag: &str, spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut fields = BTreeMap::new();
    if !spec.contains('=') {
        fields.insert("type".to_string(), "registry".to_string());
        fields.insert("ref".to_string(), spec.trim().to_string());
        return Ok(fields);
    }
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            format!("invalid {flag} {spec:?}: {part:?} is not key=value (type=registry,ref=REF)")
        })?;
        fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    Ok(fields)
}

fn location(
    flag: &str,
    spec: &str,
    fields: &BTreeMap<String, String>,
    dir_key: &str,
) -> Result<Location, String> {
    let need = |key: &str| {
        fields
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| format!("invalid {flag} {spec:?}: {key}= is missing"))
    };
    match fields.get("type").map(String::as_str).unwrap_or("registry") {
        "registry" => Ok(Location::Registry(need("ref")?)),
        "local" => Ok(Location::Local {
            dir: PathBuf::from(need(dir_key)?),
            tag: fields
                .get("tag")
                .cloned()
                .unwrap_or_else(|| "latest".to_string()),
        }),
        "inline" if flag == "--cache-to" => Ok(Location::Inline),
        other => Err(format!(
            "invalid {flag} {spec:?}: cache type {other:?} is not supported (rbuild reads and \
             writes registry{} and local caches)",
            if flag == "--cache-to" { ", inline" } else { "" }
        )),
    }
}

fn parse_bool(flag: &str, key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "" => Ok(true),
        "false" => Ok(false),
        other => Err(format!(
            "invalid {flag} {key}={other:?}: expected true or false"
        )),
    }
}

/// Parses a `--cache-to`.
pub fn parse_cache_to(spec: &str) -> Result<CacheTo, String> {
    const FLAG: &str = "--cache-to";
    let fields = fields(FLAG, spec)?;
    let location = location(FLAG, spec, &fields, "dest")?;
    let mode = match fields.get("mode").map(String::as_str) {
        None | Some("min") => Mode::Min,
        Some("max") => Mode::Max,
        Some(other) => {
            return Err(format!(
                "invalid {FLAG} mode={other:?}: expected min or max"
            ));
        }
    };
    if location == Location::Inline && mode == Mode::Max {
        return Err(format!(
            "invalid {FLAG} {spec:?}: an inline cache holds the image's own steps only \
             (mode=min); use type=registry for mode=max"
        ));
    }
    let mut compression = Compression::default();
    if let Some(kind) = fields.get("compression") {
        compression = compression
            .with_kind(kind)
            .map_err(|e| format!("invalid {FLAG}: {e}"))?;
    }
    if let Some(level) = fields.get("compression-level") {
        compression.level = Some(level.parse().map_err(|_| {
            format!("invalid {FLAG} compression-level={level:?}: expected a number")
        })?);
    }
    if let Some(force) = fields.get("force-compression") {
        compression.force = parse_bool(FLAG, "force-compression", force)?;
    }
    for key in ["oci-mediatypes", "image-manifest"] {
        // The cache is always an OCI image manifest; false cannot be honoured.
        if let Some(value) = fields.get(key)
            && !parse_bool(FLAG, key, value)?
        {
            return Err(format!(
                "invalid {FLAG} {key}=false: rbuild writes caches as OCI image manifests, \
                 which every registry accepts"
            ));
        }
    }
    let fail_on_error = match fields.get("ignore-error") {
        Some(v) => !parse_bool(FLAG, "ignore-error", v)?,
        None => false,
    };
    let cache_mounts = match fields.get("cache-mounts") {
        Some(v) => parse_bool(FLAG, "cache-mounts", v)?,
        None => false,
    };
    if cache_mounts && location == Location::Inline {
        return Err(format!(
            "invalid {FLAG} {spec:?}: cache mounts travel in a registry or local cache, not \
             inline"
        ));
    }
    Ok(CacheTo {
        location,
        mode,
        compression,
        fail_on_error,
        cache_mounts,
    })
}

/// Parses a `--cache-from`.
pub fn parse_cache_from(spec: &str) -> Result<CacheFrom, String> {
    let fields = fields("--cache-from", spec)?;
    Ok(CacheFrom {
        location: location("--cache-from", spec, &fields, "src")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_spellings() {
        let to =
            parse_cache_to("type=registry,ref=r:5000/app:cache,mode=max,compression=zstd").unwrap();
        assert_eq!(to.location, Location::Registry("r:5000/app:cache".into()));
        assert_eq!(to.mode, Mode::Max);
        assert_eq!(
            to.compression.media_type,
            crate::store::layout::OCI_LAYER_ZSTD
        );
        assert!(!to.fail_on_error);
        let to = parse_cache_to("type=local,dest=/tmp/c,ignore-error=false").unwrap();
        assert_eq!(
            to.location,
            Location::Local {
                dir: "/tmp/c".into(),
                tag: "latest".into()
            }
        );
        assert!(to.fail_on_error && to.mode == Mode::Min && !to.cache_mounts);
        assert!(
            parse_cache_to("type=local,dest=/c,cache-mounts=true")
                .unwrap()
                .cache_mounts
        );
        assert_eq!(
            parse_cache_to("type=inline").unwrap().location,
            Location::Inline
        );
        let from = parse_cache_from("r:5000/app:cache").unwrap();
        assert_eq!(from.location, Location::Registry("r:5000/app:cache".into()));
        let from = parse_cache_from("type=local,src=/c,tag=main").unwrap();
        assert_eq!(
            from.location,
            Location::Local {
                dir: "/c".into(),
                tag: "main".into()
            }
        );
    }

    #[test]
    fn what_cannot_be_done_is_said() {
        let e = parse_cache_to("type=gha").unwrap_err();
        assert!(e.contains("\"gha\" is not supported"), "{e}");
        let e = parse_cache_to("type=registry").unwrap_err();
        assert!(e.contains("ref= is missing"), "{e}");
        let e = parse_cache_to("type=registry,ref=x,mode=all").unwrap_err();
        assert!(e.contains("expected min or max"), "{e}");
        let e = parse_cache_to("type=inline,mode=max").unwrap_err();
        assert!(e.contains("mode=min"), "{e}");
        let e = parse_cache_from("type=inline").unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        let e = parse_cache_to("type=local,dest=/x,image-manifest=false").unwrap_err();
        assert!(e.contains("OCI image manifests"), "{e}");
        assert!(parse_cache_to("type=registry,ref=x,bogus").is_err());
    }
}
