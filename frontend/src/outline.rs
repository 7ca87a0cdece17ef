//! BuildKit's subrequests that read a Dockerfile without building it (`--call=targets`,
//! `--call=outline`): the stages a build can target, and what a target can be given (build
//! args, secrets, SSH agents), each with the description its comment gives (`# NAME text` on
//! the line before `FROM … AS NAME` or `ARG NAME`, BuildKit's doc comments).

use crate::ast::Instruction;
use crate::instructions::{Command, parse_command};
use crate::mounts::MountType;
use crate::parser::Parsed;
use crate::shell::Lexer;
use std::collections::BTreeMap;

/// A stage a build can target (`frontend.targets`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `AS` name (none for an unnamed stage).
    pub name: Option<String>,
    /// The doc comment.
    pub description: Option<String>,
    /// The last stage: what a build without `--target` builds.
    pub default: bool,
    /// What `FROM` names, unexpanded.
    pub base: String,
    /// `FROM --platform`, unexpanded.
    pub platform: Option<String>,
    /// The `FROM` line (1-based).
    pub line: usize,
}

/// A build arg a target reads (`frontend.outline`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlineArg {
    /// Name.
    pub name: String,
    /// The value it gets: the `--build-arg`, else its default (as written), else none.
    pub value: Option<String>,
    /// The doc comment.
    pub description: Option<String>,
    /// Where it is declared (1-based).
    pub line: usize,
}

/// A secret or SSH agent a target's RUN steps mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needed {
    /// The id.
    pub name: String,
    /// `required=true`: the build fails without it.
    pub required: bool,
    /// The first RUN that mounts it (1-based).
    pub line: usize,
}

/// What a target can be given (`frontend.outline`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outline {
    /// The target stage's name.
    pub name: Option<String>,
    /// Its doc comment.
    pub description: Option<String>,
    /// Build args of the stages it needs, and global ARGs they use, in file order.
    pub args: Vec<OutlineArg>,
    /// Secrets, in file order.
    pub secrets: Vec<Needed>,
    /// SSH agents, in file order.
    pub ssh: Vec<Needed>,
}

/// A stage as the outline sees it.
struct Stage<'a> {
    from: &'a Instruction,
    name: Option<String>,
    base: String,
    platform: Option<String>,
    commands: Vec<(&'a Instruction, Command)>,
}

/// BuildKit's doc comment: the text after `NAME ` on a comment line right before.
fn doc_comment(ins: &Instruction, name: &str) -> Option<String> {
    ins.comments
        .iter()
        .find_map(|c| c.strip_prefix(name)?.strip_prefix(' '))
        .map(str::to_string)
}

/// The stages and global ARGs of a parsed Dockerfile (instructions that do not check are
/// skipped: the build reports them).
fn stages(parsed: &Parsed) -> (Vec<(&Instruction, Command)>, Vec<Stage<'_>>) {
    let file = &parsed.dockerfile.file;
    let mut globals = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in &parsed.dockerfile.instructions {
        let Ok(command) = parse_command(file, ins) else {
            continue;
        };
        match (command, stages.last_mut()) {
            (
                Command::From {
                    image,
                    name,
                    platform,
                },
                _,
            ) => stages.push(Stage {
                from: ins,
                name: name.map(|n| n.to_ascii_lowercase()),
                base: image,
                platform: platform.map(|p| p.value),
                commands: Vec::new(),
            }),
            (command, Some(stage)) => stage.commands.push((ins, command)),
            (command @ Command::Arg(_), None) => globals.push((ins, command)),
            _ => {}
        }
    }
    (globals, stages)
}

/// The stages a build can target, in file order; the last is the default.
pub fn targets(parsed: &Parsed) -> Vec<Target> {
    let (_, stages) = stages(parsed);
    let last = stages.len().saturating_sub(1);
    stages
        .iter()
        .enumerate()
        .map(|(i, s)| Target {
            description: s.name.as_deref().and_then(|n| doc_comment(s.from, n)),
            name: s.name.clone(),
            default: i == last,
            base: s.base.clone(),
            platform: s.platform.clone(),
            line: s.from.start_line,
        })
        .collect()
}

