//! `rbuild lint`: the build checks of a Dockerfile, without building it.

use crate::Global;
use crate::diagnostics::{self, Target};
use crate::registry::Registry;
use crate::resolver::StoreThenRegistry;
use crate::state::State;
use anyhow::{Context, Result};
use rbuild_frontend::diagnostic::Diagnostic;
use rbuild_frontend::image::Image;
use rbuild_frontend::source::SourceFile;
use rbuild_frontend::{
    BuildOptions, ImageResolver, Platform, ResolvedImage, dockerignore, lower, parser,
};
use rbuild_solver::Digest;
use std::cell::RefCell;
use std::path::PathBuf;

/// Output formats of `rbuild lint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Diagnostics with source snippets.
    Text,
    /// `{"warnings": [...]}`, one object per finding.
    Json,
}

/// Arguments of `rbuild lint`.
#[derive(clap::Args)]
pub struct LintArgs {
    /// The Dockerfile [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// A build argument `KEY=VALUE`
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// The platform to check for, as `build --platform` (one) [default: this machine's]
    #[arg(long, value_parser = super::pull::parse_platform)]
    pub platform: Option<Platform>,
    /// The build context (for .dockerignore checks)
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

/// Base images for the checks: found as a build would find them, or, when that fails, an
/// empty config (the checks then do not know the image's environment; a note says so).
struct Lenient<'a> {
    inner: StoreThenRegistry<'a>,
    unresolved: RefCell<Vec<String>>,
}

impl ImageResolver for Lenient<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        match self.inner.resolve(reference, platform) {
            Ok(image) => Ok(image),
            Err(e) => {
                self.unresolved
                    .borrow_mut()
                    .push(format!("{reference}: {e}"));
                Ok(ResolvedImage {
                    reference: reference.to_string(),
                    digest: Digest::of(reference.as_bytes()),
                    image: Image::default(),
                })
            }
        }
    }
}

/// A Dockerfile lowered without building it, as `lint` and `graph` need it.
pub struct Inspected {
    /// The lowered build.
    pub build: rbuild_frontend::Build,
    /// Base images that could not be resolved (their config is unknown).
    pub unresolved: Vec<String>,
    /// The state directory (for cache lookups).
    pub state: State,
}

/// Reads, parses and lowers a Dockerfile with base images resolved leniently. Prints the
/// diagnostics and returns `Ok(None)` when the Dockerfile has errors.
pub fn inspect(
    global: &Global,
    file: Option<&std::path::Path>,
    context: &std::path::Path,
    build_args: &[String],
    target: Option<String>,
    platform: Option<Platform>,
) -> Result<Option<Inspected>> {
    let path = file
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| context.join("Dockerfile"));
    let bytes = crate::commands::build::read_dockerfile(&path)?;
    let name = path.to_string_lossy();
    let file = SourceFile::new(name.strip_prefix("./").unwrap_or(&name), &bytes);
    let parsed = parser::parse(&file);
    if parsed.has_errors() {
        diagnostics::print(&parsed.diagnostics, Target::Stderr, true);
        return Ok(None);
    }
    let ignore = dockerignore::load(context, &path)
        .context("reading the .dockerignore file")?
        .map(|(_, patterns)| patterns)
        .unwrap_or_default();
    let state = State::open(global)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let registry = Registry::new(global.registries.clone());
    let resolver = Lenient {
        inner: StoreThenRegistry::new(&state, &registry, &runtime),
        unresolved: RefCell::new(Vec::new()),
    };
    let options = BuildOptions {
        build_args: build_args
            .iter()
            .filter_map(|a| {
                a.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        all_stages: target.is_none(),
        target,
        dockerignore: ignore,
        platform,
        multi_platform: false,
        // Entitlements are the build's business; lint and graph look at every step.
        allow_network_host: true,
        ..Default::default()
    };
    let build = match lower(&parsed.dockerfile, &options, &resolver) {
        Ok(build) => build,
        Err(d) => {
            diagnostics::print(&[d], Target::Stderr, true);
            return Ok(None);
        }
    };
    let unresolved = resolver.unresolved.into_inner();
    Ok(Some(Inspected {
        build,
        unresolved,
        state,
    }))
}

/// Checks every stage; returns 1 if anything was found (or the Dockerfile has errors).
pub fn run(global: &Global, args: LintArgs) -> Result<i32> {
    let Some(inspected) = inspect(
        global,
        args.file.as_deref(),
        &args.context,
        &args.build_args,
        None,
        args.platform,
    )?
    else {
        return Ok(1);
    };
    let build = inspected.build;
    let findings: Vec<Diagnostic> = build
        .warnings
        .iter()
        .filter(|d| d.rule.is_some())
        .cloned()
        .collect();
    match args.format {
        Format::Text => {
            diagnostics::print(&findings, Target::Stdout, true);
            for note in &inspected.unresolved {
                eprintln!("note: could not resolve {note}; the checks do not know its environment");
            }
            let n = findings.len();
            println!("{n} warning{} found", if n == 1 { "" } else { "s" });
        }
        Format::Json => {
            let warnings: Vec<serde_json::Value> = findings
                .iter()
                .map(|d| {
                    let rule = d.rule.expect("filtered");
                    let pos = d.span.map(|s| d.file.position(s.start));
                    serde_json::json!({
                        "ruleName": rule.name,
                        "description": rule.description,
                        "url": rule.url,
                        "detail": d.message,
                        "location": {
                            "file": d.file.name,
                            "line": pos.map(|p| p.line),
                            "column": pos.map(|p| p.column),
                        },
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "warnings": warnings }))?
            );
        }
    }
    Ok(i32::from(!findings.is_empty()))
}
