//! `rbuild build`: Dockerfile → image. This file turns the command line into a
//! `pipeline::BuildRequest` and runs it; [`output`] parses `--output`, [`export`] writes the
//! outputs of a finished build.

mod annotations;
mod attest;
mod cache;
mod call;
mod context;
mod export;
mod limits;
mod named;
mod output;

use export::Export;
pub use output::{OutputSpec, parse_output};
use rbuild_solver::trace;

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
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The file of the state directory that keeps why the last build's steps missed the cache
/// (`rbuild explain --last`).
pub const LAST_MISSES: &str = "last-misses.json";

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
    /// Run the build checks (see `rbuild lint`) and build nothing, as buildx's --check
    /// (same as --call=check)
    #[arg(long)]
    pub check: bool,
    /// Ask instead of building, as buildx: `check` (the build checks), `outline` (the build
    /// args, secrets and SSH agents the target takes), `targets` (the stages), each with
    /// `,format=json` for BuildKit's JSON; `build` builds [default: build]
    #[arg(long, value_name = "FUNC[,format=json]", value_parser = call::parse)]
    pub call: Option<call::Call>,
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
    /// Read the build cache from here too (BuildKit's syntax, in order of preference):
    /// `type=registry,ref=REF` (or just `REF`), `type=local,src=DIR[,tag=TAG]`
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Export the build cache (BuildKit's syntax): `type=registry,ref=REF`, `type=inline`
    /// (in the image) or `type=local,dest=DIR[,tag=TAG]`, with `mode=min|max`,
    /// `compression=gzip|zstd`, `cache-mounts=true` (the RUN cache mounts' contents too),
    /// `ignore-error=false` (fail the build when the export fails; by default a warning)
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// For each step that ran, say why the cache did not have it: the nearest earlier build
    /// of it (here or in a --cache-from cache) and what differs (files, build args,
    /// environment, base image, an earlier step). `rbuild explain --last` prints it again
    #[arg(long)]
    pub explain: bool,
    /// Write a trace of where the build's time went to FILE (Chrome trace JSON, which
    /// ui.perfetto.dev and chrome://tracing open): parsing, lowering, each step's phases
    /// (waiting for inputs, a claim, an exec slot; preparing, running, diffing and committing),
    /// pulls, unpacking, compression and uploads
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Grant an entitlement to the Dockerfile: `network.host` (for `RUN --network=host`),
    /// `security.insecure` (for `RUN --security=insecure`, a privileged step)
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Add a line to every RUN step's /etc/hosts: `NAME:IP` (or `NAME=IP`); `host-gateway`
    /// as the IP is this machine's own address
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    /// A resource limit of RUN steps, as Docker's: `NAME=SOFT[:HARD]` (`nofile=1024:2048`)
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// The size of RUN steps' /dev/shm (`128m`, `1g`) [default: 64m]
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Run RUN steps in a cgroup of their own under this one (its limits bound them)
    #[arg(long = "cgroup-parent", value_name = "CGROUP")]
    pub cgroup_parent: Option<String>,
    /// An annotation of the image, as buildx's: `KEY=VALUE` (every manifest),
    /// `manifest[os/arch]:KEY=VALUE` (one platform's), `index:KEY=VALUE`,
    /// `manifest-descriptor[os/arch]:KEY=VALUE` or `index-descriptor:KEY=VALUE`
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Annotate the manifests (and the index) with the image's `org.opencontainers.image.*`
    /// labels (the Dockerfile's and `--label`'s), as registries show annotations; an
    /// `--annotation` of the same key wins
    #[arg(long)]
    pub label_annotations: bool,
    /// SLSA v1 provenance attestation, as buildx's flag: `true`/`min`/`max`, `false`, or
    /// `mode=min|max,builder-id=URI,reproducible=true`; `mode=min` is the default when the
    /// image is pushed (`BUILDX_NO_DEFAULT_ATTESTATIONS=1` or `--provenance=false` turn it off)
    #[arg(
        long,
        value_name = "VALUE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub provenance: Option<String>,
    /// SBOM attestation, as buildx's flag: `true` attaches an SPDX document of each
    /// platform's image (packages of its dpkg and apk databases, each with the instruction
    /// that introduced it) as BuildKit does, in the image index
    #[arg(
        long,
        value_name = "VALUE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub sbom: Option<String>,
    /// An attestation, as buildx's `--attest type=sbom|provenance[,KEY=VALUE…]`
    /// (`disabled=true` turns one off)
    #[arg(long = "attest", value_name = "SPEC")]
    pub attest: Vec<String>,
    /// A named context, as buildx: `NAME=DIR`, `NAME=docker-image://REF`,
    /// `NAME=oci-layout://PATH[:TAG]`, `NAME=https://…/ctx.tar.gz` or a git URL; `FROM NAME`,
    /// `COPY --from=NAME` and `RUN --mount=from=NAME` use it, and it replaces a stage (or an
    /// image) of that name
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// The build context: a directory, `-` (a tar archive on stdin, or a Dockerfile alone), an
    /// `https://` URL of a tarball, or a git repository (`https://host/repo.git#ref:dir`,
    /// `git@host:repo`); `-f -` reads the Dockerfile from stdin
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

/// The trace file of `--trace`, written when dropped.
struct TraceFile(PathBuf);

impl TraceFile {
    fn start(path: PathBuf) -> TraceFile {
        trace::enable();
        TraceFile(path)
    }
}

impl Drop for TraceFile {
    fn drop(&mut self) {
        let written = serde_json::to_vec(&trace::chrome_json())
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(&self.0, json));
        if let Err(e) = written {
            eprintln!(
                "warning: could not write the trace {}: {e}",
                self.0.display()
            );
        }
    }
}

