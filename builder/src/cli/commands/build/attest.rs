//! Attestations, as buildx asks for them and BuildKit attaches them: `--sbom` (an SPDX SBOM
//! of each platform's image, each package naming the layer and Dockerfile instruction that
//! introduced it), `--provenance` (SLSA v1 provenance, [`crate::provenance`]; `mode=min` by
//! default on push, as buildx) and `--attest type=sbom|provenance,…`.
//!
//! Each platform's attestations are the layers of one attestation manifest in the image
//! index (`unknown/unknown` platform, `vnd.docker.reference.type=attestation-manifest` and
//! `vnd.docker.reference.digest` naming the image manifest): in-toto statements
//! (`application/vnd.in-toto+json`, `in-toto.io/predicate-type`). A `type=local` or
//! `type=tar` export writes them as files instead (`sbom.spdx.json`, `provenance.json`).

use super::export::Export;
use crate::export::FinalImage;
use crate::provenance::{self, Dependency, Mode};
use crate::sbom::{self, LayerOrigin};
use crate::store::layout::{Descriptor, OCI_CONFIG, OCI_MANIFEST, Platform};
use crate::store::state::State;
use anyhow::{Result, bail};
use rbuild_frontend::{Build, SourceFile};
use rbuild_solver::{MountKind, NetworkMode, Op};
use std::collections::{BTreeMap, BTreeSet};

/// The media type of an in-toto statement layer.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// SPDX's predicate type.
const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
/// The in-toto statement type BuildKit writes.
const STATEMENT: &str = "https://in-toto.io/Statement/v0.1";

/// The attestations a build attaches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// An SBOM.
    pub sbom: bool,
    /// `scan-stage=true`: an SBOM of every other stage the target needs too.
    pub scan_stages: bool,
    /// `scan-context=true`: an SBOM of the build context too.
    pub scan_context: bool,
    /// Provenance, and its parameters.
    pub provenance: Option<ProvenanceOptions>,
}

/// `--attest type=provenance`'s parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProvenanceOptions {
    /// `mode=min|max`.
    pub mode: Mode,
    /// `builder-id=URI`.
    pub builder_id: Option<String>,
    /// `reproducible=true`.
    pub reproducible: bool,
}

/// Whether a value is true as Go's `strconv.ParseBool` reads it.
fn truthy(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

impl Options {
    /// The attestations `--sbom`, `--provenance` and `--attest` ask for (later ones win, as
    /// buildx merges them), with provenance `mode=min` by default when `pushing`, unless
    /// `BUILDX_NO_DEFAULT_ATTESTATIONS` is set.
    pub fn parse(args: &super::BuildArgs, pushing: bool) -> Result<Options> {
        let mut specs: Vec<String> = Vec::new();
        // buildx's shorthands: true/false, and for provenance a bare mode.
        let shorthand = |kind: &str, value: &str| match value {
            "true" | "1" => format!("type={kind}"),
            "false" | "0" => format!("type={kind},disabled=true"),
            "min" | "max" if kind == "provenance" => format!("type={kind},mode={value}"),
            other => format!("type={kind},{other}"),
        };
        if let Some(v) = &args.sbom {
            specs.push(shorthand("sbom", v));
        }
        if let Some(v) = &args.provenance {
            specs.push(shorthand("provenance", v));
        }
        specs.extend(args.attest.iter().cloned());
        let default_off = std::env::var("BUILDX_NO_DEFAULT_ATTESTATIONS")
            .is_ok_and(|v| v.is_empty() || truthy(&v));
        let mut options = Options {
            provenance: (pushing && !default_off).then(ProvenanceOptions::default),
            ..Options::default()
        };
        for spec in &specs {
            options.apply(spec)?;
        }
        Ok(options)
    }

    /// Applies one `type=…,key=value,…` spec.
    fn apply(&mut self, spec: &str) -> Result<()> {
        let mut kind = None;
        let mut params = Vec::new();
        for field in spec.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = field.split_once('=').unwrap_or((field, ""));
            match key {
                "type" => kind = Some(value),
                _ => params.push((key, value)),
            }
        }
        let off = params.iter().any(|&(k, v)| k == "disabled" && truthy(v));
        match kind {
            Some("sbom") => {
                self.sbom = !off;
                for &(key, value) in &params {
                    match key {
                        "disabled" => {}
                        // rbuild scans the image itself: no generator image runs.
                        "generator" => eprintln!(
                            "warning: --attest {spec}: rbuild makes the SBOM itself; the \
                             generator {value} is not used"
                        ),
                        "scan-stage" => self.scan_stages = truthy(value),
                        "scan-context" => self.scan_context = truthy(value),
                        _ => {
                            bail!("invalid --attest {spec:?}: rbuild's SBOM does not support {key}")
                        }
                    }
                }
            }
            Some("provenance") if off => self.provenance = None,
            Some("provenance") => {
                let mut options = ProvenanceOptions::default();
                for &(key, value) in &params {
                    match key {
                        "disabled" => {}
                        "mode" => {
                            options.mode = match value {
                                "min" => Mode::Min,
                                "max" => Mode::Max,
                                _ => bail!("invalid --attest {spec:?}: mode is min or max"),
                            }
                        }
                        "builder-id" => options.builder_id = Some(value.to_string()),
                        "reproducible" => options.reproducible = truthy(value),
                        "version" if value == "v1" => {}
                        "version" => bail!(
                            "invalid --attest {spec:?}: rbuild writes SLSA provenance v1 \
                             (version=v1)"
                        ),
                        _ => bail!(
                            "invalid --attest {spec:?}: unknown provenance parameter {key} \
                             (mode, builder-id, reproducible, version, disabled)"
                        ),
                    }
                }
                self.provenance = Some(options);
            }
            Some(other) => {
                bail!("invalid --attest {spec:?}: unknown type {other} (sbom or provenance)")
            }
            None => bail!("invalid --attest {spec:?}: expected type=sbom|provenance"),
        }
        Ok(())
    }

    /// Whether any attestation is attached.
    pub fn any(&self) -> bool {
        self.sbom || self.provenance.is_some()
    }
}

