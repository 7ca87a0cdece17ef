//! `rbuild build`: Dockerfile → image.

use crate::cli::Global;
use crate::cli::diagnostics::{self, Target};
use crate::cli::progress::{Mode, Printer};
use crate::export::compress::{Compression, Counter};
use crate::export::{
    ArchiveFormat, ArchiveImage, Dest, finalize, store_image, store_index, write_archive,
};
use crate::pipeline::{BuildRequest, Loaded};
use crate::registry::Registry;
use crate::registry::reference;
use crate::registry::resolver::StoreThenRegistry;
use crate::store::state::State;
use crate::worker::BuildWorker;
use anyhow::{Context, Result, anyhow, bail};
use rbuild_frontend::diagnostic::Diagnostic;
use rbuild_frontend::{Build, Platform};
use rbuild_solver::NetworkMode;
use rbuild_solver::scheduler::SolveError;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Arguments of `rbuild build`.
#[derive(clap::Args, Clone)]
pub struct BuildArgs {
    /// Name and tag of the image (`name:tag`); may be repeated
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// The Dockerfile [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// A build argument `KEY=VALUE`, or `KEY` to take its value from the environment
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// The stage to build [default: the last]
    #[arg(long)]
    pub target: Option<String>,
    /// The platform to build for, `os/arch[/variant]` (`linux/arm64`): base images are
    /// chosen for it, TARGETPLATFORM and its kin name it, the image config says it. Several,
    /// comma-separated, make a multi-platform index (pushed, or written by type=oci; type=local
    /// gets a directory per platform). RUN steps for another CPU run only where an emulator is
    /// registered (binfmt_misc) [default: this machine's, and the base image's platform in the
    /// config]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Progress output
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Mode,
    /// Print only the image id (same as --progress=quiet)
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Where the result goes, as BuildKit's exporters: `type=image[,name=N,push=true]`,
    /// `type=registry`, `type=oci|docker,dest=FILE.tar|-`, `type=local,dest=DIR`,
    /// `type=tar,dest=FILE.tar|-`, with `compression=gzip|zstd|uncompressed`,
    /// `compression-level=N`, `force-compression=true`, `oci-mediatypes=true|false`
    /// [default: type=image with the -t names]
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Set a label on the image (`KEY=VALUE`; after the Dockerfile's LABELs, as BuildKit)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Push the image to its registry (shorthand for --output type=registry)
    #[arg(long)]
    pub push: bool,
    /// Keep the image in the local store even when other outputs are given (type=image)
    #[arg(long)]
    pub load: bool,
    /// Write the image id (its config digest) to this file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the build result's metadata (digests, names) as JSON to this file
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Do not use the cache for any step
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use the cache for the steps of these stages (comma-separated names)
    #[arg(
        long = "no-cache-filter",
        value_name = "STAGE[,STAGE]",
        value_delimiter = ','
    )]
    pub no_cache_filter: Vec<String>,
    /// Ask registries for base image tags even when the local store has them
    #[arg(long)]
    pub pull: bool,
    /// How many RUN steps may run at once [default: the number of CPUs]
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Fail the build when a build check (see `rbuild lint`) finds something
    #[arg(long)]
    pub check: bool,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or `id=ID,env=VAR`
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// An SSH agent for `RUN --mount=type=ssh`: `default` ($SSH_AUTH_SOCK) or `ID=SOCKET`
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    pub ssh: Vec<String>,
    /// The network of RUN steps that do not name one: `default` (a network namespace of their
    /// own with outbound access through slirp4netns, which cannot reach this machine's
    /// loopback), `none` (loopback only) or `host` (this machine's network)
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub network: String,
    /// Grant an entitlement to the Dockerfile: `network.host` (for `RUN --network=host`)
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// The build context directory
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

/// The network of RUN steps without `--network` and whether `RUN --network=host` is allowed,
/// from `--network` and `--allow`. As with buildx, `--network=host` on the command line grants
/// `network.host` itself: the person running the build asked for it, not the Dockerfile.
pub fn network_options(network: &str, allow: &[String]) -> Result<(NetworkMode, bool)> {
    let mut allow_host = false;
    for entitlement in allow {
        match entitlement.as_str() {
            "network.host" => allow_host = true,
            "security.insecure" => bail!(
                "--allow security.insecure: rbuild does not run privileged steps (RUN \
                 --security=insecure)"
            ),
            other => bail!("--allow {other}: unknown entitlement (rbuild knows network.host)"),
        }
    }
    let mode = match network {
        "default" => NetworkMode::Private,
        "none" => NetworkMode::None,
        "host" => {
            allow_host = true;
            NetworkMode::Host
        }
        other => bail!("--network {other}: expected default, none or host"),
    };
    Ok((mode, allow_host))
}

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
        other => bail!(
            "unknown --output type={other} (supported: image, registry, oci, docker, local, tar)"
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
        _ => OutputSpec::Tar { dest: dest()? },
    })
}

