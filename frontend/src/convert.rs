//! Lowering: a parsed Dockerfile and the build options become a [`Graph`] of ops and the image
//! config of the target stage.
//!
//! Stages are lowered on demand, starting from the target: a stage is lowered when the target
//! (or a stage it needs, through `FROM <stage>` or `COPY --from=<stage>`) refers to it, so
//! stages the target does not need are never built. Metadata instructions (ENV, CMD, LABEL…)
//! change only the image config; RUN, COPY, ADD and WORKDIR add vertices. Base-image metadata
//! comes from the [`ImageResolver`] the caller provides, so this module does no I/O.

use crate::ast::Heredoc;
use crate::ast::{Dockerfile, Instruction};
use crate::diagnostic::Diagnostic;
use crate::image::{HealthConfig, History, Image};
use crate::instructions::{Command, CommandLine, FlagValue, parse_command};
use crate::lint;
use crate::parser::{chomp_heredoc, parse_heredoc_word};
use crate::platform::Platform;
use crate::shell::{Env, Lexer};
use crate::source::{SourceFile, Span};
use rbuild_solver::contenthash::clean_relative;
use rbuild_solver::{
    CacheSharing, Digest, ExecMount, ExecOp, FileAction, FileOp, Graph, HttpSource, ImageSource,
    InlineFile, LocalSource, MountKind, NetworkMode, Op, VertexId,
};
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
    /// The instruction each vertex came from, for error messages.
    pub locations: HashMap<VertexId, Span>,
    /// Warnings found while lowering, build-check findings among them (`Diagnostic::rule`).
    pub warnings: Vec<Diagnostic>,
    /// `# check=error=true` and some build check found something: the build must fail.
    pub failing_checks: bool,
}

impl Build {
    /// Moves this build's vertices into `graph` (where equal vertices of other builds merge
    /// with them) and renumbers what refers to them. The build's own graph becomes a copy of
    /// the result only when [`Build::share`] is called, once every build is merged.
    pub fn merge_into(&mut self, graph: &mut Graph) {
        let map = graph.absorb(&self.graph);
        self.target = map[self.target.index()];
        self.locations = self
            .locations
            .drain()
            .map(|(v, span)| (map[v.index()], span))
            .collect();
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
    let escape = dockerfile.directives.escape;
    let check = lint::CheckConfig::parse(dockerfile.directives.check.as_deref())
        .map_err(|e| Diagnostic::error(&file, None, e))?;
    let all_commands: Vec<(&Instruction, Command)> = dockerfile
        .instructions
        .iter()
        .map(|ins| Ok((ins, parse_command(&file, ins)?)))
        .collect::<Result<_, Diagnostic>>()?;
    let mut stages: Vec<Stage> = Vec::new();
    let mut global_args: Vec<(&Instruction, &[ArgDecl])> = Vec::new();
    for (ins, command) in &all_commands {
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
                            &file,
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
            &file,
            None,
            "dockerfile contains no stages to build",
        ));
    }

    let mut lowerer = Lowerer {
        file: file.clone(),
        lexer: Lexer::new(escape),
        display: Lexer::for_display(escape),
        options,
        resolver,
        // About one vertex per instruction, plus sources.
        graph: Graph::with_capacity(dockerfile.instructions.len() + 16),
        locations: HashMap::new(),
        warnings: Vec::new(),
        global_args: Vec::new(),
        lowered: vec![None; stages.len()],
        in_progress: vec![false; stages.len()],
        images: HashMap::new(),
        stages: &stages,
        global_defaults: Vec::new(),
        check_undefined: std::cell::Cell::new(false),
        findings: std::cell::RefCell::new(Vec::new()),
        ignore: rbuild_solver::pattern::IgnoreMatcher::new(&options.dockerignore),
        target_platform: options.platform.clone().unwrap_or_else(Platform::host),
        build_platform: Platform::host(),
    };

    // The platform ARGs are predefined in the global scope: usable in FROM lines, and in a
    // stage once declared there without a value.
    lowerer.global_args = platform_args(&lowerer.target_platform, &lowerer.build_platform)
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    // Global ARGs: usable in FROM lines, and as defaults of stage ARGs of the same name.
    for (ins, args) in &global_args {
        for (name, default) in args.iter() {
            let default = match default {
                Some(d) => {
                    Some(lowerer.expand(d, &lowerer.global_env().as_slice(), ins.args_span)?)
                }
                None => None,
            };
            lowerer
                .global_defaults
                .push((name.clone(), default.clone().unwrap_or_default()));
            let value = match options.build_args.get(name) {
                Some(v) => Some(v.clone()),
                None => default.or_else(|| lowerer.global_value(name)),
            };
            lowerer.global_args.push((name.clone(), value));
        }
    }

    let target_index = match &options.target {
        None => stages.len() - 1,
        Some(t) => {
            let t = t.to_ascii_lowercase();
            stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.as_str()))
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        stages.iter().filter_map(|s| s.name.as_deref()).collect();
                    let mut d = Diagnostic::error(
                        &file,
                        None,
                        format!("target stage \"{t}\" could not be found"),
                    );
                    if !names.is_empty() {
                        d = d.with_help(format!("stages in this Dockerfile: {}", names.join(", ")));
                    }
                    d
                })?
        }
    };

    // Build args that no ARG anywhere declares are reported, as BuildKit does.
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
    if !unused.is_empty() {
        lowerer.warnings.push(Diagnostic::warning(
            &file,
            None,
            format!(
                "one or more build-args [{}] were not consumed",
                unused.join(" ")
            ),
        ));
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
        locations: lowerer.locations,
        warnings,
        failing_checks,
    })
}

struct Stage<'a> {
    name: Option<String>,
    image: String,
    platform: Option<FlagValue>,
    from: &'a Instruction,
    commands: Vec<(&'a Instruction, &'a Command)>,
}

#[derive(Clone)]
struct Lowered {
    vertex: VertexId,
    image: Image,
}

struct Lowerer<'a> {
    file: Arc<SourceFile>,
    lexer: Lexer,
    display: Lexer,
    options: &'a BuildOptions,
    resolver: &'a dyn ImageResolver,
    graph: Graph,
    locations: HashMap<VertexId, Span>,
    warnings: Vec<Diagnostic>,
    global_args: Vec<(String, Option<String>)>,
    lowered: Vec<Option<Lowered>>,
    in_progress: Vec<bool>,
    /// Images resolved so far, by reference and platform.
    images: HashMap<(String, Platform), ResolvedImage>,
    stages: &'a [Stage<'a>],
    /// Global ARG declarations with their default values only (InvalidDefaultArgInFrom).
    global_defaults: Vec<(String, String)>,
    /// While an instruction of a stage is lowered: check its words for undefined variables.
    check_undefined: std::cell::Cell<bool>,
    /// Build-check findings.
    findings: std::cell::RefCell<Vec<Diagnostic>>,
    /// The `.dockerignore` patterns, compiled (CopyIgnoredFile).
    ignore: rbuild_solver::pattern::IgnoreMatcher,
    /// The platform built for (`--platform`, or the build machine's).
    target_platform: Platform,
    /// The build machine's platform.
    build_platform: Platform,
}

/// The state of a stage while its instructions are lowered.
struct StageState {
    prefix: String,
    index: usize,
    total: usize,
    vertex: VertexId,
    image: Image,
    cmd_set: bool,
    /// Declared ARGs in order, with their values (`None`: declared without a value).
    args: Vec<(String, Option<String>)>,
    /// An absolute WORKDIR was set in this stage (WorkdirRelativePath).
    workdir_set: bool,
    /// The platform its steps run for (`FROM --platform`, else the target platform).
    platform: Platform,
    /// Step names start with the platform (a multi-platform build).
    platform_in_names: bool,
}

impl StageState {
    fn next_name(&mut self, text: &str) -> String {
        self.index += 1;
        let mut name = String::with_capacity(self.prefix.len() + text.len() + 32);
        name.push('[');
        if self.platform_in_names {
            // As BuildKit names steps of multi-platform builds: `[linux/arm64 build 2/4]`, and
            // `[linux/amd64->arm64 build 2/4]` when the stage's TARGET* ARGs name another
            // architecture than the stage runs on (cross-compiling).
            name.push_str(&self.platform.to_string());
            name.push_str(&self.cross_target());
            name.push(' ');
        }
        name.push_str(&self.prefix);
        // The position is padded to the width of the total, as BuildKit prints `[ 2/10]`.
        let width = |n: usize| n.checked_ilog10().unwrap_or(0) + 1;
        for _ in width(self.index)..width(self.total) {
            name.push(' ');
        }
        push_number(&mut name, self.index);
        name.push('/');
        push_number(&mut name, self.total);
        name.push_str("] ");
        name.push_str(text);
        name
    }

    /// `->arch[/variant]` (or `->os/arch…` for another OS) when the TARGET* ARGs declared in
    /// the stage so far name another platform than the stage's own; empty otherwise.
    fn cross_target(&self) -> String {
        let value = |key: &str| {
            self.args
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.clone())
        };
        let base = &self.platform;
        let target = match value("TARGETPLATFORM").and_then(|v| Platform::parse(&v).ok()) {
            Some(p) => p,
            None => {
                let (os, arch, variant) = (
                    value("TARGETOS"),
                    value("TARGETARCH"),
                    value("TARGETVARIANT"),
                );
                if os.is_none() && arch.is_none() && variant.is_none() {
                    return String::new();
                }
                let or =
                    |v: Option<String>, d: &str| v.filter(|v| !v.is_empty()).unwrap_or(d.into());
                Platform::new(
                    &or(os, &base.os),
                    &or(arch, &base.architecture),
                    &variant.unwrap_or_default(),
                )
            }
        };
        if target.os != base.os {
            format!("->{target}")
        } else if target.architecture != base.architecture {
            let mut out = format!("->{}", target.architecture);
            if !target.variant.is_empty() {
                out.push('/');
                out.push_str(&target.variant);
            }
            out
        } else {
            String::new()
        }
    }

    fn history(&mut self, created_by: String, layer_of: Option<VertexId>) {
        self.image.history.push(History {
            created_by: Some(created_by),
            comment: Some(std::borrow::Cow::Borrowed(HISTORY_COMMENT)),
            empty_layer: layer_of.is_none(),
            layer_of,
            ..History::default()
        });
    }
}

/// Variables for expansion in a stage: ENV of the image config, else ARGs with a value (ENV
/// wins over an ARG of the same name, as in BuildKit). Looked up in place, without copying.
impl crate::shell::Env for StageState {
    fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.image
            .config
            .env_value(name)
            .or_else(|| {
                self.args
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| v.as_deref())
            })
            .map(std::borrow::Cow::Borrowed)
    }

    fn declared(&self, name: &str) -> bool {
        self.image.config.env_value(name).is_some() || self.args.iter().any(|(k, _)| k == name)
    }

    fn names(&self) -> Vec<String> {
        let env = self.image.config.env.iter().flatten();
        env.map(|kv| kv.split('=').next().unwrap_or(kv).to_string())
            .chain(self.args.iter().map(|(k, _)| k.clone()))
            .collect()
    }
}

fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| crate::ast::go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

impl Lowerer<'_> {
    fn error(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(&self.file, Some(span), message)
    }

    /// The value of a global ARG (or predefined one), if it has one.
    fn global_value(&self, name: &str) -> Option<String> {
        self.global_args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }

    /// The platform of a base image's config, when it is the build machine's own but not the
    /// target (only then does it differ from the target; see BuildKit's autodetection).
    fn build_platform_of(&self, image: &Image) -> Option<Platform> {
        let own = Platform::new(
            &image.os,
            &image.architecture,
            image.variant.as_deref().unwrap_or(""),
        );
        (own.os == self.build_platform.os
            && own.architecture == self.build_platform.architecture
            && own != self.target_platform)
            .then_some(own)
    }

    /// InvalidBaseImagePlatform: the image found for a platform says it is for another.
    fn check_base_platform(&self, name: &str, image: &Image, expected: &Platform, span: Span) {
        if image.os.is_empty() || image.architecture.is_empty() {
            return;
        }
        if !expected.matches(&image.os, &image.architecture, image.variant.as_deref()) {
            let actual = Platform::new(
                &image.os,
                &image.architecture,
                image.variant.as_deref().unwrap_or(""),
            );
            self.lint(
                &lint::INVALID_BASE_IMAGE_PLATFORM,
                span,
                format!(
                    "Base image {name} was pulled with platform \"{actual}\", expected \"{expected}\" for current build"
                ),
            );
        }
    }

    fn global_env(&self) -> Vec<(String, String)> {
        self.global_args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect()
    }

    /// Expands a word; inside a stage's instructions, plain references to variables that are
    /// neither set nor declared are reported (UndefinedVar).
    fn expand(&self, word: &str, env: &dyn Env, span: Span) -> Result<String, Diagnostic> {
        let (value, undefined) = self
            .lexer
            .process_word_checked(word, env)
            .map_err(|e| self.error(span, e.to_string()))?;
        if self.check_undefined.get() {
            for name in undefined.iter().filter(|n| !env.declared(n)) {
                let mut message = format!("Usage of undefined variable '${name}'");
                let names = env.names();
                if let Some(s) =
                    crate::instructions::suggest(name, names.iter().map(String::as_str))
                {
                    message.push_str(&format!(" (did you mean ${s}?)"));
                }
                self.lint(&lint::UNDEFINED_VAR, span, message);
            }
        }
        Ok(value)
    }

    /// Records a build-check finding.
    fn lint(&self, rule: &'static lint::Rule, span: Span, message: String) {
        let mut d = Diagnostic::warning(&self.file, Some(span), message);
        d.rule = Some(rule);
        self.findings.borrow_mut().push(d);
    }

    fn expand_words(
        &self,
        word: &str,
        env: &dyn Env,
        span: Span,
    ) -> Result<Vec<String>, Diagnostic> {
        self.lexer
            .process_words(word, env)
            .map_err(|e| self.error(span, e.to_string()))
    }

    fn display_name(&self, ins: &Instruction, env: &dyn Env) -> String {
        let text = ins.original.trim();
        if !text.contains('$') {
            return text.to_string();
        }
        self.display
            .process_word(text, env)
            .unwrap_or_else(|_| text.to_string())
    }

    fn resolve_image(
        &mut self,
        reference: &str,
        platform: &Platform,
        span: Span,
    ) -> Result<ResolvedImage, Diagnostic> {
        let key = (reference.to_string(), platform.clone());
        if let Some(found) = self.images.get(&key) {
            return Ok(found.clone());
        }
        let resolved = self
            .resolver
            .resolve(reference, platform)
            .map_err(|e| self.error(span, e))?;
        self.images.insert(key, resolved.clone());
        Ok(resolved)
    }

    fn find_stage(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>()
            .ok()
            .filter(|&i| i < self.stages.len())
    }

    /// Lowers a stage (once); returns the vertex of its filesystem. Its image config is in
    /// `self.lowered[index]` afterwards.
    /// The vertex of a stage named `name`, or else of the image `name` (as BuildKit reads
    /// `COPY --from` and `RUN --mount=from=`). `flag` names the option in the help.
    fn stage_or_image(
        &mut self,
        name: &str,
        span: Span,
        flag: &str,
    ) -> Result<VertexId, Diagnostic> {
        if let Some(i) = self.find_stage(name) {
            return self.lower_stage(i);
        }
        // Not a stage, so an image. If it is no image either, a near-miss of a stage name is
        // the likely mistake.
        let platform = self.target_platform.clone();
        match self.resolve_image(name, &platform, span) {
            Ok(resolved) => Ok(self.graph.add(
                Op::Image(ImageSource {
                    reference: resolved.reference.clone(),
                    digest: resolved.digest.clone(),
                }),
                vec![],
                Some(format!("FROM {}@{}", resolved.reference, resolved.digest)),
            )),
            Err(mut d) => {
                let names: Vec<&str> = self
                    .stages
                    .iter()
                    .filter_map(|s| s.name.as_deref())
                    .collect();
                d.message = format!(
                    "no stage named \"{name}\", and no such image: {}",
                    d.message
                );
                if let Some(s) = crate::instructions::suggest(name, names.iter().copied()) {
                    d = d.with_help(format!("did you mean {flag}={s}?"));
                } else if !names.is_empty() {
                    d = d.with_help(format!("stages in this Dockerfile: {}", names.join(", ")));
                }
                Err(d)
            }
        }
    }

    fn lower_stage(&mut self, index: usize) -> Result<VertexId, Diagnostic> {
        if let Some(done) = &self.lowered[index] {
            return Ok(done.vertex);
        }
        // A stage lowered because an instruction of another stage needs it has its own scope.
        let saved = self.check_undefined.replace(false);
        // A stage lowers the stages it needs first, so a chain of stages recurses as deep as
        // it is long; the stack grows on the heap as needed (see `shell::grow_stack`).
        let result = crate::shell::grow_stack(|| self.lower_stage_inner(index));
        self.check_undefined.set(saved);
        result
    }

    /// The FROM build checks: undeclared ARGs, and defaults that give no valid image name.
    fn check_from(&self, word: &str, span: Span, is_image: bool) {
        let declared: Vec<String> = self.global_args.iter().map(|(k, _)| k.clone()).collect();
        if let Ok((_, undefined)) = self
            .lexer
            .process_word_checked(word, &self.global_env().as_slice())
        {
            for name in undefined.iter().filter(|n| !declared.contains(n)) {
                let mut message = format!("FROM argument '{name}' is not declared");
                if let Some(s) =
                    crate::instructions::suggest(name, declared.iter().map(String::as_str))
                {
                    message.push_str(&format!(" (did you mean {s}?)"));
                }
                self.lint(&lint::UNDEFINED_ARG_IN_FROM, span, message);
            }
        }
        if is_image && word.contains('$') {
            let mut defaults = platform_args(&self.target_platform, &self.build_platform);
            defaults.extend(self.global_defaults.iter().cloned());
            let name = self
                .lexer
                .process_word(word, &defaults.as_slice())
                .unwrap_or_default();
            if !plausible_image_name(&name) {
                self.lint(
                    &lint::INVALID_DEFAULT_ARG_IN_FROM,
                    span,
                    format!(
                        "Default value for ARG {word} results in empty or invalid base image name"
                    ),
                );
            }
        }
    }

    fn lower_stage_inner(&mut self, index: usize) -> Result<VertexId, Diagnostic> {
        let stage = &self.stages[index];
        if self.in_progress[index] {
            let name = stage.name.clone().unwrap_or_else(|| index.to_string());
            return Err(self.error(
                stage.from.keyword_span,
                format!("circular dependency detected on stage: {name}"),
            ));
        }
        self.in_progress[index] = true;

        self.check_from(&stage.image, stage.from.args_span, true);
        let mut stage_platform = None;
        if let Some(platform) = &stage.platform {
            self.check_from(&platform.value, platform.span, false);
            let value = self.expand(
                &platform.value,
                &self.global_env().as_slice(),
                platform.span,
            )?;
            if value.is_empty() {
                return Err(self.error(
                    platform.span,
                    format!("empty platform value from expression {}", platform.value),
                ));
            }
            let parsed = Platform::parse(&value).map_err(|e| {
                self.error(
                    platform.span,
                    format!("failed to parse platform {}: {e}", platform.value),
                )
            })?;
            stage_platform = Some(parsed);
        }

        let prefix = match (&stage.name, self.stages.len()) {
            (Some(name), _) => format!("{name} "),
            (None, 1) => String::new(),
            (None, _) => format!("stage-{index} "),
        };

        let from_span = stage.from.args_span;
        let base_name = self.expand(&stage.image, &self.global_env().as_slice(), from_span)?;
        if base_name.is_empty() {
            return Err(self.error(
                from_span,
                format!("base name ({}) should not be blank", stage.image),
            ));
        }
        let mut state = StageState {
            prefix,
            index: 0,
            total: 0,
            vertex: VertexId::new(0),
            image: Image::default(),
            cmd_set: false,
            args: Vec::new(),
            workdir_set: false,
            platform: stage_platform
                .clone()
                .unwrap_or_else(|| self.target_platform.clone()),
            platform_in_names: self.options.multi_platform,
        };
        // FROM refers to an earlier stage by name only; anything else is an image.
        let lower_name = base_name.to_ascii_lowercase();
        let base_stage = self.stages[..index]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower_name.as_str()));
        let mut from_text = None;
        if base_name.eq_ignore_ascii_case("scratch") {
            state.vertex = self.graph.add(Op::Scratch, vec![], None);
            // BuildKit gives a scratch stage the working directory "/", and the target
            // platform even under FROM --platform.
            state.platform = self.target_platform.clone();
            state.image = Image {
                architecture: state.platform.architecture.clone(),
                os: state.platform.os.clone(),
                variant: state.platform.variant(),
                ..Image::default()
            };
            state.image.config.working_dir = Some("/".into());
        } else if let Some(base) = base_stage {
            state.vertex = self.lower_stage(base)?;
            state.image = self.lowered[base]
                .as_ref()
                .expect("just lowered")
                .image
                .clone();
        } else {
            let platform = state.platform.clone();
            let resolved = self.resolve_image(&base_name, &platform, from_span)?;
            // Named below, once the stage's step count is known.
            from_text = Some(format!("FROM {}@{}", resolved.reference, resolved.digest));
            state.vertex = self.graph.add(
                Op::Image(ImageSource {
                    reference: resolved.reference.clone(),
                    digest: resolved.digest.clone(),
                }),
                vec![],
                None,
            );
            self.locations
                .entry(state.vertex)
                .or_insert(stage.from.span);
            state.image = resolved.image.clone();
            state.image.rootfs.diff_ids.clear();
            if stage_platform.is_none()
                && self.options.platform.is_none()
                && let Some(own) = self.build_platform_of(&state.image)
            {
                // Without --platform, a base image of another platform the machine runs
                // natively sets the stage's platform (BuildKit's autodetection).
                state.platform = own;
            }
            self.check_base_platform(&base_name, &state.image, &state.platform, from_span);
        }
        if state.image.config.env_value("PATH").is_none() {
            state.image.config.set_env("PATH", DEFAULT_PATH);
        }
        if state.image.architecture.is_empty() || state.image.os.is_empty() {
            state.image.architecture = state.platform.architecture.clone();
            state.image.os = state.platform.os.clone();
            state.image.variant = state.platform.variant();
        }
        state.image.created = None;

        // ONBUILD triggers of the base run first, as if they were the stage's first lines; the
        // stage itself does not pass them on.
        let triggers = match state.image.config.on_build.take() {
            Some(triggers) => self.onbuild_commands(&triggers, &base_name, stage.from)?,
            None => Vec::new(),
        };
        let commands: Vec<(&Instruction, &Command)> = triggers
            .iter()
            .map(|(i, c)| (i, c))
            .chain(stage.commands.iter().copied())
            .collect();
        // As BuildKit counts: FROM is a step only when it pulls an image.
        state.total = usize::from(from_text.is_some())
            + commands
                .iter()
                .filter(|(_, c)| {
                    matches!(
                        c,
                        Command::Run { .. } | Command::Copy { .. } | Command::Workdir(_)
                    )
                })
                .count();
        if let Some(text) = from_text {
            let name = state.next_name(&text);
            self.graph.name_if_unnamed(state.vertex, name);
        }
        for (ins, command) in commands {
            self.lower_command(&mut state, ins, command)?;
        }
        self.in_progress[index] = false;
        self.lowered[index] = Some(Lowered {
            vertex: state.vertex,
            image: state.image,
        });
        Ok(state.vertex)
    }

    /// Parses the ONBUILD triggers of a base image. Errors point at the FROM line, and so do
    /// the instructions (their text stays the trigger's, for progress and history).
    fn onbuild_commands(
        &self,
        triggers: &[String],
        base: &str,
        from: &Instruction,
    ) -> Result<Vec<(Instruction, Command)>, Diagnostic> {
        let mut out = Vec::new();
        for trigger in triggers {
            let fail = |message: String| {
                self.error(
                    from.args_span,
                    format!("ONBUILD trigger {trigger:?} of {base}: {message}"),
                )
            };
            let file = SourceFile::new(format!("ONBUILD of {base}"), trigger.as_bytes());
            let parsed = crate::parser::parse(&file);
            if let Some(d) = parsed
                .diagnostics
                .iter()
                .find(|d| d.severity == crate::diagnostic::Severity::Error)
            {
                return Err(fail(d.message.clone()));
            }
            for mut ins in parsed.dockerfile.instructions {
                if ["onbuild", "from", "maintainer"]
                    .iter()
                    .any(|k| ins.keyword.eq_ignore_ascii_case(k))
                {
                    return Err(fail(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        ins.keyword.to_ascii_uppercase()
                    )));
                }
                let command = parse_command(&file, &ins).map_err(|d| fail(d.message))?;
                ins.keyword_span = from.keyword_span;
                ins.args_span = from.args_span;
                ins.span = from.span;
                for flag in &mut ins.flags {
                    flag.span = from.args_span;
                }
                out.push((ins, command));
            }
        }
        Ok(out)
    }

    fn shell_command(&self, state: &StageState, cmd: &CommandLine) -> Vec<String> {
        match cmd {
            CommandLine::Exec(args) => args.clone(),
            CommandLine::Shell(text) => {
                let mut shell = state
                    .image
                    .config
                    .shell
                    .clone()
                    .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                shell.push(text.clone());
                shell
            }
        }
    }

    /// Lowers a RUN's `--mount`s as BuildKit's dockerfile2llb does: values are expanded (except
    /// `from`), relative targets are below the working directory, bind and cache `from` name a
    /// stage or an image (a bind without `from` reads the context), and defaults are BuildKit's.
    /// Vertices the mounts read are appended to `inputs`; an SSH mount sets `SSH_AUTH_SOCK`.
    fn lower_mounts(
        &mut self,
        state: &StageState,
        mounts: &[(crate::mounts::MountSpec, Span)],
        inputs: &mut Vec<VertexId>,
        env: &mut Vec<String>,
    ) -> Result<Vec<ExecMount>, Diagnostic> {
        use crate::mounts::{MountType, parse_ram_size};
        let workdir = state
            .image
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let mut out = Vec::with_capacity(mounts.len());
        let mut ssh_count = 0;
        for (spec, span) in mounts {
            let span = *span;
            let expand = |this: &Self, v: &Option<String>| -> Result<Option<String>, Diagnostic> {
                v.as_ref().map(|v| this.expand(v, state, span)).transpose()
            };
            let number = |this: &Self, v: &Option<String>, key: &str, radix: u32| {
                expand(this, v)?
                    .map(|v| {
                        u32::from_str_radix(&v, radix)
                            .map_err(|_| this.error(span, format!("invalid value {v} for {key}")))
                    })
                    .transpose()
            };
            let kind = spec.mount_type();
            let target = expand(self, &spec.target)?;
            let source = expand(self, &spec.source)?;
            let id = expand(self, &spec.id)?;
            let mode = number(self, &spec.mode, "mode", 8)?;
            let uid = number(self, &spec.uid, "uid", 10)?.unwrap_or(0);
            let gid = number(self, &spec.gid, "gid", 10)?.unwrap_or(0);
            let abs = |p: &str| format!("/{}", clean_relative(p));
            let target = target.map(|t| {
                normalize_dest(&workdir, &t)
                    .trim_end_matches('/')
                    .to_string()
            });
            let target = target.map(|t| if t.is_empty() { "/".to_string() } else { t });
            if target.as_deref() == Some("/") {
                return Err(self.error(span, "invalid mount target \"/\""));
            }
            let from_input = |this: &mut Self,
                              inputs: &mut Vec<VertexId>|
             -> Result<Option<usize>, Diagnostic> {
                let Some(from) = &spec.from else {
                    return Ok(None);
                };
                if from.contains('$') && from.len() > from.find('$').unwrap_or(0) + 1 {
                    return Err(this.error(
                        span,
                        "'from' doesn't support variable expansion, define alias stage instead",
                    ));
                }
                let vertex = this.stage_or_image(from, span, "from")?;
                Ok(Some(push_input(inputs, vertex)))
            };
            let readonly = spec.is_readonly();
            let (target, kind) = match kind {
                MountType::Bind => {
                    let source = abs(source.as_deref().unwrap_or("/"));
                    let mut exclude = vec![];
                    let input = match from_input(self, inputs)? {
                        Some(i) => i,
                        None => {
                            exclude = self.options.dockerignore.clone();
                            // The context, selecting only what the mount reads, so that the
                            // cache key covers exactly those files.
                            let rel = clean_relative(&source);
                            let local = self.graph.add(
                                Op::Local(LocalSource {
                                    name: "context".into(),
                                    include: if rel.is_empty() { vec![] } else { vec![rel] },
                                    exclude: self.options.dockerignore.clone(),
                                    ..LocalSource::default()
                                }),
                                vec![],
                                None,
                            );
                            self.locations.entry(local).or_insert(span);
                            push_input(inputs, local)
                        }
                    };
                    (
                        target.unwrap_or_default(),
                        MountKind::Bind {
                            input,
                            source,
                            exclude,
                        },
                    )
                }
                MountType::Cache => {
                    let target = target.unwrap_or_default();
                    let input = from_input(self, inputs)?;
                    (
                        target.clone(),
                        MountKind::Cache {
                            id: id.unwrap_or(target),
                            sharing: match spec.sharing.as_deref() {
                                Some("private") => CacheSharing::Private,
                                Some("locked") => CacheSharing::Locked,
                                _ => CacheSharing::Shared,
                            },
                            input,
                            source: abs(source.as_deref().unwrap_or("/")),
                            mode: mode.unwrap_or(0o755),
                            uid,
                            gid,
                        },
                    )
                }
                MountType::Tmpfs => {
                    let size = expand(self, &spec.size)?
                        .map(|v| parse_ram_size(&v).map_err(|e| self.error(span, e)))
                        .transpose()?;
                    (target.unwrap_or_default(), MountKind::Tmpfs { size })
                }
                MountType::Secret => {
                    let env_name = expand(self, &spec.env)?;
                    let id = match id.or(source) {
                        Some(id) => id,
                        None => target
                            .as_deref()
                            .and_then(|t| t.rsplit('/').next())
                            .unwrap_or_default()
                            .to_string(),
                    };
                    if id.is_empty() {
                        return Err(self
                            .error(span, "invalid secret mount. one of source, target required"));
                    }
                    let target = match (target, &env_name) {
                        (Some(t), _) => t,
                        (None, Some(_)) => String::new(),
                        (None, None) => {
                            format!("/run/secrets/{}", id.rsplit('/').next().unwrap_or(&id))
                        }
                    };
                    (
                        target,
                        MountKind::Secret {
                            id,
                            env: env_name,
                            required: spec.required.unwrap_or(false),
                            mode: mode.unwrap_or(0o400),
                            uid,
                            gid,
                        },
                    )
                }
                MountType::Ssh => {
                    let target =
                        target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_count}"));
                    if ssh_count == 0 && !env.iter().any(|kv| kv.starts_with("SSH_AUTH_SOCK=")) {
                        env.push(format!("SSH_AUTH_SOCK={target}"));
                    }
                    ssh_count += 1;
                    (
                        target,
                        MountKind::Ssh {
                            id: id.unwrap_or_else(|| "default".into()),
                            required: spec.required.unwrap_or(false),
                            mode: mode.unwrap_or(0o600),
                            uid,
                            gid,
                        },
                    )
                }
            };
            out.push(ExecMount {
                target,
                readonly,
                kind,
            });
        }
        Ok(out)
    }

    fn lower_command(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        command: &Command,
    ) -> Result<(), Diagnostic> {
        // Words of the stage's instructions are checked for undefined variables.
        let saved = self.check_undefined.replace(true);
        let result = self.lower_command_inner(state, ins, command);
        self.check_undefined.set(saved);
        result
    }

    fn lower_command_inner(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        command: &Command,
    ) -> Result<(), Diagnostic> {
        let span = ins.args_span;
        match command {
            Command::From { .. } => unreachable!("FROM starts a stage"),
            Command::Run {
                cmd,
                network,
                mounts,
                security,
                heredocs,
            } => {
                if let Some(sec) = security
                    && sec.value == "insecure"
                {
                    return Err(self.error(
                        sec.span,
                        "RUN --security=insecure needs the security.insecure entitlement, which rbuild does not grant",
                    ));
                }
                let (cmd, inline_files) = run_heredocs(cmd, heredocs);
                let args = self.shell_command(state, &cmd);
                if args.is_empty() {
                    return Err(self.error(span, "RUN requires at least one argument"));
                }
                let network = match network {
                    None => self.options.network,
                    Some(flag) => match self.expand(&flag.value, &*state, flag.span)?.as_str() {
                        "default" => self.options.network,
                        "host" if !self.options.allow_network_host => {
                            return Err(self
                                .error(
                                    flag.span,
                                    "RUN --network=host needs the network.host entitlement, \
                                     which this build was not given",
                                )
                                .with_help(
                                    "the step would share the build machine's network, its \
                                     loopback services among it; allow it with --allow \
                                     network.host",
                                ));
                        }
                        "host" => NetworkMode::Host,
                        "none" => NetworkMode::None,
                        other => {
                            return Err(self
                                .error(flag.span, format!("unsupported network mode {other:?}"))
                                .with_help("RUN --network accepts default, none or host"));
                        }
                    },
                };
                // The process sees the config's ENV, plus ARGs that have a value and no ENV of
                // the same name, plus proxy settings given as build args.
                let image_env = state.image.config.env.as_deref().unwrap_or_default();
                let mut run_env: Vec<String> =
                    Vec::with_capacity(image_env.len() + state.args.len());
                run_env.extend(image_env.iter().cloned());
                for (k, v) in &state.args {
                    if let Some(v) = v
                        && state.image.config.env_value(k).is_none()
                    {
                        run_env.push(concat(&[k, "=", v]));
                    }
                }
                for proxy in PROXY_ARGS {
                    if let Some(v) = self.options.build_args.get(proxy)
                        && !run_env.iter().any(|kv| kv.split('=').next() == Some(proxy))
                    {
                        run_env.push(format!("{proxy}={v}"));
                    }
                }
                let mut inputs = vec![state.vertex];
                let mounts = self.lower_mounts(state, mounts, &mut inputs, &mut run_env)?;
                let name = state.next_name(&self.display_name(ins, &*state));
                let command_text = args.join(" ");
                let vertex = self.graph.add(
                    Op::Exec(ExecOp {
                        args,
                        env: run_env,
                        cwd: state
                            .image
                            .config
                            .working_dir
                            .clone()
                            .filter(|w| !w.is_empty())
                            .unwrap_or_else(|| "/".into()),
                        user: state.image.config.user.clone().unwrap_or_default(),
                        network,
                        inline_files,
                        mounts,
                        platform: (state.platform != self.build_platform)
                            .then(|| state.platform.to_string()),
                    }),
                    inputs,
                    Some(name),
                );
                self.locations.entry(vertex).or_insert(ins.span);
                state.vertex = vertex;
                let mut created_by = String::with_capacity(64 + command_text.len());
                created_by.push_str("RUN ");
                if !state.args.is_empty() {
                    let mut pairs: Vec<(String, String)> = Vec::new();
                    for (k, v) in &state.args {
                        let v = state
                            .image
                            .config
                            .env_value(k)
                            .map(str::to_string)
                            .or_else(|| v.clone())
                            .unwrap_or_default();
                        match pairs.iter_mut().find(|(pk, _)| pk == k) {
                            Some(p) => p.1 = v,
                            None => pairs.push((k.clone(), v)),
                        }
                    }
                    created_by.push('|');
                    push_number(&mut created_by, pairs.len());
                    created_by.push(' ');
                    for (k, v) in pairs {
                        for piece in [k.as_str(), "=", v.as_str(), " "] {
                            created_by.push_str(piece);
                        }
                    }
                }
                created_by.push_str(&command_text);
                created_by.push_str(" # buildkit");
                state.history(created_by, Some(vertex));
            }
            Command::Copy {
                add,
                srcs,
                contents,
                dest,
                from,
                chown,
                chmod,
                link,
                parents,
                exclude,
                checksum,
                unpack,
            } => {
                let keyword = if *add { "ADD" } else { "COPY" };
                let mut sources = Vec::new();
                // ADD's URL sources, downloaded by an HTTP source op each.
                let mut urls = Vec::new();
                // Every source as written, in order, for the history.
                let mut source_names = Vec::new();
                for src in srcs {
                    let expanded = self.expand(src, &*state, span)?;
                    let is_url =
                        expanded.starts_with("http://") || expanded.starts_with("https://");
                    if !*add && is_url {
                        return Err(self.error(span, "source can't be a URL for COPY"));
                    }
                    source_names.push(expanded.clone());
                    if *add && is_url && from.is_none() {
                        urls.push(expanded);
                        continue;
                    }
                    if *add && (expanded.contains("://") || expanded.starts_with("git@")) {
                        return Err(self
                            .error(
                                span,
                                format!(
                                    "ADD from a git repository ({expanded}) is not supported by rbuild yet"
                                ),
                            )
                            .with_help(
                                "clone the repository in a RUN step, or add it to the build context",
                            ));
                    }
                    sources.push(expanded);
                }
                let mut url_checksum = None;
                if let Some(flag) = checksum {
                    // As BuildKit: the checksum verifies a download, so a local source with
                    // one is a mistake.
                    if sources.len() + urls.len() != 1 {
                        return Err(self.error(
                            flag.span,
                            "checksum can't be specified for multiple sources",
                        ));
                    }
                    if urls.is_empty() {
                        return Err(
                            self.error(flag.span, "checksum requires HTTP(S) or Git sources")
                        );
                    }
                    let value = self.expand(&flag.value, &*state, flag.span)?;
                    url_checksum = Some(Digest::parse(&value).ok_or_else(|| {
                        self.error(
                            flag.span,
                            format!("invalid checksum {value:?}: expected sha256:<64 hex digits>"),
                        )
                    })?);
                }
                if from.is_none() {
                    for source in &sources {
                        if self.ignore.is_excluded(&clean_relative(source)) {
                            let verb = if *add { "Add" } else { "Copy" };
                            self.lint(
                                &lint::COPY_IGNORED_FILE,
                                span,
                                format!("Attempting to {verb} file {source:?} that is excluded by .dockerignore"),
                            );
                        }
                    }
                }
                let dest_raw = self.expand(dest, &*state, span)?;
                if sources.len() + urls.len() + contents.len() > 1 && !dest_raw.ends_with('/') {
                    return Err(self.error(
                        span,
                        format!("when using {keyword} with more than one source file, the destination must be a directory and end with a /"),
                    ));
                }
                let dest_path = normalize_dest(
                    state.image.config.working_dir.as_deref().unwrap_or("/"),
                    &dest_raw,
                );
                let owner = match chown {
                    Some(flag) => Some(self.expand(&flag.value, &*state, flag.span)?),
                    None => None,
                };
                // An octal mode, or (Dockerfile 1.14) a symbolic one applied to each file's own.
                let (mode, symbolic) = match chmod {
                    Some(flag) => {
                        let value = self.expand(&flag.value, &*state, flag.span)?;
                        match u32::from_str_radix(&value, 8) {
                            Ok(m) if m <= 0o7777 => (Some(m), None),
                            Ok(_) => {
                                return Err(self.error(
                                    flag.span,
                                    format!("invalid --chmod value {value:?}: an octal mode is at most 7777"),
                                ));
                            }
                            Err(_) => {
                                rbuild_solver::chmod::SymbolicMode::parse(&value).map_err(|e| {
                                    self.error(flag.span, format!("--chmod: {e}")).with_help(
                                        "use an octal mode such as 755, or a symbolic one such as u+x or a=rX,u+w",
                                    )
                                })?;
                                (None, Some(value))
                            }
                        }
                    }
                    None => (None, None),
                };
                // With --link the copy is made on an empty filesystem and stacked on the
                // stage afterwards (a merge), as BuildKit does: neither its layer nor its key
                // depends on the stage, and no symlink of the stage affects where files land.
                let copy_base = if *link {
                    self.graph.add(Op::Scratch, vec![], None)
                } else {
                    state.vertex
                };
                let mut inputs = vec![copy_base];
                let mut actions = Vec::new();
                // What each copy action takes: (source paths, include patterns). With
                // `--parents`, one action per source, copying from its pivot (the part before
                // `/./`, else the root) what its pattern matches below it, as BuildKit does.
                let selections: Vec<(Vec<String>, Vec<String>)> = if *parents {
                    sources
                        .iter()
                        .map(|src| {
                            let (pivot, pattern) = src.split_once("/./").unwrap_or(("/", src));
                            (vec![pivot.to_string()], vec![clean_relative(pattern)])
                        })
                        .collect()
                } else if sources.is_empty() {
                    vec![]
                } else {
                    vec![(sources.clone(), vec![])]
                };
                let source_vertex = match from {
                    _ if sources.is_empty() => None,
                    None => {
                        // A local source per action, selecting exactly what it copies, so the
                        // cache key covers those files and no others.
                        for (paths, include_patterns) in &selections {
                            let local = self.graph.add(
                                Op::Local(LocalSource {
                                    name: "context".into(),
                                    include: paths.iter().map(|s| clean_relative(s)).collect(),
                                    exclude: self.options.dockerignore.clone(),
                                    include_patterns: include_patterns.clone(),
                                    exclude_patterns: exclude.clone(),
                                }),
                                vec![],
                                None,
                            );
                            // A missing source is reported at the COPY that names it.
                            self.locations.entry(local).or_insert(ins.span);
                            inputs.push(local);
                        }
                        None
                    }
                    Some(flag) => {
                        let name = self.expand(&flag.value, &*state, flag.span)?;
                        Some(self.stage_or_image(&name, flag.span, "--from")?)
                    }
                };
                let unpack = *add && from.is_none() && unpack.unwrap_or(true);
                if let Some(source_vertex) = source_vertex {
                    inputs.push(source_vertex);
                }
                for (i, (paths, include_patterns)) in selections.into_iter().enumerate() {
                    actions.push(FileAction::Copy {
                        // The context's local sources come one per action, a stage's once.
                        source: if from.is_none() { 1 + i } else { 1 },
                        paths,
                        dest: dest_path.clone(),
                        owner: owner.clone(),
                        mode,
                        chmod: symbolic.clone(),
                        unpack_archives: unpack,
                        // The context's ignore file applies to copies from the context.
                        ignore: if from.is_none() {
                            self.options.dockerignore.clone()
                        } else {
                            vec![]
                        },
                        include_patterns,
                        exclude_patterns: exclude.clone(),
                    });
                }
                // A copy of one file of a source made for this instruction (a download, a
                // heredoc), never extracted.
                let plain_copy = |source: usize, path: String| FileAction::Copy {
                    source,
                    paths: vec![path],
                    dest: dest_path.clone(),
                    owner: owner.clone(),
                    mode,
                    chmod: symbolic.clone(),
                    unpack_archives: false,
                    ignore: vec![],
                    include_patterns: vec![],
                    exclude_patterns: vec![],
                };
                // A download each, copied like a local file but never extracted, as BuildKit
                // does (the file keeps the download's mode, 0600, unless --chmod).
                for url in urls {
                    let filename = url_filename(&url);
                    let download = self.graph.add(
                        Op::Http(HttpSource {
                            url: url.clone(),
                            filename: filename.clone(),
                            checksum: url_checksum.clone(),
                        }),
                        vec![],
                        Some(url),
                    );
                    self.locations.entry(download).or_insert(ins.span);
                    inputs.push(download);
                    actions.push(plain_copy(inputs.len() - 1, filename));
                }
                // Each heredoc becomes a file of its own (as BuildKit's Mkfile on scratch),
                // copied like any source; unquoted bodies are expanded first.
                for heredoc in contents {
                    let mut data = if heredoc.chomp {
                        chomp_heredoc(&heredoc.content)
                    } else {
                        heredoc.content.clone()
                    };
                    if heredoc.expand {
                        data = crate::shell::Lexer::for_heredoc_body(self.lexer.escape)
                            .process_word(&data, &*state)
                            .map_err(|e| self.error(span, e.to_string()))?;
                    }
                    let path = format!("/{}", heredoc.name);
                    let scratch = self.graph.add(Op::Scratch, vec![], None);
                    let file = self.graph.add(
                        Op::File(FileOp {
                            actions: vec![FileAction::Mkfile {
                                path: path.clone(),
                                data,
                                mode: 0o644,
                            }],
                        }),
                        vec![scratch],
                        None,
                    );
                    inputs.push(file);
                    actions.push(plain_copy(inputs.len() - 1, path));
                    source_names.push(format!("<<{}", heredoc.name));
                }
                let name = state.next_name(&self.display_name(ins, &*state));
                let mut vertex = self
                    .graph
                    .add(Op::File(FileOp { actions }), inputs, Some(name));
                self.locations.entry(vertex).or_insert(ins.span);
                if *link {
                    vertex = self.graph.add(Op::Merge, vec![state.vertex, vertex], None);
                }
                state.vertex = vertex;
                state.history(
                    concat(&[
                        keyword,
                        if *parents { " --parents " } else { " " },
                        &source_names.join(" "),
                        " ",
                        &dest_raw,
                        " # buildkit",
                    ]),
                    Some(vertex),
                );
            }
            Command::Workdir(path) => {
                let path = self.expand(path, &*state, span)?;
                if path.starts_with('/') {
                    state.workdir_set = true;
                } else if !state.workdir_set {
                    self.lint(
                        &lint::WORKDIR_RELATIVE_PATH,
                        span,
                        format!("Relative workdir {path:?} can have unexpected results if the base image changes"),
                    );
                }
                let current = state
                    .image
                    .config
                    .working_dir
                    .clone()
                    .unwrap_or_else(|| "/".into());
                let wd = if path.starts_with('/') {
                    concat(&["/", &clean_relative(&path)])
                } else {
                    concat(&["/", &clean_relative(&concat(&[&current, "/", &path]))])
                };
                state.image.config.working_dir = Some(wd.clone());
                let name = state.next_name(&self.display_name(ins, &*state));
                if wd != "/" {
                    let vertex = self.graph.add(
                        Op::File(FileOp {
                            actions: vec![FileAction::Mkdir {
                                path: wd.clone(),
                                mode: 0o755,
                                parents: true,
                                owner: state.image.config.user.clone().filter(|u| !u.is_empty()),
                            }],
                        }),
                        vec![state.vertex],
                        Some(name),
                    );
                    self.locations.entry(vertex).or_insert(ins.span);
                    state.vertex = vertex;
                    state.history(concat(&["WORKDIR ", &wd]), Some(vertex));
                } else {
                    state.history(concat(&["WORKDIR ", &wd]), None);
                }
            }
            Command::Env(pairs) => {
                let mut expanded = Vec::new();
                for (k, v) in pairs {
                    expanded.push((
                        self.expand(k, &*state, span)?,
                        self.expand(v, &*state, span)?,
                    ));
                }
                for (k, v) in &expanded {
                    state.image.config.set_env(k, v);
                }
                let text = join_pairs(
                    expanded.iter().map(|(k, v)| [k.as_str(), "=", v.as_str()]),
                    " ",
                );
                state.history(concat(&["ENV ", &text]), None);
            }
            Command::Label(pairs) => {
                let mut text = String::from("LABEL");
                for (k, v) in pairs {
                    let k = self.expand(k, &*state, span)?;
                    let v = self.expand(v, &*state, span)?;
                    for piece in [" ", k.as_str(), "=", v.as_str()] {
                        text.push_str(piece);
                    }
                    state
                        .image
                        .config
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, v);
                }
                state.history(text, None);
            }
            Command::Arg(args) => {
                let mut text = Vec::new();
                for (name, default) in args {
                    let default = match default {
                        Some(d) => Some(self.expand(d, &*state, span)?),
                        None => None,
                    };
                    let value = match self.options.build_args.get(name) {
                        Some(v) => Some(v.clone()),
                        None => default.clone().or_else(|| self.global_value(name)),
                    };
                    // The history shows the declaration, not the value a build gave it.
                    text.push(match &default {
                        Some(d) => format!("{name}={d}"),
                        None => name.clone(),
                    });
                    state.args.retain(|(k, _)| k != name);
                    state.args.push((name.clone(), value));
                }
                state.history(format!("ARG {}", text.join(" ")), None);
            }
            Command::User(user) => {
                let user = self.expand(user, &*state, span)?;
                state.history(format!("USER {user}"), None);
                state.image.config.user = Some(user);
            }
            Command::Expose(ports) => {
                let mut all = Vec::new();
                for p in ports {
                    all.extend(self.expand_words(p, &*state, span)?);
                }
                let mut exposed_specs = std::collections::BTreeSet::new();
                for port in &all {
                    exposed_specs.extend(expand_port(port).map_err(|e| self.error(span, e))?);
                }
                let exposed = state
                    .image
                    .config
                    .exposed_ports
                    .get_or_insert_with(BTreeMap::new);
                for spec in &exposed_specs {
                    exposed.insert(spec.clone(), serde_json::json!({}));
                }
                // BuildKit writes the port set as Go prints a map.
                let set: Vec<String> = exposed_specs.iter().map(|p| format!("{p}:{{}}")).collect();
                state.history(format!("EXPOSE map[{}]", set.join(" ")), None);
            }
            Command::Volume(paths) => {
                let mut expanded = Vec::new();
                for p in paths {
                    let v = self.expand(p, &*state, span)?;
                    if v.trim().is_empty() {
                        return Err(self.error(span, "VOLUME specified can not be an empty string"));
                    }
                    expanded.push(v);
                }
                let volumes = state.image.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in &expanded {
                    volumes.insert(v.clone(), serde_json::json!({}));
                }
                state.history(format!("VOLUME [{}]", expanded.join(" ")), None);
            }
            Command::StopSignal(signal) => {
                let signal = self.expand(signal, &*state, span)?;
                state.history(format!("STOPSIGNAL {signal}"), None);
                state.image.config.stop_signal = Some(signal);
            }
            Command::Maintainer(who) => {
                state.image.author = Some(who.clone());
                state.history(format!("MAINTAINER {who}"), None);
            }
            Command::Cmd(cmd) => {
                let args = self.shell_command(state, cmd);
                state.history(format!("CMD {}", go_quote_list(&args)), None);
                state.image.config.cmd = Some(args);
                state.image.config.args_escaped = Some(true);
                state.cmd_set = true;
            }
            Command::Entrypoint(cmd) => {
                let args = self.shell_command(state, cmd);
                state.history(format!("ENTRYPOINT {}", go_quote_list(&args)), None);
                state.image.config.entrypoint = Some(args);
                state.image.config.args_escaped = Some(true);
                if !state.cmd_set {
                    state.image.config.cmd = None;
                }
            }
            Command::Shell(shell) => {
                state.history(format!("SHELL [{}]", shell.join(" ")), None);
                state.image.config.shell = Some(shell.clone());
            }
            Command::Healthcheck(check) => {
                let config = match check {
                    None => HealthConfig {
                        test: Some(vec!["NONE".into()]),
                        ..HealthConfig::default()
                    },
                    Some(check) => {
                        let test = match &check.cmd {
                            CommandLine::Exec(args) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(args.iter().cloned());
                                t
                            }
                            CommandLine::Shell(text) => vec!["CMD-SHELL".into(), text.clone()],
                        };
                        HealthConfig {
                            test: Some(test),
                            interval: check.interval,
                            timeout: check.timeout,
                            start_period: check.start_period,
                            start_interval: check.start_interval,
                            retries: check.retries,
                        }
                    }
                };
                state.history(format!("HEALTHCHECK {}", health_history(&config)), None);
                state.image.config.healthcheck = Some(config);
            }
            Command::OnBuild(text) => {
                // BuildKit records no history entry for ONBUILD.
                state
                    .image
                    .config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(text.clone());
            }
        }
        Ok(())
    }
}

