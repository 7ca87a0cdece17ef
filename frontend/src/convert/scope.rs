//! Variable scope: the state of a stage while it is lowered (its ARGs, its image config's ENV,
//! step names and history), word expansion with the UndefinedVar check, and ARG and ENV.

use super::{ArgDecl, HISTORY_COMMENT, Lowerer, concat, join_pairs, push_number};
use crate::ast::Instruction;
use crate::diagnostic::Diagnostic;
use crate::image::{History, Image};
use crate::lint;
use crate::platform::Platform;
use crate::shell::Env;
use crate::source::Span;
use rbuild_solver::{Step, VertexId};

/// The state of a stage while its instructions are lowered.
pub(super) struct StageState {
    pub(super) prefix: String,
    pub(super) index: usize,
    pub(super) total: usize,
    pub(super) vertex: VertexId,
    pub(super) image: Image,
    pub(super) cmd_set: bool,
    /// Declared ARGs in order, repeated ones included, with their values (`None`: declared
    /// without one); a stage built on another stage starts with that stage's (BuildKit's
    /// `buildArgs`).
    pub(super) args: Vec<(String, Option<String>)>,
    /// The variables steps see and words expand with, as BuildKit's LLB state keeps them: the
    /// base's config ENV, then every ENV and every ARG that has a value, in the order they were
    /// last set (setting one again moves it to the end). Unlike the image config's ENV, an ARG
    /// after an ENV of the same name wins here.
    pub(super) env: Vec<(String, String)>,
    /// An absolute WORKDIR was set in this stage (WorkdirRelativePath).
    pub(super) workdir_set: bool,
    /// The platform its steps run for (`FROM --platform`, else the target platform).
    pub(super) platform: Platform,
    /// Step names start with the platform (a multi-platform build).
    pub(super) platform_in_names: bool,
    /// The instruction being lowered is a base image's ONBUILD trigger: its step's name says
    /// so (`[app 2/4] ONBUILD RUN make`), as BuildKit's `cmdIsOnBuild`.
    pub(super) on_build: bool,
}

impl StageState {
    /// The next step of the stage: its progress name (`[build 2/4] RUN make`), stage and
    /// instruction text.
    pub(super) fn next_step(&mut self, text: &str) -> Step {
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
        if self.on_build {
            name.push_str("ONBUILD ");
        }
        name.push_str(text);
        let stage = self.prefix.trim_end();
        Step {
            name,
            stage: (!stage.is_empty()).then(|| stage.to_string()),
            label: text.to_string(),
        }
    }

    /// `->arch[/variant]` (or `->os/arch…` for another OS) when the TARGET* ARGs declared in
    /// the stage so far name another platform than the stage's own; empty otherwise.
    fn cross_target(&self) -> String {
        let value = |key: &str| self.var(key).map(str::to_string);
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

    /// The working directory steps run in (`/` when the config has none).
    pub(super) fn workdir(&self) -> &str {
        match self.image.config.working_dir.as_deref() {
            Some(w) if !w.is_empty() => w,
            _ => "/",
        }
    }

    /// A variable of the steps' environment ([`StageState::env`]).
    pub(super) fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a variable of the steps' environment, moving it to the end as BuildKit's
    /// `AddEnv` does.
    pub(super) fn set_var(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
    }

    pub(super) fn history(&mut self, created_by: String, layer_of: Option<VertexId>) {
        self.image.history.push(History {
            created_by: Some(created_by),
            comment: Some(std::borrow::Cow::Borrowed(HISTORY_COMMENT)),
            empty_layer: layer_of.is_none(),
            layer_of,
            ..History::default()
        });
    }
}

/// Variables for expansion in a stage: the steps' environment ([`StageState::env`]), where
/// whichever of an ENV and an ARG of the same name came last wins, as in BuildKit. Looked up
/// in place, without copying.
impl Env for StageState {
    fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.var(name).map(std::borrow::Cow::Borrowed)
    }

    fn declared(&self, name: &str) -> bool {
        self.var(name).is_some() || self.args.iter().any(|(k, _)| k == name)
    }

    fn names(&self) -> Vec<String> {
        let env = self.env.iter().map(|(k, _)| k.clone());
        env.chain(self.args.iter().map(|(k, _)| k.clone()))
            .collect()
    }
}

impl Lowerer<'_> {
    pub(super) fn error(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(&self.file, Some(span), message)
    }

    /// The value of a global ARG (or predefined one), if it has one.
    pub(super) fn global_value(&self, name: &str) -> Option<String> {
        self.global_args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }

    pub(super) fn global_env(&self) -> Vec<(String, String)> {
        self.global_args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect()
    }

    /// Expands a word; inside a stage's instructions, plain references to variables that are
    /// neither set nor declared are reported (UndefinedVar).
    pub(super) fn expand(
        &self,
        word: &str,
        env: &dyn Env,
        span: Span,
    ) -> Result<String, Diagnostic> {
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
    pub(super) fn lint(&self, rule: &'static lint::Rule, span: Span, message: String) {
        let mut d = Diagnostic::warning(&self.file, Some(span), message);
        d.rule = Some(rule);
        self.findings.borrow_mut().push(d);
    }

    pub(super) fn expand_words(
        &self,
        word: &str,
        env: &dyn Env,
        span: Span,
    ) -> Result<Vec<String>, Diagnostic> {
        self.lexer
            .process_words(word, env)
            .map_err(|e| self.error(span, e.to_string()))
    }

    pub(super) fn display_name(&self, ins: &Instruction, env: &dyn Env) -> String {
        let text = ins.original.trim();
        if !text.contains('$') {
            return text.to_string();
        }
        self.display
            .process_word(text, env)
            .unwrap_or_else(|_| text.to_string())
    }

    /// ENV: the image config's variables.
    pub(super) fn lower_env(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        pairs: &[(String, String)],
    ) -> Result<(), Diagnostic> {
        let span = ins.args_span;
        let mut expanded = Vec::new();
        for (k, v) in pairs {
            expanded.push((
                self.expand(k, &*state, span)?,
                self.expand(v, &*state, span)?,
            ));
        }
        for (k, v) in &expanded {
            state.image.config.set_env(k, v);
            state.set_var(k, v);
        }
        let text = join_pairs(
            expanded.iter().map(|(k, v)| [k.as_str(), "=", v.as_str()]),
            " ",
        );
        state.history(concat(&["ENV ", &text]), None);
        Ok(())
    }

    /// ARG in a stage: declares it, with the build's value, else its default, else the
    /// global ARG's; one with a value joins the steps' environment (BuildKit's `dispatchArg`).
    /// The history names the value it got, as current BuildKit writes it (v0.8 wrote the
    /// default).
    pub(super) fn lower_arg(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        args: &[ArgDecl],
    ) -> Result<(), Diagnostic> {
        let span = ins.args_span;
        let mut text = Vec::new();
        for (name, default) in args {
            let value = match self.options.build_args.get(name) {
                Some(v) => Some(v.clone()),
                None => match default {
                    Some(d) => Some(self.expand(d, &*state, span)?),
                    None => self.global_value(name),
                },
            };
            text.push(match &value {
                Some(v) => concat(&[name, "=", v]),
                None => name.clone(),
            });
            if let Some(v) = &value
                && !NON_ENV_ARGS.contains(&name.as_str())
            {
                state.set_var(name, v);
            }
            state.args.push((name.clone(), value));
        }
        state.history(format!("ARG {}", text.join(" ")), None);
        Ok(())
    }
}

/// ARGs that BuildKit reads itself and never puts in the steps' environment.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];
