//! `rbuild build`: Dockerfile → image.

use crate::Global;
use crate::compress::{Compression, Counter};
use crate::diagnostics::{self, Target};
use crate::export::{
    ArchiveFormat, ArchiveImage, Dest, finalize, store_image, store_index, write_archive,
};
use crate::progress::{Mode, Printer};
use crate::reference;
use crate::registry::Registry;
use crate::resolver::StoreThenRegistry;
use crate::state::State;
use crate::worker::BuildWorker;
use anyhow::{Context, Result, anyhow, bail};
use rbuild_frontend::diagnostic::Diagnostic;
use rbuild_frontend::source::SourceFile;
use rbuild_frontend::{BuildOptions, Platform, dockerignore, lower, parser};
use rbuild_solver::scheduler::SolveError;
use rbuild_solver::{NetworkMode, Solver};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

/// The largest Dockerfile rbuild reads (32 MiB): far above any written by hand or generated,
/// and a bound for `-f /dev/zero` or a runaway generator, which would otherwise be read until
/// memory runs out.
pub const MAX_DOCKERFILE_SIZE: u64 = 32 << 20;

/// Reads the Dockerfile at `path`, refusing one larger than [`MAX_DOCKERFILE_SIZE`].
pub fn read_dockerfile(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let failed =
        |e: std::io::Error| anyhow!("failed to read the Dockerfile {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCKERFILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_DOCKERFILE_SIZE {
        bail!(
            "failed to read the Dockerfile {}: it is larger than {} MiB",
            path.display(),
            MAX_DOCKERFILE_SIZE >> 20
        );
    }
    Ok(bytes)
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
pub(crate) enum OutputSpec {
    /// `type=image` (the local store) or `type=registry` (also pushed).
    Image {
        names: Vec<String>,
        push: bool,
        compression: Compression,
        oci_mediatypes: bool,
    },
    /// `type=oci` or `type=docker`: an image archive.
    Archive {
        format: ArchiveFormat,
        docker_media_types: bool,
        dest: Dest,
        names: Vec<String>,
        compression: Compression,
    },
    /// `type=local`: the root filesystem as a directory.
    Local { dest: PathBuf },
    /// `type=tar`: the root filesystem as one tar.
    Tar { dest: Dest },
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
pub(crate) fn parse_output(spec: &str, tags: &[String]) -> Result<OutputSpec> {
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
        && crate::timefmt::source_date_epoch().is_some()
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

fn parse_build_args(args: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for arg in args {
        match arg.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            // `--build-arg NAME` takes the value from the environment, and is ignored if unset.
            None => {
                if let Ok(v) = std::env::var(arg) {
                    out.insert(arg.clone(), v);
                }
            }
        }
    }
    out
}

/// Runs a build; returns the process exit code.
pub fn run(global: &Global, args: BuildArgs) -> Result<i32> {
    let mode = if args.quiet {
        Mode::Quiet
    } else {
        args.progress
    };
    let context_arg = args.context.clone();
    let context = context_arg
        .canonicalize()
        .with_context(|| format!("build context {}", context_arg.display()))?;
    if !context.is_dir() {
        bail!("build context {} is not a directory", context_arg.display());
    }
    let getenv = |k: &str| std::env::var(k).ok();
    let mut provided = crate::mounts::Provided::default();
    for spec in &args.secrets {
        let (id, value) = crate::mounts::parse_secret(spec, &getenv)?;
        provided.secrets.insert(id, value);
    }
    for spec in &args.ssh {
        let (id, socket) = crate::mounts::parse_ssh(spec, &getenv)?;
        provided.ssh.insert(id, socket);
    }
    let tags = args
        .tags
        .iter()
        .map(|t| {
            reference::parse(t)
                .map(|r| r.whole())
                .map_err(|e| anyhow!("invalid tag: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| parse_output(o, &tags))
        .collect::<Result<Vec<_>>>()?;
    let image_output = |push: bool| OutputSpec::Image {
        names: tags.clone(),
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
    if outputs.is_empty()
        || (args.load
            && !outputs
                .iter()
                .any(|o| matches!(o, OutputSpec::Image { .. })))
    {
        outputs.insert(0, image_output(false));
    }
    for output in &outputs {
        if let OutputSpec::Image {
            names, push: true, ..
        } = output
            && names.is_empty()
        {
            bail!("pushing needs an image name (-t NAME or name=)");
        }
    }
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
    let multi = platforms.len() > 1;
    if multi {
        for output in &outputs {
            match output {
                OutputSpec::Image { push: false, .. } => bail!(
                    "a multi-platform image cannot go to the local image store yet: push it \
                     (--push or -o type=registry) or write it with -o type=oci,dest=FILE"
                ),
                OutputSpec::Archive {
                    format: ArchiveFormat::Docker,
                    ..
                } => bail!(
                    "type=docker holds one platform per image (Docker's manifest.json); use \
                     type=oci for a multi-platform image"
                ),
                OutputSpec::Tar { .. } => bail!(
                    "type=tar of several platforms is not supported yet; type=local writes a \
                     directory per platform"
                ),
                _ => {}
            }
        }
    }
    let build_args = parse_build_args(&args.build_args);

    // Colourful reports on a terminal, unless the plain format was asked for; JSON events in
    // json mode.
    let fancy = mode != Mode::Plain;
    let printer = Printer::new(mode);
    let print_diagnostics = |d: &[Diagnostic]| {
        // A full disk says where, and what to do, whatever step or pull it stopped.
        let d: Vec<Diagnostic> = d
            .iter()
            .map(
                |d| match crate::state::full_disk_hint(&global.root, &d.message) {
                    Some(hint) if d.help.is_none() => d.clone().with_help(hint),
                    _ => d.clone(),
                },
            )
            .collect();
        printer
            .lock()
            .expect("printer")
            .diagnostics(&d, |d| diagnostics::print(d, Target::Stderr, fancy))
    };
    let started = Instant::now();
    let dockerfile_path = args
        .file
        .clone()
        .unwrap_or_else(|| context_arg.join("Dockerfile"));
    let bytes = read_dockerfile(&dockerfile_path)?;
    let file = SourceFile::new(display_name(&dockerfile_path), &bytes);
    printer.lock().expect("printer").step(
        &format!("[internal] load build definition from {}", file.name),
        &[format!("transferring dockerfile: {}B done", bytes.len())],
        started.elapsed(),
    );
    let ignore_started = Instant::now();
    let (ignore_lines, dockerignore) = match dockerignore::load(&context, &dockerfile_path)
        .with_context(|| "reading the .dockerignore file")?
    {
        Some((path, patterns)) => {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            (
                vec![format!("transferring context: {size}B done")],
                patterns,
            )
        }
        None => (vec!["transferring context: 2B done".to_string()], vec![]),
    };
    printer.lock().expect("printer").step(
        "[internal] load .dockerignore",
        &ignore_lines,
        ignore_started.elapsed(),
    );
    let parsed = parser::parse(&file);
    print_diagnostics(&parsed.diagnostics);
    if parsed.has_errors() {
        return Ok(1);
    }

    let state = Arc::new(State::open(global)?);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let registry = Arc::new(Registry::new(global.registries.clone()));
    let mut resolver = StoreThenRegistry::new(&state, &registry, &runtime);
    resolver.pull = args.pull;
    let (network, allow_network_host) = network_options(&args.network, &args.allow)?;
    let mut builds = Vec::with_capacity(platforms.len());
    for platform in &platforms {
        let options = BuildOptions {
            build_args: build_args.clone(),
            target: args.target.clone(),
            dockerignore: dockerignore.clone(),
            all_stages: false,
            platform: platform.clone(),
            multi_platform: multi,
            network,
            allow_network_host,
        };
        match lower(&parsed.dockerfile, &options, &resolver) {
            Ok(build) => builds.push(build),
            Err(d) => {
                print_diagnostics(&[d]);
                return Ok(1);
            }
        }
    }
    if multi {
        // One graph for all platforms: what does not depend on the platform runs once.
        let mut graph = rbuild_solver::Graph::new();
        for build in &mut builds {
            build.merge_into(&mut graph);
        }
        for build in &mut builds {
            build.share(&graph);
        }
    }
    // Each platform's findings, each once.
    let mut warnings: Vec<Diagnostic> = Vec::new();
    for d in builds.iter().flat_map(|b| &b.warnings) {
        if !warnings
            .iter()
            .any(|w| w.message == d.message && w.span == d.span)
        {
            warnings.push(d.clone());
        }
    }
    print_diagnostics(&warnings);
    let findings = warnings.iter().filter(|d| d.rule.is_some()).count();
    if findings > 0 && (args.check || builds.iter().any(|b| b.failing_checks)) {
        eprintln!(
            "error: {findings} build check{} failed ({})",
            if findings == 1 { "" } else { "s" },
            if args.check {
                "--check"
            } else {
                "# check=error=true"
            }
        );
        return Ok(1);
    }

    let worker = Arc::new(BuildWorker {
        state: state.clone(),
        context: context.clone(),
        registry: registry.clone(),
        runtime: runtime.handle().clone(),
        provided: Arc::new(provided),
        network: Default::default(),
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut solver = Solver::new(worker.clone(), state.cache.clone(), Some(tx));
    if args.no_cache {
        solver = solver.without_cache_lookups();
    }
    if let Some(jobs) = args.jobs {
        solver = solver.with_jobs(jobs);
    }
    // Layers made with SOURCE_DATE_EPOCH have their file times clamped: not the same layers.
    solver = solver.with_key_salt(crate::timefmt::cache_salt());
    // Context files unchanged since an earlier build are not read again.
    let stats = Arc::new(state.cache.load_stats(&context)?);
    solver = solver.with_stat_cache(stats.clone());
    let graph = Arc::new(builds[0].graph.clone());
    let targets: Vec<rbuild_solver::VertexId> = builds.iter().map(|b| b.target).collect();
    if !args.no_cache_filter.is_empty() {
        // The stage of a step is in its progress name, `[stage i/n] …`.
        let vertices = graph.needed_for(&targets).into_iter().filter(|v| {
            graph.vertex(*v).name.as_deref().is_some_and(|name| {
                let (stage, _) = super::graph::split_name(name);
                stage.is_some_and(|stage| {
                    args.no_cache_filter
                        .iter()
                        .any(|f| f.trim().eq_ignore_ascii_case(&stage))
                })
            })
        });
        solver = solver.without_cache_lookups_for(vertices);
    }
    let cancel = solver.cancel_flag();
    let events_printer = printer.clone();
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
    let solved = match result {
        Ok(solved) => solved,
        Err(SolveError::Step {
            vertex,
            message,
            log_tail,
        }) => {
            // The snippet shows the instruction; without one, the step's name says which it was.
            let location = builds
                .iter()
                .find_map(|b| b.locations.get(&vertex))
                .copied();
            let message = match (&location, &graph.vertex(vertex).name) {
                (None, Some(name)) => format!("{name}: {message}"),
                _ => message,
            };
            let mut d = Diagnostic::error(&file, location, message);
            if !log_tail.is_empty() {
                let lines: Vec<String> = log_tail.iter().map(|l| format!("      > {l}")).collect();
                d = d.with_help(format!(
                    "last {} lines of output:\n{}",
                    log_tail.len(),
                    lines.join("\n")
                ));
            }
            print_diagnostics(&[d]);
            printer.lock().expect("printer").summary(false);
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };

    // One image per platform; several make an index.
    let mut manifests = Vec::with_capacity(builds.len());
    let mut config = None;
    for build in &builds {
        let mut image = finalize(build, &solved);
        // --label: set on the final config, with no history entry, as BuildKit does.
        for label in &args.labels {
            let (key, value) = label.split_once('=').unwrap_or((label.as_str(), ""));
            image
                .image
                .config
                .labels
                .get_or_insert_with(Default::default)
                .insert(key.to_string(), value.to_string());
        }
        let (mut manifest, _, image_config) = store_image(&state.store, &image)?;
        if multi {
            manifest.platform = Some(crate::store::Platform {
                os: image.image.os.clone(),
                architecture: image.image.architecture.clone(),
                variant: image.image.variant.clone(),
            });
        }
        manifests.push(manifest);
        config = Some(image_config);
    }
    let (manifest, config) = match multi {
        true => (store_index(&state.store, &manifests, false)?, None),
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
    let mut named = Vec::new();
    for output in &outputs {
        let started = Instant::now();
        let step = |name: &str, lines: &[String]| {
            printer
                .lock()
                .expect("printer")
                .step(name, lines, started.elapsed())
        };
        match output {
            OutputSpec::Image {
                names,
                push,
                compression,
                oci_mediatypes,
            } => {
                let mut lines = match &config {
                    Some(config) => vec![
                        format!("writing image {} done", config.digest),
                        format!("writing manifest {} done", manifest.digest),
                    ],
                    None => vec![format!("writing manifest list {} done", manifest.digest)],
                };
                // A multi-platform image is only pushed (refused above otherwise).
                if !multi {
                    for name in names {
                        state.store.tag(name, &manifest)?;
                        lines.push(format!("naming to {name} done"));
                    }
                }
                named.extend(names.iter().cloned());
                step("exporting to image", &lines);
                if *push {
                    let started = Instant::now();
                    let mut lines = Vec::new();
                    for name in names {
                        let report = |line: String| {
                            if mode == Mode::Plain {
                                eprintln!("{line}");
                            }
                        };
                        let digest = crate::commands::push::push_image(
                            &state,
                            &registry,
                            &runtime,
                            &manifest,
                            name,
                            (compression, *oci_mediatypes),
                            &report,
                        )?;
                        lines.push(format!("pushing {name}@{digest} done"));
                        metadata["containerimage.digest"] = digest.to_string().into();
                    }
                    printer.lock().expect("printer").step(
                        "pushing layers and manifest",
                        &lines,
                        started.elapsed(),
                    );
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
                let live = printer
                    .lock()
                    .expect("printer")
                    .live("exporting layers", counter.clone());
                let exported = write_archive(
                    &state,
                    &[ArchiveImage {
                        manifest: manifest.clone(),
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
                        crate::gc::human(counter.get()),
                        crate::progress::rate(counter.get(), started.elapsed())
                    ),
                    format!("exporting manifest {} done", exported[0].digest),
                ];
                if let Some(config) = &config {
                    lines.push(format!("exporting config {} done", config.digest));
                }
                lines.push(format!("sending tarball to {dest} done"));
                let what = match format {
                    ArchiveFormat::Oci => "exporting to oci image format",
                    ArchiveFormat::Docker => "exporting to docker image format",
                };
                step(what, &lines);
            }
            OutputSpec::Local { dest } => {
                for (build, platform) in builds.iter().zip(&platforms) {
                    // Several platforms: a directory each, named as BuildKit names them.
                    let dest = match (multi, platform) {
                        (true, Some(p)) => dest.join(p.to_string().replace('/', "_")),
                        _ => dest.clone(),
                    };
                    worker.export_rootfs(&solved[&build.target], None, Some(&dest))?;
                }
                step(
                    "exporting to client directory",
                    &[format!("copying files to {} done", dest.display())],
                );
            }
            OutputSpec::Tar { dest } => {
                worker.export_rootfs(&solved[&builds[0].target], Some(dest), None)?;
                step(
                    "exporting to client tarball",
                    &[format!("sending tarball to {dest} done")],
                );
            }
        }
    }
    if !named.is_empty() {
        metadata["image.name"] = named.join(",").into();
    }
    // The image id: the config's digest, or for several platforms the index's as the outputs
    // last reported it (pushed with Docker media types, say), as buildx's --iidfile.
    let image_id = match &config {
        Some(config) => config.digest.to_string(),
        None => metadata["containerimage.digest"]
            .as_str()
            .unwrap_or(manifest.digest.as_str())
            .to_string(),
    };
    if let Some(path) = &args.iidfile {
        std::fs::write(path, image_id.as_str())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        std::fs::write(path, serde_json::to_vec_pretty(&metadata)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    printer.lock().expect("printer").summary(true);
    let to_stdout = outputs.iter().any(|o| {
        matches!(
            o,
            OutputSpec::Archive {
                dest: Dest::Stdout,
                ..
            } | OutputSpec::Tar { dest: Dest::Stdout }
        )
    });
    if mode == Mode::Quiet && !to_stdout {
        println!("{image_id}");
    }
    Ok(0)
}

/// The Dockerfile's name in messages: the path as the user gave it, without a leading `./`.
fn display_name(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.strip_prefix("./").unwrap_or(&s).to_string()
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
                assert_eq!(compression.media_type, crate::store::OCI_LAYER_ZSTD);
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
