//! Talking to registries with oci-client: resolving and pulling images, pushing them.
//!
//! Registries are reached over HTTPS (trusting `--registry-ca` certificates besides the
//! system's), except those named by `--insecure-registry` and loopback registries that do not
//! speak TLS, which get plain HTTP as Docker allows. Credentials come from Docker's client
//! configuration (see `crate::registry::auth`); oci-client does the basic and bearer-token flows.

pub mod auth;
pub mod reference;
mod remote;
pub mod resolver;
pub mod sources;

use crate::registry::reference::is_loopback;
use crate::store::layout::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, Index, Manifest, OCI_INDEX, OCI_MANIFEST,
    Store,
};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use rbuild_frontend::Platform;
use rbuild_solver::Digest;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request failed: what rbuild was doing, and the error with its causes and, where it
    /// helps, what to do about it (`Registry::why`).
    #[error("{action}: {detail}")]
    Request {
        /// What rbuild was doing, and with which image (`failed to resolve a:1 (registry …)`).
        action: String,
        /// The error, its causes and the advice.
        detail: String,
        /// What kind of failure it was, which decides whether it is tried again.
        failure: Failure,
    },
    /// The registry answered, but not with something rbuild can use (an unsupported or
    /// unparsable manifest, content that does not match its digest, no image for the
    /// platform).
    #[error("{0}")]
    Answer(String),
    /// Something on this machine failed: reading `--registry-ca` files or credentials, or
    /// writing what was fetched to the store.
    #[error("{what}")]
    Local {
        /// What rbuild was doing.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Whether the registry said that the image (its repository, or the tag) does not exist.
fn not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match e {
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, C::ManifestUnknown | C::NameUnknown)),
        E::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}

/// The kind of a failed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Credentials wanted or refused (401, 403, `UNAUTHORIZED`, `DENIED`).
    Refused,
    /// Nothing there (404, `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, `NAME_UNKNOWN`).
    NotFound,
    /// The registry did not answer within `--registry-timeout`: waiting as long again would
    /// only double the wait.
    Timeout,
    /// The registry sent content that does not match its digest.
    Mismatch,
    /// Anything else (a dropped connection, a 5xx): worth trying again.
    Transient,
}

