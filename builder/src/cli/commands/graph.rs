//! `rbuild graph`: the build graph of a Dockerfile, for people (Graphviz DOT) or tools (JSON).
//!
//! Each stage is a cluster of its steps; context sources and downloads are drawn outside the
//! stages. A step is marked cached when a build would take it from the cache: the Dockerfile
//! goes through the build's own pipeline (`crate::pipeline`) and the solver's plan
//! (`Solver::plan`) says it, with the keys a build computes (context files are hashed; a
//! download's key is unknown without fetching it, so steps after one are not marked).

use crate::cli::Global;
use crate::pipeline::BuildRequest;
use crate::worker::BuildWorker;
use anyhow::Result;
use rbuild_solver::Op;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Output formats of `rbuild graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Graphviz DOT (`rbuild graph . | dot -Tsvg > graph.svg`).
    Dot,
    /// `{"target": ID, "vertices": [...]}`.
    Json,
}

/// Arguments of `rbuild graph`.
#[derive(clap::Args)]
pub struct GraphArgs {
    /// The Dockerfile [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "dot")]
    pub format: Format,
    /// A build argument `KEY=VALUE`, or `KEY` to take its value from the environment
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// The stage to show with what it needs [default: every stage]
    #[arg(long)]
    pub target: Option<String>,
    /// The platform to show the build for, as `build --platform` (one; its cache keys are
    /// that build's) [default: this machine's]
    #[arg(long, value_parser = super::pull::parse_platform)]
    pub platform: Option<rbuild_frontend::Platform>,
    /// The network of RUN steps that do not name one, as `build --network` (it is part of
    /// their cache keys)
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub network: String,
    /// The build context
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

/// One vertex as shown.
struct Shown {
    id: usize,
    kind: &'static str,
    label: String,
    stage: Option<String>,
    inputs: Vec<usize>,
    cached: Option<bool>,
}

/// Prints the graph; returns 1 if the Dockerfile has errors.
pub fn run(global: &Global, args: GraphArgs) -> Result<i32> {
    let (network, _) = super::build::network_options(&args.network, &[])?;
    let request = BuildRequest {
        network,
        all_stages: args.target.is_none(),
        target: args.target.clone(),
        platforms: vec![args.platform.clone()],
        ..BuildRequest::new(args.file.as_deref(), &args.context, &args.build_args)
    };
    let Some(inspected) = super::inspect(global, request)? else {
        return Ok(1);
    };
    let build = &inspected.build;
    let graph = &build.graph;
    let worker = Arc::new(BuildWorker {
        named_dirs: Default::default(),
        fetched: Default::default(),
        state: inspected.state.clone(),
        context: inspected.request.context.clone(),
        registry: inspected.registry.clone(),
        runtime: inspected.runtime.handle().clone(),
        provided: Default::default(),
        network: Default::default(),
        imported_mounts: Default::default(),
    });
    let targets = [build.target];
    let (solver, _) = inspected
        .request
        .solver(worker, &inspected.state, graph, &targets, None)?;
    let plan = solver.plan(graph, &targets)?;
    let mut shown = Vec::new();
    for v in graph.needed_for(&targets) {
        let vertex = graph.vertex(v);
        if matches!(vertex.op, Op::Scratch) {
            continue;
        }
        let label = match (&vertex.label, &vertex.name, &vertex.op) {
            // Base images are shared by the stages that use them: drawn outside, by reference.
            (_, _, Op::Image(image)) => format!("FROM {}", image.reference),
            (Some(label), _, _) => label.clone(),
            (None, Some(name), _) => name.clone(),
            (None, None, Op::Local(local)) if local.include.is_empty() => "context".to_string(),
            (None, None, Op::Local(local)) => format!("context: {}", local.include.join(" ")),
            (None, None, Op::Merge) => "merge (--link)".to_string(),
            (None, None, op) => op.kind().to_string(),
        };
        shown.push(Shown {
            id: v.index(),
            kind: vertex.op.kind(),
            label,
            stage: match vertex.op {
                Op::Image(_) => None,
                _ => vertex.stage.clone(),
            },
            inputs: vertex
                .inputs
                .iter()
                .filter(|i| !matches!(graph.vertex(**i).op, Op::Scratch))
                .map(|i| i.index())
                .collect(),
            // Steps that run are marked (a merge is cheap, and not shown as cached).
            cached: match vertex.op {
                Op::Exec(_) | Op::File(_) => plan.get(&v).and_then(|p| p.cached),
                _ => None,
            },
        });
    }
    // A merge belongs to the stage of the step it stacks onto.
    for i in 0..shown.len() {
        if shown[i].stage.is_none() && shown[i].kind == "merge" {
            let base = shown[i].inputs.first().copied();
            let stage = shown
                .iter()
                .find(|s| Some(s.id) == base)
                .and_then(|s| s.stage.clone());
            shown[i].stage = stage;
        }
    }
    match args.format {
        Format::Dot => print!("{}", dot(&shown, build.target.index())),
        Format::Json => {
            let vertices: Vec<serde_json::Value> = shown
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "id": s.id,
                        "op": s.kind,
                        "name": s.label,
                        "stage": s.stage,
                        "inputs": s.inputs,
                        "cached": s.cached,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "target": build.target.index(),
                    "vertices": vertices,
                }))?
            );
        }
    }
    for note in &inspected.unresolved {
        eprintln!("note: could not resolve {note}");
    }
    Ok(0)
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The graph in DOT: stages as clusters (in the order they first appear), cached steps grey.
fn dot(shown: &[Shown], target: usize) -> String {
    let mut out = String::from(
        "digraph rbuild {\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"monospace\", fontsize=10];\n",
    );
    let mut stages: BTreeMap<usize, (String, Vec<&Shown>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let node = |s: &Shown| {
        let mut attrs = vec![format!("label={}", quote(&s.label))];
        match s.kind {
            "local" | "http" => attrs.push("shape=folder".into()),
            "image" => attrs.push("shape=cylinder".into()),
            "merge" => attrs.push("shape=circle, fontsize=8".into()),
            _ => {}
        }
        if s.cached == Some(true) {
            attrs.push("fillcolor=\"#dddddd\"".into());
            attrs[0] = format!("label={}", quote(&format!("{} (cached)", s.label)));
        }
        if s.id == target {
            attrs.push("penwidth=2".into());
        }
        format!("v{} [{}];\n", s.id, attrs.join(", "))
    };
    for s in shown {
        match &s.stage {
            Some(stage) => {
                let pos = order.iter().position(|o| o == stage).unwrap_or_else(|| {
                    order.push(stage.clone());
                    order.len() - 1
                });
                stages
                    .entry(pos)
                    .or_insert_with(|| (stage.clone(), Vec::new()))
                    .1
                    .push(s);
            }
            None => out.push_str(&format!("  {}", node(s))),
        }
    }
    for (i, (stage, members)) in &stages {
        out.push_str(&format!(
            "  subgraph cluster_{i} {{\n    label={};\n    style=rounded;\n",
            quote(stage)
        ));
        for s in members {
            out.push_str(&format!("    {}", node(s)));
        }
        out.push_str("  }\n");
    }
    for s in shown {
        for input in &s.inputs {
            out.push_str(&format!("  v{input} -> v{};\n", s.id));
        }
    }
    out.push_str("}\n");
    out
}
