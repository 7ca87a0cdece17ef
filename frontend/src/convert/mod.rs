//! Lowering: a parsed Dockerfile and the build options become a [`Graph`] of ops and the image
//! config of the target stage.
//!
//! Stages are lowered on demand, starting from the target: a stage is lowered when the target
//! (or a stage it needs, through `FROM <stage>` or `COPY --from=<stage>`) refers to it, so
//! stages the target does not need are never built. Metadata instructions (ENV, CMD, LABEL…)
//! change only the image config; RUN, COPY, ADD and WORKDIR add vertices. Base-image metadata
//! comes from the [`ImageResolver`] the caller provides, so this module does no I/O.
//!
//! One module per instruction family: [`stage`] (FROM and the stages others name), [`scope`]
//! (ARG, ENV, expansion, the per-stage state), [`run`] (RUN and its mounts), [`copy`] (COPY,
//! ADD), [`meta`] (WORKDIR and the image-config instructions), [`onbuild`]. This file holds the
//! public types, the entry point and the dispatcher.

mod copy;
mod meta;
mod named;
mod onbuild;
mod run;
mod scope;
mod stage;
#[cfg(test)]
mod tests;

pub use named::{NamedContext, context_key};

use crate::ast::{Dockerfile, Instruction};
use crate::diagnostic::Diagnostic;
use crate::image::Image;
use crate::instructions::{Command, FlagValue, parse_command};
use crate::lint;
use crate::platform::Platform;
use crate::shell::Lexer;
use crate::source::{SourceFile, Span};
use copy::normalize_dest;
use rbuild_solver::{Digest, Graph, NetworkMode, VertexId};
use scope::StageState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The ARGs BuildKit predefines for the platforms: `TARGET*` for the platform the build is
/// for, `BUILD*` for the one it runs on.
pub fn platform_args(target: &Platform, build: &Platform) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(8);
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        out.push((format!("{prefix}PLATFORM"), p.to_string()));
        out.push((format!("{prefix}OS"), p.os.clone()));
        out.push((format!("{prefix}ARCH"), p.architecture.clone()));
        out.push((format!("{prefix}VARIANT"), p.variant.clone()));
    }
    out
}

/// Build args that reach every RUN without an ARG declaration, and are kept out of the image's
/// history, as Docker does with proxy settings.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Concatenates pieces into a string of exactly the right capacity. `format!` goes through the
/// formatting machinery, which is most of the cost of the many small strings lowering makes
/// (progress names, history entries, `KEY=value`).
fn concat(pieces: &[&str]) -> String {
    let mut s = String::with_capacity(pieces.iter().map(|p| p.len()).sum());
    for piece in pieces {
        s.push_str(piece);
    }
    s
}

/// Appends `n` in decimal, without the allocation of `to_string`.
fn push_number(s: &mut String, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.push_str(std::str::from_utf8(&digits[i..]).expect("ASCII digits"));
}

/// `items` joined by `sep`, each made of `parts` pieces, without intermediate strings.
fn join_pairs<'a>(items: impl Iterator<Item = [&'a str; 3]>, sep: &str) -> String {
    let mut s = String::new();
    for (i, parts) in items.enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        for p in parts {
            s.push_str(p);
        }
    }
    s
}

/// An `ARG` declaration: name and unexpanded default.
type ArgDecl = (String, Option<String>);