/// What a build command line asks for besides the pipeline's request: where the result goes
/// and how the command reports.
struct Session {
    mode: Mode,
    printer: Arc<std::sync::Mutex<Printer>>,
    /// The state directory, for hints about a full disk.
    root: PathBuf,
}

impl Session {
    /// Reports diagnostics: a full disk says where, and what to do, whatever step or pull it
    /// stopped.
    fn diagnostics(&self, d: &[Diagnostic]) {
        let fancy = self.mode != Mode::Plain;
        let d: Vec<Diagnostic> = d
            .iter()
            .map(
                |d| match crate::store::state::full_disk_hint(&self.root, &d.message) {
                    Some(hint) if d.help.is_none() => d.clone().with_help(hint),
                    _ => d.clone(),
                },
            )
            .collect();
        self.printer
            .lock()
            .expect("printer")
            .diagnostics(&d, |d| diagnostics::print(d, Target::Stderr, fancy))
    }

    fn step(&self, name: &str, lines: &[String], started: Instant) {
        self.printer
            .lock()
            .expect("printer")
            .step(name, lines, started.elapsed())
    }
}

/// The pipeline's request for `rbuild build`'s arguments.
fn request(args: &BuildArgs) -> Result<BuildRequest> {
    // --platform: none (the machine's), one, or several (a multi-platform index).
    let platforms: Vec<Option<Platform>> = match args.platform.as_deref() {
        None => vec![None],
        Some(list) => {
            let list =
                Platform::parse_list(list).map_err(|e| anyhow!("invalid --platform: {e}"))?;
            match list.is_empty() {
                true => vec![None],
                false => list.into_iter().map(Some).collect(),
            }
        }
    };
    let (network, allow_network_host) = network_options(&args.network, &args.allow)?;
    Ok(BuildRequest {
        target: args.target.clone(),
        platforms,
        network,
        allow_network_host,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        jobs: args.jobs,
        ..BuildRequest::new(args.file.as_deref(), &args.context, &args.build_args)
    })
}

/// The outputs asked for (`--output`, `--push`, `--load`, the default local image), checked
/// against the number of platforms.
fn outputs(args: &BuildArgs, tags: &[String], multi: bool) -> Result<Vec<OutputSpec>> {
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| parse_output(o, tags))
        .collect::<Result<Vec<_>>>()?;
    let image_output = |push: bool| OutputSpec::Image {
        names: tags.to_vec(),
        push,
        compression: Compression::default(),
        oci_mediatypes: false,
    };
    if args.push {
        if tags.is_empty() {
            bail!("--push needs an image name (-t NAME)");
        }
        outputs.push(image_output(true));
    }
    let has_image = outputs
        .iter()
        .any(|o| matches!(o, OutputSpec::Image { .. }));
    if outputs.is_empty() || (args.load && !has_image) {
        outputs.insert(0, image_output(false));
    }
    for output in &outputs {
        match output {
            OutputSpec::Image {
                names, push: true, ..
            } if names.is_empty() => bail!("pushing needs an image name (-t NAME or name=)"),
            OutputSpec::Image { push: false, .. } if multi => bail!(
                "a multi-platform image cannot go to the local image store yet: push it \
                 (--push or -o type=registry) or write it with -o type=oci,dest=FILE"
            ),
            OutputSpec::Archive {
                format: ArchiveFormat::Docker,
                ..
            } if multi => bail!(
                "type=docker holds one platform per image (Docker's manifest.json); use \
                 type=oci for a multi-platform image"
            ),
            OutputSpec::Tar { .. } if multi => bail!(
                "type=tar of several platforms is not supported yet; type=local writes a \
                 directory per platform"
            ),
            _ => {}
        }
    }
    Ok(outputs)
}

/// The secrets and SSH agents given for RUN mounts.
fn provided(args: &BuildArgs) -> Result<crate::worker::mounts::Provided> {
    let getenv = |k: &str| std::env::var(k).ok();
    let mut provided = crate::worker::mounts::Provided::default();
    for spec in &args.secrets {
        let (id, value) = crate::worker::mounts::parse_secret(spec, &getenv)?;
        provided.secrets.insert(id, value);
    }
    for spec in &args.ssh {
        let (id, socket) = crate::worker::mounts::parse_ssh(spec, &getenv)?;
        provided.ssh.insert(id, socket);
    }
    Ok(provided)
}

