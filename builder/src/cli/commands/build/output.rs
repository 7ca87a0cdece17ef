//! `--output` as BuildKit names its exporters: `type=image|registry|oci|docker|local|tar`
//! with their options.

use super::*;

/// An `--output` request (BuildKit's exporter names and options).
#[derive(Debug, PartialEq)]
pub enum OutputSpec {
    /// `type=image` (the local store) or `type=registry` (also pushed).
    Image {
        /// The names to tag (and push) it as.
        names: Vec<String>,
        /// Push it (`push=true`, `type=registry`).
        push: bool,
        /// How pushed layers are compressed.
        compression: Compression,
        /// Push with OCI media types rather than Docker's.
        oci_mediatypes: bool,
    },
    /// `type=oci` or `type=docker`: an image archive.
    Archive {
        /// OCI layout or Docker's `docker save` format.
        format: ArchiveFormat,
        /// Docker media types in the manifests.
        docker_media_types: bool,
        /// Where it is written.
        dest: Dest,
        /// The names recorded in it.
        names: Vec<String>,
        /// How its layers are compressed.
        compression: Compression,
    },
    /// `type=local`: the root filesystem as a directory.
    Local {
        /// The directory.
        dest: PathBuf,
    },
    /// `type=tar`: the root filesystem as one tar.
    Tar {
        /// Where it is written.
        dest: Dest,
    },
    /// `type=cacheonly`: nothing but the build cache (and `--cache-to`), as BuildKit.
    CacheOnly,
}

/// `compression=`, `compression-level=` and `force-compression=` of an `--output`.
fn parse_compression(fields: &BTreeMap<String, String>) -> Result<Compression> {
    let mut compression = Compression::default();
    if let Some(kind) = fields.get("compression") {
        compression = compression.with_kind(kind)?;
    }
    if let Some(level) = fields.get("compression-level") {
        let level: u32 = level
            .parse()
            .map_err(|_| anyhow!("invalid compression-level={level:?}: expected a number"))?;
        compression.level = Some(level);
    }
    if let Some(force) = fields.get("force-compression") {
        compression.force = parse_bool("force-compression", force)?;
    }
    Ok(compression)
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "" => Ok(true),
        "false" => Ok(false),
        other => bail!("invalid {key}={other:?}: expected true or false"),
    }
}

