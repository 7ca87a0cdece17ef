//! Lowering of RUN: the command (shell or exec form, heredocs), its network, the variables
//! the process sees, its `--mount`s, and its history entry.

use super::{Lowerer, PROXY_ARGS, StageState, concat, normalize_dest, push_number};
use crate::ast::{Heredoc, Instruction};
use crate::diagnostic::Diagnostic;
use crate::instructions::{CommandLine, FlagValue, RunCommand};
use crate::mounts::{MountSpec, MountType, parse_ram_size};
use crate::parser::{chomp_heredoc, parse_heredoc_word};
use crate::source::Span;
use rbuild_solver::contenthash::clean_relative;
use rbuild_solver::{
    CacheSharing, ExecMount, ExecOp, InlineFile, LocalSource, MountKind, NetworkMode, Op, VertexId,
};

/// The values of a `--mount` that every type shares, expanded; the target is absolute.
struct MountValues {
    target: Option<String>,
    source: Option<String>,
    id: Option<String>,
    mode: Option<u32>,
    uid: u32,
    gid: u32,
}

impl Lowerer<'_> {
    /// RUN: an exec op over the stage's filesystem and what its mounts read.
    pub(super) fn lower_run(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        run: &RunCommand,
    ) -> Result<(), Diagnostic> {
        let insecure = run.security.as_ref().is_some_and(|s| s.value == "insecure");
        if let Some(sec) = &run.security
            && insecure
            && !self.options.allow_insecure
        {
            return Err(self
                .error(sec.span, "entitlement security.insecure is not allowed")
                .with_help(
                    "RUN --security=insecure runs the step privileged; allow it with \
                     --allow security.insecure",
                ));
        }
        let (cmd, inline_files) = run_heredocs(&run.cmd, &run.heredocs);
        let args = self.shell_command(state, &cmd);
        if args.is_empty() {
            return Err(self.error(ins.args_span, "RUN requires at least one argument"));
        }
        let network = self.run_network(state, run.network.as_ref())?;
        let mut run_env = self.run_env(state);
        let mut inputs = vec![state.vertex];
        let mounts = self.lower_mounts(state, &run.mounts, &mut inputs, &mut run_env)?;
        let step = state.next_step(&self.display_name(ins, &*state));
        let created_by = run_history(state, &args.join(" "));
        let vertex = self.graph.add_step(
            Op::Exec(ExecOp {
                args,
                env: run_env,
                cwd: state.workdir().to_string(),
                user: state.image.config.user.clone().unwrap_or_default(),
                network,
                inline_files,
                mounts,
                platform: (state.platform != self.build_platform)
                    .then(|| state.platform.to_string()),
                limits: self.options.limits.clone(),
                insecure,
            }),
            inputs,
            step,
        );
        self.locate(vertex, ins.span);
        state.vertex = vertex;
        state.history(created_by, Some(vertex));
        Ok(())
    }

    /// The network of a RUN: `--network`, else the build's. `host` needs the entitlement.
    fn run_network(
        &self,
        state: &StageState,
        flag: Option<&FlagValue>,
    ) -> Result<NetworkMode, Diagnostic> {
        let Some(flag) = flag else {
            return Ok(self.options.network);
        };
        Ok(match self.expand(&flag.value, state, flag.span)?.as_str() {
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
        })
    }

    /// What the process sees: the steps' environment (ENV and ARGs with a value, in the order
    /// last set, as BuildKit's LLB state), plus proxy settings given as build args.
    fn run_env(&self, state: &StageState) -> Vec<String> {
        let mut run_env: Vec<String> = Vec::with_capacity(state.env.len() + 1);
        run_env.extend(state.env.iter().map(|(k, v)| concat(&[k, "=", v])));
        for proxy in PROXY_ARGS {
            if let Some(v) = self.options.build_args.get(proxy)
                && !run_env.iter().any(|kv| kv.split('=').next() == Some(proxy))
            {
                run_env.push(format!("{proxy}={v}"));
            }
        }
        run_env
    }

    /// The argument vector of a command line: exec form as is, shell form through the stage's
    /// SHELL (`/bin/sh -c` by default).
    pub(super) fn shell_command(&self, state: &StageState, cmd: &CommandLine) -> Vec<String> {
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
        mounts: &[(MountSpec, Span)],
        inputs: &mut Vec<VertexId>,
        env: &mut Vec<String>,
    ) -> Result<Vec<ExecMount>, Diagnostic> {
        let mut out = Vec::with_capacity(mounts.len());
        let mut ssh_count = 0;
        for (spec, span) in mounts {
            let span = *span;
            let values = self.mount_values(state, spec, span)?;
            let (target, kind) = match spec.mount_type() {
                MountType::Bind => self.bind_mount(spec, span, values, inputs)?,
                MountType::Cache => {
                    let target = values.target.clone().unwrap_or_default();
                    let kind = MountKind::Cache {
                        id: values.id.unwrap_or_else(|| target.clone()),
                        sharing: match spec.sharing.as_deref() {
                            Some("private") => CacheSharing::Private,
                            Some("locked") => CacheSharing::Locked,
                            _ => CacheSharing::Shared,
                        },
                        input: self.mount_from(spec, span, inputs)?,
                        source: absolute(values.source.as_deref().unwrap_or("/")),
                        mode: values.mode.unwrap_or(0o755),
                        uid: values.uid,
                        gid: values.gid,
                    };
                    (target, kind)
                }
                MountType::Tmpfs => {
                    let size = self
                        .expand_opt(state, &spec.size, span)?
                        .map(|v| parse_ram_size(&v).map_err(|e| self.error(span, e)))
                        .transpose()?;
                    (values.target.unwrap_or_default(), MountKind::Tmpfs { size })
                }
                MountType::Secret => {
                    let env_name = self.expand_opt(state, &spec.env, span)?;
                    self.secret_mount(spec, span, values, env_name)?
                }
                MountType::Ssh => {
                    let target = values
                        .target
                        .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_count}"));
                    if ssh_count == 0 && !env.iter().any(|kv| kv.starts_with("SSH_AUTH_SOCK=")) {
                        env.push(format!("SSH_AUTH_SOCK={target}"));
                    }
                    ssh_count += 1;
                    let kind = MountKind::Ssh {
                        id: values.id.unwrap_or_else(|| "default".into()),
                        required: spec.required.unwrap_or(false),
                        mode: values.mode.unwrap_or(0o600),
                        uid: values.uid,
                        gid: values.gid,
                    };
                    (target, kind)
                }
            };
            out.push(ExecMount {
                target,
                readonly: spec.is_readonly(),
                kind,
            });
        }
        Ok(out)
    }

    /// An optional mount value, expanded.
    fn expand_opt(
        &self,
        state: &StageState,
        value: &Option<String>,
        span: Span,
    ) -> Result<Option<String>, Diagnostic> {
        value
            .as_ref()
            .map(|v| self.expand(v, state, span))
            .transpose()
    }

    /// The values every mount type shares, expanded and checked; a relative target is below
    /// the working directory.
    fn mount_values(
        &self,
        state: &StageState,
        spec: &MountSpec,
        span: Span,
    ) -> Result<MountValues, Diagnostic> {
        let number = |v: &Option<String>, key: &str, radix: u32| {
            self.expand_opt(state, v, span)?
                .map(|v| {
                    u32::from_str_radix(&v, radix)
                        .map_err(|_| self.error(span, format!("invalid value {v} for {key}")))
                })
                .transpose()
        };
        let target = self.expand_opt(state, &spec.target, span)?.map(|t| {
            let t = normalize_dest(state.workdir(), &t)
                .trim_end_matches('/')
                .to_string();
            if t.is_empty() { "/".to_string() } else { t }
        });
        if target.as_deref() == Some("/") {
            return Err(self.error(span, "invalid mount target \"/\""));
        }
        Ok(MountValues {
            target,
            source: self.expand_opt(state, &spec.source, span)?,
            id: self.expand_opt(state, &spec.id, span)?,
            mode: number(&spec.mode, "mode", 8)?,
            uid: number(&spec.uid, "uid", 10)?.unwrap_or(0),
            gid: number(&spec.gid, "gid", 10)?.unwrap_or(0),
        })
    }

    /// The input a mount's `from` names (a stage or an image), if it has one.
    fn mount_from(
        &mut self,
        spec: &MountSpec,
        span: Span,
        inputs: &mut Vec<VertexId>,
    ) -> Result<Option<usize>, Diagnostic> {
        let Some(from) = &spec.from else {
            return Ok(None);
        };
        if from.contains('$') && from.len() > from.find('$').unwrap_or(0) + 1 {
            return Err(self.error(
                span,
                "'from' doesn't support variable expansion, define alias stage instead",
            ));
        }
        let vertex = self.stage_or_image(from, span, "from")?;
        Ok(Some(push_input(inputs, vertex)))
    }

    /// A bind mount: of what `from` names, else of the context (a local source selecting only
    /// what the mount reads, so that the cache key covers exactly those files).
    fn bind_mount(
        &mut self,
        spec: &MountSpec,
        span: Span,
        values: MountValues,
        inputs: &mut Vec<VertexId>,
    ) -> Result<(String, MountKind), Diagnostic> {
        let source = absolute(values.source.as_deref().unwrap_or("/"));
        let mut exclude = vec![];
        let input = match self.mount_from(spec, span, inputs)? {
            Some(i) => i,
            None => {
                exclude = self.options.dockerignore.clone();
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
                self.locate(local, span);
                push_input(inputs, local)
            }
        };
        let kind = MountKind::Bind {
            input,
            source,
            exclude,
        };
        Ok((values.target.unwrap_or_default(), kind))
    }

    /// A secret mount: its id defaults to the source, else the target's file name; its target
    /// to `/run/secrets/<id>`, unless it is only given as an environment variable.
    fn secret_mount(
        &self,
        spec: &MountSpec,
        span: Span,
        values: MountValues,
        env_name: Option<String>,
    ) -> Result<(String, MountKind), Diagnostic> {
        let id = match values.id.or(values.source) {
            Some(id) => id,
            None => values
                .target
                .as_deref()
                .and_then(|t| t.rsplit('/').next())
                .unwrap_or_default()
                .to_string(),
        };
        if id.is_empty() {
            return Err(self.error(span, "invalid secret mount. one of source, target required"));
        }
        let target = match (values.target, &env_name) {
            (Some(t), _) => t,
            (None, Some(_)) => String::new(),
            (None, None) => format!("/run/secrets/{}", id.rsplit('/').next().unwrap_or(&id)),
        };
        let kind = MountKind::Secret {
            id,
            env: env_name,
            required: spec.required.unwrap_or(false),
            mode: values.mode.unwrap_or(0o400),
            uid: values.uid,
            gid: values.gid,
        };
        Ok((target, kind))
    }
}

/// `/` and the path, cleaned.
fn absolute(path: &str) -> String {
    format!("/{}", clean_relative(path))
}

/// The history entry of a RUN, as BuildKit writes it: `RUN |2 A=1 B=2 cmd # buildkit` when
/// the stage has ARGs (each once, where first declared, with the environment's value), else
/// `RUN cmd # buildkit`.
fn run_history(state: &StageState, command_text: &str) -> String {
    let mut created_by = String::with_capacity(64 + command_text.len());
    created_by.push_str("RUN ");
    if !state.args.is_empty() {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in &state.args {
            let v = state
                .var(k)
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
    created_by.push_str(command_text);
    created_by.push_str(" # buildkit");
    created_by
}

/// Where a RUN heredoc with a shebang is put for the process to run, as in BuildKit.
const HEREDOC_DIR: &str = "/dev/pipes";

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

/// What a shell-form RUN with heredocs runs, as BuildKit decides: a command that is only a
/// heredoc runs its body (from a file under `/dev/pipes` if it starts with `#!`, else as a shell
/// script); any other command goes to the shell with the bodies appended, and the shell reads
/// them as heredocs.
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
