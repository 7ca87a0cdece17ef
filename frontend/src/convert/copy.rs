//! Lowering of COPY and ADD: sources from the context (a local source per copy, selecting
//! exactly what it reads), from a stage or an image, from URLs and from heredocs; `--chmod`,
//! `--chown`, `--link`, `--parents`, `--exclude`, `--checksum` and `--unpack`.

use super::{Lowerer, StageState, concat};
use crate::ast::{Heredoc, Instruction};
use crate::diagnostic::Diagnostic;
use crate::instructions::{CopyCommand, FlagValue};
use crate::lint;
use crate::parser::chomp_heredoc;
use crate::source::Span;
use rbuild_solver::chmod::{Chmod, SymbolicMode};
use rbuild_solver::contenthash::clean_relative;
use rbuild_solver::{Digest, FileAction, FileOp, GitSource, HttpSource, LocalSource, Op, VertexId};

/// The sources of a COPY or ADD, expanded.
struct Sources {
    /// Paths in the context or in the `--from` stage or image.
    paths: Vec<String>,
    /// ADD's URLs, downloaded by an HTTP source op each.
    urls: Vec<String>,
    /// ADD's git repositories, checked out by a git source op each.
    gits: Vec<crate::git::GitUrl>,
    /// Every source as written, in order, for the history.
    names: Vec<String>,
}

/// `ADD --checksum`: of a download, its content's digest; of a git source, its commit.
enum Checksum {
    Download(Digest),
    Commit(String),
}

/// What every copy action of one instruction shares.
struct CopyTarget {
    dest: String,
    owner: Option<String>,
    chmod: Option<Chmod>,
}

impl CopyTarget {
    /// A copy action of `paths` of input `source` to this target, selected by `selection`
    /// (the `.dockerignore`, include and exclude patterns of `FileAction::Copy`).
    fn copy(
        &self,
        source: usize,
        paths: Vec<String>,
        unpack_archives: bool,
        selection: [Vec<String>; 3],
    ) -> FileAction {
        let [ignore, include_patterns, exclude_patterns] = selection;
        FileAction::Copy {
            source,
            paths,
            dest: self.dest.clone(),
            owner: self.owner.clone(),
            mode: self.chmod.as_ref().and_then(Chmod::octal),
            chmod: self.chmod.as_ref().and_then(Chmod::symbolic).cloned(),
            unpack_archives,
            ignore,
            include_patterns,
            exclude_patterns,
        }
    }

    /// A copy of one file of a source made for this instruction (a download, a heredoc),
    /// never extracted.
    fn plain_copy(&self, source: usize, path: String) -> FileAction {
        self.copy(source, vec![path], false, Default::default())
    }
}

