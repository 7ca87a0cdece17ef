//! `--annotation`, as buildx takes it: `KEY=VALUE` or `TYPE:KEY=VALUE`, where TYPE is
//! `manifest` (the default: every platform's manifest), `manifest[os/arch]` (one platform's)
//! or `index` (the index of a multi-platform image). Descriptor annotations
//! (`manifest-descriptor`, `index-descriptor`) are refused for now.

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
            match kind {
                "manifest" => out.manifest.push((platform, key.into(), value.into())),
                "index" => {
                    out.index.insert(key.into(), value.into());
                }
                "manifest-descriptor" | "index-descriptor" => {
                    bail!("--annotation {spec:?}: {kind} annotations are not supported yet")
                }
                other => bail!(
                    "--annotation {spec:?}: unknown type {other} (manifest, manifest[PLATFORM] \
                     or index)"
                ),
            }
        }
        Ok(out)
    }

    /// The annotations of the manifest of `image` (its platform decides the platform ones).
    pub fn manifest_for(&self, image: &Image) -> BTreeMap<String, String> {
        let own = Platform::new(
            &image.os,
            &image.architecture,
            image.variant.as_deref().unwrap_or(""),
        );
        self.manifest
            .iter()
            .filter(|(p, _, _)| p.as_ref().is_none_or(|p| *p == own))
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect()
    }
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
    }
}