/// A health check as BuildKit writes it into the history: Go's `%q` of its config struct, e.g.
/// `&{["CMD-SHELL" "true"] "30s" "5s" "0s" '\x00'}`.
fn health_history(c: &HealthConfig) -> String {
    let test = go_quote_list(c.test.as_deref().unwrap_or_default());
    let d = |ns: Option<i64>| format!("\"{}\"", go_duration(ns.unwrap_or(0)));
    let retries = c.retries.unwrap_or(0);
    let retries = match char::from_u32(retries as u32) {
        Some(ch)
            if retries >= 0x20 && retries != 0x7f && retries < 0x80 && ch != '\'' && ch != '\\' =>
        {
            format!("'{ch}'")
        }
        _ => format!("'\\x{:02x}'", retries & 0xff),
    };
    format!(
        "&{{{test} {} {} {} {retries}}}",
        d(c.interval),
        d(c.timeout),
        d(c.start_period)
    )
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `500ms`, `0s`.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let frac = |value: u64, unit: u64| -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let f = format!("{rest:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    };
    let s = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 1_000))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 1_000_000))
    } else {
        let secs = u / 1_000_000_000;
        let sub = u % 1_000_000_000;
        let (h, m, sec) = (secs / 3600, secs % 3600 / 60, secs % 60);
        let sec = frac(sec * 1_000_000_000 + sub, 1_000_000_000);
        if h > 0 {
            format!("{h}h{m}m{sec}s")
        } else if m > 0 {
            format!("{m}m{sec}s")
        } else {
            format!("{sec}s")
        }
    };
    if neg { format!("-{s}") } else { s }
}

