//! `rbuild graph`: the build graph of a Dockerfile, for people (Graphviz DOT) or tools (JSON).
//!
//! Each stage is a cluster of its steps; context sources and downloads are drawn outside the
//! stages. A step is marked cached when the state directory (`--root`) holds a result for its
//! cache key, computed as a build would compute it (context files are hashed; a download's key
//! is unknown without fetching it, so steps after one are not marked).

use crate::Global;
use anyhow::Result;
use rbuild_solver::{Digest, Op, VertexId, cachekey, contenthash};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

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
    /// A build argument `KEY=VALUE`
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// The stage to show with what it needs [default: every stage]
    #[arg(long)]
    pub target: Option<String>,
    /// The platform to show the build for, as `build --platform` (one; its cache keys are
    /// that build's) [default: this machine's]
    #[arg(long, value_parser = super::pull::parse_platform)]
    pub platform: Option<rbuild_frontend::Platform>,
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

/// The stage and step label of a progress name such as `[builder 2/4] RUN make`.
pub fn split_name(name: &str) -> (Option<String>, String) {
    if let Some(rest) = name.strip_prefix('[')
        && let Some((inside, label)) = rest.split_once("] ")
    {
        // The position is padded to the total's width: `[stage  2/10]`, `[ 2/10]`.
        let (stage, position) = match inside.rsplit_once(' ') {
            Some((stage, position)) => (stage.trim_end(), position),
            None => ("", inside),
        };
        // Multi-platform builds start with the platform (`[linux/arm64 build 2/4]`); stage
        // names have no `/`.
        let stage = match stage.split_once(' ') {
            Some((first, rest)) if first.contains('/') => rest.trim_start(),
            None if stage.contains('/') => "",
            _ => stage,
        };
        if !stage.is_empty() {
            return (Some(stage.to_string()), label.to_string());
        }
        // The only stage, unnamed: `[2/3] RUN …`.
        if position.split_once('/').is_some_and(|(i, n)| {
            !i.is_empty() && !n.is_empty() && (i.to_owned() + n).bytes().all(|b| b.is_ascii_digit())
        }) {
            return (None, label.to_string());
        }
    }
    (None, name.to_string())
}

/// Prints the graph; returns 1 if the Dockerfile has errors.
pub fn run(global: &Global, args: GraphArgs) -> Result<i32> {
    let Some(inspected) = super::lint::inspect(
        global,
        args.file.as_deref(),
        &args.context,
        &args.build_args,
        args.target.clone(),
        args.platform.clone(),
    )?
    else {
        return Ok(1);
    };
    let build = &inspected.build;
    let graph = &build.graph;
    let context = args.context.canonicalize().ok();
    let order = graph.needed_for(&[build.target]);
    // Cache keys in topological order; None where one cannot be known without running.
    let mut keys: HashMap<VertexId, Option<Digest>> = HashMap::new();
    let mut shown = Vec::new();
    let mut index: HashMap<VertexId, usize> = HashMap::new();
    let salt = crate::timefmt::cache_salt();
    for &v in &order {
        let vertex = graph.vertex(v);
        let inputs: Option<Vec<Digest>> = vertex
            .inputs
            .iter()
            .map(|i| keys.get(i).cloned().flatten())
            .collect();
        let key = match (&vertex.op, inputs) {
            (Op::Http(_), _) | (_, None) => None,
            (Op::Local(local), Some(inputs)) => context
                .as_ref()
                .and_then(|root| contenthash::hash_local(root, local).ok())
                .map(|content| cachekey::compute(&vertex.op, &inputs, Some(&content))),
            (Op::Scratch, Some(inputs)) => Some(cachekey::compute(&vertex.op, &inputs, None)),
            // As the solver keys layer-making steps (salted with SOURCE_DATE_EPOCH if set).
            (op, Some(inputs)) => Some(cachekey::salted(
                cachekey::compute(op, &inputs, None),
                salt.as_deref(),
            )),
        };
        keys.insert(v, key.clone());
        if matches!(vertex.op, Op::Scratch) {
            continue;
        }
        let cached = match (&vertex.op, &key) {
            (Op::Exec(_) | Op::File(_), Some(key)) => {
                Some(inspected.state.cache.get(key).ok().flatten().is_some())
            }
            _ => None,
        };
        let (stage, label) = match (&vertex.name, &vertex.op) {
            // Base images are shared by the stages that use them: drawn outside, by reference.
            (_, Op::Image(image)) => (None, format!("FROM {}", image.reference)),
            (Some(name), _) => split_name(name),
            (None, Op::Local(local)) => (
                None,
                if local.include.is_empty() {
                    "context".to_string()
                } else {
                    format!("context: {}", local.include.join(" "))
                },
            ),
            (None, Op::Merge) => (None, "merge (--link)".to_string()),
            (None, op) => (None, op.kind().to_string()),
        };
        index.insert(v, shown.len());
        shown.push(Shown {
            id: v.index(),
            kind: vertex.op.kind(),
            label,
            stage,
            inputs: vertex
                .inputs
                .iter()
                .filter(|i| !matches!(graph.vertex(**i).op, Op::Scratch))
                .map(|i| i.index())
                .collect(),
            cached,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_names_split_into_stage_and_step() {
        assert_eq!(
            split_name("[builder 2/4] RUN make"),
            (Some("builder".into()), "RUN make".into())
        );
        assert_eq!(
            split_name("[stage-1 1/2] FROM x@sha256:1"),
            (Some("stage-1".into()), "FROM x@sha256:1".into())
        );
        assert_eq!(split_name("https://x/y"), (None, "https://x/y".into()));
        assert_eq!(
            split_name("[2/2] RUN echo"),
            (None, "RUN echo".into()),
            "the only stage"
        );
        assert_eq!(split_name("[a/b] X"), (None, "[a/b] X".into()));
        assert_eq!(
            split_name("[builder  2/10] RUN make"),
            (Some("builder".into()), "RUN make".into())
        );
        assert_eq!(split_name("[ 2/10] RUN x"), (None, "RUN x".into()));
        assert_eq!(
            split_name("[linux/amd64->arm64 build 2/4] RUN make"),
            (Some("build".into()), "RUN make".into())
        );
        assert_eq!(
            split_name("[linux/arm64 1/2] RUN x"),
            (None, "RUN x".into())
        );
    }
}