/// One attestation of one platform's image.
pub struct Statement {
    /// Its predicate type.
    pub predicate_type: &'static str,
    /// The in-toto statement.
    pub statement: serde_json::Value,
    /// The file a local export writes it to.
    pub file: String,
}

/// `os/arch[/variant]` of an image.
fn platform_of(image: &FinalImage) -> String {
    let i = &image.image;
    let platform = Platform {
        os: i.os.clone(),
        architecture: i.architecture.clone(),
        variant: i.variant.clone(),
    };
    platform.to_string()
}

/// The statement's subjects: the image manifest under each name (`_` without one, as
/// BuildKit), as package URLs with the platform.
fn statement(
    image: &FinalImage,
    manifest: &Descriptor,
    names: &[String],
    predicate_type: &'static str,
    predicate: serde_json::Value,
) -> serde_json::Value {
    let platform = platform_of(image);
    let digest = serde_json::json!({"sha256": manifest.digest.hex()});
    let subjects: Vec<serde_json::Value> = match names.is_empty() {
        true => vec![serde_json::json!({"name": "_", "digest": digest})],
        false => names
            .iter()
            .map(|n| {
                let name = provenance::image_purl(n, Some(&platform));
                serde_json::json!({"name": name, "digest": digest})
            })
            .collect(),
    };
    serde_json::json!({
        "_type": STATEMENT,
        "predicateType": predicate_type,
        "subject": subjects,
        "predicate": predicate,
    })
}

/// What made each layer of `image`: the instruction of its history entry, with where it is in
/// the Dockerfile when this build made it.
pub fn origins(build: &Build, file: &SourceFile, image: &FinalImage) -> Vec<LayerOrigin> {
    image
        .image
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .zip(&image.layers)
        .map(|(h, layer)| {
            let text = h.created_by.clone().unwrap_or_default();
            let at = h
                .layer_of
                .and_then(|v| build.location(v))
                .map(|span| format!(" ({}:{})", file.name, file.position(span.start).line));
            LayerOrigin {
                diff_id: layer.diff_id.to_string(),
                instruction: format!("{text}{}", at.unwrap_or_default()),
            }
        })
        .collect()
}

/// The SBOM attestation of the image `manifest` (built by `build` as `image`, named `names`).
pub fn sbom(
    state: &State,
    (image, origins): (&FinalImage, &[LayerOrigin]),
    manifest: &Descriptor,
    names: &[String],
) -> Result<Statement> {
    let name = names
        .first()
        .map(|n| crate::registry::reference::familiar(n))
        .unwrap_or_else(|| "image".into());
    let created = image
        .image
        .created
        .clone()
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
    let document = sbom::document(
        state,
        &image.layers,
        (&name, manifest.digest.as_str(), &created),
        origins,
    )?;
    Ok(Statement {
        predicate_type: SPDX_PREDICATE,
        statement: statement(image, manifest, names, SPDX_PREDICATE, document),
        file: "sbom.spdx.json".into(),
    })
}