/// Whether an image name made from ARG defaults could be a reference: not empty, no empty
/// tag or digest, no empty path component, lowercase repository.
fn plausible_image_name(name: &str) -> bool {
    let repo = name.split('@').next().unwrap_or("");
    let repo_no_tag = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => {
            if tag.is_empty() {
                return false;
            }
            r
        }
        _ => repo,
    };
    !name.is_empty()
        && !name.ends_with('@')
        && !repo_no_tag.is_empty()
        && !repo_no_tag.split('/').any(str::is_empty)
        && !name.contains(char::is_whitespace)
        && repo_no_tag
            .split('/')
            .skip(1)
            .all(|p| p == p.to_ascii_lowercase())
}

/// Where a RUN heredoc with a shebang is put for the process to run, as in BuildKit.
const HEREDOC_DIR: &str = "/dev/pipes";

/// What a shell-form RUN with heredocs runs, as BuildKit decides: a command that is only a
/// heredoc runs its body (from a file under `/dev/pipes` if it starts with `#!`, else as a shell
/// script); any other command goes to the shell with the bodies appended, and the shell reads
/// them as heredocs.
/// The name a downloaded file gets (BuildKit's rule): the last element of the URL's path,
/// percent-decoded, or `__unnamed__` when the path has none.
fn url_filename(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest
        .find('/')
        .map_or("", |i| &rest[i..])
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    let base = path.rsplit('/').find(|p| !p.is_empty()).unwrap_or("");
    let mut bytes = Vec::with_capacity(base.len());
    let raw = base.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if raw[i] == b'%'
            && i + 2 < raw.len()
            && let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2]))
        {
            bytes.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        bytes.push(raw[i]);
        i += 1;
    }
    let name = String::from_utf8_lossy(&bytes).into_owned();
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        "__unnamed__".into()
    } else {
        name
    }
}