/// `PATH` for images that do not set one, as BuildKit and Docker use on Linux.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `comment` of history entries written by Dockerfile builds, as BuildKit writes it.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Options of one build.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (the last one if `None`).
    pub target: Option<String>,
    /// Patterns of the `.dockerignore` that applies (see [`crate::dockerignore`]).
    pub dockerignore: Vec<String>,
    /// Lower every stage, not only those the target needs (for `rbuild lint`, so that every
    /// stage is checked).
    pub all_stages: bool,
    /// `--platform`: the platform to build for. `None` builds for the build machine's own
    /// and, as BuildKit does then, keeps the platform of the base image in the image config.
    pub platform: Option<Platform>,
    /// This is one platform of several built at once: step names start with the platform.
    pub multi_platform: bool,
    /// The network of RUN steps without `--network` (or with `--network=default`): the
    /// build's `--network`.
    pub network: NetworkMode,
    /// The `network.host` entitlement (`--allow network.host`): `RUN --network=host` is
    /// refused without it, as BuildKit refuses it.
    pub allow_network_host: bool,
    /// `--add-host`, `--ulimit`, `--shm-size`, `--cgroup-parent`: given to every RUN step.
    pub limits: rbuild_solver::ExecLimits,
    /// The `security.insecure` entitlement: `RUN --security=insecure` is refused without it.
    pub allow_insecure: bool,
    /// `--build-context`s, by [`context_key`].
    pub named_contexts: std::collections::BTreeMap<String, NamedContext>,
}

/// An image the resolver found: where it is pinned and its config.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The normalized reference, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
    /// Digest of the image manifest for the platform asked for.
    pub digest: Digest,
    /// Its config.
    pub image: Image,
}

/// Finds base images. The builder implements this with its local store and registry client.
pub trait ImageResolver {
    /// Resolves an image reference as written in the Dockerfile (after ARG expansion) to its
    /// image for `platform` (of a multi-platform image, the entry for it).
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String>;
}

/// The result of lowering.
#[derive(Debug)]
pub struct Build {
    /// All ops of the stages the target needs.
    pub graph: Graph,
    /// The vertex whose output is the target stage's filesystem.
    pub target: VertexId,
    /// The target stage's image config; history entries of this build link to their vertices.
    pub image: Image,
    /// Warnings found while lowering, build-check findings among them (`Diagnostic::rule`).
    pub warnings: Vec<Diagnostic>,
    /// `# check=error=true` and some build check found something: the build must fail.
    pub failing_checks: bool,
    /// The other stages lowered (those the target needs), each once.
    pub stages: Vec<StageOutput>,
    /// `BUILDKIT_SBOM_SCAN_CONTEXT` is true (a global ARG's default or a build arg): an SBOM
    /// covers the build context too.
    pub scan_context: bool,
}

/// A stage other than the target, as a build lowered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageOutput {
    /// Its name (`build`), or `stage-N` for an unnamed one.
    pub name: String,
    /// The vertex whose output is its filesystem.
    pub vertex: VertexId,
    /// The stage declares `ARG BUILDKIT_SBOM_SCAN_STAGE` true: an SBOM covers it too.
    pub scan: bool,
}

