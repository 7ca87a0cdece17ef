//! `rbuild build`: Dockerfile → image.

use crate::Global;
use crate::compress::{Compression, Counter};
use crate::diagnostics::{self, Target};
use crate::export::{finalize, store_image, write_oci_tar};
use crate::progress::{Mode, Printer};
use crate::reference;
use crate::registry::Registry;
use crate::resolver::StoreThenRegistry;
use crate::state::State;
use crate::worker::BuildWorker;
use anyhow::{Context, Result, anyhow, bail};
use rbuild_frontend::diagnostic::Diagnostic;
use rbuild_frontend::source::SourceFile;
use rbuild_frontend::{BuildOptions, dockerignore, lower, parser};
use rbuild_solver::Solver;
use rbuild_solver::scheduler::SolveError;
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
    /// Progress output
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Mode,
    /// Print only the image id (same as --progress=quiet)
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Also export the image: `type=oci,dest=FILE.tar`
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
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
    /// The build context directory
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

/// An `--output` request.
enum OutputSpec {
    Oci {
        dest: PathBuf,
        compression: Compression,
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
        compression.force = match force.as_str() {
            "true" => true,
            "false" => false,
            other => bail!("invalid force-compression={other:?}: expected true or false"),
        };
    }
    Ok(compression)
}

fn parse_output(spec: &str) -> Result<OutputSpec> {
    let mut fields = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid --output {spec:?}: expected key=value pairs such as type=oci,dest=image.tar"))?;
        fields.insert(k.trim().to_string(), v.trim().to_string());
    }
    match fields.get("type").map(String::as_str) {
        Some("oci") => {
            let dest = fields
                .get("dest")
                .ok_or_else(|| anyhow!("--output type=oci needs dest=FILE.tar"))?;
            Ok(OutputSpec::Oci {
                dest: PathBuf::from(dest),
                compression: parse_compression(&fields)?,
            })
        }
        Some(other) => bail!("--output type={other} is not supported yet (supported: oci)"),
        None => bail!("--output {spec:?} has no type= (supported: type=oci,dest=FILE.tar)"),
    }
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
    let outputs = args
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<Vec<_>>>()?;
    let tags = args
        .tags
        .iter()
        .map(|t| {
            reference::parse(t)
                .map(|r| r.whole())
                .map_err(|e| anyhow!("invalid tag: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let build_args = parse_build_args(&args.build_args);

    // Colourful reports on a terminal, unless the plain format was asked for; JSON events in
    // json mode.
    let fancy = mode != Mode::Plain;
    let printer = Printer::new(mode);
    let print_diagnostics = |d: &[Diagnostic]| {
        printer
            .lock()
            .expect("printer")
            .diagnostics(d, |d| diagnostics::print(d, Target::Stderr, fancy))
    };
    let started = Instant::now();
    let dockerfile_path = args
        .file
        .clone()
        .unwrap_or_else(|| context_arg.join("Dockerfile"));
    let bytes = std::fs::read(&dockerfile_path).map_err(|e| {
        anyhow!(
            "failed to read the Dockerfile {}: {e}",
            dockerfile_path.display()
        )
    })?;
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
    let registry = Arc::new(Registry::default());
    let options = BuildOptions {
        build_args,
        target: args.target.clone(),
        dockerignore,
        all_stages: false,
    };
    let mut resolver = StoreThenRegistry::new(&state, &registry, &runtime);
    resolver.pull = args.pull;
    let build = match lower(&parsed.dockerfile, &options, &resolver) {
        Ok(build) => build,
        Err(d) => {
            print_diagnostics(&[d]);
            return Ok(1);
        }
    };
    print_diagnostics(&build.warnings);
    let findings = build.warnings.iter().filter(|d| d.rule.is_some()).count();
    if findings > 0 && (args.check || build.failing_checks) {
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
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut solver = Solver::new(worker, state.cache.clone(), Some(tx));
    if args.no_cache {
        solver = solver.without_cache_lookups();
    }
    if let Some(jobs) = args.jobs {
        solver = solver.with_jobs(jobs);
    }
    // Context files unchanged since an earlier build are not read again.
    let stats = Arc::new(state.cache.load_stats(&context)?);
    solver = solver.with_stat_cache(stats.clone());
    if !args.no_cache_filter.is_empty() {
        // The stage of a step is in its progress name, `[stage i/n] …`.
        let vertices = build
            .graph
            .needed_for(&[build.target])
            .into_iter()
            .filter(|v| {
                build.graph.vertex(*v).name.as_deref().is_some_and(|name| {
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
    let graph = Arc::new(build.graph.clone());
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
        let result = solver.solve(graph, &[build.target]).await;
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
            let location = build.locations.get(&vertex).copied();
            let message = match (&location, &build.graph.vertex(vertex).name) {
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

    let export_started = Instant::now();
    let image = finalize(&build, &solved);
    let (manifest, _, config) = store_image(&state.store, &image)?;
    let mut lines = vec![
        format!("writing image {} done", config.digest),
        format!("writing manifest {} done", manifest.digest),
    ];
    for tag in &tags {
        state.store.tag(tag, &manifest)?;
        lines.push(format!("naming to {tag} done"));
    }
    printer
        .lock()
        .expect("printer")
        .step("exporting to image", &lines, export_started.elapsed());
    for output in &outputs {
        let OutputSpec::Oci { dest, compression } = output;
        let started = Instant::now();
        let counter = Arc::new(Counter::default());
        let live = printer
            .lock()
            .expect("printer")
            .live("exporting layers", counter.clone());
        let exported = write_oci_tar(
            &state,
            &manifest,
            tags.first().map(String::as_str),
            dest,
            compression,
            &counter,
        )?;
        drop(live);
        let lines = [
            format!(
                "exporting layers {} {} done",
                crate::gc::human(counter.get()),
                crate::progress::rate(counter.get(), started.elapsed())
            ),
            format!("exporting manifest {} done", exported.digest),
            format!("exporting config {} done", config.digest),
            format!("sending tarball to {} done", dest.display()),
        ];
        printer.lock().expect("printer").step(
            "exporting to oci image format",
            &lines,
            started.elapsed(),
        );
    }
    printer.lock().expect("printer").summary(true);
    if mode == Mode::Quiet {
        println!("{}", config.digest);
    }
    Ok(0)
}

/// The Dockerfile's name in messages: the path as the user gave it, without a leading `./`.
fn display_name(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.strip_prefix("./").unwrap_or(&s).to_string()
}
