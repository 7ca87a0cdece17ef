//! The worker: how the solver's ops run here, on top of the runner and the content store.

pub mod mounts;

use crate::registry::Registry;
use crate::registry::reference;
use crate::store::layer::{can_have_layer, commit_upper, has_layer, oci_layer_media_type};
use crate::store::state::State;
use crate::units;
use rbuild_frontend::image::Image;
use rbuild_runner::fileop::{self, FileOpSpec, Source};
use rbuild_runner::sandbox::{
    self, Exit, Mount, MountSource, Network, Process, Rootfs, Stdio, Stream,
};
use rbuild_solver::progress::Stream as LogStream;
use rbuild_solver::scheduler::BoxError;
use rbuild_solver::{
    ExecOp, FileAction, FileOp, HttpSource, ImageSource, MountKind, NetworkMode, Op, Output,
    OutputLayer, StepContext, Worker,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why an op failed, whatever room of the builder the failure came from.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state directory.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A registry (pulling a base image's layers).
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    /// Writing a root filesystem out.
    #[error(transparent)]
    Export(#[from] crate::export::Error),
    /// A RUN mount's secret, SSH agent or cache directory.
    #[error(transparent)]
    Mount(#[from] mounts::Error),
    /// The default network of RUN steps.
    #[error(transparent)]
    Network(#[from] rbuild_runner::network::Error),
    /// Fetching an imported cache's layer.
    #[error(transparent)]
    Cache(#[from] crate::remotecache::Error),
    /// A file op (`COPY`, `ADD`, a copy made for a mount).
    #[error(transparent)]
    FileOp(#[from] fileop::Error),
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] crate::errors::Io),
    /// A file operation failed, with nothing more to say than the system's error.
    #[error(transparent)]
    System(#[from] std::io::Error),
    /// Something else, said in words (an image that is not what it claims, a mount whose
    /// source is missing, a secret that was not given).
    #[error("{0}")]
    Other(String),
}

/// An op's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error for the solver, with all its causes (`outer: inner: root cause`), whatever room
/// of the builder it came from.
fn described(e: impl Into<Error>) -> BoxError {
    crate::errors::chain(&e.into()).into()
}

/// Hears how far a download has come: the blob, bytes so far, its size, whether it is done.
pub type PullProgress<'a> = dyn Fn(&rbuild_solver::Digest, u64, u64, bool) + Sync + 'a;

/// Hears when each pulled layer starts (`false`) and ends (`true`) being unpacked.
pub type UnpackProgress<'a> = dyn Fn(&OutputLayer, bool) + Sync + 'a;

/// Runs ops for one build.
pub struct BuildWorker {
    /// The state directory.
    pub state: Arc<State>,
    /// The build context directory.
    pub context: PathBuf,
    /// Registry clients, for pulling base image layers.
    pub registry: Arc<Registry>,
    /// The runtime to block on for network I/O (the worker runs on blocking threads).
    pub runtime: tokio::runtime::Handle,
    /// Secrets and SSH agents for RUN mounts.
    pub provided: Arc<crate::worker::mounts::Provided>,
    /// The network namespace of steps with the default network, started by the first.
    pub network: rbuild_runner::network::SharedUserNet,
    /// Cache mount directories from an imported cache (by storage key), which seed a cache
    /// mount this machine does not have yet.
    pub imported_mounts: std::collections::HashMap<String, OutputLayer>,
    /// Directories of `--build-context`s, by local source name (`named:NAME`).
    pub named_dirs: std::collections::HashMap<String, PathBuf>,
    /// What the build's `ADD`s downloaded and checked out, pinned (URL and content digest, git
    /// URL and commit), for provenance.
    pub fetched: std::sync::Mutex<Vec<crate::provenance::Dependency>>,
}

/// The layers of `image` (its `manifest` and `config`), bottom first.
fn output_layers(
    image: &ImageSource,
    manifest: &crate::store::layout::Manifest,
    config: &Image,
) -> Result<Vec<OutputLayer>> {
    let mut layers = Vec::new();
    for (blob, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        layers.push(OutputLayer {
            diff_id: rbuild_solver::Digest::parse(diff_id).ok_or_else(|| {
                Error::Other(format!("bad diff id {diff_id} in {}", image.reference))
            })?,
            digest: blob.digest.clone(),
            size: blob.size,
            media_type: oci_layer_media_type(&blob.media_type)?.to_string(),
            created: None,
        });
    }
    Ok(layers)
}

/// The output of a step: `base`'s layers plus, if the step changed anything, the layer made
/// from `upper` (stamped with the build time).
fn on_top(state: &State, base: &Output, upper: rbuild_runner::Upper) -> Result<Output> {
    let created = units::rfc3339(units::build_time());
    let mut layers = base.layers.clone();
    layers.extend(commit_upper(state, upper, &created)?);
    Ok(Output {
        layers,
        local: None,
    })
}

fn diff_ids(layers: &[OutputLayer]) -> Vec<String> {
    layers.iter().map(|l| l.diff_id.to_string()).collect()
}

impl Worker for BuildWorker {
    fn local_root(&self, name: &str) -> std::result::Result<PathBuf, BoxError> {
        match name {
            "context" => Ok(self.context.clone()),
            other => match self.named_dirs.get(other) {
                Some(dir) => Ok(dir.clone()),
                None => Err(format!("unknown local source {other:?}").into()),
            },
        }
    }

    fn fetch_http(
        &self,
        source: &HttpSource,
    ) -> std::result::Result<(PathBuf, rbuild_solver::Digest), BoxError> {
        let downloads = self.state.downloads_dir();
        let (root, digest) =
            crate::store::downloads::fetch(&downloads, &self.runtime, source).map_err(described)?;
        if let Some(content) = crate::store::downloads::content(&downloads, source) {
            self.record(crate::provenance::Dependency {
                uri: Some(source.url.clone()),
                name: None,
                digest: crate::provenance::digest_set(content.as_str()),
            });
        }
        Ok((root, digest))
    }

    fn fetch_git(
        &self,
        source: &rbuild_solver::GitSource,
    ) -> std::result::Result<(PathBuf, rbuild_solver::Digest), BoxError> {
        let auth = crate::store::git::Auth::from_provided(&source.url, &self.provided);
        let (root, digest, commit) =
            crate::store::git::fetch(&self.state.downloads_dir(), source, &auth)
                .map_err(described)?;
        let uri = match &source.reference {
            Some(r) => format!("{}#{r}", source.url),
            None => source.url.clone(),
        };
        self.record(crate::provenance::Dependency {
            uri: Some(uri),
            name: None,
            digest: crate::provenance::digest_set(&format!("sha1:{commit}")),
        });
        Ok((root, digest))
    }

    fn execute(
        &self,
        op: &Op,
        inputs: &[Arc<Output>],
        ctx: &StepContext,
    ) -> std::result::Result<Output, BoxError> {
        match op {
            Op::Image(image) => {
                let progress = |digest: &rbuild_solver::Digest, bytes, total, done| {
                    ctx.progress(digest.as_str(), bytes, Some(total), done)
                };
                // As BuildKit's pull says it: `extracting sha256:… done`.
                let extracting = |layer: &OutputLayer, done: bool| {
                    let id = format!("extracting {}", layer.digest);
                    let bytes = if done { layer.size } else { 0 };
                    ctx.progress(&id, bytes, Some(layer.size), done);
                };
                self.pull(image, &progress, &extracting).map_err(described)
            }
            Op::Exec(exec) => self.exec(exec, inputs, ctx),
            Op::File(file) => self.file(file, inputs).map_err(described),
            Op::Merge => Ok(Output {
                layers: inputs.iter().flat_map(|i| i.layers.clone()).collect(),
                local: None,
            }),
            Op::Scratch | Op::Local(_) | Op::Http(_) | Op::Git(_) => Ok(Output::default()),
        }
    }

    fn claim(
        &self,
        key: &rbuild_solver::Digest,
    ) -> std::result::Result<Option<rbuild_solver::scheduler::Claim>, BoxError> {
        let lock = self.state.claim(key).map_err(described)?;
        Ok(Some(Box::new(lock)))
    }

    fn is_usable(&self, output: &Output) -> bool {
        output
            .layers
            .iter()
            .all(|l| can_have_layer(&self.state, &l.digest, &l.media_type))
    }
}

impl BuildWorker {
    /// Remembers a fetched source, once.
    fn record(&self, dependency: crate::provenance::Dependency) {
        let mut fetched = self.fetched.lock().expect("fetched sources");
        if !fetched.contains(&dependency) {
            fetched.push(dependency);
        }
    }

    /// Makes sure every layer has a snapshot: blobs known only elsewhere (an imported cache)
    /// are downloaded first, reported to `ctx` when a step waits for them.
    fn have(&self, layers: &[OutputLayer], ctx: Option<&StepContext>) -> Result<()> {
        let progress = |digest: &rbuild_solver::Digest, bytes, total, done| {
            if let Some(ctx) = ctx {
                ctx.progress(digest.as_str(), bytes, Some(total), done);
            }
        };
        crate::remotecache::fetch_missing(
            &self.state,
            &self.registry,
            &self.runtime,
            layers,
            &progress,
        )?;
        // Unpacking the base's layers is charged to the step that waits for it, by name.
        let unpacking = |layer: &OutputLayer, done: bool| {
            if let Some(ctx) = ctx {
                let id = format!("unpacking {}", layer.digest);
                let bytes = if done { layer.size } else { 0 };
                ctx.progress(&id, bytes, Some(layer.size), done);
            }
        };
        Ok(crate::store::layer::ensure_snapshots_reporting(
            &self.state,
            layers,
            &unpacking,
        )?)
    }

    /// The sandbox's network for `mode`, starting the build's user-mode network if this is
    /// the first step that needs it.
    pub fn sandbox_network(&self, mode: NetworkMode) -> Result<Network> {
        Ok(match mode {
            NetworkMode::Private => Network::Join(self.network.get()?),
            NetworkMode::Host => Network::Host,
            NetworkMode::None => Network::None,
        })
    }

    /// The layers of an image, with their blobs in the store (pulled if missing). The image is
    /// tagged locally once complete, so later builds find it without the registry. `progress`
    /// hears how far each download has come (blob, bytes, total, done).
    pub fn pull(
        &self,
        image: &ImageSource,
        progress: &PullProgress<'_>,
        unpacking: &UnpackProgress<'_>,
    ) -> Result<Output> {
        use crate::store::Context as _;
        let store = &self.state.store;
        let manifest = store.manifest(&image.digest)?;
        let config: Image = serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
            .with_context(|| format!("parsing the config of {}", image.reference))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::Other(format!(
                "{} is inconsistent: {} layers but {} diff ids",
                image.reference,
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let missing: Vec<_> = manifest
            .layers
            .iter()
            .filter(|l| !has_layer(&self.state, &l.digest, &l.media_type))
            .collect();
        let layers = output_layers(image, &manifest, &config)?;
        if !missing.is_empty() {
            let r = reference::parse(&image.reference)
                .map_err(Error::Other)?
                .to_oci();
            self.download_and_unpack(&r, &missing, &layers, (progress, unpacking))?;
            // Remembered for cross-repository mounts when pushing to the same registry.
            let sources = self.state.blob_sources();
            for blob in manifest.layers.iter().chain([&manifest.config]) {
                sources.add(&blob.digest, r.resolve_registry(), r.repository());
            }
        }
        let manifest_size = std::fs::metadata(store.blob_path(&image.digest))
            .map_err(crate::errors::io(format!(
                "reading the manifest of {}",
                image.reference
            )))?
            .len();
        if store.lookup(&image.reference)?.map(|d| d.digest) != Some(image.digest.clone())
            && !image.reference.contains('@')
        {
            store.tag(
                &image.reference,
                &crate::store::layout::Descriptor {
                    media_type: manifest
                        .media_type
                        .clone()
                        .unwrap_or_else(|| crate::store::layout::OCI_MANIFEST.into()),
                    digest: image.digest.clone(),
                    size: manifest_size,
                    platform: None,
                    annotations: Default::default(),
                },
            )?;
        }
        Ok(Output {
            layers,
            local: None,
        })
    }

    /// Downloads the `missing` blobs of the image `r` (several at once), each unpacked into
    /// its snapshot while it arrives, on a thread of its own, so that pulling takes about as
    /// long as the slower of downloading and unpacking. A layer whose streamed unpacking
    /// fails is unpacked from its blob when a step needs it, as before.
    fn download_and_unpack(
        &self,
        r: &oci_client::Reference,
        missing: &[&crate::store::layout::Descriptor],
        layers: &[OutputLayer],
        (progress, unpacking): (&PullProgress<'_>, &UnpackProgress<'_>),
    ) -> Result<()> {
        let store = &self.state.store;
        let follows: Vec<crate::store::follow::Follow> =
            missing.iter().map(|_| Default::default()).collect();
        std::thread::scope(|scope| {
            for (blob, follow) in missing.iter().zip(&follows) {
                let Some(layer) = layers.iter().find(|l| l.digest == blob.digest) else {
                    follow.finished(false);
                    continue;
                };
                if self.state.snapshots.has(layer.diff_id.as_str()) {
                    follow.finished(false);
                    continue;
                }
                let state = &self.state;
                scope.spawn(move || {
                    let detail = || Some(layer.digest.to_string());
                    let _span = rbuild_solver::trace::span("pull", "unpack as it arrives", detail);
                    unpacking(layer, false);
                    match crate::store::layer::unpack_following(state, layer, follow) {
                        Ok(true) => unpacking(layer, true),
                        Ok(false) => {}
                        Err(e) => tracing::debug!("unpacking {} as it arrived: {e}", layer.digest),
                    }
                });
            }
            let pulls = missing.iter().zip(&follows).map(|(l, follow)| {
                let report = move |bytes, done| progress(&l.digest, bytes, l.size, done);
                async move {
                    let started = std::time::Instant::now();
                    let pulled = self
                        .registry
                        .pull_blob_following(r, l, store, &report, Some(follow))
                        .await;
                    let track = format!("download {}", l.digest);
                    rbuild_solver::trace::record(&track, "pull", "download", started);
                    pulled
                }
            });
            let pulled = self
                .runtime
                .block_on(futures_util::future::try_join_all(pulls));
            // Readers of downloads that were never made (or were cut short) stop.
            for follow in &follows {
                follow.finished(false);
            }
            pulled.map(|_| ())
        })?;
        Ok(())
    }

    fn exec(
        &self,
        exec: &ExecOp,
        inputs: &[Arc<Output>],
        ctx: &StepContext,
    ) -> std::result::Result<Output, BoxError> {
        let state = &self.state;
        let base = &inputs[0];
        let preparing = rbuild_solver::trace::span("exec", "prepare", || Some(exec.args.join(" ")));
        self.have(&base.layers, Some(ctx)).map_err(described)?;
        let network = self.sandbox_network(exec.network).map_err(described)?;
        let mut env = exec.env.clone();
        // Held until the step ends: the locks of its cache mounts, copies it mounts.
        let mut leases = Vec::new();
        let mut scratch = Vec::new();
        let mounts = self.mounts(exec, inputs, &mut env, &mut leases, &mut scratch);
        let discard = |scratch: Vec<rbuild_runner::Upper>| {
            for upper in scratch {
                let _ = state.snapshots.discard(upper);
            }
        };
        let mounts = match mounts {
            Ok(m) => m,
            Err(e) => {
                discard(scratch);
                return Err(described(e));
            }
        };
        let upper = state.snapshots.new_upper().map_err(described)?;
        let run_dir = state.run_dir().map_err(described)?;
        let layers = diff_ids(&base.layers);
        let process = Process {
            args: exec.args.clone(),
            env,
            cwd: exec.cwd.clone(),
            user: exec.user.clone(),
            hostname: sandbox::BUILD_HOSTNAME.into(),
            network,
            stdio: Stdio::Capture,
            dev_files: exec
                .inline_files
                .iter()
                .map(|f| {
                    let rel = f.path.strip_prefix("/dev/").unwrap_or(&f.path).to_string();
                    (rel, f.data.clone().into_bytes(), f.mode)
                })
                .collect(),
            mounts,
            limits: exec.limits.clone(),
            privileged: exec.insecure,
        };
        let cancel = ctx.cancel_flag();
        drop(preparing);
        let running = rbuild_solver::trace::span("exec", "run", || Some(exec.args.join(" ")));
        let result = sandbox::run(
            &Rootfs {
                snapshots: &state.snapshots,
                layers: &layers,
                upper: &upper,
                volatile: true,
            },
            &process,
            &run_dir,
            &mut |stream, data| {
                let stream = match stream {
                    Stream::Stdout => LogStream::Stdout,
                    Stream::Stderr => LogStream::Stderr,
                };
                ctx.log(stream, data);
            },
            &cancel,
        );
        drop(running);
        drop(run_dir);
        drop(leases);
        discard(scratch);
        let command = exec.args.join(" ");
        match result {
            Ok(Exit::Code(0)) => {}
            Ok(exit) => {
                state.snapshots.discard(upper)?;
                let how = match exit {
                    Exit::Signal(s) => format!("killed by signal {s}"),
                    Exit::Code(c) => format!("exit code: {c}"),
                };
                return Err(
                    format!("process \"{command}\" did not complete successfully: {how}").into(),
                );
            }
            Err(e) => {
                state.snapshots.discard(upper)?;
                return Err(format!("process \"{command}\" could not be started: {e}").into());
            }
        }
        on_top(state, base, upper).map_err(described)
    }

    /// The sandbox mounts of an exec op's `--mount`s. Secret values given as environment
    /// variables are added to `env`; cache mounts are locked into `leases`; copies made for
    /// the step go to `scratch`.
    fn mounts(
        &self,
        exec: &ExecOp,
        inputs: &[Arc<Output>],
        env: &mut Vec<String>,
        leases: &mut Vec<crate::worker::mounts::CacheLease>,
        scratch: &mut Vec<rbuild_runner::Upper>,
    ) -> Result<Vec<Mount>> {
        let state = &self.state;
        let mut out = Vec::with_capacity(exec.mounts.len());
        let input = |i: usize| {
            inputs
                .get(i)
                .ok_or_else(|| Error::Other(format!("internal error: mount input {i} is missing")))
        };
        for m in &exec.mounts {
            let source = match &m.kind {
                MountKind::Bind {
                    input: i,
                    source,
                    exclude,
                } => {
                    let output = input(*i)?;
                    self.mount_source(output, source, exclude, m.readonly, scratch)?
                }
                MountKind::Cache {
                    id,
                    sharing,
                    input: seed_input,
                    source,
                    mode,
                    uid,
                    gid,
                } => {
                    let seed_output = seed_input.map(&input).transpose()?;
                    let seed_id = seed_output.map(|o| {
                        let ids: Vec<String> =
                            o.layers.iter().map(|l| l.diff_id.to_string()).collect();
                        format!("{}:{source}", ids.join(","))
                    });
                    let key = crate::worker::mounts::cache_key(id, seed_id.as_deref());
                    let imported = self.imported_mounts.get(&key);
                    let seed = |dir: &Path| -> std::result::Result<(), mounts::BoxError> {
                        match (seed_output, imported) {
                            (Some(o), _) => Ok(self.copy_out(o, source, dir)?),
                            (None, Some(layer)) => Ok(self.unpack_into(layer, dir)?),
                            (None, None) => Ok(()),
                        }
                    };
                    let init = crate::worker::mounts::CacheInit {
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                        seed: Some(&seed),
                    };
                    let lease = crate::worker::mounts::acquire(
                        &state.cache_mounts_dir(),
                        &key,
                        *sharing,
                        &init,
                    )?;
                    let dir = lease.dir.clone();
                    leases.push(lease);
                    MountSource::Host(dir)
                }
                MountKind::Tmpfs { size } => MountSource::Tmpfs { size: *size },
                MountKind::Secret {
                    id,
                    env: var,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(value) = self.provided.secrets.get(id) else {
                        if *required {
                            return Err(Error::Other(format!(
                                "secret {id} is required but was not given (rbuild build --secret id={id},src=FILE)"
                            )));
                        }
                        continue;
                    };
                    if let Some(var) = var {
                        env.retain(|kv| kv.split('=').next() != Some(var.as_str()));
                        env.push(format!("{var}={}", String::from_utf8_lossy(value)));
                    }
                    if m.target.is_empty() {
                        continue;
                    }
                    MountSource::File {
                        data: value.clone(),
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                    }
                }
                MountKind::Ssh { id, required, .. } => {
                    let Some(socket) = self.provided.ssh.get(id) else {
                        if *required {
                            return Err(Error::Other(format!(
                                "SSH agent {id} is required but was not given (rbuild build --ssh {id})"
                            )));
                        }
                        continue;
                    };
                    MountSource::Host(socket.clone())
                }
            };
            out.push(Mount {
                target: m.target.clone(),
                source,
                readonly: m.readonly,
            });
        }
        Ok(out)
    }

    /// What a bind mount of `path` in `output` mounts: the layers of a stage or image, or a
    /// path of the context (resolved inside it, so symlinks cannot lead out). The context is
    /// mounted directly only when the mount is read-only and no `.dockerignore` hides files;
    /// otherwise the process gets a copy of what it may see (in `scratch`, removed after the
    /// step), so it can neither see ignored files nor change the user's files.
    fn mount_source(
        &self,
        output: &Output,
        path: &str,
        exclude: &[String],
        readonly: bool,
        scratch: &mut Vec<rbuild_runner::Upper>,
    ) -> Result<MountSource> {
        let Some(root) = &output.local else {
            self.have(&output.layers, None)?;
            return Ok(MountSource::Layers {
                layers: diff_ids(&output.layers),
                path: path.to_string(),
            });
        };
        let host = rbuild_solver::contenthash::resolve_in_root(root, path, true).map_err(
            crate::errors::io(format!("failed to mount {path} from the build context")),
        )?;
        let meta = std::fs::symlink_metadata(&host).map_err(|_| {
            Error::Other(format!(
                "failed to mount {path} from the build context: not found"
            ))
        })?;
        if readonly && exclude.is_empty() {
            return Ok(MountSource::Host(host));
        }
        let upper = self.copy_into_upper(output, path, exclude.to_vec())?;
        let copy = if meta.is_dir() {
            upper.fs.clone()
        } else {
            upper.fs.join(host.file_name().unwrap_or_default())
        };
        scratch.push(upper);
        if std::fs::symlink_metadata(&copy).is_err() {
            return Err(Error::Other(format!(
                "failed to mount {path} from the build context: excluded by .dockerignore"
            )));
        }
        Ok(MountSource::Host(copy))
    }

    /// Writes the root filesystem of `output` (its layers merged, deletions applied) as one
    /// tar to `tar` (`type=tar`), and/or into the directory `dir` (`type=local`, created if
    /// needed; what is there already stays unless the image replaces it).
    pub fn export_rootfs(
        &self,
        output: &Output,
        tar: Option<&crate::export::Dest>,
        dir: Option<&Path>,
    ) -> Result<()> {
        let upper = self.copy_into_upper(output, "/", vec![])?;
        let result = (|| -> Result<()> {
            if let Some(dest) = tar {
                dest.write(|out| {
                    rbuild_runner::diff::write_layer(&upper.fs, out)?;
                    Ok(())
                })?;
            }
            if let Some(dir) = dir {
                std::fs::create_dir_all(dir)
                    .map_err(crate::errors::io(format!("creating {}", dir.display())))?;
                // Through a pipe: the tar of the copy, unpacked with the checks every layer
                // gets (the destination may be on another filesystem).
                let (reader, mut writer) = std::io::pipe()?;
                let fs = upper.fs.clone();
                let producer =
                    std::thread::spawn(move || rbuild_runner::diff::write_layer(&fs, &mut writer));
                let unpacked = rbuild_runner::extract::extract_layer(reader, dir);
                let produced = producer.join().expect("the tar writer does not panic");
                unpacked.map_err(crate::errors::io(format!(
                    "writing files to {}",
                    dir.display()
                )))?;
                produced.map_err(crate::errors::io("reading the image's files".to_string()))?;
            }
            Ok(())
        })();
        self.state.snapshots.discard(upper)?;
        result
    }

    /// Copies what is below `path` in `output` (leaving out what the `.dockerignore` patterns
    /// `ignore` exclude) into a new upper directory, as `COPY path /` would.
    fn copy_into_upper(
        &self,
        output: &Output,
        path: &str,
        ignore: Vec<String>,
    ) -> Result<rbuild_runner::Upper> {
        let source = self.file_source(output)?;
        self.run_file_actions(
            &[],
            &[Source::Layers(vec![]), source],
            &[FileAction::Copy {
                source: 1,
                paths: vec![path.to_string()],
                dest: "/".into(),
                owner: None,
                mode: None,
                chmod: None,
                unpack_archives: false,
                ignore,
                include_patterns: vec![],
                exclude_patterns: vec![],
            }],
        )
    }

    /// How file actions read `output`: a host directory, or its layers (unpacked if needed).
    fn file_source(&self, output: &Output) -> Result<Source> {
        self.have(&output.layers, None)?;
        Ok(match &output.local {
            Some(path) => Source::Host(path.clone()),
            None => Source::Layers(diff_ids(&output.layers)),
        })
    }

    /// Runs `actions` over the layers `base` into a new upper directory, which is discarded
    /// if they fail.
    fn run_file_actions(
        &self,
        base: &[String],
        sources: &[Source],
        actions: &[FileAction],
    ) -> Result<rbuild_runner::Upper> {
        let state = &self.state;
        let upper = state.snapshots.new_upper()?;
        let run_dir = state.run_dir()?;
        let result = fileop::run(
            &FileOpSpec {
                snapshots: &state.snapshots,
                base,
                upper: &upper,
                sources,
            },
            actions,
            &run_dir,
        );
        drop(run_dir);
        match result {
            Ok(()) => Ok(upper),
            Err(e) => {
                state.snapshots.discard(upper)?;
                Err(e.into())
            }
        }
    }

    /// Unpacks the layer `layer` (an imported cache mount's contents, fetched if needed)
    /// into the empty directory `dir`.
    fn unpack_into(&self, layer: &OutputLayer, dir: &Path) -> Result<()> {
        crate::remotecache::fetch_missing(
            &self.state,
            &self.registry,
            &self.runtime,
            std::slice::from_ref(layer),
            &|_, _, _, _| {},
        )?;
        let path = self.state.store.blob_path(&layer.digest);
        let file = std::fs::File::open(&path)
            .map_err(crate::errors::io(format!("opening {}", path.display())))?;
        let reader = crate::store::layer::decompress(
            std::io::BufReader::with_capacity(1 << 20, file),
            &layer.media_type,
        )?;
        rbuild_runner::extract::extract_layer(reader, dir).map_err(crate::errors::io(format!(
            "unpacking cache mount contents {} into {}",
            layer.digest,
            dir.display()
        )))?;
        Ok(())
    }

    /// Copies what is below `path` in `output` into the empty directory `dir` (the seed of a
    /// cache mount made `from` a stage).
    fn copy_out(&self, output: &Output, path: &str, dir: &Path) -> Result<()> {
        let upper = self.copy_into_upper(output, path, vec![])?;
        let moved = (|| -> Result<()> {
            for entry in std::fs::read_dir(&upper.fs)? {
                let entry = entry?;
                std::fs::rename(entry.path(), dir.join(entry.file_name()))?;
            }
            Ok(())
        })();
        self.state.snapshots.discard(upper)?;
        moved
    }

    fn file(&self, file: &FileOp, inputs: &[Arc<Output>]) -> Result<Output> {
        let base = &inputs[0];
        let sources = inputs
            .iter()
            .map(|input| self.file_source(input))
            .collect::<Result<Vec<_>>>()?;
        let upper = self.run_file_actions(&diff_ids(&base.layers), &sources, &file.actions)?;
        on_top(&self.state, base, upper)
    }
}