/// What building `target` (the last stage when `None`) can be given, with `build_args` as the
/// command line gives them. Errors name a target that does not exist.
pub fn outline(
    parsed: &Parsed,
    target: Option<&str>,
    build_args: &BTreeMap<String, String>,
) -> Result<Outline, String> {
    let (globals, stages) = stages(parsed);
    let index = match target {
        None => stages
            .len()
            .checked_sub(1)
            .ok_or("the Dockerfile has no stage")?,
        Some(t) => stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&t.to_ascii_lowercase()))
            .ok_or_else(|| format!("target stage {t:?} could not be found"))?,
    };
    let lexer = Lexer::new(parsed.dockerfile.directives.escape);
    let mut global_values: Vec<(String, String)> = Vec::new();
    let mut global_decls: BTreeMap<String, OutlineArg> = BTreeMap::new();
    for (ins, command) in &globals {
        let Command::Arg(args) = command else {
            continue;
        };
        for (name, default) in args {
            let value = build_args.get(name).cloned().or_else(|| default.clone());
            if let Some(v) = &value {
                let v = lexer
                    .process_word(v, &global_values.as_slice())
                    .unwrap_or_else(|_| v.clone());
                global_values.push((name.clone(), v));
            }
            let description = doc_comment(ins, name);
            global_decls.insert(
                name.clone(),
                OutlineArg {
                    name: name.clone(),
                    value,
                    description,
                    line: ins.start_line,
                },
            );
        }
    }
    let expand = |word: &str| {
        lexer
            .process_word(word, &global_values.as_slice())
            .unwrap_or_else(|_| word.to_string())
            .to_ascii_lowercase()
    };
    let position = |name: &str| stages.iter().position(|s| s.name.as_deref() == Some(name));
    // The stages the target needs: its FROM chain, COPY --from and RUN --mount from=.
    let mut needed = vec![false; stages.len()];
    let mut pending = vec![index];
    while let Some(i) = pending.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        let stage = &stages[i];
        let mut names = vec![expand(&stage.base)];
        for (_, command) in &stage.commands {
            match command {
                Command::Copy(c) => names.extend(c.from.iter().map(|f| expand(&f.value))),
                Command::Run(r) => names.extend(
                    r.mounts
                        .iter()
                        .filter_map(|(m, _)| m.from.as_deref())
                        .map(expand),
                ),
                _ => {}
            }
        }
        for name in names {
            let found = position(&name).or_else(|| name.parse::<usize>().ok());
            if let Some(j) = found.filter(|&j| j < i) {
                pending.push(j);
            }
        }
    }
    let mut out = Outline {
        name: stages[index].name.clone(),
        description: stages[index]
            .name
            .as_deref()
            .and_then(|n| doc_comment(stages[index].from, n)),
        ..Outline::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut push = |out: &mut Outline, arg: Option<OutlineArg>| {
        if let Some(arg) = arg
            && seen.insert(arg.name.clone())
        {
            out.args.push(arg);
        }
    };
    for (stage, _) in stages.iter().zip(&needed).filter(|(_, n)| **n) {
        for word in [Some(&stage.base), stage.platform.as_ref()]
            .into_iter()
            .flatten()
        {
            for (name, decl) in &global_decls {
                if references(word, name) {
                    push(&mut out, Some(decl.clone()));
                }
            }
        }
        for (ins, command) in &stage.commands {
            match command {
                Command::Arg(args) => {
                    for (name, default) in args {
                        let global = global_decls.get(name);
                        let arg = match (default, build_args.get(name), global) {
                            // It takes the global ARG's value: BuildKit lists the global one.
                            (None, None, Some(global)) => global.clone(),
                            (default, given, _) => OutlineArg {
                                name: name.clone(),
                                value: given.cloned().or_else(|| default.clone()),
                                description: doc_comment(ins, name),
                                line: ins.start_line,
                            },
                        };
                        push(&mut out, Some(arg));
                    }
                }
                Command::Run(run) => needs(&mut out, ins, run),
                _ => {}
            }
        }
    }
    out.args.sort_by_key(|a| a.line);
    out.secrets.sort_by_key(|s| s.line);
    out.ssh.sort_by_key(|s| s.line);
    Ok(out)
}