impl Error {
    fn local(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        Error::Local {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Whether the request is worth making again (see [`Failure::Transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Request {
                failure: Failure::Transient,
                ..
            }
        )
    }
}

/// A registry operation's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure `e` is, from oci-client's error (its variant, the HTTP status, the
/// registry's error codes), not from its text.
fn failure_of(e: &oci_client::errors::OciDistributionError) -> Failure {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as Code};
    let by_status = |code: u16| match code {
        401 | 403 => Failure::Refused,
        404 => Failure::NotFound,
        _ => Failure::Transient,
    };
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => Failure::Refused,
        E::ImageManifestNotFoundError(_) => Failure::NotFound,
        E::DigestError(_) => Failure::Mismatch,
        E::ServerError { code, .. } => by_status(*code),
        E::RegistryError { envelope, .. } => {
            let codes: Vec<&Code> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, Code::Unauthorized | Code::Denied))
            {
                Failure::Refused
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    Code::ManifestUnknown
                        | Code::BlobUnknown
                        | Code::NameUnknown
                        | Code::NotFound
                        | Code::ManifestBlobUnknown
                )
            }) {
                Failure::NotFound
            } else {
                Failure::Transient
            }
        }
        E::RequestError(e) if e.is_timeout() => Failure::Timeout,
        E::RequestError(e) => e
            .status()
            .map_or(Failure::Transient, |s| by_status(s.as_u16())),
        _ => Failure::Transient,
    }
}

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

/// How to reach registries: extra CA certificates (`--registry-ca`), registries spoken to
/// over plain HTTP (`--insecure-registry`) and how long to wait for them
/// (`--registry-timeout`).
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// PEM files of CA certificates to trust besides the system's.
    pub ca_files: Vec<std::path::PathBuf>,
    /// Registries (host[:port]) to use plain HTTP with.
    pub insecure: Vec<String>,
    /// How long a registry may take to connect, to answer a request, or between two reads
    /// of a body.
    pub timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            ca_files: Vec::new(),
            insecure: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Registry clients, one per registry host, with their credentials.
#[derive(Default)]
pub struct Registry {
    options: RegistryOptions,
    clients: Mutex<HashMap<String, Client>>,
    auths: Mutex<HashMap<String, RegistryAuth>>,
}

/// The system's CA certificates (DER), read once per process: what rustls-platform-verifier
/// loads, on Linux, for every reqwest client built without `tls_certs_only` (the whole of
/// `/etc/ssl/certs`, ~30 ms on this machine's Debian; a build used to read it three times
/// before its first request). `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured as there.
fn system_roots() -> &'static [Vec<u8>] {
    static ROOTS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .map(|cert| cert.to_vec())
            .collect()
    })
}

fn describe(r: &Reference) -> String {
    format!("{} (registry {})", r.whole(), r.resolve_registry())
}

impl Registry {
    /// Clients for registries reached as `options` says.
    pub fn new(options: RegistryOptions) -> Registry {
        Registry {
            options,
            ..Registry::default()
        }
    }

    /// The extra CA certificates, read.
    fn certificates(&self) -> Result<Vec<Vec<u8>>> {
        self.options
            .ca_files
            .iter()
            .map(|p| {
                std::fs::read(p)
                    .map_err(|e| Error::local(format!("reading --registry-ca {}", p.display()), e))
            })
            .collect()
    }

    /// Whether `registry` is reached over HTTPS: always, except registries named by
    /// `--insecure-registry`, and loopback registries that do not speak TLS (Docker tries
    /// HTTPS first for those too).
    async fn uses_https(&self, registry: &str) -> Result<bool> {
        if self.options.insecure.iter().any(|h| h == registry) {
            return Ok(false);
        }
        if !is_loopback(registry) {
            return Ok(true);
        }
        let probe = self
            .probe_client()?
            .get(format!("https://{registry}/v2/"))
            .send()
            .await;
        Ok(match probe {
            Ok(_) => true,
            // A server that takes the connection and never answers would stall the plain
            // HTTP attempt too: say so now.
            Err(e) if e.is_timeout() => {
                return Err(Error::Request {
                    action: format!("{registry} accepted a connection"),
                    detail: format!(
                        "it did not answer within {} s (--registry-timeout sets how long to \
                         wait)",
                        self.options.timeout.as_secs()
                    ),
                    failure: Failure::Timeout,
                });
            }
            // A TLS server whose certificate is not trusted: HTTPS, so that the error says so.
            Err(e) => {
                let text = crate::errors::chain(&e).to_lowercase();
                text.contains("certificate") || text.contains("unknownissuer")
            }
        })
    }

    /// A reqwest client trusting the system's CAs and the extra ones (for login checks).
    fn http_client(&self) -> Result<reqwest::Client> {
        let mut roots = Vec::new();
        for pem in self.certificates()? {
            roots.extend(
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| Error::local("reading a --registry-ca certificate", e))?,
            );
        }
        for der in system_roots() {
            if let Ok(cert) = reqwest::Certificate::from_der(der) {
                roots.push(cert);
            }
        }
        self.reqwest_client(roots)
    }

    /// A reqwest client that trusts no certificate: enough to tell whether a loopback
    /// registry speaks TLS at all (an untrusted certificate says it does), without the cost of
    /// the system's CAs.
    fn probe_client(&self) -> Result<reqwest::Client> {
        self.reqwest_client(Vec::new())
    }

    /// A reqwest client trusting exactly `roots`, with the registry timeouts.
    fn reqwest_client(&self, roots: Vec<reqwest::Certificate>) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(self.options.timeout)
            .timeout(self.options.timeout)
            .tls_certs_only(roots)
            .build()
            .map_err(|e| Error::local("making an HTTP client", e))
    }

