//! Reading what a registry holds without storing it: the raw manifest or index a reference
//! names, and small blobs (configs, attestations) in memory, for `rbuild imagetools`.

use super::{ACCEPTED, Error, Registry, Result, oci_descriptor, with_retries};
use crate::store::layout::Descriptor;
use oci_client::Reference;
use rbuild_solver::Digest;

/// The most a blob read into memory may hold.
const MOST_IN_MEMORY: u64 = 64 << 20;

impl Registry {
    /// The raw manifest or index `r` names (any of the media types rbuild reads), and its
    /// digest.
    pub async fn manifest_raw(&self, r: &Reference) -> Result<(Vec<u8>, Digest)> {
        let client = self.client(r.resolve_registry()).await?;
        let auth = self.auth(r.resolve_registry())?;
        let wait = Some((r.resolve_registry(), self.options.timeout));
        let (bytes, digest) = with_retries("the manifest", wait, || async {
            client
                .pull_manifest_raw(r, &auth, ACCEPTED)
                .await
                .map_err(|e| self.request_error(r, "failed to resolve", &e))
        })
        .await?;
        let bytes = bytes.to_vec();
        let digest = Digest::parse(&digest).unwrap_or_else(|| Digest::of(&bytes));
        if r.digest().is_some_and(|d| d != digest.as_str()) || Digest::of(&bytes) != digest {
            return Err(Error::Answer(format!(
                "the manifest of {} does not match its digest {digest}",
                r.whole()
            )));
        }
        Ok((bytes, digest))
    }

    /// A small blob of `r`'s repository (read after a manifest of it), checked against its
    /// digest.
    pub async fn blob_bytes(&self, r: &Reference, blob: &Descriptor) -> Result<Vec<u8>> {
        if blob.size > MOST_IN_MEMORY {
            return Err(Error::Answer(format!(
                "blob {} of {} is too large to read ({} bytes)",
                blob.digest,
                r.whole(),
                blob.size
            )));
        }
        let client = self.client(r.resolve_registry()).await?;
        let wait = Some((r.resolve_registry(), self.options.timeout));
        let bytes = with_retries(blob.digest.as_str(), wait, || async {
            let mut out = Vec::new();
            client
                .pull_blob(r, &oci_descriptor(blob), &mut out)
                .await
                .map_err(|e| self.request_error(r, "failed to fetch a blob of", &e))?;
            Ok(out)
        })
        .await?;
        if Digest::of(&bytes) != blob.digest {
            return Err(Error::Answer(format!(
                "blob {} of {} does not match its digest",
                blob.digest,
                r.whole()
            )));
        }
        Ok(bytes)
    }
}