/// The stages whose SBOMs a build attaches besides the final image's: every other stage the
/// target needs with `scan-stage=true` (or the build arg `BUILDKIT_SBOM_SCAN_STAGE`), else
/// those that declare `ARG BUILDKIT_SBOM_SCAN_STAGE=true`, as BuildKit chooses them.
pub fn scanned_stages<'b>(
    options: &Options,
    build_args: &BTreeMap<String, String>,
    build: &'b Build,
) -> Vec<&'b rbuild_frontend::StageOutput> {
    if !options.sbom {
        return vec![];
    }
    let all = options.scan_stages
        || build_args
            .get("BUILDKIT_SBOM_SCAN_STAGE")
            .is_some_and(|v| truthy(v));
    build.stages.iter().filter(|s| all || s.scan).collect()
}

/// What made each layer of a stage's filesystem: the instruction of the first step (inputs
/// first) whose output ends with it, with its place in the Dockerfile.
fn stage_origins(
    export: &Export,
    build: &Build,
    stage: &rbuild_frontend::StageOutput,
) -> Vec<LayerOrigin> {
    let file = &export.loaded.file;
    let mut made: BTreeMap<String, String> = BTreeMap::new();
    for v in build.graph.needed_for(&[stage.vertex]) {
        let (Some(output), Some(label)) = (export.solved.get(&v), &build.graph.vertex(v).label)
        else {
            continue;
        };
        if let Some(last) = output.layers.last() {
            let at = build
                .location(v)
                .map(|span| format!(" ({}:{})", file.name, file.position(span.start).line));
            made.entry(last.diff_id.to_string())
                .or_insert_with(|| format!("{label}{}", at.unwrap_or_default()));
        }
    }
    export.solved[&stage.vertex]
        .layers
        .iter()
        .map(|l| LayerOrigin {
            diff_id: l.diff_id.to_string(),
            instruction: made
                .get(l.diff_id.as_str())
                .cloned()
                .unwrap_or_else(|| format!("the base of stage {}", stage.name)),
        })
        .collect()
}

/// The SBOM of a stage other than the final one, as BuildKit adds it (`sbom-STAGE.spdx.json`).
pub fn stage_sbom(
    export: &Export,
    build: &Build,
    stage: &rbuild_frontend::StageOutput,
    (image, manifest): (&FinalImage, &Descriptor),
) -> Result<Statement> {
    let layers = &export.solved[&stage.vertex].layers;
    // Layers an imported cache only names are fetched first.
    let (state, registry) = (export.state, export.registry);
    let runtime = export.runtime.handle();
    crate::remotecache::fetch_missing(state, registry, runtime, layers, &|_, _, _, _| {})?;
    let created = image.image.created.clone().unwrap_or_default();
    let namespace = format!("{}/stage/{}", manifest.digest, stage.name);
    let document = sbom::document(
        export.state,
        layers,
        (&stage.name, &namespace, &created),
        &stage_origins(export, build, stage),
    )?;
    Ok(Statement {
        predicate_type: SPDX_PREDICATE,
        statement: statement(image, manifest, &export.args.tags, SPDX_PREDICATE, document),
        file: format!("sbom-{}.spdx.json", stage.name),
    })
}

/// The SBOM of the build context (`scan-context=true`, `BUILDKIT_SBOM_SCAN_CONTEXT`): the
/// lockfiles and package metadata in its directory.
pub fn context_sbom(export: &Export, image: &FinalImage, manifest: &Descriptor) -> Statement {
    let created = image.image.created.clone().unwrap_or_default();
    let namespace = format!("{}/context", manifest.digest);
    let origin = LayerOrigin {
        diff_id: "context".into(),
        instruction: "the build context".into(),
    };
    let dirs = [export.request.context.clone()];
    let document = sbom::document_of(&dirs, ("context", &namespace, &created), &[origin]);
    Statement {
        predicate_type: SPDX_PREDICATE,
        statement: statement(image, manifest, &export.args.tags, SPDX_PREDICATE, document),
        file: "sbom-context.spdx.json".into(),
    }
}

/// What one build's provenance shares across its platforms: the request, the run, and the
/// fetched sources.
pub struct Provenance {
    request: provenance::Request,
    run: provenance::Run,
    options: ProvenanceOptions,
}

