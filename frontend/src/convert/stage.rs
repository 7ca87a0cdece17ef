//! Lowering of stages: FROM (scratch, an earlier stage or an image, `--platform`), the FROM
//! build checks, stages named by `COPY --from` and `RUN --mount=from=`, and the ONBUILD
//! triggers a base image brings.

use super::{
    DEFAULT_PATH, Lowered, Lowerer, NamedContext, ResolvedImage, StageState, platform_args,
};
use crate::ast::Instruction;
use crate::diagnostic::Diagnostic;
use crate::image::Image;
use crate::instructions::Command;
use crate::lint;
use crate::platform::Platform;
use crate::source::Span;
use rbuild_solver::{ImageSource, Op, VertexId};

impl Lowerer<'_> {
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

    pub(super) fn resolve_image(
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

    /// The vertex of a stage named `name`, or else of the image `name` (as BuildKit reads
    /// `COPY --from` and `RUN --mount=from=`). `flag` names the option in the help.
    pub(super) fn stage_or_image(
        &mut self,
        name: &str,
        span: Span,
        flag: &str,
    ) -> Result<VertexId, Diagnostic> {
        if let Some(i) = self.find_stage(name) {
            return self.lower_stage(i);
        }
        let name = match self.named_context(name) {
            Some(NamedContext::Local { local, exclude }) => {
                return Ok(self.local_context_base(name, &local, &exclude, span).0);
            }
            Some(NamedContext::Image(reference)) => reference,
            None => name.to_string(),
        };
        let name = name.as_str();
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

    /// Lowers a stage (once); returns the vertex of its filesystem. Its image config is in
    /// `self.lowered[index]` afterwards.
    pub(super) fn lower_stage(&mut self, index: usize) -> Result<VertexId, Diagnostic> {
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
        if let Some(name) = &stage.name
            && let Some(context) = self.named_context(name)
        {
            return self.lower_named_stage(index, &name.clone(), context);
        }

        self.check_from(&stage.image, stage.from.args_span, true);
        let stage_platform = self.stage_platform(index)?;
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
            env: Vec::new(),
            workdir_set: false,
            platform: stage_platform
                .clone()
                .unwrap_or_else(|| self.target_platform.clone()),
            platform_in_names: self.options.multi_platform,
            on_build: false,
        };
        let from_text = self.stage_base(index, &base_name, stage_platform.is_some(), &mut state)?;

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
                    matches!(c, Command::Run(_) | Command::Copy(_) | Command::Workdir(_))
                })
                .count();
        if let Some(text) = from_text {
            let step = state.next_step(&text);
            self.graph.name_if_unnamed(state.vertex, step);
        }
        let trigger_count = triggers.len();
        for (i, (ins, command)) in commands.into_iter().enumerate() {
            state.on_build = i < trigger_count;
            self.lower_command(&mut state, ins, command)?;
        }
        state.on_build = false;
        self.in_progress[index] = false;
        self.lowered[index] = Some(Lowered {
            vertex: state.vertex,
            image: state.image,
            args: state.args,
            env: state.env,
        });
        Ok(state.vertex)
    }

    /// A stage's `FROM --platform`, expanded with the global ARGs and parsed.
    pub(super) fn stage_platform(&self, index: usize) -> Result<Option<Platform>, Diagnostic> {
        let Some(platform) = &self.stages[index].platform else {
            return Ok(None);
        };
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
        Ok(Some(parsed))
    }

    /// Sets the stage's starting vertex and image config from what FROM names: scratch, an
    /// earlier stage (by name only) or an image. Returns the FROM step's text when it pulls an
    /// image (named once the stage's step count is known).
    fn stage_base(
        &mut self,
        index: usize,
        base_name: &str,
        explicit_platform: bool,
        state: &mut StageState,
    ) -> Result<Option<String>, Diagnostic> {
        let stage = &self.stages[index];
        let from_span = stage.from.args_span;
        let lower_name = base_name.to_ascii_lowercase();
        let base_stage = self.stages[..index]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower_name.as_str()));
        // A named context for an image name (not a stage: that stage is replaced instead).
        let named = match base_stage {
            None => self.named_context(base_name),
            Some(_) => None,
        };
        let substituted;
        let base_name = match &named {
            Some(NamedContext::Image(reference)) => {
                substituted = reference.clone();
                substituted.as_str()
            }
            _ => base_name,
        };
        let mut from_text = None;
        if let Some(NamedContext::Local { local, exclude }) = &named {
            let (vertex, image) = self.local_context_base(base_name, local, exclude, from_span);
            state.vertex = vertex;
            state.image = image;
        } else if base_name.eq_ignore_ascii_case("scratch") {
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
            let lowered = self.lowered[base].as_ref().expect("just lowered");
            state.image = lowered.image.clone();
            state.args = lowered.args.clone();
            state.env = lowered.env.clone();
        } else {
            let platform = state.platform.clone();
            let resolved = self.resolve_image(base_name, &platform, from_span)?;
            from_text = Some(format!("FROM {}@{}", resolved.reference, resolved.digest));
            state.vertex = self.graph.add(
                Op::Image(ImageSource {
                    reference: resolved.reference.clone(),
                    digest: resolved.digest.clone(),
                }),
                vec![],
                None,
            );
            self.locate(state.vertex, stage.from.span);
            state.image = resolved.image.clone();
            state.image.rootfs.diff_ids.clear();
            if !explicit_platform
                && self.options.platform.is_none()
                && let Some(own) = self.build_platform_of(&state.image)
            {
                // Without --platform, a base image of another platform the machine runs
                // natively sets the stage's platform (BuildKit's autodetection).
                state.platform = own;
            }
            self.check_base_platform(base_name, &state.image, &state.platform, from_span);
        }
        if state.image.config.env_value("PATH").is_none() {
            state.image.config.set_env("PATH", DEFAULT_PATH);
        }
        // The config's variables are set (again, for a stage built on a stage) over what the
        // base's steps saw, as BuildKit starts a stage's state.
        let config_env = state.image.config.env.clone().unwrap_or_default();
        for kv in &config_env {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            state.set_var(k, v);
        }
        if state.image.architecture.is_empty() || state.image.os.is_empty() {
            state.image.architecture = state.platform.architecture.clone();
            state.image.os = state.platform.os.clone();
            state.image.variant = state.platform.variant();
        }
        state.image.created = None;
        Ok(from_text)
    }
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