/// The index of `vertex` in `inputs`, appending it if it is not there yet.
fn push_input(inputs: &mut Vec<VertexId>, vertex: VertexId) -> usize {
    match inputs.iter().position(|v| *v == vertex) {
        Some(i) => i,
        None => {
            inputs.push(vertex);
            inputs.len() - 1
        }
    }
}

fn run_heredocs(cmd: &CommandLine, heredocs: &[Heredoc]) -> (CommandLine, Vec<InlineFile>) {
    let CommandLine::Shell(text) = cmd else {
        return (cmd.clone(), vec![]);
    };
    if heredocs.is_empty() {
        return (cmd.clone(), vec![]);
    }
    if heredocs.len() == 1 && parse_heredoc_word(text.trim()).is_some() {
        let heredoc = &heredocs[0];
        let body = if heredoc.chomp {
            chomp_heredoc(&heredoc.content)
        } else {
            heredoc.content.clone()
        };
        if body.starts_with("#!") {
            let path = format!("{HEREDOC_DIR}/{}", heredoc.name);
            let file = InlineFile {
                path: path.clone(),
                data: body,
                mode: 0o755,
            };
            return (CommandLine::Shell(path), vec![file]);
        }
        return (CommandLine::Shell(body), vec![]);
    }
    let mut full = text.clone();
    for heredoc in heredocs {
        full.push('\n');
        full.push_str(&heredoc.content);
        full.push_str(&heredoc.name);
    }
    (CommandLine::Shell(full), vec![])
}