impl Provenance {
    /// Gathers what every platform's provenance shares.
    pub fn new(export: &Export, options: &ProvenanceOptions) -> Provenance {
        let request = request(export);
        let network = export.builds.iter().any(|b| {
            b.graph.needed_for(&[b.target]).into_iter().any(
                |v| matches!(&b.graph.vertex(v).op, Op::Exec(e) if e.network != NetworkMode::None),
            )
        });
        let epoch = crate::units::source_date_epoch();
        let started = match epoch {
            Some(_) => crate::units::build_time(),
            None => export.started,
        };
        let finished = crate::units::build_time();
        // Reproducible builds get an id made from what they were asked; others a fresh one.
        let seed = match epoch {
            Some(e) => format!("{e} {:?} {:?}", request.args, request.config_digest),
            None => format!("{:?} {}", std::time::SystemTime::now(), std::process::id()),
        };
        let builder_id = options.builder_id.clone().unwrap_or_else(builder_id);
        let run = provenance::Run {
            builder_id,
            version: env!("CARGO_PKG_VERSION").to_string(),
            invocation_id: provenance::invocation_id(seed.as_bytes()),
            started: crate::units::rfc3339(started),
            finished: crate::units::rfc3339(finished),
            network,
            reproducible: options.reproducible,
            builder_platform: rbuild_frontend::Platform::host().to_string(),
            vcs: vcs(export),
        };
        Provenance {
            request,
            run,
            options: options.clone(),
        }
    }