/// Whether `word` refers to variable `name` (`$name` or `${name…}`).
fn references(word: &str, name: &str) -> bool {
    let plain = format!("${name}");
    let braced = format!("${{{name}");
    word.match_indices(&plain).any(|(at, _)| {
        let after = word[at + plain.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    }) || word.match_indices(&braced).any(|(at, _)| {
        let after = word[at + braced.len()..].chars().next();
        matches!(after, Some('}' | ':' | '-' | '+' | '?' | '#' | '%' | '/'))
    })
}

/// The secrets and SSH agents a RUN mounts: a secret's id defaults to its target's file name,
/// an agent's to `default`, as BuildKit's.
fn needs(out: &mut Outline, ins: &Instruction, run: &crate::instructions::RunCommand) {
    for (mount, _) in &run.mounts {
        let (list, id) = match mount.mount_type() {
            MountType::Secret => {
                let from_target = mount
                    .target
                    .as_deref()
                    .and_then(|t| t.rsplit('/').next())
                    .map(str::to_string);
                (&mut out.secrets, mount.id.clone().or(from_target))
            }
            MountType::Ssh => (
                &mut out.ssh,
                Some(mount.id.clone().unwrap_or_else(|| "default".into())),
            ),
            _ => continue,
        };
        let Some(id) = id else { continue };
        let required = mount.required.unwrap_or(false);
        match list.iter_mut().find(|n| n.name == id) {
            Some(n) => n.required |= required,
            None => list.push(Needed {
                name: id,
                required,
                line: ins.start_line,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceFile;

    fn parsed(text: &str) -> Parsed {
        crate::parser::parse(&SourceFile::new("Dockerfile", text.as_bytes()))
    }

    const DOCKERFILE: &str = "\
# syntax=docker/dockerfile:1
# GO_VERSION sets the Go version
ARG GO_VERSION=1.22
ARG UNUSED=x
ARG BASE_TAG

# base prepares the sources
FROM golang:${GO_VERSION} AS base
# TOKEN names the token
ARG TOKEN
ARG BASE_TAG

# build compiles (forgotten: the empty comment line below starts afresh)
#
FROM base AS build
ARG MODE=release
RUN --mount=type=secret,id=npmrc,required=true --mount=type=ssh make
RUN --mount=type=secret,target=/run/secrets/aws true

FROM alpine AS other
ARG OTHER=1
RUN --mount=type=secret,id=other true

# release ships the binary
FROM scratch AS release
COPY --from=build /out /
";

    #[test]
    fn targets_are_the_stages_with_their_doc_comments() {
        let t = targets(&parsed(DOCKERFILE));
        let names: Vec<_> = t.iter().map(|t| t.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["base", "build", "other", "release"]);
        assert_eq!(t[0].description.as_deref(), Some("prepares the sources"));
        assert_eq!(t[1].description, None);
        assert_eq!(t[3].description.as_deref(), Some("ships the binary"));
        assert_eq!((t[3].default, t[2].default), (true, false));
        assert_eq!((t[0].base.as_str(), t[0].line), ("golang:${GO_VERSION}", 8));
    }

    #[test]
    fn an_outline_lists_what_the_targets_stages_read() {
        let given = [("MODE".to_string(), "debug".to_string())].into();
        let o = outline(&parsed(DOCKERFILE), None, &given).unwrap();
        assert_eq!(o.name.as_deref(), Some("release"));
        assert_eq!(o.description.as_deref(), Some("ships the binary"));
        let args: Vec<_> = o
            .args
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.value.as_deref(),
                    a.description.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            args,
            [
                ("GO_VERSION", Some("1.22"), Some("sets the Go version")),
                ("BASE_TAG", None, None),
                ("TOKEN", None, Some("names the token")),
                ("MODE", Some("debug"), None),
            ]
        );
        let secrets: Vec<_> = o
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.required))
            .collect();
        assert_eq!(secrets, [("npmrc", true), ("aws", false)]);
        assert_eq!(o.ssh.len(), 1);
        assert_eq!(o.ssh[0].name, "default");
        let other = outline(&parsed(DOCKERFILE), Some("other"), &BTreeMap::new()).unwrap();
        assert_eq!(other.args.len(), 1);
        assert_eq!(other.secrets[0].name, "other");
        assert!(outline(&parsed(DOCKERFILE), Some("nope"), &BTreeMap::new()).is_err());
    }
}