/// Whether a build arg's value is true, as Go's `strconv.ParseBool` reads it.
fn truthy(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

impl Build {
    /// Where the instruction that made `vertex` is in the Dockerfile (see
    /// `rbuild_solver::Vertex::location`).
    pub fn location(&self, vertex: VertexId) -> Option<Span> {
        let (start, end) = self.graph.vertex(vertex).location?;
        Some(Span::new(start, end))
    }

    /// Moves this build's vertices into `graph` (where equal vertices of other builds merge
    /// with them) and renumbers what refers to them. The build's own graph becomes a copy of
    /// the result only when [`Build::share`] is called, once every build is merged.
    pub fn merge_into(&mut self, graph: &mut Graph) {
        let map = graph.absorb(&self.graph);
        self.target = map[self.target.index()];
        for stage in &mut self.stages {
            stage.vertex = map[stage.vertex.index()];
        }
        for entry in &mut self.image.history {
            if let Some(v) = &mut entry.layer_of {
                *v = map[v.index()];
            }
        }
    }

    /// Makes `graph` (into which every build was merged) this build's graph.
    pub fn share(&mut self, graph: &Graph) {
        self.graph = graph.clone();
    }
}

/// Lowers a Dockerfile.
pub fn lower(
    dockerfile: &Dockerfile,
    options: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<Build, Diagnostic> {
    let file = dockerfile.file.clone();
    let check = lint::CheckConfig::parse(dockerfile.directives.check.as_deref())
        .map_err(|e| Diagnostic::error(&file, None, e))?;
    let all_commands: Vec<(&Instruction, Command)> = dockerfile
        .instructions
        .iter()
        .map(|ins| Ok((ins, parse_command(&file, ins)?)))
        .collect::<Result<_, Diagnostic>>()?;
    let (stages, global_args) = split_stages(&file, &all_commands)?;
    let mut lowerer = Lowerer::new(dockerfile, options, resolver, &stages);
    lowerer.declare_global_args(&global_args)?;
    let target_index = target_index(&file, &stages, options.target.as_deref())?;
    if let Some(warning) = unused_build_args(&file, &stages, &global_args, options) {
        lowerer.warnings.push(warning);
    }

    let target = lowerer.lower_stage(target_index)?;
    if options.all_stages {
        for index in 0..stages.len() {
            lowerer.lower_stage(index)?;
        }
    }
    let mut warnings = lint::syntactic_with(dockerfile, &all_commands);
    warnings.extend(lowerer.findings.take());
    warnings.sort_by_key(|d| d.span.map(|s| s.start));
    warnings.retain(|d| d.rule.is_none_or(|rule| check.enabled(rule)));
    let failing_checks = check.error && warnings.iter().any(|d| d.rule.is_some());
    warnings.extend(lowerer.warnings);
    let scan_arg = |args: &[(String, Option<String>)], name: &str| {
        args.iter()
            .any(|(k, v)| k == name && v.as_deref().is_some_and(truthy))
    };
    let stage_outputs = lowerer
        .lowered
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != target_index)
        .filter_map(|(i, l)| Some((i, l.as_ref()?)))
        .map(|(i, l)| StageOutput {
            name: stages[i]
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{i}")),
            vertex: l.vertex,
            scan: scan_arg(&l.args, "BUILDKIT_SBOM_SCAN_STAGE"),
        })
        .collect();
    let scan_context = scan_arg(&lowerer.global_args, "BUILDKIT_SBOM_SCAN_CONTEXT")
        || options
            .build_args
            .get("BUILDKIT_SBOM_SCAN_CONTEXT")
            .is_some_and(|v| truthy(v));
    let mut image = lowerer.lowered[target_index]
        .take()
        .expect("the target was lowered")
        .image;
    if let Some(target) = &options.platform {
        // An explicit platform is the image's, whatever its stages were based on; the variant
        // is kept from the base image only when it is the same OS and architecture.
        let same = image.os == target.os && image.architecture == target.architecture;
        image.os = target.os.clone();
        image.architecture = target.architecture.clone();
        if !target.variant.is_empty() || !same {
            image.variant = target.variant();
        }
    }
    Ok(Build {
        graph: lowerer.graph,
        target,
        image,
        warnings,
        failing_checks,
        stages: stage_outputs,
        scan_context,
    })
}

/// Global ARG instructions (before the first FROM) with their declarations.
type GlobalArgs<'a> = Vec<(&'a Instruction, &'a [ArgDecl])>;

/// The stages of a Dockerfile, each with its instructions, and the global ARGs before them.
fn split_stages<'a>(
    file: &Arc<SourceFile>,
    all_commands: &'a [(&'a Instruction, Command)],
) -> Result<(Vec<Stage<'a>>, GlobalArgs<'a>), Diagnostic> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut global_args: GlobalArgs = Vec::new();
    for (ins, command) in all_commands {
        let ins = *ins;
        match command {
            Command::From {
                image,
                name,
                platform,
            } => stages.push(Stage {
                name: name.as_ref().map(|n| n.to_ascii_lowercase()),
                image: image.clone(),
                platform: platform.clone(),
                from: ins,
                commands: Vec::new(),
            }),
            command => match stages.last_mut() {
                Some(stage) => stage.commands.push((ins, command)),
                None => match command {
                    Command::Arg(args) => global_args.push((ins, args)),
                    _ => {
                        return Err(Diagnostic::error(
                            file,
                            Some(ins.keyword_span),
                            format!(
                                "no build stage in current context: {} must come after FROM",
                                ins.keyword.to_ascii_uppercase()
                            ),
                        ));
                    }
                },
            },
        }
    }
    if stages.is_empty() {
        return Err(Diagnostic::error(
            file,
            None,
            "dockerfile contains no stages to build",
        ));
    }
    Ok((stages, global_args))
}

