//! Talking to registries with oci-client: resolving and pulling images, pushing them.
//!
//! Registries on the loopback interface are spoken to over plain HTTP, as Docker allows for
//! them; every other registry over HTTPS. Authentication is anonymous for now.

use crate::reference::is_loopback;
use crate::store::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, Index, Manifest, OCI_INDEX, OCI_MANIFEST,
    Store,
};
use anyhow::{Context, Result, anyhow, bail};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use rbuild_solver::Digest;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const ACCEPTED: &[&str] = &[
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
];

/// A file being downloaded to, reporting how much was written.
struct CountingWriter<'a> {
    inner: tokio::fs::File,
    written: u64,
    last_report: std::time::Instant,
    progress: &'a (dyn Fn(u64, bool) + Sync),
}

impl tokio::io::AsyncWrite for CountingWriter<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let poll = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            this.written += *n as u64;
            if this.last_report.elapsed() >= Duration::from_millis(200) {
                this.last_report = std::time::Instant::now();
                (this.progress)(this.written, false);
            }
        }
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Registry clients, one per registry host.
#[derive(Default)]
pub struct Registry {
    clients: Mutex<HashMap<String, Client>>,
}

/// An error with its causes, `outer: inner: root cause` (reqwest hides "connection refused" in
/// its sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

fn describe(r: &Reference) -> String {
    format!("{} (registry {})", r.whole(), r.resolve_registry())
}

impl Registry {
    fn client(&self, registry: &str) -> Client {
        let mut clients = self.clients.lock().expect("registry clients");
        clients
            .entry(registry.to_string())
            .or_insert_with(|| {
                let protocol = if is_loopback(registry) {
                    ClientProtocol::Http
                } else {
                    ClientProtocol::Https
                };
                Client::new(ClientConfig {
                    protocol,
                    connect_timeout: Some(Duration::from_secs(15)),
                    read_timeout: Some(Duration::from_secs(120)),
                    ..ClientConfig::default()
                })
            })
            .clone()
    }