/// Parses one `--output`: `type=…,key=value,…`, or a bare path, which BuildKit takes as
/// `type=local,dest=PATH` (and `-` as `type=tar,dest=-`). `tags` are the `-t` names, the
/// default names of image outputs.
pub fn parse_output(spec: &str, tags: &[String]) -> Result<OutputSpec> {
    if !spec.contains('=') {
        return Ok(if spec == "-" {
            OutputSpec::Tar { dest: Dest::Stdout }
        } else {
            OutputSpec::Local { dest: spec.into() }
        });
    }
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for part in spec.split(',') {
        match (part.split_once('='), &last) {
            (Some((k, v)), _) => {
                fields.insert(k.trim().to_string(), v.trim().to_string());
                last = Some(k.trim().to_string());
            }
            // `name=a,b`: a part without `=` continues the previous value.
            (None, Some(key)) => {
                let value = fields.entry(key.clone()).or_default();
                value.push(',');
                value.push_str(part.trim());
            }
            (None, None) => bail!(
                "invalid --output {spec:?}: expected key=value pairs such as type=oci,dest=image.tar"
            ),
        }
    }
    let kind = fields.get("type").cloned().ok_or_else(|| {
        anyhow!("--output {spec:?} has no type= (image, registry, oci, docker, local or tar)")
    })?;
    let known: &[&str] = match kind.as_str() {
        "image" | "registry" => &[
            "name",
            "push",
            "oci-mediatypes",
            "compression",
            "compression-level",
            "force-compression",
            "rewrite-timestamp",
        ],
        "oci" | "docker" => &[
            "name",
            "dest",
            "oci-mediatypes",
            "compression",
            "compression-level",
            "force-compression",
            "rewrite-timestamp",
        ],
        "local" | "tar" => &["dest"],
        "cacheonly" => &[],
        other => bail!(
            "unknown --output type={other} (supported: image, registry, oci, docker, local, \
             tar, cacheonly)"
        ),
    };
    if let Some(key) = fields
        .keys()
        .find(|k| *k != "type" && !known.contains(&k.as_str()))
    {
        bail!(
            "--output type={kind} does not take {key}= (it takes {})",
            known.join(", ")
        );
    }
    // rbuild clamps the file times of every layer it makes to SOURCE_DATE_EPOCH when that is
    // set, which is what rewrite-timestamp=true asks of BuildKit; =false cannot be honoured.
    if let Some(v) = fields.get("rewrite-timestamp")
        && !parse_bool("rewrite-timestamp", v)?
        && crate::units::source_date_epoch().is_some()
    {
        bail!(
            "rewrite-timestamp=false: rbuild always clamps the layers it makes to SOURCE_DATE_EPOCH when it is set"
        );
    }
    let names = match fields.get("name") {
        Some(names) => names
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| {
                reference::parse(n)
                    .map(|r| r.whole())
                    .map_err(|e| anyhow!("invalid name={n}: {e}"))
            })
            .collect::<Result<Vec<_>>>()?,
        None => tags.to_vec(),
    };
    let dest = || {
        fields
            .get("dest")
            .map(|d| Dest::parse(d))
            .ok_or_else(|| anyhow!("--output type={kind} needs dest= (a path, or - for stdout)"))
    };
    let oci_mediatypes = |default: bool| {
        fields
            .get("oci-mediatypes")
            .map_or(Ok(default), |v| parse_bool("oci-mediatypes", v))
    };
    Ok(match kind.as_str() {
        "image" | "registry" => OutputSpec::Image {
            names,
            push: kind == "registry"
                || fields
                    .get("push")
                    .map_or(Ok(false), |v| parse_bool("push", v))?,
            compression: parse_compression(&fields)?,
            oci_mediatypes: oci_mediatypes(false)?,
        },
        "oci" | "docker" => OutputSpec::Archive {
            format: if kind == "docker" {
                ArchiveFormat::Docker
            } else {
                ArchiveFormat::Oci
            },
            docker_media_types: !oci_mediatypes(kind == "oci")?,
            dest: dest()?,
            names,
            compression: parse_compression(&fields)?,
        },
        "local" => match dest()? {
            Dest::File(dest) => OutputSpec::Local { dest },
            Dest::Stdout => bail!(
                "--output type=local needs a directory as dest= (use type=tar,dest=- for stdout)"
            ),
        },
        "cacheonly" => OutputSpec::CacheOnly,
        _ => OutputSpec::Tar { dest: dest()? },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<OutputSpec> {
        parse_output(spec, &["docker.io/library/app:1".to_string()])
    }

    #[test]
    fn outputs_as_buildkit_names_them() {
        match parse("type=image,name=a:1,b:2,push=true").unwrap() {
            OutputSpec::Image { names, push, .. } => {
                assert_eq!(names, ["docker.io/library/a:1", "docker.io/library/b:2"]);
                assert!(push);
            }
            other => panic!("{other:?}"),
        }
        match parse("type=registry").unwrap() {
            OutputSpec::Image {
                names,
                push,
                oci_mediatypes,
                ..
            } => {
                assert_eq!(names, ["docker.io/library/app:1"], "the -t names");
                assert!(push && !oci_mediatypes);
            }
            other => panic!("{other:?}"),
        }
        match parse("type=docker,dest=-,compression=zstd").unwrap() {
            OutputSpec::Archive {
                format,
                docker_media_types,
                dest,
                compression,
                ..
            } => {
                assert_eq!(format, ArchiveFormat::Docker);
                assert!(docker_media_types);
                assert_eq!(dest, Dest::Stdout);
                assert_eq!(compression.media_type, crate::store::layout::OCI_LAYER_ZSTD);
            }
            other => panic!("{other:?}"),
        }
        match parse("type=oci,dest=o.tar,oci-mediatypes=false").unwrap() {
            OutputSpec::Archive {
                format,
                docker_media_types,
                ..
            } => assert!(format == ArchiveFormat::Oci && docker_media_types),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse("out").unwrap(),
            OutputSpec::Local { dest: "out".into() }
        );
        assert_eq!(parse("-").unwrap(), OutputSpec::Tar { dest: Dest::Stdout });
        for (bad, message) in [
            ("type=zip,dest=x", "unknown --output type=zip"),
            ("type=oci", "needs dest="),
            ("type=local,dest=-", "needs a directory"),
            ("type=tar,dest=x,name=a", "does not take name="),
            ("type=oci,dest=x,compression=lz4", "unknown compression"),
            ("type=image,push=maybe", "invalid push="),
            ("dest=x", "has no type="),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(message), "{bad}: {e}");
        }
    }
}