/// Prints what loading read, as BuildKit's `[internal]` steps.
fn report_load(session: &Session, loaded: &Loaded) {
    let (read, ignore) = loaded.read_time;
    let printer = &mut *session.printer.lock().expect("printer");
    printer.step(
        &format!("[internal] load build definition from {}", loaded.file.name),
        &[format!(
            "transferring dockerfile: {}B done",
            loaded.file.text.len()
        )],
        read,
    );
    let size = loaded.ignore_file.as_ref().map_or(2, |(_, size)| *size);
    printer.step(
        "[internal] load .dockerignore",
        &[format!("transferring context: {size}B done")],
        ignore,
    );
}

/// Prints the lowering's warnings (each platform's, each once); returns whether the build
/// must stop because a build check failed (`--check`, `# check=error=true`).
fn report_warnings(session: &Session, builds: &[Build], check: bool) -> bool {
    let mut warnings: Vec<Diagnostic> = Vec::new();
    for d in builds.iter().flat_map(|b| &b.warnings) {
        if !warnings
            .iter()
            .any(|w| w.message == d.message && w.span == d.span)
        {
            warnings.push(d.clone());
        }
    }
    session.diagnostics(&warnings);
    let findings = warnings.iter().filter(|d| d.rule.is_some()).count();
    if findings > 0 && (check || builds.iter().any(|b| b.failing_checks)) {
        eprintln!(
            "error: {findings} build check{} failed ({})",
            if findings == 1 { "" } else { "s" },
            if check {
                "--check"
            } else {
                "# check=error=true"
            }
        );
        return true;
    }
    false
}

/// Solves the builds' targets with progress and Ctrl-C handling; keeps what hashing learned.
fn solve(
    session: &Session,
    request: &BuildRequest,
    state: &State,
    worker: Arc<BuildWorker>,
    runtime: &tokio::runtime::Runtime,
    builds: &[Build],
) -> Result<Result<Solved, SolveError>> {
    let graph = Arc::new(builds[0].graph.clone());
    let targets: Vec<rbuild_solver::VertexId> = builds.iter().map(|b| b.target).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (solver, stats) = request.solver(worker, state, &graph, &targets, Some(tx))?;
    let cancel = solver.cancel_flag();
    let events_printer = session.printer.clone();
    let result = runtime.block_on(async {
        let printing = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                events_printer.lock().expect("printer").event(event);
            }
        });
        let interrupt = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping the build…");
                cancel.store(true, Ordering::Relaxed);
            }
        });
        let result = solver.solve(graph.clone(), &targets).await;
        drop(solver);
        let _ = printing.await;
        interrupt.abort();
        result
    });
    // What the hashing learned is kept even if the build failed.
    if let Err(e) = state.cache.save_stats(&stats) {
        eprintln!("warning: could not save the stat cache: {e}");
    }
    Ok(result)
}

/// The outputs of a solve, by vertex.
type Solved = std::collections::HashMap<rbuild_solver::VertexId, Arc<rbuild_solver::Output>>;

/// A failed step as a diagnostic: at its instruction, with the last lines of its output.
fn step_failure(
    loaded: &Loaded,
    builds: &[Build],
    vertex: rbuild_solver::VertexId,
    message: String,
    log_tail: &[String],
) -> Diagnostic {
    // The snippet shows the instruction; without one, the step's name says which it was.
    let location = builds.iter().find_map(|b| b.location(vertex));
    let message = match (&location, &builds[0].graph.vertex(vertex).name) {
        (None, Some(name)) => format!("{name}: {message}"),
        _ => message,
    };
    let mut d = Diagnostic::error(&loaded.file, location, message);
    if !log_tail.is_empty() {
        let lines: Vec<String> = log_tail.iter().map(|l| format!("      > {l}")).collect();
        d = d.with_help(format!(
            "last {} lines of output:\n{}",
            log_tail.len(),
            lines.join("\n")
        ));
    }
    d
}