    async fn client(&self, registry: &str) -> Result<Client> {
        if let Some(client) = self.clients.lock().expect("registry clients").get(registry) {
            return Ok(client.clone());
        }
        let protocol = if self.uses_https(registry).await? {
            ClientProtocol::Https
        } else {
            ClientProtocol::Http
        };
        let extra_root_certificates = self
            .certificates()?
            .into_iter()
            .map(|data| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data,
            })
            .collect();
        let system = system_roots()
            .iter()
            .map(|der| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Der,
                data: der.clone(),
            });
        let client = Client::new(ClientConfig {
            protocol,
            // The system's CAs, read once per process (left to reqwest, every client would
            // read them again).
            tls_certs_only: system.collect(),
            extra_root_certificates,
            // One streamed PUT per blob, as Docker and Buildah push.
            use_monolithic_push: true,
            connect_timeout: Some(self.options.timeout),
            read_timeout: Some(self.options.timeout),
            ..ClientConfig::default()
        });
        let auth = self.auth(registry)?;
        client.store_auth_if_needed(registry, &auth).await;
        self.clients
            .lock()
            .expect("registry clients")
            .insert(registry.to_string(), client.clone());
        Ok(client)
    }

    /// An error of a registry operation on `r`, with its causes and, when the registry refused
    /// the request for want of (good) credentials, what to do about it.
    fn why(&self, r: &Reference, e: &dyn std::error::Error) -> String {
        let text = crate::errors::chain(e);
        let lower = text.to_lowercase();
        let registry = r.resolve_registry();
        if lower.contains("certificate") || lower.contains("unknownissuer") {
            return format!(
                "{text} ({registry}'s TLS certificate is not trusted: give its CA with \
                 --registry-ca FILE, or use --insecure-registry {registry} for plain HTTP)"
            );
        }
        if lower.contains("timed out") || lower.contains("timeout") {
            return format!(
                "{text} ({registry} did not answer within {} s; --registry-timeout sets how \
                 long to wait)",
                self.options.timeout.as_secs()
            );
        }
        if !(lower.contains("401")
            || lower.contains("unauthorized")
            || lower.contains("authentication"))
        {
            return text;
        }
        let anonymous = matches!(self.auth(registry), Ok(RegistryAuth::Anonymous));
        if anonymous {
            format!("{text} ({registry} wants credentials: rbuild login {registry})")
        } else {
            format!(
                "{text} ({registry} refused the credentials stored for it in {}: rbuild login {registry} again)",
                crate::registry::auth::config_path().display()
            )
        }
    }

    /// The error of a failed request on `r`: `action` (`failed to resolve`) and the image,
    /// with [`Registry::why`]'s explanation and the kind of failure.
    fn request_error(
        &self,
        r: &Reference,
        action: &str,
        e: &oci_client::errors::OciDistributionError,
    ) -> Error {
        let detail = match not_found(e) {
            // As Docker says it, not the registry's error envelope.
            true => format!("{}: not found", r.whole()),
            false => self.why(r, e),
        };
        Error::Request {
            action: format!("{action} {}", describe(r)),
            detail,
            failure: failure_of(e),
        }
    }

    /// The credentials for `registry` from Docker's configuration (see [`crate::registry::auth`]).
    fn auth(&self, registry: &str) -> Result<RegistryAuth> {
        if let Some(auth) = self.auths.lock().expect("registry auths").get(registry) {
            return Ok(auth.clone());
        }
        let credentials = crate::registry::auth::credentials(registry)
            .map_err(|e| Error::local(format!("reading the credentials for {registry}"), e))?;
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username, c.secret),
            None => RegistryAuth::Anonymous,
        };
        self.auths
            .lock()
            .expect("registry auths")
            .insert(registry.to_string(), auth.clone());
        Ok(auth)
    }

    /// Checks `credentials` against `registry` as `docker login` does: `/v2/` with basic
    /// authentication, or the token service its challenge names.
    pub async fn check_login(
        &self,
        registry: &str,
        credentials: &crate::registry::auth::Credentials,
    ) -> Result<()> {
        let scheme = if self.uses_https(registry).await? {
            "https"
        } else {
            "http"
        };
        let http = self.http_client()?;
        let url = format!("{scheme}://{registry}/v2/");
        let reach = |e: reqwest::Error| Error::Request {
            action: format!("cannot reach {registry}"),
            detail: crate::errors::chain(&e),
            failure: Failure::Transient,
        };
        let first = http.get(&url).send().await.map_err(reach)?;
        if first.status().is_success() {
            return Ok(());
        }
        let challenge = first
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let answer = if let Some(params) = challenge_params(&challenge, "Bearer") {
            // realm="https://auth/token",service="registry"
            let field = |name: &str| {
                params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            let realm = field("realm").ok_or_else(|| {
                Error::Answer(format!("{registry}: a token challenge without a realm"))
            })?;
            let mut request = http
                .get(&realm)
                .basic_auth(&credentials.username, Some(&credentials.secret));
            if let Some(service) = field("service") {
                request = request.query(&[("service", service)]);
            }
            request.send().await.map_err(reach)?
        } else {
            http.get(&url)
                .basic_auth(&credentials.username, Some(&credentials.secret))
                .send()
                .await
                .map_err(reach)?
        };
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(Error::Request {
                action: format!("login to {registry} failed"),
                detail: format!("{} (wrong user name or password?)", answer.status()),
                failure: Failure::Refused,
            })
        }
    }

    /// Finds the image of `r` for `platform` (of a multi-platform image, the entry for it;
    /// a single image whatever its platform), stores its manifest and config blobs in `store`,
    /// and returns the manifest's digest.
    pub async fn resolve(
        &self,
        r: &Reference,
        store: &Store,
        platform: &Platform,
    ) -> Result<Digest> {
        let client = self.client(r.resolve_registry()).await?;
        let wait = Some((r.resolve_registry(), self.options.timeout));
        let (mut bytes, mut digest) = self.manifest_raw(r).await?;
        let mut media_type = media_type_of(&bytes);
        if media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST {
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Answer(format!("parsing the manifest list of {}: {e}", r.whole()))
            })?;
            let chosen = crate::store::layout::entry_for(&index, platform).ok_or_else(|| {
                let available: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    .filter(|p| p.os != "unknown")
                    .map(|p| p.to_platform().to_string())
                    .collect();
                Error::Answer(format!(
                    "{} has no {platform} image (it has: {})",
                    r.whole(),
                    available.join(", ")
                ))
            })?;
            let by_digest = Reference::with_digest(
                r.registry().to_string(),
                r.repository().to_string(),
                chosen.digest.to_string(),
            );
            let auth = self.auth(r.resolve_registry())?;
            let (b, d) = with_retries("the manifest", wait, || async {
                client
                    .pull_manifest_raw(&by_digest, &auth, ACCEPTED)
                    .await
                    .map_err(|e| {
                        let action = format!("failed to fetch the {platform} manifest of");
                        self.request_error(r, &action, &e)
                    })
            })
            .await?;
            bytes = b.to_vec();
            digest = Digest::parse(&d).unwrap_or_else(|| Digest::of(&bytes));
            media_type = media_type_of(&bytes);
        }
        if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
            return Err(Error::Answer(format!(
                "{} has an unsupported manifest type {media_type:?}",
                r.whole()
            )));
        }
        let storing = |e| Error::local(format!("storing the image {}", r.whole()), e);
        let (stored, _) = store.write_blob(&bytes).map_err(storing)?;
        if stored != digest {
            return Err(Error::Answer(format!(
                "the manifest of {} does not match its digest {digest}",
                r.whole()
            )));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Answer(format!("parsing the manifest of {}: {e}", r.whole())))?;
        if !store.has_blob(&manifest.config.digest) {
            let config = with_retries("the image config", wait, || async {
                let mut config = Vec::new();
                client
                    .pull_blob(r, &oci_descriptor(&manifest.config), &mut config)
                    .await
                    .map_err(|e| self.request_error(r, "failed to fetch the config of", &e))?;
                Ok(config)
            })
            .await?;
            let (d, _) = store.write_blob(&config).map_err(storing)?;
            if d != manifest.config.digest {
                return Err(Error::Answer(format!(
                    "the config of {} does not match its digest",
                    r.whole()
                )));
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
        self.pull_blob_following(r, blob, store, progress, None)
            .await
    }

    /// [`Registry::pull_blob`], with `follow` told where the first attempt writes and how it
    /// ended, so that another thread can read the blob while it arrives.
    pub async fn pull_blob_following(
        &self,
        r: &Reference,
        blob: &Descriptor,
        store: &Store,
        progress: &(dyn Fn(u64, bool) + Sync),
        follow: Option<&crate::store::follow::Follow>,
    ) -> Result<()> {
        if store.has_blob(&blob.digest) {
            return Ok(());
        }
        let result = with_retries(blob.digest.as_str(), None, || {
            let followed = follow.filter(|f| f.take());
            async move {
                let pulled = self
                    .pull_blob_once(r, blob, store, progress, followed)
                    .await;
                if let (Err(_), Some(f)) = (&pulled, followed) {
                    f.finished(false);
                }
                pulled
            }
        })
        .await;
        if let Some(f) = follow {
            // A retry's download is not followed: its reader stops.
            f.finished(false);
        }
        result
    }

    async fn pull_blob_once(
        &self,
        r: &Reference,
        blob: &Descriptor,
        store: &Store,
        progress: &(dyn Fn(u64, bool) + Sync),
        follow: Option<&crate::store::follow::Follow>,
    ) -> Result<()> {
        let client = self.client(r.resolve_registry()).await?;
        let path = store.ingest_path();
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Error::local(format!("creating {}", path.display()), e))?;
        if let Some(f) = follow {
            f.started(&path);
        }
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
            let action = format!("failed to pull layer {} of", blob.digest);
            return Err(self.request_error(r, &action, &e));
        }
        let written = counting.written;
        use tokio::io::AsyncWriteExt;
        counting
            .inner
            .flush()
            .await
            .map_err(|e| Error::local(format!("writing {}", path.display()), e))?;
        drop(counting);
        store.commit_file(&path, &blob.digest).map_err(|e| {
            Error::local(format!("storing layer {} of {}", blob.digest, r.whole()), e)
        })?;
        if let Some(f) = follow {
            f.finished(true);
        }
        progress(written, true);
        Ok(())
    }

    /// Fetches `blob`, which the store lacks, from where [`LazyBlobs`] says it is (a
    /// registry's repository, an OCI layout), checking its digest.
    ///
    /// [`LazyBlobs`]: crate::store::lazy::LazyBlobs
    pub async fn fetch_lazy(
        &self,
        store: &Store,
        lazy: &crate::store::lazy::LazyBlobs,
        digest: &Digest,
        progress: &(dyn Fn(u64, bool) + Sync),
    ) -> Result<()> {
        use crate::store::lazy::Origin;
        if store.has_blob(digest) {
            return Ok(());
        }
        let Some((blob, origin)) = lazy.get(digest) else {
            return Err(Error::Answer(format!(
                "blob {digest} is neither here nor known anywhere"
            )));
        };
        match origin {
            Origin::Registry {
                registry,
                repository,
            } => {
                let from = Reference::with_digest(registry, repository, digest.to_string());
                self.pull_blob(&from, &blob, store, progress).await
            }
            Origin::Layout(dir) => crate::store::lazy::fetch_from_layout(store, &dir, digest)
                .map_err(|e| Error::local(format!("importing blob {digest}"), e)),
        }
    }

    /// Whether the repository of `r` has the blob `digest`.
    pub async fn has_blob(&self, r: &Reference, digest: &Digest) -> Result<bool> {
        let client = self.client(r.resolve_registry()).await?;
        let wait = Some((r.resolve_registry(), self.options.timeout));
        with_retries(digest.as_str(), wait, || async {
            client
                .blob_exists(r, digest.as_str())
                .await
                .map_err(|e| self.request_error(r, "failed to look up a blob of", &e))
        })
        .await
    }

    /// Whether `r` names a manifest whose digest is `digest` (`false` when it names another
    /// or none): a push of the same manifest can then be skipped.
    pub async fn has_manifest(&self, r: &Reference, digest: &Digest) -> Result<bool> {
        let client = self.client(r.resolve_registry()).await?;
        let auth = self.auth(r.resolve_registry())?;
        match client.fetch_manifest_digest(r, &auth).await {
            Ok(d) => Ok(d == digest.as_str()),
            Err(e) => match failure_of(&e) {
                Failure::NotFound => Ok(false),
                _ => Err(self.request_error(r, "failed to look up", &e)),
            },
        }
    }

    /// Pushes the blobs and manifest of an image to `r`; returns the manifest digest. `report`
    /// hears a line per blob: pushed (bytes, rate) or already there. A blob the store does
    /// not have, the registry lacks and cannot mount is fetched from where `lazy` says first.
    #[allow(clippy::too_many_arguments)]
    pub async fn push(
        &self,
        r: &Reference,
        store: &Store,
        lazy: &crate::store::lazy::LazyBlobs,
        blobs: &[Descriptor],
        (manifest, media_type): (&[u8], &str),
        sources: &crate::registry::sources::BlobSources,
        report: &(dyn Fn(String) + Sync),
    ) -> Result<Digest> {
        let (registry, repository) = (r.resolve_registry(), r.repository());
        let client = self.client(r.resolve_registry()).await?;
        // Up to four blobs at once, each streamed from its file in one request (never held in
        // memory whole).
        let uploads = blobs.iter().map(|blob| {
            let client = &client;
            async move {
                // Retried, as every request is: a registry answers 500 now and then while
                // another client uploads the same blob.
                let exists = self.has_blob(r, &blob.digest).await?;
                if exists {
                    report(format!("{}: layer already exists", blob.digest));
                    sources.add(&blob.digest, registry, repository);
                    return Ok(());
                }
                // In another repository of this registry: ask it to mount the blob.
                for location in sources.get(&blob.digest) {
                    let Some(from) = location
                        .strip_prefix(registry)
                        .and_then(|rest| rest.strip_prefix('/'))
                        .filter(|from| *from != repository)
                    else {
                        continue;
                    };
                    let source = Reference::with_tag(
                        registry.to_string(),
                        from.to_string(),
                        "latest".to_string(),
                    );
                    if client
                        .mount_blob(r, &source, blob.digest.as_str())
                        .await
                        .is_ok()
                    {
                        report(format!("{}: mounted from {from}", blob.digest));
                        sources.add(&blob.digest, registry, repository);
                        return Ok(());
                    }
                }
                let started = std::time::Instant::now();
                if !store.has_blob(&blob.digest) {
                    self.fetch_lazy(store, lazy, &blob.digest, &|_, _| {})
                        .await?;
                }
                let upload = || self.upload(client, r, store, blob);
                let uploading = std::time::Instant::now();
                with_retries(blob.digest.as_str(), None, upload).await?;
                let track = format!("upload {}", blob.digest);
                rbuild_solver::trace::record(&track, "push", "upload", uploading);
                sources.add(&blob.digest, registry, repository);
                report(format!(
                    "{} pushed",
                    crate::units::transfer_line(
                        blob.digest.as_str(),
                        blob.size,
                        None,
                        started.elapsed()
                    )
                ));
                Ok::<(), Error>(())
            }
        });
        use futures_util::StreamExt as _;
        let results: Vec<Result<()>> = futures_util::stream::iter(uploads)
            .buffer_unordered(4)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        let content_type: reqwest::header::HeaderValue = media_type
            .parse()
            .map_err(|e| Error::local("manifest media type", e))?;
        let wait = Some((registry, self.options.timeout));
        with_retries("the manifest", wait, || async {
            client
                .push_manifest_raw(r, manifest.to_vec(), content_type.clone())
                .await
                .map_err(|e| self.request_error(r, "failed to push the manifest to", &e))
        })
        .await?;
        Ok(Digest::of(manifest))
    }

    /// Uploads a blob whose bytes arrive in `chunks` while it is being made (its digest is
    /// computed as they go, see `export::compress::Tap`); returns its digest and size. Not
    /// retried: the bytes are gone. A blob whose upload failed is uploaded from its file by
    /// [`Registry::push`], as any other.
    pub async fn upload_stream(
        &self,
        r: &Reference,
        chunks: tokio::sync::mpsc::Receiver<Chunk>,
    ) -> Result<(Digest, u64)> {
        let client = self.client(r.resolve_registry()).await?;
        let stream = futures_util::stream::unfold(Some(chunks), |rx| async move {
            let mut rx = rx?;
            let abandoned = || {
                let why = "the blob was abandoned before it was whole".to_string();
                Some((
                    Err(oci_client::errors::OciDistributionError::GenericError(
                        Some(why),
                    )),
                    None,
                ))
            };
            let mut bytes = match rx.recv().await {
                Some(Chunk::Data(b)) => bytes::BytesMut::from(b),
                Some(Chunk::Done) => return None,
                None => return abandoned(),
            };
            // What came meanwhile goes in the same request (fewer round trips when the
            // registry is slower than the compressor).
            let mut done = false;
            while bytes.len() < UPLOAD_CHUNK {
                match rx.try_recv() {
                    Ok(Chunk::Data(b)) => bytes.extend_from_slice(&b),
                    Ok(Chunk::Done) => {
                        done = true;
                        break;
                    }
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        return abandoned();
                    }
                }
            }
            // After the last bytes, the stream ends (`Done` was taken).
            let next = if done { None } else { Some(rx) };
            Some((Ok(bytes.freeze()), next))
        });
        let pushed = client
            .push_blob_stream_chunked(r, stream)
            .await
            .map_err(|e| self.request_error(r, "failed to push a new blob to", &e))?;
        let digest = Digest::parse(&pushed.blob_digest)
            .ok_or_else(|| Error::local("a pushed blob's digest", pushed.blob_digest.clone()))?;
        Ok((digest, pushed.size))
    }

    /// Uploads one blob from the store, streamed from its file in one request.
    async fn upload(
        &self,
        client: &Client,
        r: &Reference,
        store: &Store,
        blob: &Descriptor,
    ) -> Result<()> {
        let path = store.blob_path(&blob.digest);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::local(format!("opening blob {}", blob.digest), e))?;
        let stream = futures_util::stream::unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), file))
                }
                Err(e) => Some((
                    Err(oci_client::errors::OciDistributionError::IoError(e)),
                    file,
                )),
            }
        });
        client
            .push_blob_stream(r, stream, blob.digest.as_str(), Some(blob.size))
            .await
            .map_err(|e| {
                let action = format!("failed to push blob {} to", blob.digest);
                self.request_error(r, &action, &e)
            })?;
        Ok(())
    }
}

