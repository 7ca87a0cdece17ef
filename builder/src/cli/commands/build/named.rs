//! `--build-context NAME=VALUE`, as buildx takes it: a directory, `docker-image://REF`,
//! `oci-layout://PATH[:TAG|@DIGEST]`, an `https://` tarball or a git URL. Lowering sees each
//! as an [`NamedContext`]: directories (fetched ones included) become local sources the worker
//! knows by name; an OCI layout's image is copied into the local store and named by digest, as
//! BuildKit names it (`NAME@sha256:…`).

use super::context;
use crate::store::layout::Index;
use crate::store::state::State;
use anyhow::{Context as _, Result, anyhow, bail};
use rbuild_frontend::Platform;
use rbuild_frontend::convert::{NamedContext, context_key};
use rbuild_solver::Digest;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The named contexts of a build and what keeps them.
#[derive(Default)]
pub struct NamedContexts {
    /// For lowering, by [`context_key`].
    pub contexts: BTreeMap<String, NamedContext>,
    /// For the worker: local source name → directory.
    pub dirs: HashMap<String, PathBuf>,
    /// Fetched contexts, removed at the end of the build.
    _fetched: Vec<context::Source>,
}

/// The `NAME=VALUE` pairs, before anything is read (so bad ones fail before the build
/// starts).
pub fn split(specs: &[String]) -> Result<Vec<(String, String)>> {
    specs
        .iter()
        .map(|spec| {
            let (name, value) = spec
                .split_once('=')
                .filter(|(n, v)| !n.is_empty() && !v.is_empty())
                .ok_or_else(|| anyhow!("invalid --build-context {spec:?}: expected NAME=VALUE"))?;
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

/// Reads every `--build-context`; `platform` chooses an OCI layout's image of several.
pub fn load(specs: &[String], state: &State, platform: &Platform) -> Result<NamedContexts> {
    let mut out = NamedContexts::default();
    for (name, value) in split(specs)? {
        let key = context_key(&name);
        let context = if let Some(reference) = value.strip_prefix("docker-image://") {
            NamedContext::Image(reference.to_string())
        } else if let Some(layout) = value.strip_prefix("oci-layout://") {
            let digest = import_layout(state, layout, platform)
                .with_context(|| format!("--build-context {name}={value}"))?;
            NamedContext::Image(format!("{key}@{digest}"))
        } else {
            let remote = value.starts_with("http://")
                || value.starts_with("https://")
                || context::git_url(&value).is_some();
            let dir = if remote {
                let fetched = context::resolve(Path::new(&value), None)
                    .with_context(|| format!("--build-context {name}={value}"))?;
                let dir = fetched.context.clone();
                out._fetched.push(fetched);
                dir
            } else {
                let dir = PathBuf::from(&value);
                let dir = dir.canonicalize().with_context(|| {
                    format!("--build-context {name}={value}: no such directory")
                })?;
                if !dir.is_dir() {
                    bail!("--build-context {name}={value}: not a directory");
                }
                dir
            };
            let exclude = match std::fs::read_to_string(dir.join(".dockerignore")) {
                Ok(text) => rbuild_frontend::dockerignore::parse(&text),
                Err(_) => vec![],
            };
            let local = format!("named:{key}");
            out.dirs.insert(local.clone(), dir);
            NamedContext::Local { local, exclude }
        };
        out.contexts.insert(key, context);
    }
    Ok(out)
}

/// `PATH[:TAG]` or `PATH@DIGEST` of an OCI layout.
fn layout_reference(spec: &str) -> (&str, Option<&str>, Option<&str>) {
    if let Some((path, digest)) = spec.rsplit_once('@') {
        return (path, None, Some(digest));
    }
    match spec.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') && !path.is_empty() => (path, Some(tag), None),
        _ => (spec, None, None),
    }
}

/// Copies the image that `spec` names in an OCI layout into the local store (its index or
/// manifest, the manifest for `platform`, its config and layers); returns the digest the
/// layout names it by.
fn import_layout(state: &State, spec: &str, platform: &Platform) -> Result<Digest> {
    use crate::store::lazy::fetch_from_layout;
    let (path, tag, digest) = layout_reference(spec);
    let dir = Path::new(path);
    let index_path = dir.join("index.json");
    let index: Index = serde_json::from_slice(
        &std::fs::read(&index_path)
            .with_context(|| format!("reading {} (an OCI layout?)", index_path.display()))?,
    )
    .with_context(|| format!("parsing {}", index_path.display()))?;
    fn ref_name(d: &crate::store::layout::Descriptor) -> Option<&str> {
        d.annotations
            .get(crate::store::layout::REF_NAME)
            .map(String::as_str)
    }
    let wanted = tag.unwrap_or("latest");
    let entry = match digest {
        Some(d) => index.manifests.iter().find(|e| e.digest.as_str() == d),
        None => index
            .manifests
            .iter()
            .find(|e| ref_name(e) == Some(wanted))
            .or_else(|| (tag.is_none() && index.manifests.len() == 1).then(|| &index.manifests[0])),
    }
    .ok_or_else(|| {
        let names: Vec<&str> = index.manifests.iter().filter_map(ref_name).collect();
        anyhow!(
            "{} has no image {} (it has: {})",
            dir.display(),
            digest.unwrap_or(wanted),
            if names.is_empty() {
                "no tags".to_string()
            } else {
                names.join(", ")
            }
        )
    })?;
    let store = &state.store;
    fetch_from_layout(store, dir, &entry.digest)?;
    // An index: its manifests (small) so the platform can be chosen, then that one's blobs.
    if let Ok(inner) = serde_json::from_slice::<Index>(&store.read_blob(&entry.digest)?) {
        for m in &inner.manifests {
            if dir.join("blobs/sha256").join(m.digest.hex()).is_file() {
                fetch_from_layout(store, dir, &m.digest)?;
            }
        }
    }
    let chosen = store
        .manifest_for(&entry.digest, platform)?
        .ok_or_else(|| anyhow!("{} has no {platform} image", dir.display()))?;
    let manifest = store.manifest(&chosen)?;
    fetch_from_layout(store, dir, &manifest.config.digest)?;
    for layer in &manifest.layers {
        fetch_from_layout(store, dir, &layer.digest)?;
    }
    Ok(entry.digest.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_layout_references() {
        assert_eq!(
            split(&["base=docker-image://alpine:3".into()]).unwrap(),
            [("base".to_string(), "docker-image://alpine:3".to_string())]
        );
        assert!(split(&["nameonly".into()]).is_err() && split(&["=x".into()]).is_err());
        assert_eq!(layout_reference("/l/dir:v1"), ("/l/dir", Some("v1"), None));
        assert_eq!(layout_reference("/l/dir"), ("/l/dir", None, None));
        assert_eq!(
            layout_reference("/l/dir@sha256:ab"),
            ("/l/dir", None, Some("sha256:ab"))
        );
    }
}