impl Lowerer<'_> {
    /// COPY or ADD: a file op over the stage (or, with `--link`, over scratch, merged onto the
    /// stage afterwards) with one copy action per source selection, download and heredoc.
    pub(super) fn lower_copy(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        copy: &CopyCommand,
    ) -> Result<(), Diagnostic> {
        let span = ins.args_span;
        let keyword = if copy.add { "ADD" } else { "COPY" };
        let mut sources = self.copy_sources(state, span, copy)?;
        let (url_checksum, commit) = match self.copy_checksum(state, copy, &sources)? {
            Some(Checksum::Download(d)) => (Some(d), None),
            Some(Checksum::Commit(c)) => (None, Some(c)),
            None => (None, None),
        };
        if copy.from.is_none() {
            self.check_copy_ignored(span, copy.add, &sources.paths);
        }
        let dest_raw = self.expand(&copy.dest, &*state, span)?;
        let count =
            sources.paths.len() + sources.urls.len() + sources.gits.len() + copy.contents.len();
        if count > 1 && !dest_raw.ends_with('/') {
            return Err(self.error(
                span,
                format!("when using {keyword} with more than one source file, the destination must be a directory and end with a /"),
            ));
        }
        let target = CopyTarget {
            dest: normalize_dest(
                state.image.config.working_dir.as_deref().unwrap_or("/"),
                &dest_raw,
            ),
            owner: match &copy.chown {
                Some(flag) => Some(self.expand(&flag.value, &*state, flag.span)?),
                None => None,
            },
            chmod: match &copy.chmod {
                Some(flag) => Some(self.copy_chmod(state, flag)?),
                None => None,
            },
        };
        // With --link the copy is made on an empty filesystem and stacked on the stage
        // afterwards (a merge), as BuildKit does: neither its layer nor its key depends on the
        // stage, and no symlink of the stage affects where files land. BuildKit makes a --link
        // copy with --chmod as an ordinary one (dispatchCopy checks `cfg.link && cfg.chmod ==
        // ""`).
        let link = copy.link && copy.chmod.is_none();
        let copy_base = if link {
            self.graph.add(Op::Scratch, vec![], None)
        } else {
            state.vertex
        };
        let mut inputs = vec![copy_base];
        let mut actions =
            self.copy_actions(state, ins, copy, &sources.paths, &target, &mut inputs)?;
        // A download each, copied like a local file but never extracted, as BuildKit does
        // (the file keeps the download's mode, 0600, unless --chmod).
        for url in std::mem::take(&mut sources.urls) {
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
            self.locate(download, ins.span);
            inputs.push(download);
            actions.push(target.plain_copy(inputs.len() - 1, filename));
        }
        // A checkout each, copied whole into the destination, as BuildKit copies `/` of its git
        // source.
        for git in std::mem::take(&mut sources.gits) {
            let checkout = self.graph.add(
                Op::Git(GitSource {
                    url: git.remote.clone(),
                    reference: git.reference.clone(),
                    subdir: git.subdir.clone(),
                    keep_git_dir: copy.keep_git_dir.or(git.keep_git_dir).unwrap_or(false),
                    checksum: commit.clone().or(git.checksum.clone()),
                }),
                vec![],
                Some(git.remote),
            );
            self.locate(checkout, ins.span);
            inputs.push(checkout);
            let whole = target.copy(
                inputs.len() - 1,
                vec!["/".into()],
                false,
                Default::default(),
            );
            actions.push(whole);
        }
        for heredoc in &copy.contents {
            let (file, path) = self.heredoc_source(state, span, heredoc)?;
            inputs.push(file);
            actions.push(target.plain_copy(inputs.len() - 1, path));
            sources.names.push(format!("<<{}", heredoc.name));
        }
        let step = state.next_step(&self.display_name(ins, &*state));
        let mut vertex = self
            .graph
            .add_step(Op::File(FileOp { actions }), inputs, step);
        self.locate(vertex, ins.span);
        if link {
            vertex = self.graph.add(Op::Merge, vec![state.vertex, vertex], None);
        }
        state.vertex = vertex;
        state.history(
            concat(&[
                keyword,
                if copy.parents { " --parents " } else { " " },
                &sources.names.join(" "),
                " ",
                &dest_raw,
                " # buildkit",
            ]),
            Some(vertex),
        );
        Ok(())
    }

    /// The sources, expanded and sorted into paths, URLs and git repositories; COPY refuses
    /// URLs.
    fn copy_sources(
        &self,
        state: &StageState,
        span: Span,
        copy: &CopyCommand,
    ) -> Result<Sources, Diagnostic> {
        let mut sources = Sources {
            paths: Vec::new(),
            urls: Vec::new(),
            gits: Vec::new(),
            names: Vec::new(),
        };
        for src in &copy.srcs {
            let expanded = self.expand(src, state, span)?;
            let is_url = expanded.starts_with("http://") || expanded.starts_with("https://");
            if !copy.add && is_url {
                return Err(self.error(span, "source can't be a URL for COPY"));
            }
            sources.names.push(expanded.clone());
            if copy.add
                && copy.from.is_none()
                && let Some(git) = crate::git::parse(&expanded)
            {
                sources.gits.push(git);
                continue;
            }
            if copy.add && is_url && copy.from.is_none() {
                sources.urls.push(expanded);
                continue;
            }
            sources.paths.push(expanded);
        }
        Ok(sources)
    }

    /// `ADD --checksum`: it verifies a download, so a local source with one is a mistake, as
    /// BuildKit says.
    fn copy_checksum(
        &self,
        state: &StageState,
        copy: &CopyCommand,
        sources: &Sources,
    ) -> Result<Option<Checksum>, Diagnostic> {
        let Some(flag) = &copy.checksum else {
            return Ok(None);
        };
        if sources.paths.len() + sources.urls.len() + sources.gits.len() != 1 {
            return Err(self.error(
                flag.span,
                "checksum can't be specified for multiple sources",
            ));
        }
        if sources.urls.is_empty() && sources.gits.is_empty() {
            return Err(self.error(flag.span, "checksum requires HTTP(S) or Git sources"));
        }
        let value = self.expand(&flag.value, state, flag.span)?;
        if !sources.gits.is_empty() {
            // A git source's checksum is its commit (or a prefix of it).
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(self.error(
                    flag.span,
                    format!("invalid checksum {value:?} for a git source: expected a commit id"),
                ));
            }
            return Ok(Some(Checksum::Commit(value)));
        }
        let digest = Digest::parse(&value).ok_or_else(|| {
            self.error(
                flag.span,
                format!("invalid checksum {value:?}: expected sha256:<64 hex digits>"),
            )
        })?;
        Ok(Some(Checksum::Download(digest)))
    }

    /// CopyIgnoredFile: a source of the context that `.dockerignore` excludes.
    fn check_copy_ignored(&self, span: Span, add: bool, paths: &[String]) {
        for source in paths {
            if self.ignore.is_excluded(&clean_relative(source)) {
                let verb = if add { "Add" } else { "Copy" };
                self.lint(
                    &lint::COPY_IGNORED_FILE,
                    span,
                    format!(
                        "Attempting to {verb} file {source:?} that is excluded by .dockerignore"
                    ),
                );
            }
        }
    }

    /// `--chmod`: an octal mode, or (Dockerfile 1.14) a symbolic one applied to each file's
    /// own mode, parsed here once; an invalid one is an error at the flag.
    fn copy_chmod(&self, state: &StageState, flag: &FlagValue) -> Result<Chmod, Diagnostic> {
        let value = self.expand(&flag.value, state, flag.span)?;
        match u32::from_str_radix(&value, 8) {
            Ok(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
            Ok(_) => Err(self.error(
                flag.span,
                format!("invalid --chmod value {value:?}: an octal mode is at most 7777"),
            )),
            Err(_) => SymbolicMode::parse(&value)
                .map(Chmod::Symbolic)
                .map_err(|e| {
                    self.error(flag.span, format!("--chmod: {e}")).with_help(
                        "use an octal mode such as 755, or a symbolic one such as u+x or a=rX,u+w",
                    )
                }),
        }
    }

    /// The copy actions of the paths (from the context or `--from`), adding their sources to
    /// `inputs`: one action for all paths, or with `--parents` one per path, copying from its
    /// pivot (the part before `/./`, else the root) what its pattern matches below it, as
    /// BuildKit does.
    fn copy_actions(
        &mut self,
        state: &StageState,
        ins: &Instruction,
        copy: &CopyCommand,
        paths: &[String],
        target: &CopyTarget,
        inputs: &mut Vec<VertexId>,
    ) -> Result<Vec<FileAction>, Diagnostic> {
        // What each copy action takes: (source paths, include patterns).
        let selections: Vec<(Vec<String>, Vec<String>)> = if copy.parents {
            paths
                .iter()
                .map(|src| {
                    let (pivot, pattern) = src.split_once("/./").unwrap_or(("/", src));
                    (vec![pivot.to_string()], vec![clean_relative(pattern)])
                })
                .collect()
        } else if paths.is_empty() {
            vec![]
        } else {
            vec![(paths.to_vec(), vec![])]
        };
        match &copy.from {
            _ if paths.is_empty() => {}
            None => {
                // A local source per action, selecting exactly what it copies, so the cache
                // key covers those files and no others.
                for (paths, include_patterns) in &selections {
                    let local = self.graph.add(
                        Op::Local(LocalSource {
                            name: "context".into(),
                            include: paths.iter().map(|s| clean_relative(s)).collect(),
                            exclude: self.options.dockerignore.clone(),
                            include_patterns: include_patterns.clone(),
                            exclude_patterns: copy.exclude.clone(),
                        }),
                        vec![],
                        None,
                    );
                    // A missing source is reported at the COPY that names it.
                    self.locate(local, ins.span);
                    inputs.push(local);
                }
            }
            Some(flag) => {
                let name = self.expand(&flag.value, state, flag.span)?;
                inputs.push(self.stage_or_image(&name, flag.span, "--from")?);
            }
        }
        let from_context = copy.from.is_none();
        let unpack = copy.add && from_context && copy.unpack.unwrap_or(true);
        let actions = selections
            .into_iter()
            .enumerate()
            .map(|(i, (paths, include_patterns))| {
                // The context's ignore file applies to copies from the context.
                let ignore = if from_context {
                    self.options.dockerignore.clone()
                } else {
                    vec![]
                };
                // The context's local sources come one per action, a stage's once.
                let source = if from_context { 1 + i } else { 1 };
                let selection = [ignore, include_patterns, copy.exclude.clone()];
                target.copy(source, paths, unpack, selection)
            })
            .collect();
        Ok(actions)
    }

    /// A heredoc source: a file of its own (as BuildKit's Mkfile on scratch), copied like any
    /// source; unquoted bodies are expanded first. Returns the vertex and the file's path.
    fn heredoc_source(
        &mut self,
        state: &StageState,
        span: Span,
        heredoc: &Heredoc,
    ) -> Result<(VertexId, String), Diagnostic> {
        let mut data = if heredoc.chomp {
            chomp_heredoc(&heredoc.content)
        } else {
            heredoc.content.clone()
        };
        if heredoc.expand {
            data = crate::shell::Lexer::for_heredoc_body(self.lexer.escape)
                .process_word(&data, state)
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
        Ok((file, path))
    }
}

/// The name a downloaded file gets (BuildKit's rule): the last element of the URL's path,
/// percent-decoded, or `__unnamed__` when the path has none.
pub(super) fn url_filename(url: &str) -> String {
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

/// The absolute destination of a COPY: relative paths are under the working directory, and a
/// trailing `/` (which means "a directory") is kept.
pub(super) fn normalize_dest(workdir: &str, dest: &str) -> String {
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