/// The parameters of a `WWW-Authenticate` challenge of `scheme` (RFC 7235: `Bearer
/// realm="https://auth",service="registry",scope="repository:a:pull,push"`), quoted values
/// unquoted (a quoted value may hold commas and `\"`); `None` for another scheme.
pub fn challenge_params(header: &str, scheme: &str) -> Option<Vec<(String, String)>> {
    let header = header.trim_start();
    let (name, rest) = header.split_once(' ').unwrap_or((header, ""));
    if !name.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() && chars.peek().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
            } else {
                value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
            }
        }
        params.push((key.trim().to_string(), value.trim().to_string()));
    }
    Some(params)
}

/// Part of a blob streamed to [`Registry::upload_stream`] while it is made.
#[derive(Debug)]
pub enum Chunk {
    /// The next bytes.
    Data(bytes::Bytes),
    /// The blob is whole: the upload may be committed.
    Done,
}

/// The most bytes of a streamed blob sent in one request.
const UPLOAD_CHUNK: usize = 8 << 20;

/// How many times a registry request that failed transiently is made in all.
const ATTEMPTS: u32 = 3;

/// How long a small request (a manifest, a config) may go unanswered before rbuild says it
/// is waiting.
const PATIENCE: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds, fails for good (see [`is_transient`]) or has failed
/// [`ATTEMPTS`] times, waiting 0.5 s, then 1 s, between tries; each retry is announced with
/// what failed (`what`: a blob digest, "the manifest"). With `wait` (the registry and
/// `--registry-timeout`, for requests without a body to stream), an answer that takes longer
/// than [`PATIENCE`] is announced too, with how long rbuild will wait for it.
async fn with_retries<T, F, Fut>(
    what: &str,
    wait: Option<(&str, Duration)>,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tried = 0;
    loop {
        tried += 1;
        let answer = attempt();
        let answer = match wait {
            Some((registry, timeout)) if timeout > PATIENCE => {
                tokio::pin!(answer);
                tokio::select! {
                    result = &mut answer => result,
                    () = tokio::time::sleep(PATIENCE) => {
                        eprintln!(
                            "waiting for {registry} to answer ({what}, {} s so far; giving up \
                             after {} s, --registry-timeout)",
                            PATIENCE.as_secs(),
                            timeout.as_secs()
                        );
                        answer.await
                    }
                }
            }
            _ => answer.await,
        };
        match answer {
            Ok(value) => return Ok(value),
            Err(e) if tried < ATTEMPTS && e.is_transient() => {
                eprintln!("warning: retrying {what} ({e})");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(tried))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The media type of a manifest or index from the registry: the one it names, else what its
/// shape says (`manifests` makes an index).
pub fn media_type_of(bytes: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn challenges_are_read_as_rfc_7235_writes_them() {
        let bearer = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#;
        assert_eq!(
            challenge_params(bearer, "bearer"),
            Some(pairs(&[
                ("realm", "https://auth.example/token"),
                ("service", "registry.example"),
                ("scope", "repository:a/b:pull,push"),
            ]))
        );
        // Spaces after commas, unquoted values, escapes inside quotes.
        assert_eq!(
            challenge_params(r#"Basic realm=plain, x="a\"b""#, "Basic"),
            Some(pairs(&[("realm", "plain"), ("x", "a\"b")]))
        );
        assert_eq!(challenge_params("Basic", "basic"), Some(vec![]));
        assert_eq!(challenge_params(bearer, "basic"), None, "another scheme");
        // An unterminated quote ends the value; nothing panics.
        assert_eq!(
            challenge_params(r#"Bearer realm="open"#, "bearer"),
            Some(pairs(&[("realm", "open")]))
        );
    }

    #[test]
    fn failures_are_classified_by_kind_not_by_text() {
        use oci_client::errors::{OciDistributionError as E, OciEnvelope};
        let server = |code| E::ServerError {
            code,
            url: "u".into(),
            message: "not found".into(),
        };
        let envelope = |code: &str| E::RegistryError {
            envelope: serde_json::from_str::<OciEnvelope>(&format!(
                r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#
            ))
            .unwrap(),
            url: "u".into(),
        };
        for (e, expected) in [
            (E::UnauthorizedError { url: "u".into() }, Failure::Refused),
            (server(403), Failure::Refused),
            (server(404), Failure::NotFound),
            // The status decides, not the text ("not found" above, here too).
            (server(502), Failure::Transient),
            (E::ImageManifestNotFoundError("x".into()), Failure::NotFound),
            (envelope("DENIED"), Failure::Refused),
            (envelope("MANIFEST_UNKNOWN"), Failure::NotFound),
            (envelope("TOOMANYREQUESTS"), Failure::Transient),
            (
                E::IoError(std::io::Error::other("reset")),
                Failure::Transient,
            ),
        ] {
            assert_eq!(failure_of(&e), expected, "{e}");
        }
        let request = |failure| Error::Request {
            action: "a".into(),
            detail: "d".into(),
            failure,
        };
        assert!(request(Failure::Transient).is_transient());
        for failure in [
            Failure::Refused,
            Failure::NotFound,
            Failure::Timeout,
            Failure::Mismatch,
        ] {
            assert!(!request(failure).is_transient(), "{failure:?}");
        }
        assert!(!Error::local("writing", std::io::Error::other("full")).is_transient());
        assert!(!Error::Answer("bad".into()).is_transient());
    }

    #[test]
    fn media_types_are_found_in_the_manifest_or_from_its_shape() {
        let docker = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        assert_eq!(
            media_type_of(docker),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#),
            OCI_INDEX
        );
        assert_eq!(
            media_type_of(br#"{"schemaVersion":2,"layers":[]}"#),
            OCI_MANIFEST
        );
        assert_eq!(media_type_of(b"not json"), OCI_MANIFEST);
    }
}
