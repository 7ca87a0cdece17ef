//! The local image store: an OCI image layout (`content/` of the state directory).
//!
//! Blobs are content-addressed files, written to `ingest/` and renamed into `blobs/sha256/`
//! once complete and fsynced, so a blob that exists is whole. Tags are the manifests of
//! `index.json`, named by the `org.opencontainers.image.ref.name` annotation holding the full
//! normalized reference (`docker.io/library/hello:1.0`); `index.json` is replaced atomically,
//! and changed under `index.lock` (processes share the store).

use crate::store::{Context, Result};
use rbuild_solver::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer media type.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI uncompressed layer media type.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The annotation naming a manifest in an index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The annotation of an `index.json` entry that keeps a build's untagged image (Docker's
/// `<none>` image), usable by id until `rbuild rmi` removes it.
pub const UNTAGGED: &str = "io.rbuild.untagged";

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the blob.
    pub media_type: String,
    /// Digest of the blob.
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Platform, for manifests in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A platform of an index entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    /// `os/arch[/variant]`, as the descriptor has it (not normalized).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match self.variant.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

impl Platform {
    /// As the frontend spells and compares platforms.
    pub fn to_platform(&self) -> rbuild_frontend::Platform {
        rbuild_frontend::Platform::new(
            &self.os,
            &self.architecture,
            self.variant.as_deref().unwrap_or(""),
        )
    }
}

/// The entry of a multi-platform index for `platform`: the first that is for it.
pub fn entry_for<'a>(
    index: &'a Index,
    platform: &rbuild_frontend::Platform,
) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| platform.matches(&p.os, &p.architecture, p.variant.as_deref()))
    })
}

/// An image manifest (OCI or Docker schema 2: the fields are the same).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
    /// Annotations (`--annotation manifest:KEY=VALUE`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index or Docker manifest list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Annotations (`--annotation index:KEY=VALUE`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Whether an `index.json` entry keeps an untagged image.
pub fn is_untagged(entry: &Descriptor) -> bool {
    entry.annotations.contains_key(UNTAGGED) && !entry.annotations.contains_key(REF_NAME)
}

/// The local store.
pub struct Store {
    root: PathBuf,
}

/// A blob being written; [`Ingest::commit`] moves it into place.
pub struct Ingest {
    file: std::fs::File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    blobs: PathBuf,
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Ingest {
    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// Finishes the blob: fsync, verify against `expected` if given, rename into place.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        self.file.flush()?;
        self.file.sync_all()?;
        let digest = self.digest();
        if let Some(expected) = expected
            && *expected != digest
        {
            let _ = std::fs::remove_file(&self.path);
            return Err(crate::store::Error::Mismatch {
                expected: expected.clone(),
                got: digest,
            });
        }
        let target = self.blobs.join(digest.hex());
        std::fs::rename(&self.path, &target)
            .with_context(|| format!("storing blob {}", target.display()))?;
        Ok((digest, self.size))
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // After a commit the file is gone and this fails quietly.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", rbuild_runner::snapshot::unique_name()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the layout at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        std::fs::create_dir_all(root.join("blobs/sha256"))
            .with_context(|| format!("creating {}", root.display()))?;
        std::fs::create_dir_all(root.join("ingest"))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let store = Store {
            root: root.to_path_buf(),
        };
        let _lock = store.lock_index()?;
        if !root.join("index.json").exists() {
            store.write_index(&Index {
                schema_version: 2,
                media_type: Some(OCI_INDEX.into()),
                manifests: vec![],
                annotations: BTreeMap::new(),
            })?;
        }
        Ok(store)
    }

    /// Removes unfinished blobs of interrupted processes. Only call this while no other
    /// process uses the store (holding the state directory's lock alone).
    pub fn clean_ingest(&self) -> Result<()> {
        let ingest = self.root.join("ingest");
        std::fs::remove_dir_all(&ingest)?;
        std::fs::create_dir_all(&ingest)?;
        Ok(())
    }