    /// The provenance of one platform's image.
    pub fn statement(
        &self,
        export: &Export,
        build: &Build,
        image: &FinalImage,
        manifest: &Descriptor,
    ) -> Statement {
        let platform = platform_of(image);
        let needed = build.graph.needed_for(&[build.target]);
        let mut request = self.request.clone();
        let mut locals = BTreeSet::new();
        let (mut secrets, mut ssh) = (BTreeSet::new(), BTreeSet::new());
        for &v in &needed {
            match &build.graph.vertex(v).op {
                Op::Local(l) => {
                    locals.insert(l.name.strip_prefix("named:").unwrap_or(&l.name).to_string());
                }
                Op::Exec(e) => {
                    for m in &e.mounts {
                        match &m.kind {
                            MountKind::Secret { id, required, .. } => {
                                secrets.insert((id.clone(), !required));
                            }
                            MountKind::Ssh { id, required, .. } => {
                                ssh.insert((id.clone(), !required));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        request.secrets = secrets.into_iter().collect();
        request.ssh = ssh.into_iter().collect();
        if export.origin.is_none() {
            locals.insert("context".into());
            locals.insert("dockerfile".into());
        }
        request.locals = locals.into_iter().collect();
        let dependencies = dependencies(export, build, &needed, &platform);
        let graph = match self.options.mode {
            Mode::Max => Some(graph(export, build, &needed)),
            Mode::Min => None,
        };
        let predicate = provenance::predicate(
            self.options.mode,
            &request,
            &dependencies,
            &self.run,
            graph.as_ref(),
        );
        Statement {
            predicate_type: provenance::PREDICATE,
            statement: statement(
                image,
                manifest,
                &export.args.tags,
                provenance::PREDICATE,
                predicate,
            ),
            file: "provenance.json".into(),
        }
    }
}

/// `runDetails.builder.id`: a GitHub Actions run's URL, as buildx sets it there, else rbuild.
fn builder_id() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        var("GITHUB_SERVER_URL"),
        var("GITHUB_REPOSITORY"),
        var("GITHUB_RUN_ID"),
    ) {
        (Some(server), Some(repo), Some(run)) => format!("{server}/{repo}/actions/runs/{run}"),
        _ => "pkg:generic/rbuild".to_string(),
    }
}

/// The frontend options as BuildKit receives them from buildx, and the config source.
fn request(export: &Export) -> provenance::Request {
    let args = export.args;
    let mut options = BTreeMap::new();
    for (k, v) in &export.request.build_args {
        options.insert(format!("build-arg:{k}"), v.clone());
    }
    for label in &args.labels {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        options.insert(format!("label:{k}"), v.to_string());
    }
    if let Some(t) = &args.target {
        options.insert("target".into(), t.clone());
    }
    if args.no_cache {
        options.insert("no-cache".into(), String::new());
    } else if !args.no_cache_filter.is_empty() {
        options.insert("no-cache".into(), args.no_cache_filter.join(","));
    }
    let joined = [("add-hosts", &args.add_hosts), ("ulimit", &args.ulimits)];
    for (key, list) in joined {
        if !list.is_empty() {
            options.insert(key.into(), list.join(","));
        }
    }
    if let Some(size) = &args.shm_size {
        options.insert("shm-size".into(), size.clone());
    }
    for spec in &args.build_contexts {
        if let Some((name, value)) = spec.split_once('=') {
            let value = match value.contains("://") {
                true => value.to_string(),
                false => format!("local:{name}"),
            };
            options.insert(format!("context:{name}"), value);
        }
    }
    let file = &export.loaded.file;
    let path = dockerfile_path(export);
    let (config_uri, config_digest) = match export.origin {
        Some((uri, digest)) => (Some(uri.clone()), digest.clone()),
        None => {
            let digest = rbuild_solver::Digest::of(file.text.as_bytes());
            (None, provenance::digest_set(digest.as_str()))
        }
    };
    provenance::Request {
        args: options,
        secrets: vec![],
        ssh: vec![],
        locals: vec![],
        config_uri,
        config_digest,
        config_path: path,
    }
}

/// The Dockerfile's name as buildx sends it (`filename`): its file name, or the name it was
/// given on stdin or by URL; never a path of this machine.
fn dockerfile_path(export: &Export) -> String {
    let request = export.request;
    request
        .dockerfile_name
        .clone()
        .or_else(|| {
            let name = request.dockerfile.file_name()?;
            Some(name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "Dockerfile".into())
}

/// `vcs:source` and `vcs:revision` of a context inside a git work tree, as buildx sends them
/// (unless `BUILDX_GIT_INFO=false`).
fn vcs(export: &Export) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if export.origin.is_some() || std::env::var("BUILDX_GIT_INFO").is_ok_and(|v| !truthy(&v)) {
        return out;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&export.request.context)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if let Some(revision) = git(&["rev-parse", "HEAD"]) {
        out.insert("revision".into(), revision);
        if let Some(url) = git(&["config", "--get", "remote.origin.url"]) {
            out.insert("source".into(), url);
        }
    }
    out
}

/// The build's resolved dependencies: images by digest, the files read from each local
/// directory (one digest of their paths, modes and contents), and what `ADD` fetched.
fn dependencies(
    export: &Export,
    build: &Build,
    needed: &[rbuild_solver::VertexId],
    platform: &str,
) -> Vec<Dependency> {
    let mut images = BTreeSet::new();
    let mut files: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for &v in needed {
        match &build.graph.vertex(v).op {
            Op::Image(image) => {
                images.insert(Dependency {
                    uri: Some(provenance::image_purl(&image.reference, Some(platform))),
                    name: None,
                    digest: provenance::digest_set(image.digest.as_str()),
                });
            }
            Op::Local(local) => {
                let name = local.name.strip_prefix("named:").unwrap_or(&local.name);
                let entry = files.entry(name.to_string()).or_default();
                if let Some((_, summary)) = export.summaries.get(&v) {
                    entry.extend(summary.files.iter().map(String::as_str));
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<Dependency> = images.into_iter().collect();
    for (name, files) in files {
        let listing: Vec<&str> = files.into_iter().collect();
        let digest = rbuild_solver::Digest::of(listing.join("\n").as_bytes());
        out.push(Dependency {
            uri: None,
            name: Some(name),
            digest: provenance::digest_set(digest.as_str()),
        });
    }
    out.extend(
        export
            .worker
            .fetched
            .lock()
            .expect("fetched")
            .iter()
            .cloned(),
    );
    out
}

/// The build graph for `mode=max`: each needed step's op (as keyed), its inputs and its
/// cache key, and where in the Dockerfile each step comes from.
fn graph(
    export: &Export,
    build: &Build,
    needed: &[rbuild_solver::VertexId],
) -> provenance::BuildGraph {
    use base64::Engine as _;
    let ids: BTreeMap<rbuild_solver::VertexId, String> = needed
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, format!("step{i}")))
        .collect();
    let file = &export.loaded.file;
    let mut out = provenance::BuildGraph::default();
    let mut locations = serde_json::Map::new();
    for &v in needed {
        let vertex = build.graph.vertex(v);
        let id = &ids[&v];
        let inputs: Vec<String> = vertex
            .inputs
            .iter()
            .filter_map(|i| ids.get(i).map(|s| format!("{s}:0")))
            .collect();
        // `{"exec": {…}}`, as BuildKit names an op by its kind.
        let mut op = serde_json::to_value(&vertex.op).unwrap_or_default();
        if let Some(fields) = op.as_object_mut() {
            fields.remove("op");
        }
        let mut step = serde_json::json!({"id": id, "op": {vertex.op.kind(): op}});
        if !inputs.is_empty() {
            step["inputs"] = inputs.into();
        }
        if let Some(name) = &vertex.name {
            step["name"] = name.clone().into();
        }
        out.steps.push(step);
        if let Some(key) = export.keys.get(&v) {
            out.digest_mapping.insert(key.to_string(), id.clone());
        }
        if let Some(span) = build.location(v) {
            let (start, end) = (file.position(span.start), file.position(span.end));
            locations.insert(
                id.clone(),
                serde_json::json!({"locations": [{"ranges": [{
                    "start": {"line": start.line},
                    "end": {"line": end.line},
                }]}]}),
            );
        }
    }
    out.source = serde_json::json!({
        "locations": locations,
        "infos": [{
            "filename": dockerfile_path(export),
            "language": "Dockerfile",
            "data": base64::engine::general_purpose::STANDARD.encode(file.text.as_bytes()),
        }],
    });
    out
}

/// Stores the attestation manifest of the image `manifest` holding `statements`, and returns
/// the descriptor its index entry takes.
pub fn attach(
    state: &State,
    manifest: &Descriptor,
    statements: &[Statement],
) -> Result<Descriptor> {
    let store = &state.store;
    let mut layers = Vec::with_capacity(statements.len());
    for s in statements {
        let (digest, size) = store.write_blob(&serde_json::to_vec(&s.statement)?)?;
        layers.push(Descriptor {
            media_type: IN_TOTO.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::from([(
                "in-toto.io/predicate-type".to_string(),
                s.predicate_type.to_string(),
            )]),
        });
    }
    let config = serde_json::json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        },
    });
    let (config_digest, config_size) = store.write_blob(&serde_json::to_vec(&config)?)?;
    let attestation = crate::store::layout::Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: config_digest,
            size: config_size,
            platform: None,
            annotations: BTreeMap::new(),
        },
        layers,
        annotations: BTreeMap::new(),
    };
    let (digest, size) = store.write_blob(&serde_json::to_vec(&attestation)?)?;
    Ok(Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest,
        size,
        platform: Some(Platform {
            architecture: "unknown".into(),
            os: "unknown".into(),
            variant: None,
        }),
        annotations: BTreeMap::from([
            (
                crate::export::REFERENCE_DIGEST.to_string(),
                manifest.digest.to_string(),
            ),
            (
                "vnd.docker.reference.type".to_string(),
                "attestation-manifest".to_string(),
            ),
        ]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str], pushing: bool) -> Result<Options> {
        use clap::Parser as _;
        let mut argv = vec!["build"];
        argv.extend(flags);
        argv.push(".");
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: super::super::BuildArgs,
        }
        Options::parse(&Cli::try_parse_from(argv).unwrap().args, pushing)
    }

    #[test]
    fn flags_combine_as_buildx_merges_them() {
        assert_eq!(parse(&[], false).unwrap(), Options::default());
        // Provenance is on by default for a push only.
        let pushed = parse(&[], true).unwrap();
        assert_eq!(pushed.provenance, Some(ProvenanceOptions::default()));
        assert_eq!(
            parse(&["--provenance=false"], true).unwrap().provenance,
            None
        );
        let max = parse(&["--provenance=mode=max,builder-id=https://ci/1"], false).unwrap();
        let p = max.provenance.unwrap();
        assert_eq!(
            (p.mode, p.builder_id.as_deref()),
            (Mode::Max, Some("https://ci/1"))
        );
        assert_eq!(
            parse(&["--provenance=max"], false)
                .unwrap()
                .provenance
                .unwrap()
                .mode,
            Mode::Max
        );
        let both = parse(
            &["--sbom=true", "--attest", "type=provenance,mode=min"],
            false,
        )
        .unwrap();
        assert!(both.sbom && both.provenance.is_some());
        let off = parse(
            &["--sbom=true", "--attest", "type=sbom,disabled=true"],
            false,
        )
        .unwrap();
        assert!(!off.sbom);
        for bad in [
            "type=provenance,mode=full",
            "type=provenance,version=v0.2",
            "type=provenance,colour=red",
            "type=vex",
            "mode=max",
        ] {
            assert!(parse(&["--attest", bad], false).is_err(), "{bad}");
        }
    }
}