    /// Finds the linux/amd64 image of `r`, stores its manifest and config blobs in `store`, and
    /// returns the manifest's digest.
    pub async fn resolve(&self, r: &Reference, store: &Store) -> Result<Digest> {
        let client = self.client(r.resolve_registry());
        let auth = RegistryAuth::Anonymous;
        let (bytes, digest) = client
            .pull_manifest_raw(r, &auth, ACCEPTED)
            .await
            .map_err(|e| anyhow!("failed to resolve {}: {}", describe(r), chain(&e)))?;
        let mut bytes = bytes.to_vec();
        let mut digest = Digest::parse(&digest).unwrap_or_else(|| Digest::of(&bytes));
        let mut media_type = media_type_of(&bytes);
        if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST {
            let index: Index = serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing the manifest list of {}", r.whole()))?;
            let chosen = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .ok_or_else(|| {
                    let available: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|m| m.platform.as_ref())
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                        .collect();
                    anyhow!(
                        "{} has no linux/amd64 image (it has: {})",
                        r.whole(),
                        available.join(", ")
                    )
                })?;
            let by_digest = Reference::with_digest(
                r.registry().to_string(),
                r.repository().to_string(),
                chosen.digest.to_string(),
            );
            let (b, d) = client
                .pull_manifest_raw(&by_digest, &auth, ACCEPTED)
                .await
                .map_err(|e| {
                    anyhow!(
                        "failed to fetch the linux/amd64 manifest of {}: {}",
                        describe(r),
                        chain(&e)
                    )
                })?;
            bytes = b.to_vec();
            digest = Digest::parse(&d).unwrap_or_else(|| Digest::of(&bytes));
            media_type = media_type_of(&bytes);
        }
        if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
            bail!(
                "{} has an unsupported manifest type {media_type:?}",
                r.whole()
            );
        }
        let (stored, _) = store.write_blob(&bytes)?;
        if stored != digest {
            bail!(
                "the manifest of {} does not match its digest {digest}",
                r.whole()
            );
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing the manifest of {}", r.whole()))?;
        if !store.has_blob(&manifest.config.digest) {
            let mut config = Vec::new();
            client
                .pull_blob(r, &oci_descriptor(&manifest.config), &mut config)
                .await
                .map_err(|e| {
                    anyhow!(
                        "failed to fetch the config of {}: {}",
                        describe(r),
                        chain(&e)
                    )
                })?;
            let (d, _) = store.write_blob(&config)?;
            if d != manifest.config.digest {
                bail!("the config of {} does not match its digest", r.whole());
            }
        }
        Ok(digest)
    }

    /// Downloads a blob of image `r` into the store (verifying its digest). `progress` hears
    /// the bytes written so far, a few times a second, and once more (`true`) at the end.
    pub async fn pull_blob(
        &self,
        r: &Reference,
        blob: &Descriptor,
        store: &Store,
        progress: &(dyn Fn(u64, bool) + Sync),
    ) -> Result<()> {
        if store.has_blob(&blob.digest) {
            return Ok(());
        }
        let client = self.client(r.resolve_registry());
        let path = store.ingest_path();
        let file = tokio::fs::File::create(&path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        let mut counting = CountingWriter {
            inner: file,
            written: 0,
            last_report: std::time::Instant::now(),
            progress,
        };
        let result = client
            .pull_blob(r, &oci_descriptor(blob), &mut counting)
            .await;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&path);
            return Err(anyhow!(
                "failed to pull layer {} of {}: {}",
                blob.digest,
                describe(r),
                chain(&e)
            ));
        }
        let written = counting.written;
        use tokio::io::AsyncWriteExt;
        counting.inner.flush().await?;
        drop(counting);
        store.commit_file(&path, &blob.digest)?;
        progress(written, true);
        Ok(())
    }

    /// Pushes the blobs and manifest of an image to `r`; returns the manifest digest. `report`
    /// hears a line per blob: pushed (bytes, rate) or already there.
    pub async fn push(
        &self,
        r: &Reference,
        store: &Store,
        blobs: &[Descriptor],
        manifest: &[u8],
        media_type: &str,
        report: &(dyn Fn(String) + Sync),
    ) -> Result<Digest> {
        let client = self.client(r.resolve_registry());
        let auth = RegistryAuth::Anonymous;
        client
            .store_auth_if_needed(r.resolve_registry(), &auth)
            .await;
        for blob in blobs {
            let exists = client
                .blob_exists(r, blob.digest.as_str())
                .await
                .map_err(|e| anyhow!("failed to push to {}: {}", describe(r), chain(&e)))?;
            if exists {
                report(format!("{}: layer already exists", blob.digest));
                continue;
            }
            let started = std::time::Instant::now();
            let data = store.read_blob(&blob.digest)?;
            client
                .push_blob(r, data, blob.digest.as_str())
                .await
                .map_err(|e| {
                    anyhow!(
                        "failed to push blob {} to {}: {}",
                        blob.digest,
                        describe(r),
                        chain(&e)
                    )
                })?;
            report(format!(
                "{} pushed",
                crate::progress::transfer_line(
                    blob.digest.as_str(),
                    blob.size,
                    None,
                    started.elapsed()
                )
            ));
        }
        let content_type = media_type.parse().context("manifest media type")?;
        client
            .push_manifest_raw(r, manifest.to_vec(), content_type)
            .await
            .map_err(|e| {
                anyhow!(
                    "failed to push the manifest to {}: {}",
                    describe(r),
                    chain(&e)
                )
            })?;
        Ok(Digest::of(manifest))
    }
}

fn media_type_of(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => OCI_INDEX.into(),
        _ => OCI_MANIFEST.into(),
    }
}

fn oci_descriptor(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size as i64,
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}