    /// The path of a blob.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a whole blob.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        std::fs::read(self.blob_path(digest)).with_context(|| format!("reading blob {digest}"))
    }

    /// Stores a blob given in memory.
    pub fn write_blob(&self, data: &[u8]) -> Result<(Digest, u64)> {
        let digest = Digest::of(data);
        if !self.has_blob(&digest) {
            let mut ingest = self.ingest()?;
            ingest.write_all(data)?;
            ingest.commit(Some(&digest))?;
        }
        Ok((digest, data.len() as u64))
    }

    /// Starts writing a blob.
    pub fn ingest(&self) -> Result<Ingest> {
        let path = self
            .root
            .join("ingest")
            .join(rbuild_runner::snapshot::unique_name());
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Ingest {
            file,
            path,
            hasher: Sha256::new(),
            size: 0,
            blobs: self.root.join("blobs/sha256"),
        })
    }

    /// A fresh path under `ingest/` for a blob written by other means (a download).
    pub fn ingest_path(&self) -> PathBuf {
        self.root
            .join("ingest")
            .join(rbuild_runner::snapshot::unique_name())
    }

    /// Moves a finished file from [`Store::ingest_path`] into place after checking its digest.
    pub fn commit_file(&self, path: &Path, expected: &Digest) -> Result<()> {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        file.sync_all()?;
        let digest = Digest::from_hasher(hasher);
        if digest != *expected {
            let _ = std::fs::remove_file(path);
            return Err(crate::store::Error::Mismatch {
                expected: expected.clone(),
                got: digest,
            });
        }
        std::fs::rename(path, self.blob_path(expected))
            .with_context(|| format!("storing blob {expected}"))
    }

    /// The tag list.
    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))
    }

    /// Serializes changes of `index.json` between processes sharing the store (each reads,
    /// changes and replaces it).
    fn lock_index(&self) -> Result<nix::fcntl::Flock<std::fs::File>> {
        crate::store::lock::lock_exclusive(&self.root.join("index.lock"))
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        write_atomic(
            &self.root.join("index.json"),
            &serde_json::to_vec(index).context("encoding index.json")?,
        )
    }

    /// The manifest tagged `name` (a full normalized reference).
    pub fn lookup(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(name)))
    }

    /// Tags `descriptor` as `name`, replacing a previous image of that name.
    pub fn tag(&self, name: &str, descriptor: &Descriptor) -> Result<()> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        let tagged = |d: &Descriptor| d.annotations.get(REF_NAME).map(String::as_str) == Some(name);
        if index
            .manifests
            .iter()
            .any(|d| tagged(d) && d.digest == descriptor.digest)
        {
            // Already so (a rebuild that changed nothing): no rewrite, no fsync.
            return Ok(());
        }
        // A name replaces the image's untagged entry.
        index
            .manifests
            .retain(|d| !(tagged(d) || d.digest == descriptor.digest && is_untagged(d)));
        let mut entry = descriptor.clone();
        entry.platform = None;
        entry.annotations = BTreeMap::from([(REF_NAME.to_string(), name.to_string())]);
        index.manifests.push(entry);
        index.manifests.sort_by(|a, b| {
            a.annotations
                .get(REF_NAME)
                .cmp(&b.annotations.get(REF_NAME))
        });
        self.write_index(&index)
    }

    /// Keeps `descriptor` as an untagged image (a build without `-t`), unless the image is
    /// kept already, tagged or not.
    pub fn keep_untagged(&self, descriptor: &Descriptor) -> Result<()> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        if index
            .manifests
            .iter()
            .any(|d| d.digest == descriptor.digest)
        {
            return Ok(());
        }
        let mut entry = descriptor.clone();
        entry.platform = None;
        entry.annotations = BTreeMap::from([(UNTAGGED.to_string(), "true".to_string())]);
        index.manifests.push(entry);
        self.write_index(&index)
    }

    /// Removes the untagged image `digest` (its data stays, as build cache, until pruned).
    pub fn remove_untagged(&self, digest: &Digest) -> Result<()> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        index
            .manifests
            .retain(|d| !(d.digest == *digest && is_untagged(d)));
        self.write_index(&index)
    }

    /// Removes the name `name` (the image's data stays, as build cache, until pruned).
    pub fn untag(&self, name: &str) -> Result<()> {
        let _lock = self.lock_index()?;
        let mut index = self.index()?;
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(name));
        self.write_index(&index)
    }

    /// Reads and parses a manifest blob.
    pub fn manifest(&self, digest: &Digest) -> Result<Manifest> {
        let data = self.read_blob(digest)?;
        serde_json::from_slice(&data).with_context(|| format!("parsing manifest {digest}"))
    }

    /// The manifest a stored manifest or index blob gives for `platform`: the blob itself if it
    /// is a manifest; of an index (nested ones too), the entry for the platform, or else one
    /// that names no platform. `None` when the index has no such entry stored here.
    pub fn manifest_for(
        &self,
        digest: &Digest,
        platform: &rbuild_frontend::Platform,
    ) -> Result<Option<Digest>> {
        let data = self.read_blob(digest)?;
        #[derive(Deserialize)]
        struct Kind {
            manifests: Option<serde::de::IgnoredAny>,
        }
        let kind: Kind =
            serde_json::from_slice(&data).with_context(|| format!("parsing blob {digest}"))?;
        if kind.manifests.is_none() {
            return Ok(Some(digest.clone()));
        }
        let index: Index =
            serde_json::from_slice(&data).with_context(|| format!("parsing index {digest}"))?;
        let entry = entry_for(&index, platform)
            .or_else(|| index.manifests.iter().find(|d| d.platform.is_none()));
        match entry {
            Some(entry) if self.has_blob(&entry.digest) => {
                self.manifest_for(&entry.digest, platform)
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_for_a_platform_is_the_first_that_matches() {
        let entry = |arch: &str, variant: Option<&str>, n: u8| Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: rbuild_solver::Digest::of(&[n]),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(String::from),
            }),
            annotations: BTreeMap::new(),
        };
        let index = Index {
            schema_version: 2,
            manifests: vec![
                entry("amd64", None, 1),
                entry("arm", Some("v6"), 2),
                entry("arm", Some("v7"), 3),
                entry("arm64", Some("v8"), 4),
                entry("amd64", None, 5),
            ],
            ..Index::default()
        };
        let pick = |p: &str| {
            let p = rbuild_frontend::Platform::parse(p).unwrap();
            entry_for(&index, &p).map(|d| d.digest.clone())
        };
        let digest = |n: u8| Some(rbuild_solver::Digest::of(&[n]));
        assert_eq!(pick("linux/amd64"), digest(1), "the first of two");
        assert_eq!(pick("linux/arm/v7"), digest(3));
        assert_eq!(
            pick("linux/arm"),
            digest(3),
            "linux/arm means v7, as containerd says"
        );
        assert_eq!(pick("linux/arm64"), digest(4), "arm64 matches its v8 entry");
        assert_eq!(pick("linux/s390x"), None);
    }

    #[test]
    fn blobs_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (digest, size) = store.write_blob(b"hello").unwrap();
        assert_eq!(size, 5);
        assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
        let mut ingest = store.ingest().unwrap();
        ingest.write_all(b"hel").unwrap();
        assert!(
            ingest.commit(Some(&digest)).is_err(),
            "a wrong digest is refused"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );

        let d = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.clone(),
            size,
            platform: None,
            annotations: BTreeMap::new(),
        };
        store.tag("docker.io/library/a:1", &d).unwrap();
        store.tag("docker.io/library/a:1", &d).unwrap();
        store.tag("docker.io/library/b:1", &d).unwrap();
        assert_eq!(store.index().unwrap().manifests.len(), 2);
        assert_eq!(
            store
                .lookup("docker.io/library/a:1")
                .unwrap()
                .unwrap()
                .digest,
            digest
        );
        assert!(store.lookup("docker.io/library/c:1").unwrap().is_none());
        // The layout is readable by other tools: oci-layout and index.json are there.
        assert!(dir.path().join("oci-layout").is_file());
    }
}