/// The index of the `--target` stage (the last stage without one).
fn target_index(
    file: &Arc<SourceFile>,
    stages: &[Stage],
    target: Option<&str>,
) -> Result<usize, Diagnostic> {
    let Some(t) = target else {
        return Ok(stages.len() - 1);
    };
    let t = t.to_ascii_lowercase();
    stages
        .iter()
        .position(|s| s.name.as_deref() == Some(t.as_str()))
        .ok_or_else(|| {
            let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
            let mut d = Diagnostic::error(
                file,
                None,
                format!("target stage \"{t}\" could not be found"),
            );
            if !names.is_empty() {
                d = d.with_help(format!("stages in this Dockerfile: {}", names.join(", ")));
            }
            d
        })
}

/// The warning for build args that no ARG anywhere declares, as BuildKit gives it.
fn unused_build_args(
    file: &Arc<SourceFile>,
    stages: &[Stage],
    global_args: &GlobalArgs,
    options: &BuildOptions,
) -> Option<Diagnostic> {
    let declared: BTreeSet<&str> = global_args
        .iter()
        .flat_map(|(_, a)| a.iter().map(|(n, _)| n.as_str()))
        .chain(stages.iter().flat_map(|s| {
            s.commands.iter().flat_map(|(_, c)| match c {
                Command::Arg(a) => a.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                _ => vec![],
            })
        }))
        .collect();
    let unused: Vec<&str> = options
        .build_args
        .keys()
        .map(String::as_str)
        .filter(|k| !declared.contains(k) && !PROXY_ARGS.contains(k))
        .collect();
    (!unused.is_empty()).then(|| {
        Diagnostic::warning(
            file,
            None,
            format!(
                "one or more build-args [{}] were not consumed",
                unused.join(" ")
            ),
        )
    })
}

pub(super) struct Stage<'a> {
    pub(super) name: Option<String>,
    pub(super) image: String,
    pub(super) platform: Option<FlagValue>,
    pub(super) from: &'a Instruction,
    pub(super) commands: Vec<(&'a Instruction, &'a Command)>,
}

#[derive(Clone)]
pub(super) struct Lowered {
    pub(super) vertex: VertexId,
    pub(super) image: Image,
    /// The stage's ARGs and steps' environment, which a stage built on it starts with.
    pub(super) args: Vec<(String, Option<String>)>,
    pub(super) env: Vec<(String, String)>,
}

pub(super) struct Lowerer<'a> {
    pub(super) file: Arc<SourceFile>,
    pub(super) lexer: Lexer,
    pub(super) display: Lexer,
    pub(super) options: &'a BuildOptions,
    pub(super) resolver: &'a dyn ImageResolver,
    pub(super) graph: Graph,
    pub(super) warnings: Vec<Diagnostic>,
    pub(super) global_args: Vec<(String, Option<String>)>,
    pub(super) lowered: Vec<Option<Lowered>>,
    pub(super) in_progress: Vec<bool>,
    /// Images resolved so far, by reference and platform.
    pub(super) images: HashMap<(String, Platform), ResolvedImage>,
    pub(super) stages: &'a [Stage<'a>],
    /// Global ARG declarations with their default values only (InvalidDefaultArgInFrom).
    pub(super) global_defaults: Vec<(String, String)>,
    /// While an instruction of a stage is lowered: check its words for undefined variables.
    pub(super) check_undefined: std::cell::Cell<bool>,
    /// Build-check findings.
    pub(super) findings: std::cell::RefCell<Vec<Diagnostic>>,
    /// The `.dockerignore` patterns, compiled (CopyIgnoredFile).
    pub(super) ignore: rbuild_solver::pattern::IgnoreMatcher,
    /// The platform built for (`--platform`, or the build machine's).
    pub(super) target_platform: Platform,
    /// The build machine's platform.
    pub(super) build_platform: Platform,
}