/// The entitlements `--allow` grants: `network.host` and `security.insecure`.
fn entitlements(allow: &[String]) -> Result<(bool, bool)> {
    let (mut host, mut insecure) = (false, false);
    for entitlement in allow {
        match entitlement.as_str() {
            "network.host" => host = true,
            "security.insecure" => insecure = true,
            other => bail!(
                "--allow {other}: unknown entitlement (rbuild knows network.host and \
                 security.insecure)"
            ),
        }
    }
    Ok((host, insecure))
}

/// The network of RUN steps without `--network` and whether `RUN --network=host` is allowed,
/// from `--network` and `--allow`. As with buildx, `--network=host` on the command line grants
/// `network.host` itself: the person running the build asked for it, not the Dockerfile.
pub fn network_options(network: &str, allow: &[String]) -> Result<(NetworkMode, bool)> {
    let (mut allow_host, _) = entitlements(allow)?;
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

/// The pipeline's request for `rbuild build`'s arguments (`dockerfile_name`: the Dockerfile's
/// name in messages when it is not a file of this machine).
fn request(args: &BuildArgs, dockerfile_name: Option<&str>) -> Result<BuildRequest> {
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
    let (_, allow_insecure) = entitlements(&args.allow)?;
    Ok(BuildRequest {
        limits: limits::parse(args, network)?,
        allow_insecure,
        target: args.target.clone(),
        platforms,
        network,
        allow_network_host,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        jobs: args.jobs,
        dockerfile_name: dockerfile_name.map(str::to_string),
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
/// must stop because a build check failed (`# check=error=true`).
fn report_warnings(session: &Session, builds: &[Build]) -> bool {
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
    if findings > 0 && builds.iter().any(|b| b.failing_checks) {
        eprintln!(
            "error: {findings} build check{} failed (# check=error=true)",
            if findings == 1 { "" } else { "s" },
        );
        return true;
    }
    false
}

/// Solves the builds' targets with progress and Ctrl-C handling; keeps what hashing learned.
fn solve(
    session: &Session,
    (request, state): (&BuildRequest, &State),
    worker: Arc<BuildWorker>,
    runtime: &tokio::runtime::Runtime,
    (builds, extra): (&[Build], &[rbuild_solver::VertexId]),
    imported: crate::remotecache::Imported,
) -> Result<Result<Solution, SolveError>> {
    let graph = Arc::new(builds[0].graph.clone());
    let mut targets: Vec<rbuild_solver::VertexId> = builds.iter().map(|b| b.target).collect();
    targets.extend(
        extra
            .iter()
            .filter(|v| !targets.contains(v))
            .copied()
            .collect::<Vec<_>>(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (solver, stats) = request.solver(worker, state, &graph, &targets, Some(tx))?;
    let solver = solver
        .with_imported(imported.records)
        .with_imported_summaries(imported.summaries);
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
        let result = match result {
            Ok(solved) => solver.explain_misses(&graph).map(|misses| Solution {
                solved,
                keys: solver.keys(),
                summaries: solver.summaries(),
                misses,
            }),
            Err(e) => Err(e),
        };
        drop(solver);
        let _ = printing.await;
        interrupt.abort();
        result
    });
    // The steps' overlays, COPY and unpacking do not sync: one sync for the whole build,
    // before the caller relies on its snapshots (see `Snapshotter::sync`).
    let syncing = trace::span("build", "sync snapshots", || None);
    if let Err(e) = state.snapshots.sync() {
        eprintln!("warning: could not sync the build's snapshots to disk: {e}");
    }
    drop(syncing);
    // What the hashing learned is kept even if the build failed.
    if let Err(e) = state.cache.save_stats(&stats) {
        eprintln!("warning: could not save the stat cache: {e}");
    }
    Ok(result)
}

/// The outputs of a solve, by vertex.
type Solved = std::collections::HashMap<rbuild_solver::VertexId, Arc<rbuild_solver::Output>>;

/// What a successful solve found.
struct Solution {
    /// The outputs.
    solved: Solved,
    /// Every vertex's key.
    keys: cache::Keys,
    /// What went into each key.
    summaries: cache::Summaries,
    /// Why each step that ran missed the cache.
    misses: Vec<rbuild_solver::scheduler::Miss>,
}

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
pub fn run(global: &Global, mut args: BuildArgs) -> Result<i32> {
    let started = std::time::SystemTime::now();
    // Written when the build ends, however it ends.
    let _trace = args.trace.clone().map(TraceFile::start);
    // A context from stdin, a URL or git is fetched into a directory that lives until the end.
    let source = context::resolve(&args.context, args.file.as_deref())?;
    args.context = source.context.clone();
    args.file = source.dockerfile.clone();
    let name = source.dockerfile_name.as_deref();
    let check = call::Call {
        func: call::Func::Check,
        json: false,
        ignore_status: false,
    };
    match args.call.or(args.check.then_some(check)) {
        Some(c) if c.func != call::Func::Build => return call::answer(global, &args, c, name),
        _ => {}
    }
    let mode = if args.quiet {
        Mode::Quiet
    } else {
        args.progress
    };
    let mut request = request(&args, name)?;
    named::split(&args.build_contexts)?;
    let annotations = annotations::Annotations::parse(&args.annotations)?;
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
    let pushing = outputs
        .iter()
        .any(|o| matches!(o, OutputSpec::Image { push: true, .. }));
    let attestations = attest::Options::parse(&args, pushing)?;
    let caches = cache::Caches::parse(&args)?;
    let session = Session {
        mode,
        printer: Printer::new(mode),
        root: global.root.clone(),
    };
    let parsing = trace::span("build", "parse", || None);
    let loaded = request.load()?;
    drop(parsing);
    report_load(&session, &loaded);
    session.diagnostics(&loaded.parsed.diagnostics);
    if loaded.parsed.has_errors() {
        return Ok(1);
    }

    let state = Arc::new(global.state()?);
    let platform = request.platforms[0].clone().unwrap_or_else(Platform::host);
    let named = named::load(&args.build_contexts, &state, &platform)?;
    request.named_contexts = named.contexts.clone();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let registry = Arc::new(Registry::new(global.registries.clone()));
    let mut resolver = StoreThenRegistry::new(&state, &registry, &runtime);
    resolver.pull = args.pull;
    let lowering = trace::span("build", "lower", || None);
    let builds = match request.lower(&loaded, &resolver) {
        Ok(builds) => builds,
        Err(d) => {
            session.diagnostics(&[d]);
            return Ok(1);
        }
    };
    drop(lowering);
    if report_warnings(&session, &builds) {
        return Ok(1);
    }
    let importing = trace::span("build", "import caches", || None);
    let mut imported = caches.import(&session, &loaded, &state, &registry, &runtime);
    drop(importing);
    let worker = Arc::new(BuildWorker {
        imported_mounts: std::mem::take(&mut imported.mounts),
        named_dirs: named.dirs.clone(),
        fetched: Default::default(),
        state: state.clone(),
        context: request.context.clone(),
        registry: registry.clone(),
        runtime: runtime.handle().clone(),
        provided: Arc::new(provided),
        network: Default::default(),
    });
    // Stages an SBOM covers are built too (BuildKit's scan-stage).
    let scanned: Vec<rbuild_solver::VertexId> = builds
        .iter()
        .flat_map(|b| attest::scanned_stages(&attestations, &request.build_args, b))
        .map(|s| s.vertex)
        .collect();
    let solving = trace::span("build", "solve", || None);
    let solution = match solve(
        &session,
        (&request, &state),
        worker.clone(),
        &runtime,
        (&builds, &scanned),
        imported,
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
    drop(solving);
    caches.report_misses(&session, &state, &solution.misses, args.explain);
    let _exporting = trace::span("build", "export", || None);
    let export = Export {
        session: &session,
        args: &args,
        request: &request,
        state: &state,
        registry: &registry,
        runtime: &runtime,
        worker: &worker,
        builds: &builds,
        solved: &solution.solved,
        caches: &caches,
        keys: &solution.keys,
        summaries: &solution.summaries,
        loaded: &loaded,
        annotations: &annotations,
        attestations: &attestations,
        started,
        origin: source.origin.as_ref(),
    };
    export.run(&outputs)
}