/// The absolute destination of a COPY: relative paths are under the working directory, and a
/// trailing `/` (which means "a directory") is kept.
fn normalize_dest(workdir: &str, dest: &str) -> String {
    let dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    let mut out = String::with_capacity(workdir.len() + dest.len() + 2);
    let parts = if dest.starts_with('/') {
        None.into_iter().chain(dest.split('/'))
    } else {
        Some(workdir).into_iter().chain(dest.split('/'))
    };
    let mut stack: Vec<&str> = Vec::with_capacity(16);
    for part in parts.flat_map(|p| p.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            p => stack.push(p),
        }
    }
    for part in &stack {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() || dir {
        out.push('/');
    }
    out
}

/// `80` → `80/tcp`; `8000-8002/udp` → three ports; `ip:host:container` and `host:container`
/// (which Docker accepts, with an ExposeInvalidFormat warning) expose the container port.
fn expand_port(spec: &str) -> Result<Vec<String>, String> {
    let spec = spec.rsplit(':').next().unwrap_or(spec);
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parse = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {p}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!(
            "invalid range specified for container port: {ports}"
        ));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;
    use crate::source::SourceFile;

    struct Fixed;

    impl ImageResolver for Fixed {
        fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
            if reference.starts_with("missing") || reference == "bulider" {
                return Err(format!("{reference}: not found"));
            }
            let mut image = Image::default();
            // "armonly" has one image, for linux/arm64; others have one per platform.
            let of = match reference.starts_with("armonly") {
                true => Platform::parse("linux/arm64").unwrap(),
                false => platform.clone(),
            };
            image.os = of.os.clone();
            image.architecture = of.architecture.clone();
            image.variant = of.variant();
            image.config.env = Some(vec!["PATH=/bin".into(), "BASE=1".into()]);
            image.config.cmd = Some(vec!["sh".into()]);
            image.history.push(History {
                created_by: Some("base".into()),
                ..History::default()
            });
            Ok(ResolvedImage {
                reference: format!("docker.io/library/{reference}"),
                digest: Digest::of(format!("{reference} {of}").as_bytes()),
                image,
            })
        }
    }

    fn lower_str(text: &str, options: &BuildOptions) -> Result<Build, String> {
        let file = SourceFile::new("Dockerfile", text.as_bytes());
        let parsed = parse(&file);
        assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
        lower(&parsed.dockerfile, options, &Fixed).map_err(|d| d.render())
    }

    fn exec_of(build: &Build, v: VertexId) -> ExecOp {
        match &build.graph.vertex(v).op {
            Op::Exec(e) => e.clone(),
            other => panic!("not an exec: {other:?}"),
        }
    }

    #[test]
    fn run_mounts_lower_with_buildkit_defaults() {
        let b = lower_str(
            "FROM base AS build\nRUN make\nFROM base\nARG D=deps\nWORKDIR /src\n\
             RUN --mount=type=cache,target=.cache,uid=$BASE \\\n\
                 --mount=from=build,source=/out,target=/in,rw \\\n\
                 --mount=source=$D,target=/ctx \\\n\
                 --mount=type=tmpfs,target=/t,size=1m \\\n\
                 --mount=type=secret,id=npmrc \\\n\
                 --mount=type=secret,id=tok,env=TOKEN \\\n\
                 --mount=type=ssh \\\n\
                 true\n",
            &BuildOptions::default(),
        )
        .unwrap();
        let run = exec_of(&b, b.target);
        let inputs = &b.graph.vertex(b.target).inputs;
        assert_eq!(inputs.len(), 3, "rootfs, the build stage, the context");
        let m = &run.mounts;
        assert_eq!(m.len(), 7);
        assert_eq!(m[0].target, "/src/.cache");
        assert!(!m[0].readonly);
        assert_eq!(
            m[0].kind,
            MountKind::Cache {
                id: "/src/.cache".into(),
                sharing: CacheSharing::Shared,
                input: None,
                source: "/".into(),
                mode: 0o755,
                uid: 1,
                gid: 0
            }
        );
        assert_eq!((m[1].target.as_str(), m[1].readonly), ("/in", false));
        assert_eq!(
            m[1].kind,
            MountKind::Bind {
                input: 1,
                source: "/out".into(),
                exclude: vec![],
            }
        );
        assert!(matches!(b.graph.vertex(inputs[1]).op, Op::Exec(_)));
        assert!(m[2].readonly, "binds are read-only by default");
        assert_eq!(
            m[2].kind,
            MountKind::Bind {
                input: 2,
                source: "/deps".into(),
                exclude: vec![],
            }
        );
        match &b.graph.vertex(inputs[2]).op {
            Op::Local(l) => assert_eq!(l.include, ["deps"]),
            other => panic!("not the context: {other:?}"),
        }
        assert_eq!(
            m[3].kind,
            MountKind::Tmpfs {
                size: Some(1 << 20)
            }
        );
        assert_eq!(m[4].target, "/run/secrets/npmrc");
        assert!(
            matches!(&m[4].kind, MountKind::Secret { id, mode: 0o400, required: false, .. } if id == "npmrc")
        );
        assert_eq!(
            m[5].target, "",
            "an env secret has no file unless a target is given"
        );
        assert!(matches!(&m[5].kind, MountKind::Secret { env: Some(e), .. } if e == "TOKEN"));
        assert_eq!(m[6].target, "/run/buildkit/ssh_agent.0");
        assert!(
            run.env
                .contains(&"SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0".to_string())
        );
        // The mount flags are not in the history, as in BuildKit.
        let last = b.image.history.last().unwrap();
        assert!(!last.created_by.as_deref().unwrap().contains("--mount"));

        let err = |df: &str| lower_str(df, &BuildOptions::default()).unwrap_err();
        assert!(
            err("FROM base\nRUN --mount=type=cache,target=/ true\n")
                .contains("invalid mount target")
        );
        assert!(
            err("FROM base\nRUN --mount=from=$X,target=/a true\n")
                .contains("doesn't support variable expansion")
        );
        assert!(
            err("FROM base\nRUN --mount=type=tmpfs,target=/a,size=big true\n")
                .contains("invalid size")
        );
    }

    #[test]
    fn env_workdir_user_reach_run_and_config() {
        let b = lower_str(
            "FROM base\nARG V=1\nENV A=$V B=${BASE}x\nWORKDIR app\nUSER 1000\nRUN echo $A\nCMD [\"run\"]\n",
            &BuildOptions::default(),
        )
        .unwrap();
        let run = exec_of(&b, b.target);
        assert_eq!(run.args, ["/bin/sh", "-c", "echo $A"]);
        assert_eq!(run.cwd, "/app");
        assert_eq!(run.user, "1000");
        assert_eq!(run.env, ["PATH=/bin", "BASE=1", "A=1", "B=1x", "V=1"]);
        let c = &b.image.config;
        assert_eq!(
            c.env.as_deref().unwrap(),
            ["PATH=/bin", "BASE=1", "A=1", "B=1x"]
        );
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
        assert_eq!(c.cmd.as_deref().unwrap(), ["run"]);
        let created_by: Vec<&str> = b
            .image
            .history
            .iter()
            .map(|h| h.created_by.as_deref().unwrap())
            .collect();
        assert_eq!(
            created_by,
            [
                "base",
                "ARG V=1",
                "ENV A=1 B=1x",
                "WORKDIR /app",
                "USER 1000",
                "RUN |1 V=1 /bin/sh -c echo $A # buildkit",
                "CMD [\"run\"]"
            ]
        );
        assert_eq!(
            b.graph.vertex(b.target).name.as_deref(),
            Some("[3/3] RUN echo 1")
        );
    }

    #[test]
    fn only_stages_the_target_needs_are_lowered() {
        let text = "FROM base AS a\nRUN a\nFROM base AS unused\nRUN unused\nFROM scratch\nCOPY --from=A /x /x\n";
        let b = lower_str(text, &BuildOptions::default()).unwrap();
        let names: Vec<String> = b
            .graph
            .needed_for(&[b.target])
            .into_iter()
            .filter_map(|v| b.graph.vertex(v).name.clone())
            .collect();
        assert!(names.iter().any(|n| n == "[a 2/2] RUN a"), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("unused")), "{names:?}");
        assert_eq!(
            b.graph.len(),
            4,
            "image, run a, scratch of the final stage, copy"
        );
        let b = lower_str(
            text,
            &BuildOptions {
                target: Some("UNUSED".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(exec_of(&b, b.target).args[2], "unused");
    }

    #[test]
    fn copy_lowers_to_a_local_source_per_copy() {
        let b = lower_str(
            "FROM scratch\nWORKDIR /w\nCOPY a b ./\nCOPY c .\n",
            &BuildOptions::default(),
        )
        .unwrap();
        let v = b.graph.vertex(b.target);
        let Op::File(f) = &v.op else { panic!() };
        let FileAction::Copy { paths, dest, .. } = &f.actions[0] else {
            panic!()
        };
        assert_eq!(paths, &["c"]);
        assert_eq!(dest, "/w/");
        let Op::Local(local) = &b.graph.vertex(v.inputs[1]).op else {
            panic!()
        };
        assert_eq!(local.include, ["c"]);
    }

    #[test]
    fn copy_parents_and_exclude() {
        let b = lower_str(
            "FROM scratch AS s\nFROM scratch\n\
             COPY --parents --exclude=*.md --exclude=tmp x/./y/*.txt z.txt /d/\n\
             COPY --from=s --exclude=$NOT_EXPANDED /a /b\n",
            &BuildOptions::default(),
        )
        .unwrap();
        let copy_of = |v: &rbuild_solver::graph::Vertex| {
            let Op::File(f) = &v.op else { panic!() };
            f.actions.clone()
        };
        let last = b.graph.vertex(b.target);
        let actions = copy_of(last);
        let FileAction::Copy {
            exclude_patterns, ..
        } = &actions[0]
        else {
            panic!()
        };
        assert_eq!(
            exclude_patterns,
            &["$NOT_EXPANDED"],
            "patterns are not expanded"
        );
        let parents = b.graph.vertex(last.inputs[0]);
        let actions = copy_of(parents);
        assert_eq!(actions.len(), 2, "one copy per source with --parents");
        let mut selected = Vec::new();
        for action in actions {
            let FileAction::Copy {
                source,
                paths,
                include_patterns,
                exclude_patterns,
                ..
            } = action
            else {
                panic!()
            };
            assert_eq!(exclude_patterns, ["*.md", "tmp"]);
            let Op::Local(local) = &b.graph.vertex(parents.inputs[source]).op else {
                panic!()
            };
            assert_eq!(local.include_patterns, include_patterns);
            assert_eq!(local.exclude_patterns, exclude_patterns);
            selected.push((
                paths[0].clone(),
                include_patterns[0].clone(),
                local.include[0].clone(),
            ));
        }
        assert_eq!(
            selected,
            [
                ("x".into(), "y/*.txt".into(), "x".into()),
                ("/".into(), "z.txt".into(), String::new())
            ]
        );
        let history: Vec<_> = b
            .image
            .history
            .iter()
            .map(|h| h.created_by.as_deref())
            .collect();
        assert_eq!(
            history,
            [
                Some("COPY --parents x/./y/*.txt z.txt /d/ # buildkit"),
                Some("COPY /a /b # buildkit")
            ]
        );
    }

    #[test]
    fn add_checksum_unpack_and_keep_git_dir() {
        let unpacks = |text: &str| {
            let b = lower_str(text, &BuildOptions::default()).unwrap();
            let Op::File(f) = &b.graph.vertex(b.target).op else {
                panic!()
            };
            let FileAction::Copy {
                unpack_archives, ..
            } = &f.actions[0]
            else {
                panic!()
            };
            *unpack_archives
        };
        assert!(unpacks("FROM scratch\nADD a.tar /x/\n"));
        assert!(unpacks("FROM scratch\nADD --keep-git-dir=true a.tar /x/\n"));
        assert!(!unpacks("FROM scratch\nADD --unpack=false a.tar /x/\n"));
        let e = lower_str(
            "FROM scratch\nADD --checksum=sha256:0123 a.tar /x/\n",
            &BuildOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.contains("Dockerfile:2:5: error: checksum requires HTTP(S) or Git sources"),
            "{e}"
        );
        let e = lower_str(
            "FROM scratch\nADD --keep-git-dir=maybe a.tar /x/\n",
            &BuildOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.contains("expecting boolean value for flag keep-git-dir"),
            "{e}"
        );
    }

    #[test]
    fn add_from_urls() {
        assert_eq!(
            url_filename("https://example.com/dl/app-1.2.tar.gz"),
            "app-1.2.tar.gz"
        );
        assert_eq!(
            url_filename("https://example.com/dl/a%20b.txt?x=1#top"),
            "a b.txt"
        );
        assert_eq!(url_filename("https://example.com/dir/"), "dir");
        assert_eq!(url_filename("https://example.com"), "__unnamed__");
        assert_eq!(url_filename("http://example.com/"), "__unnamed__");

        let sum = format!("sha256:{}", "ab".repeat(32));
        let b = lower_str(
            &format!(
                "FROM scratch\nADD --checksum={sum} https://example.com/x/tool.tgz local.txt /opt/\n"
            ),
            &BuildOptions::default(),
        );
        let e = b.unwrap_err();
        assert!(
            e.contains("checksum can't be specified for multiple sources"),
            "{e}"
        );
        let b = lower_str(
            &format!("FROM scratch\nADD --checksum={sum} --chmod=755 https://example.com/x/tool.tgz /opt/\n"),
            &BuildOptions::default(),
        )
        .unwrap();
        let file = b.graph.vertex(b.target);
        let Op::Http(http) = &b.graph.vertex(file.inputs[1]).op else {
            panic!("not a download")
        };
        assert_eq!(http.url, "https://example.com/x/tool.tgz");
        assert_eq!(http.filename, "tool.tgz");
        assert_eq!(
            http.checksum.as_ref().map(|d| d.as_str()),
            Some(sum.as_str())
        );
        let Op::File(f) = &file.op else { panic!() };
        let FileAction::Copy {
            paths,
            unpack_archives,
            mode,
            ..
        } = &f.actions[0]
        else {
            panic!()
        };
        assert_eq!(paths, &["tool.tgz"]);
        assert!(!unpack_archives, "downloads are never extracted");
        assert_eq!(*mode, Some(0o755));
        assert_eq!(
            b.image.history.last().unwrap().created_by.as_deref(),
            Some("ADD https://example.com/x/tool.tgz /opt/ # buildkit")
        );
        let e = lower_str(
            "FROM scratch\nCOPY https://example.com/a /a\n",
            &BuildOptions::default(),
        )
        .unwrap_err();
        assert!(e.contains("source can't be a URL for COPY"), "{e}");
        let e = lower_str(
            "FROM scratch\nADD --checksum=md5:12 https://example.com/a /a\n",
            &BuildOptions::default(),
        )
        .unwrap_err();
        assert!(e.contains("invalid checksum"), "{e}");
        let e = lower_str(
            "FROM scratch\nADD https://example.com/a https://example.com/b /a\n",
            &BuildOptions::default(),
        )
        .unwrap_err();
        assert!(e.contains("must be a directory and end with a /"), "{e}");
    }

    #[test]
    fn copy_link_is_made_on_scratch_and_merged() {
        let b = lower_str(
            "FROM base AS one\nRUN one\nCOPY --link a.txt /app/\n\
             FROM base AS two\nRUN two\nCOPY --link a.txt /app/\n\
             FROM scratch\nCOPY --from=one /app /1\nCOPY --from=two /app /2\n",
            &BuildOptions::default(),
        )
        .unwrap();
        let merges: Vec<VertexId> = b
            .graph
            .needed_for(&[b.target])
            .into_iter()
            .filter(|id| matches!(b.graph.vertex(*id).op, Op::Merge))
            .collect();
        assert_eq!(merges.len(), 2);
        let copies: Vec<VertexId> = merges
            .iter()
            .map(|m| b.graph.vertex(*m).inputs[1])
            .collect();
        // The same copy in both stages: one vertex, whatever it is stacked on.
        assert_eq!(copies[0], copies[1]);
        let copy = b.graph.vertex(copies[0]);
        assert!(matches!(copy.op, Op::File(_)));
        assert!(matches!(b.graph.vertex(copy.inputs[0]).op, Op::Scratch));
        for m in &merges {
            assert!(matches!(
                b.graph.vertex(b.graph.vertex(*m).inputs[0]).op,
                Op::Exec(_)
            ));
        }
    }

    #[test]
    fn chmod_octal_or_symbolic() {
        let copy_of = |text: &str| {
            let b = lower_str(text, &BuildOptions::default())?;
            let Op::File(f) = &b.graph.vertex(b.target).op else {
                panic!()
            };
            let FileAction::Copy { mode, chmod, .. } = &f.actions[0] else {
                panic!()
            };
            Ok::<_, String>((*mode, chmod.clone()))
        };
        assert_eq!(
            copy_of("FROM scratch\nCOPY --chmod=0755 a /a\n"),
            Ok((Some(0o755), None))
        );
        assert_eq!(
            copy_of("FROM scratch\nCOPY --chmod=u+x,go-w a /a\n"),
            Ok((None, Some("u+x,go-w".into())))
        );
        let e = copy_of("FROM scratch\nCOPY --chmod=u+q a /a\n").unwrap_err();
        assert!(
            e.contains("Dockerfile:2:6") && e.contains("invalid mode"),
            "{e}"
        );
        let e = copy_of("FROM scratch\nCOPY --chmod=17777 a /a\n").unwrap_err();
        assert!(e.contains("at most 7777"), "{e}");
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = lower_str(
            "FROM scratch AS builder\nFROM scratch\nCOPY --from=bulider /a /b\n",
            &BuildOptions::default(),
        )
        .unwrap_err();
        assert!(e.contains("Dockerfile:3:6: error: no stage named \"bulider\", and no such image: bulider: not found"), "{e}");
        assert!(e.contains("did you mean --from=builder?"), "{e}");
        let e = lower_str("FROM missing:1\n", &BuildOptions::default()).unwrap_err();
        assert!(
            e.starts_with("Dockerfile:1:6: error: missing:1: not found"),
            "{e}"
        );
        let e = lower_str("FROM base\nCOPY a b /c\n", &BuildOptions::default()).unwrap_err();
        assert!(e.contains("must be a directory and end with a /"), "{e}");
    }

    #[test]
    fn global_args_in_from_and_build_arg_overrides() {
        let mut options = BuildOptions::default();
        options.build_args.insert("TAG".into(), "2".into());
        options.build_args.insert("NOPE".into(), "x".into());
        let b = lower_str(
            "ARG TAG=1\nFROM base:$TAG\nARG TAG\nRUN echo $TAG\n",
            &options,
        )
        .unwrap();
        let Op::Image(img) = &b.graph.vertex(b.graph.vertex(b.target).inputs[0]).op else {
            panic!()
        };
        assert_eq!(img.reference, "docker.io/library/base:2");
        assert!(exec_of(&b, b.target).env.contains(&"TAG=2".to_string()));
        assert!(b.warnings.iter().any(|w| w.message.contains("[NOPE]")));
    }

    #[test]
    fn entrypoint_resets_inherited_cmd_and_expose_normalizes() {
        let b = lower_str(
            "FROM base\nENTRYPOINT [\"e\"]\nEXPOSE 80 53/UDP 8000-8001\n",
            &BuildOptions::default(),
        )
        .unwrap();
        assert_eq!(b.image.config.cmd, None);
        assert_eq!(
            b.image.config.args_escaped,
            Some(true),
            "as BuildKit writes it"
        );
        let ports: Vec<&String> = b
            .image
            .config
            .exposed_ports
            .as_ref()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    }

    #[test]
    fn scratch_stages_work_in_the_root_directory() {
        let b = lower_str("FROM scratch\nENV A=1\n", &BuildOptions::default()).unwrap();
        assert_eq!(b.image.config.working_dir.as_deref(), Some("/"));
        let b = lower_str("FROM base\nENV A=1\n", &BuildOptions::default()).unwrap();
        assert_eq!(
            b.image.config.working_dir, None,
            "an image's empty WorkingDir stays empty"
        );
    }

    #[test]
    fn history_text_like_buildkit() {
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(500_000_000), "500ms");
        let b = lower_str(
            "FROM base\nARG V\nARG W=2\nEXPOSE 80 53/udp\nHEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD true\n",
            &BuildOptions { build_args: [("V".to_string(), "9".to_string())].into(), ..Default::default() },
        )
        .unwrap();
        let h: Vec<&str> = b
            .image
            .history
            .iter()
            .skip(1)
            .map(|h| h.created_by.as_deref().unwrap())
            .collect();
        assert_eq!(
            h,
            [
                "ARG V",
                "ARG W=2",
                "EXPOSE map[53/udp:{} 80/tcp:{}]",
                "HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"30s\" \"5s\" \"0s\" '\\x03'}",
            ]
        );
    }

    #[test]
    fn predefined_platform_and_proxy_args() {
        let options = BuildOptions {
            build_args: [("http_proxy".to_string(), "http://proxy:3128".to_string())].into(),
            ..Default::default()
        };
        let b = lower_str(
            "ARG TARGETARCH\nFROM base:$TARGETARCH\nARG TARGETPLATFORM\nARG BUILDOS\nRUN echo $TARGETPLATFORM $BUILDOS\n",
            &options,
        )
        .unwrap();
        let run = exec_of(&b, b.target);
        assert!(
            run.env.contains(&"TARGETPLATFORM=linux/amd64".to_string()),
            "{:?}",
            run.env
        );
        assert!(
            run.env
                .contains(&"http_proxy=http://proxy:3128".to_string())
        );
        assert!(
            !b.warnings.iter().any(|w| w.message.contains("http_proxy")),
            "proxies are never unused"
        );
        let Op::Image(img) = &b.graph.vertex(b.graph.vertex(b.target).inputs[0]).op else {
            panic!()
        };
        assert_eq!(img.reference, "docker.io/library/base:amd64");
        let history: Vec<&str> = b
            .image
            .history
            .iter()
            .filter_map(|h| h.created_by.as_deref())
            .collect();
        assert!(history.iter().all(|h| !h.contains("proxy")), "{history:?}");
    }

    /// The progress names of the steps the target needs, sorted.
    fn step_names(b: &Build) -> Vec<String> {
        let mut names: Vec<String> = b
            .graph
            .needed_for(&[b.target])
            .into_iter()
            .filter_map(|v| b.graph.vertex(v).name.clone())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn steps_are_numbered_as_buildkit_numbers_them() {
        let names = |text: &str| step_names(&lower_str(text, &BuildOptions::default()).unwrap());
        // FROM scratch and FROM <stage> are no steps.
        assert_eq!(
            names("FROM scratch\nCOPY a /\nRUN x\n"),
            ["[1/2] COPY a /", "[2/2] RUN x"]
        );
        let from_stage = names("FROM base AS a\nFROM a\nRUN x\n");
        assert!(from_stage[0].starts_with("[a 1/1] FROM "), "{from_stage:?}");
        assert_eq!(from_stage[1], "[stage-1 1/1] RUN x");
        // Positions are padded to the width of the total.
        let ten = format!("FROM base\n{}", "RUN x\n".repeat(9));
        let ten = names(&ten);
        assert!(ten.contains(&"[ 2/10] RUN x".to_string()), "{ten:?}");
        assert!(
            ten.iter().any(|n| n.starts_with("[ 1/10] FROM ")),
            "{ten:?}"
        );
    }

    #[test]
    fn multi_platform_names_say_the_platform_and_the_cross_target() {
        let options = BuildOptions {
            platform: Some(Platform::parse("linux/arm64").unwrap()),
            multi_platform: true,
            ..Default::default()
        };
        let b = lower_str(
            "FROM --platform=$BUILDPLATFORM base AS a\nRUN x\nARG TARGETARCH\nRUN y\n",
            &options,
        )
        .unwrap();
        let names = step_names(&b);
        assert!(
            names[0].starts_with("[linux/amd64 a 1/3] FROM "),
            "{names:?}"
        );
        assert_eq!(
            names[1..],
            [
                "[linux/amd64 a 2/3] RUN x",
                "[linux/amd64->arm64 a 3/3] RUN y"
            ]
        );
    }

    #[test]
    fn target_and_stage_platforms() {
        let arm64 = BuildOptions {
            platform: Some(Platform::parse("linux/arm64").unwrap()),
            ..Default::default()
        };
        let text = "FROM --platform=$BUILDPLATFORM base AS tools\nARG TARGETARCH\nRUN echo $TARGETARCH\n\
                    FROM base\nARG TARGETPLATFORM BUILDARCH\nRUN echo $TARGETPLATFORM\n\
                    COPY --from=tools / /tools\n";
        let b = lower_str(text, &arm64).unwrap();
        assert_eq!(
            (b.image.os.as_str(), b.image.architecture.as_str()),
            ("linux", "arm64")
        );
        let copy = b.graph.vertex(b.target);
        let run = exec_of(&b, copy.inputs[0]);
        assert!(run.env.contains(&"TARGETPLATFORM=linux/arm64".into()));
        assert!(run.env.contains(&"BUILDARCH=amd64".into()), "{:?}", run.env);
        assert_eq!(run.platform.as_deref(), Some("linux/arm64"));
        let Op::Image(base) = &b.graph.vertex(b.graph.vertex(copy.inputs[0]).inputs[0]).op else {
            panic!("RUN is not on the image")
        };
        assert_eq!(base.digest, Digest::of(b"base linux/arm64"));
        // The tools stage runs on the build platform, for the target's architecture.
        let tools = exec_of(&b, copy.inputs[1]);
        assert_eq!(tools.platform, None);
        assert!(tools.env.contains(&"TARGETARCH=arm64".into()));
        let Op::Image(base) = &b.graph.vertex(b.graph.vertex(copy.inputs[1]).inputs[0]).op else {
            panic!("RUN is not on the image")
        };
        assert_eq!(base.digest, Digest::of(b"base linux/amd64"));

        // Without --platform, a stage's FROM --platform is the image's; with one, it is not.
        let text = "FROM --platform=linux/arm/v6 base\nRUN true\n";
        let b = lower_str(text, &BuildOptions::default()).unwrap();
        assert_eq!(
            (b.image.architecture.as_str(), b.image.variant.as_deref()),
            ("arm", Some("v6"))
        );
        assert_eq!(
            exec_of(&b, b.target).platform.as_deref(),
            Some("linux/arm/v6")
        );
        let b = lower_str(text, &arm64).unwrap();
        assert_eq!(
            (b.image.architecture.as_str(), b.image.variant.as_deref()),
            ("arm64", None)
        );
        // scratch takes the target platform, whatever FROM --platform says.
        let b = lower_str(
            "FROM --platform=linux/arm64 scratch\nCOPY a /\n",
            &BuildOptions::default(),
        )
        .unwrap();
        assert_eq!(b.image.architecture, Platform::host().architecture);
        for bad in [
            "FROM --platform=linux/ base\n",
            "FROM --platform=$NOPE base\n",
        ] {
            let e = lower_str(bad, &BuildOptions::default()).unwrap_err();
            assert!(e.contains("platform"), "{e}");
        }
    }

    #[test]
    fn onbuild_triggers_run_first_in_the_child() {
        let text = "FROM base AS parent\nONBUILD RUN echo parent-trigger\nONBUILD ENV T=1\nRUN echo parent\n\
                    FROM parent\nRUN echo child\n";
        let b = lower_str(text, &BuildOptions::default()).unwrap();
        let child = exec_of(&b, b.target);
        assert_eq!(child.args[2], "echo child");
        assert!(
            child.env.contains(&"T=1".to_string()),
            "the ENV trigger ran: {:?}",
            child.env
        );
        let trigger = exec_of(&b, b.graph.vertex(b.target).inputs[0]);
        assert_eq!(trigger.args[2], "echo parent-trigger");
        assert_eq!(b.image.config.on_build, None, "triggers are consumed");
        assert_eq!(
            b.graph.vertex(b.target).name.as_deref(),
            Some("[stage-1 2/2] RUN echo child")
        );
        // The parent stage keeps its triggers for images built from it.
        let b = lower_str(
            text,
            &BuildOptions {
                target: Some("parent".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            b.image.config.on_build.as_deref().unwrap(),
            ["RUN echo parent-trigger", "ENV T=1"]
        );
        let e = lower_str(
            "FROM base AS p\nONBUILD RUN [\"unterminated\nFROM p\n",
            &BuildOptions::default(),
        );
        assert!(
            e.is_ok(),
            "a shell-form trigger that looks like bad JSON is still a command"
        );
    }

    #[test]
    fn dest_normalization() {
        assert_eq!(normalize_dest("/app", "."), "/app/");
        assert_eq!(normalize_dest("/app", "x"), "/app/x");
        assert_eq!(normalize_dest("/app", "x/"), "/app/x/");
        assert_eq!(normalize_dest("/app", "/abs"), "/abs");
        assert_eq!(normalize_dest("/", "."), "/");
    }
}
