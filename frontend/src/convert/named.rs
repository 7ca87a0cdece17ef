//! Named contexts (`--build-context NAME=…`, BuildKit's `context:NAME`): a name that `FROM`,
//! `COPY --from` or `RUN --mount=from=` use stands for a directory of the build machine or for
//! another image, and a stage of the same name is replaced by it, as BuildKit's
//! `dockerui.NamedContext` does. Names are matched as BuildKit matches them: an image name in
//! its familiar form without `:latest` (`alpine`, `alpine:3.20`, `ghcr.io/o/app`).

use super::{DEFAULT_PATH, Lowered, Lowerer};
use crate::diagnostic::Diagnostic;
use crate::image::Image;
use crate::source::Span;
use rbuild_solver::{FileAction, FileOp, ImageSource, LocalSource, Op, VertexId};

/// What a named context is, as lowering sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamedContext {
    /// A directory of the build machine, which the worker knows as the local source
    /// `local` (its own `.dockerignore` patterns in `exclude`).
    Local {
        /// The local source's name (`named:NAME`).
        local: String,
        /// Patterns of its `.dockerignore`.
        exclude: Vec<String>,
    },
    /// An image to use instead, by reference (`docker-image://REF`, or an OCI layout's image
    /// once the builder has put it in the local store).
    Image(String),
}

/// The name under which BuildKit looks a context up: the familiar form of an image name
/// (`docker.io/library/` dropped), without `:latest`; other words (stage names) as they are.
pub fn context_key(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    let name = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .map(|rest| match rest.strip_prefix("library/") {
            Some(short) if !short.contains('/') => short.to_string(),
            _ => rest.to_string(),
        })
        .unwrap_or(name.clone());
    name.strip_suffix(":latest")
        .map(str::to_string)
        .unwrap_or(name)
}

impl Lowerer<'_> {
    /// The named context `name` stands for, if any.
    pub(super) fn named_context(&self, name: &str) -> Option<NamedContext> {
        if self.options.named_contexts.is_empty() {
            return None;
        }
        self.options.named_contexts.get(&context_key(name)).cloned()
    }

    /// The filesystem and config a local named context gives a stage: its files as one layer
    /// (so RUN steps and mounts see them) and an empty image's config, as BuildKit's
    /// `emptyImage`.
    pub(super) fn local_context_base(
        &mut self,
        name: &str,
        local: &str,
        exclude: &[String],
        span: Span,
    ) -> (VertexId, Image) {
        let source = self.graph.add(
            Op::Local(LocalSource {
                name: local.to_string(),
                include: vec![],
                exclude: exclude.to_vec(),
                include_patterns: vec![],
                exclude_patterns: vec![],
            }),
            vec![],
            None,
        );
        let scratch = self.graph.add(Op::Scratch, vec![], None);
        let vertex = self.graph.add(
            Op::File(FileOp {
                actions: vec![FileAction::Copy {
                    source: 1,
                    paths: vec!["/".into()],
                    dest: "/".into(),
                    owner: None,
                    mode: None,
                    chmod: None,
                    unpack_archives: false,
                    ignore: exclude.to_vec(),
                    include_patterns: vec![],
                    exclude_patterns: vec![],
                }],
            }),
            vec![scratch, source],
            Some(format!("[context {name}] load from client")),
        );
        self.locate(vertex, span);
        let platform = self.target_platform.clone();
        let mut image = Image {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant(),
            ..Image::default()
        };
        image.config.working_dir = Some("/".into());
        image.config.set_env("PATH", DEFAULT_PATH);
        (vertex, image)
    }

    /// A stage whose name is a named context: the context replaces it, instructions and all.
    pub(super) fn lower_named_stage(
        &mut self,
        index: usize,
        name: &str,
        context: NamedContext,
    ) -> Result<VertexId, Diagnostic> {
        let span = self.stages[index].from.span;
        let (vertex, mut image) = match context {
            NamedContext::Local { local, exclude } => {
                self.local_context_base(name, &local, &exclude, span)
            }
            NamedContext::Image(reference) => {
                let platform = self
                    .stage_platform(index)?
                    .unwrap_or_else(|| self.target_platform.clone());
                let resolved = self.resolve_image(&reference, &platform, span)?;
                let vertex = self.graph.add(
                    Op::Image(ImageSource {
                        reference: resolved.reference.clone(),
                        digest: resolved.digest.clone(),
                    }),
                    vec![],
                    Some(format!(
                        "[context {name}] FROM {}@{}",
                        resolved.reference, resolved.digest
                    )),
                );
                self.locate(vertex, span);
                let mut image = resolved.image.clone();
                image.rootfs.diff_ids.clear();
                (vertex, image)
            }
        };
        if image.config.env_value("PATH").is_none() {
            image.config.set_env("PATH", DEFAULT_PATH);
        }
        image.created = None;
        let env = image
            .config
            .env
            .iter()
            .flatten()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        self.in_progress[index] = false;
        self.lowered[index] = Some(Lowered {
            vertex,
            image,
            args: Vec::new(),
            env,
        });
        Ok(vertex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_matched_in_their_familiar_form() {
        assert_eq!(context_key("docker.io/library/alpine:latest"), "alpine");
        assert_eq!(context_key("alpine:3.20"), "alpine:3.20");
        assert_eq!(context_key("docker.io/org/app"), "org/app");
        assert_eq!(context_key("Build"), "build");
        assert_eq!(
            context_key("localhost:5000/app:latest"),
            "localhost:5000/app"
        );
    }
}