/// Runs a build; returns the process exit code.
pub fn run(global: &Global, args: BuildArgs) -> Result<i32> {
    let mode = if args.quiet {
        Mode::Quiet
    } else {
        args.progress
    };
    let mut request = request(&args)?;
    let provided = provided(&args)?;
    let tags = args
        .tags
        .iter()
        .map(|t| {
            reference::parse(t)
                .map(|r| r.whole())
                .map_err(|e| anyhow!("invalid tag: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let outputs = outputs(&args, &tags, request.platforms.len() > 1)?;
    let session = Session {
        mode,
        printer: Printer::new(mode),
        root: global.root.clone(),
    };
    let loaded = request.load()?;
    report_load(&session, &loaded);
    session.diagnostics(&loaded.parsed.diagnostics);
    if loaded.parsed.has_errors() {
        return Ok(1);
    }

    let state = Arc::new(global.state()?);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let registry = Arc::new(Registry::new(global.registries.clone()));
    let mut resolver = StoreThenRegistry::new(&state, &registry, &runtime);
    resolver.pull = args.pull;
    let builds = match request.lower(&loaded, &resolver) {
        Ok(builds) => builds,
        Err(d) => {
            session.diagnostics(&[d]);
            return Ok(1);
        }
    };
    if report_warnings(&session, &builds, args.check) {
        return Ok(1);
    }
    let worker = Arc::new(BuildWorker {
        state: state.clone(),
        context: request.context.clone(),
        registry: registry.clone(),
        runtime: runtime.handle().clone(),
        provided: Arc::new(provided),
        network: Default::default(),
    });
    let solved = match solve(
        &session,
        &request,
        &state,
        worker.clone(),
        &runtime,
        &builds,
    )? {
        Ok(solved) => solved,
        Err(SolveError::Step {
            vertex,
            message,
            log_tail,
        }) => {
            session.diagnostics(&[step_failure(&loaded, &builds, vertex, message, &log_tail)]);
            session.printer.lock().expect("printer").summary(false);
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let export = Export {
        session: &session,
        args: &args,
        request: &request,
        state: &state,
        registry: &registry,
        runtime: &runtime,
        worker: &worker,
        builds: &builds,
        solved: &solved,
    };
    export.run(&outputs)
}

/// Everything the outputs of a finished build need.
struct Export<'a> {
    session: &'a Session,
    args: &'a BuildArgs,
    request: &'a BuildRequest,
    state: &'a State,
    registry: &'a Registry,
    runtime: &'a tokio::runtime::Runtime,
    worker: &'a BuildWorker,
    builds: &'a [Build],
    solved: &'a Solved,
}

/// The image the outputs export: its manifest (or index), its config (one platform), and the
/// metadata `--metadata-file` writes.
struct Stored {
    manifest: crate::store::layout::Descriptor,
    config: Option<crate::store::layout::Descriptor>,
    metadata: serde_json::Value,
}

impl Export<'_> {
    fn multi(&self) -> bool {
        self.builds.len() > 1
    }

    /// Stores the image (one per platform; several make an index), writes the outputs, the
    /// id and the metadata.
    fn run(&self, outputs: &[OutputSpec]) -> Result<i32> {
        let mut stored = self.store()?;
        let mut named = Vec::new();
        for output in outputs {
            self.output(output, &mut stored, &mut named)?;
        }
        if !named.is_empty() {
            stored.metadata["image.name"] = named.join(",").into();
        }
        // The image id: the config's digest, or for several platforms the index's as the
        // outputs last reported it (pushed with Docker media types, say), as buildx's
        // --iidfile.
        let image_id = match &stored.config {
            Some(config) => config.digest.to_string(),
            None => stored.metadata["containerimage.digest"]
                .as_str()
                .unwrap_or(stored.manifest.digest.as_str())
                .to_string(),
        };
        if let Some(path) = &self.args.iidfile {
            std::fs::write(path, image_id.as_str())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &self.args.metadata_file {
            std::fs::write(path, serde_json::to_vec_pretty(&stored.metadata)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        self.session.printer.lock().expect("printer").summary(true);
        let to_stdout = outputs.iter().any(|o| {
            matches!(
                o,
                OutputSpec::Archive {
                    dest: Dest::Stdout,
                    ..
                } | OutputSpec::Tar { dest: Dest::Stdout }
            )
        });
        if self.session.mode == Mode::Quiet && !to_stdout {
            println!("{image_id}");
        }
        Ok(0)
    }

    /// Stores each platform's image (with `--label`s) and, for several, their index.
    fn store(&self) -> Result<Stored> {
        let mut manifests = Vec::with_capacity(self.builds.len());
        let mut config = None;
        for build in self.builds {
            let mut image = finalize(build, self.solved);
            // --label: set on the final config, with no history entry, as BuildKit does.
            for label in &self.args.labels {
                let (key, value) = label.split_once('=').unwrap_or((label.as_str(), ""));
                image
                    .image
                    .config
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(key.to_string(), value.to_string());
            }
            let (mut manifest, _, image_config) = store_image(&self.state.store, &image)?;
            if self.multi() {
                manifest.platform = Some(crate::store::layout::Platform {
                    os: image.image.os.clone(),
                    architecture: image.image.architecture.clone(),
                    variant: image.image.variant.clone(),
                });
            }
            manifests.push(manifest);
            config = Some(image_config);
        }
        let (manifest, config) = match self.multi() {
            true => (store_index(&self.state.store, &manifests, false)?, None),
            false => (manifests[0].clone(), config),
        };
        let mut metadata = serde_json::json!({
            "containerimage.digest": manifest.digest,
            "containerimage.descriptor": {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": manifest.size,
            },
        });
        if let Some(config) = &config {
            metadata["containerimage.config.digest"] = config.digest.to_string().into();
        }
        Ok(Stored {
            manifest,
            config,
            metadata,
        })
    }

    /// Writes one output.
    fn output(
        &self,
        output: &OutputSpec,
        stored: &mut Stored,
        named: &mut Vec<String>,
    ) -> Result<()> {
        let started = Instant::now();
        match output {
            OutputSpec::Image {
                names,
                push,
                compression,
                oci_mediatypes,
            } => {
                let mut lines = match &stored.config {
                    Some(config) => vec![
                        format!("writing image {} done", config.digest),
                        format!("writing manifest {} done", stored.manifest.digest),
                    ],
                    None => vec![format!(
                        "writing manifest list {} done",
                        stored.manifest.digest
                    )],
                };
                // A multi-platform image is only pushed (refused otherwise).
                if !self.multi() {
                    for name in names {
                        self.state.store.tag(name, &stored.manifest)?;
                        lines.push(format!("naming to {name} done"));
                    }
                }
                named.extend(names.iter().cloned());
                self.session.step("exporting to image", &lines, started);
                if *push {
                    self.push(names, (compression, *oci_mediatypes), stored)?;
                }
            }
            OutputSpec::Archive {
                format,
                docker_media_types,
                dest,
                names,
                compression,
            } => {
                let counter = Arc::new(Counter::default());
                let live = self
                    .session
                    .printer
                    .lock()
                    .expect("printer")
                    .live("exporting layers", counter.clone());
                let exported = write_archive(
                    self.state,
                    &[ArchiveImage {
                        manifest: stored.manifest.clone(),
                        names: names.clone(),
                    }],
                    *format,
                    *docker_media_types,
                    dest,
                    compression,
                    &counter,
                )?;
                drop(live);
                let mut lines = vec![
                    format!(
                        "exporting layers {} {} done",
                        crate::units::human(counter.get()),
                        crate::units::rate(counter.get(), started.elapsed())
                    ),
                    format!("exporting manifest {} done", exported[0].digest),
                ];
                if let Some(config) = &stored.config {
                    lines.push(format!("exporting config {} done", config.digest));
                }
                lines.push(format!("sending tarball to {dest} done"));
                let what = match format {
                    ArchiveFormat::Oci => "exporting to oci image format",
                    ArchiveFormat::Docker => "exporting to docker image format",
                };
                self.session.step(what, &lines, started);
            }
            OutputSpec::Local { dest } => {
                for (build, platform) in self.builds.iter().zip(&self.request.platforms) {
                    // Several platforms: a directory each, named as BuildKit names them.
                    let dest = match (self.multi(), platform) {
                        (true, Some(p)) => dest.join(p.to_string().replace('/', "_")),
                        _ => dest.clone(),
                    };
                    self.worker
                        .export_rootfs(&self.solved[&build.target], None, Some(&dest))?;
                }
                self.session.step(
                    "exporting to client directory",
                    &[format!("copying files to {} done", dest.display())],
                    started,
                );
            }
            OutputSpec::Tar { dest } => {
                self.worker.export_rootfs(
                    &self.solved[&self.builds[0].target],
                    Some(dest),
                    None,
                )?;
                self.session.step(
                    "exporting to client tarball",
                    &[format!("sending tarball to {dest} done")],
                    started,
                );
            }
        }
        Ok(())
    }

    /// Pushes the image under each of `names`.
    fn push(
        &self,
        names: &[String],
        format: (&Compression, bool),
        stored: &mut Stored,
    ) -> Result<()> {
        let started = Instant::now();
        let mut lines = Vec::new();
        for name in names {
            let report = |line: String| {
                if self.session.mode == Mode::Plain {
                    eprintln!("{line}");
                }
            };
            let digest = crate::cli::commands::push::push_image(
                self.state,
                self.registry,
                self.runtime,
                &stored.manifest,
                name,
                format,
                &report,
            )?;
            lines.push(format!("pushing {name}@{digest} done"));
            stored.metadata["containerimage.digest"] = digest.to_string().into();
        }
        self.session
            .step("pushing layers and manifest", &lines, started);
        Ok(())
    }
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
