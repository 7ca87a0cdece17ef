//! `--annotation`, as buildx takes it: `KEY=VALUE` or `TYPE:KEY=VALUE`, where TYPE is
//! `manifest` (the default: every platform's manifest), `manifest[os/arch]` (one platform's),
//! `index` (the index of a multi-platform image or one with attestations),
//! `manifest-descriptor[os/arch]` (the manifests' entries in the index, or in an OCI
//! archive's `index.json` for a single manifest) or `index-descriptor` (the index's entry in an
//! OCI archive's `index.json`). A registry keeps no descriptor of what is pushed under a tag,
//! so a push carries the manifest descriptors inside its index only, as with BuildKit.

use anyhow::{Result, anyhow, bail};
use rbuild_frontend::Platform;
use rbuild_frontend::image::Image;
use std::collections::BTreeMap;

/// The annotations a build writes.
#[derive(Default)]
pub struct Annotations {
    /// For manifests: of one platform, or (`None`) of all.
    manifest: Vec<(Option<Platform>, String, String)>,
    /// For the index.
    pub index: BTreeMap<String, String>,
    /// For the manifests' descriptors: of one platform, or (`None`) of all.
    manifest_descriptor: Vec<(Option<Platform>, String, String)>,
    /// For the index's descriptor.
    pub index_descriptor: BTreeMap<String, String>,
}

impl Annotations {
    /// Parses the `--annotation` values.
    pub fn parse(specs: &[String]) -> Result<Annotations> {
        let mut out = Annotations::default();
        for spec in specs {
            let (target, pair) = match spec.split_once('=') {
                Some((left, _)) if left.contains(':') && !left.contains("://") => {
                    let (target, _) = left.split_once(':').expect("has a colon");
                    (Some(target), &spec[target.len() + 1..])
                }
                _ => (None, spec.as_str()),
            };
            let (key, value) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| anyhow!("invalid --annotation {spec:?}: expected KEY=VALUE"))?;
            let (kind, platform) = match target {
                None => ("manifest", None),
                Some(t) => match t.split_once('[') {
                    Some((kind, rest)) => {
                        let p = rest.strip_suffix(']').ok_or_else(|| {
                            anyhow!("invalid --annotation {spec:?}: unclosed [platform]")
                        })?;
                        let p = Platform::parse(p)
                            .map_err(|e| anyhow!("invalid --annotation {spec:?}: {e}"))?;
                        (kind, Some(p))
                    }
                    None => (t, None),
                },
            };
            if matches!(kind, "index" | "index-descriptor") && platform.is_some() {
                bail!("--annotation {spec:?}: {kind} annotations are for every platform");
            }
            match kind {
                "manifest" => out.manifest.push((platform, key.into(), value.into())),
                "index" => {
                    out.index.insert(key.into(), value.into());
                }
                "manifest-descriptor" => {
                    out.manifest_descriptor
                        .push((platform, key.into(), value.into()))
                }
                "index-descriptor" => {
                    out.index_descriptor.insert(key.into(), value.into());
                }
                other => bail!(
                    "--annotation {spec:?}: unknown type {other} (manifest, manifest[PLATFORM], \
                     index, manifest-descriptor[PLATFORM] or index-descriptor)"
                ),
            }
        }
        Ok(out)
    }

    /// The annotations of the manifest of `image` (its platform decides the platform ones).
    pub fn manifest_for(&self, image: &Image) -> BTreeMap<String, String> {
        for_platform(&self.manifest, image)
    }

    /// The annotations of the descriptor of `image`'s manifest.
    pub fn manifest_descriptor_for(&self, image: &Image) -> BTreeMap<String, String> {
        for_platform(&self.manifest_descriptor, image)
    }
}

/// The annotations of `list` that apply to `image`'s platform.
fn for_platform(
    list: &[(Option<Platform>, String, String)],
    image: &Image,
) -> BTreeMap<String, String> {
    let own = Platform::new(
        &image.os,
        &image.architecture,
        image.variant.as_deref().unwrap_or(""),
    );
    list.iter()
        .filter(|(p, _, _)| p.as_ref().is_none_or(|p| *p == own))
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_annotation_values() {
        let a = Annotations::parse(&[
            "org.opencontainers.image.title=app".into(),
            "index:org.opencontainers.image.version=1".into(),
            "manifest[linux/arm64]:only=arm".into(),
            "url=https://example.com/x".into(),
        ])
        .unwrap();
        assert_eq!(a.index["org.opencontainers.image.version"], "1");
        let amd = Image {
            os: "linux".into(),
            architecture: "amd64".into(),
            ..Image::default()
        };
        let m = a.manifest_for(&amd);
        assert_eq!(m["org.opencontainers.image.title"], "app");
        assert_eq!(m["url"], "https://example.com/x");
        assert!(!m.contains_key("only"));
        assert!(Annotations::parse(&["nokey".into()]).is_err());
        assert!(Annotations::parse(&["bogus:k=v".into()]).is_err());
        let d = Annotations::parse(&[
            "manifest-descriptor:d=all".into(),
            "manifest-descriptor[linux/arm64]:arm=yes".into(),
            "index-descriptor:i=1".into(),
        ])
        .unwrap();
        assert_eq!(d.manifest_descriptor_for(&amd).len(), 1);
        assert_eq!(d.index_descriptor["i"], "1");
        assert!(Annotations::parse(&["index-descriptor[linux/amd64]:k=v".into()]).is_err());
    }
}
