//! `rbuild lint`: the build checks of a Dockerfile, without building it.

use crate::cli::Global;
use crate::cli::diagnostics::{self, Target};
use crate::pipeline::BuildRequest;
use anyhow::Result;
use rbuild_frontend::Platform;
use rbuild_frontend::diagnostic::Diagnostic;
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
    /// A build argument `KEY=VALUE`, or `KEY` to take its value from the environment
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// The platform to check for, as `build --platform` (one) [default: this machine's]
    #[arg(long, value_parser = super::pull::parse_platform)]
    pub platform: Option<Platform>,
    /// The build context (for .dockerignore checks)
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

/// Checks every stage; returns 1 if anything was found (or the Dockerfile has errors).
pub fn run(global: &Global, args: LintArgs) -> Result<i32> {
    let request = BuildRequest {
        platforms: vec![args.platform.clone()],
        all_stages: true,
        ..BuildRequest::new(args.file.as_deref(), &args.context, &args.build_args)
    };
    let Some(inspected) = super::inspect(global, request)? else {
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