impl<'a> Lowerer<'a> {
    fn new(
        dockerfile: &Dockerfile,
        options: &'a BuildOptions,
        resolver: &'a dyn ImageResolver,
        stages: &'a [Stage<'a>],
    ) -> Self {
        let escape = dockerfile.directives.escape;
        let target_platform = options.platform.clone().unwrap_or_else(Platform::host);
        let build_platform = Platform::host();
        // The platform ARGs are predefined in the global scope: usable in FROM lines, and in a
        // stage once declared there without a value.
        let global_args = platform_args(&target_platform, &build_platform)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        Lowerer {
            file: dockerfile.file.clone(),
            lexer: Lexer::new(escape),
            display: Lexer::for_display(escape),
            options,
            resolver,
            // About one vertex per instruction, plus sources.
            graph: Graph::with_capacity(dockerfile.instructions.len() + 16),
            warnings: Vec::new(),
            global_args,
            lowered: vec![None; stages.len()],
            in_progress: vec![false; stages.len()],
            images: HashMap::new(),
            stages,
            global_defaults: Vec::new(),
            check_undefined: std::cell::Cell::new(false),
            findings: std::cell::RefCell::new(Vec::new()),
            ignore: rbuild_solver::pattern::IgnoreMatcher::new(&options.dockerignore),
            target_platform,
            build_platform,
        }
    }

    /// Global ARGs: usable in FROM lines, and as defaults of stage ARGs of the same name.
    fn declare_global_args(&mut self, global_args: &GlobalArgs) -> Result<(), Diagnostic> {
        for (ins, args) in global_args {
            for (name, default) in args.iter() {
                let default = match default {
                    Some(d) => {
                        Some(self.expand(d, &self.global_env().as_slice(), ins.args_span)?)
                    }
                    None => None,
                };
                self.global_defaults
                    .push((name.clone(), default.clone().unwrap_or_default()));
                let value = match self.options.build_args.get(name) {
                    Some(v) => Some(v.clone()),
                    None => default.or_else(|| self.global_value(name)),
                };
                self.global_args.push((name.clone(), value));
            }
        }
        Ok(())
    }

    /// Records `span` as where `vertex` came from (unless an earlier instruction made it).
    fn locate(&mut self, vertex: VertexId, span: Span) {
        self.graph.locate(vertex, span.start, span.end);
    }

    /// Lowers one instruction of a stage; its words are checked for undefined variables.
    fn lower_command(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        command: &Command,
    ) -> Result<(), Diagnostic> {
        let saved = self.check_undefined.replace(true);
        let result = match command {
            Command::From { .. } => unreachable!("FROM starts a stage"),
            Command::Run(run) => self.lower_run(state, ins, run),
            Command::Copy(copy) => self.lower_copy(state, ins, copy),
            Command::Workdir(path) => self.lower_workdir(state, ins, path),
            Command::Env(pairs) => self.lower_env(state, ins, pairs),
            Command::Label(pairs) => self.lower_label(state, ins, pairs),
            Command::Arg(args) => self.lower_arg(state, ins, args),
            Command::User(user) => self.lower_user(state, ins, user),
            Command::Expose(ports) => self.lower_expose(state, ins, ports),
            Command::Volume(paths) => self.lower_volume(state, ins, paths),
            Command::StopSignal(signal) => self.lower_stop_signal(state, ins, signal),
            Command::Maintainer(who) => self.lower_maintainer(state, ins, who),
            Command::Cmd(cmd) => self.lower_cmd(state, ins, cmd),
            Command::Entrypoint(cmd) => self.lower_entrypoint(state, ins, cmd),
            Command::Shell(shell) => self.lower_shell(state, ins, shell),
            Command::Healthcheck(check) => self.lower_healthcheck(state, ins, check.as_ref()),
            Command::OnBuild(text) => self.lower_onbuild(state, ins, text),
        };
        self.check_undefined.set(saved);
        result
    }
}
