//! Build checks: BuildKit's Dockerfile lint rules, with the same names, descriptions and
//! messages, reported as warnings during `rbuild build` and by `rbuild lint`.
//!
//! Rules about the text of the Dockerfile run over every stage here ([`syntactic`]); rules that
//! need ARG/ENV scoping or the base image's environment (UndefinedVar, UndefinedArgInFrom,
//! InvalidDefaultArgInFrom, WorkdirRelativePath, CopyIgnoredFile) run while the stages are
//! lowered (`crate::convert`). `# check=skip=A,B` (or `skip=all`) turns rules off and
//! `# check=error=true` makes findings fail the build.

use crate::ast::{Args, Dockerfile, Instruction};
use crate::diagnostic::Diagnostic;
use crate::instructions::{Command, CommandLine, FlagValue, parse_command};
use crate::source::Span;
use std::collections::HashMap;

pub use crate::diagnostic::Rule;

macro_rules! rules {
    ($($id:ident $name:literal $slug:literal $desc:literal;)*) => {
        $(
            #[doc = $desc]
            pub static $id: Rule = Rule {
                name: $name,
                description: $desc,
                url: concat!("https://docs.docker.com/go/dockerfile/rule/", $slug, "/"),
            };
        )*
        /// Every rule rbuild checks.
        pub static ALL: &[&Rule] = &[$(&$id),*];
    };
}

rules! {
    STAGE_NAME_CASING "StageNameCasing" "stage-name-casing" "Stage names should be lowercase";
    FROM_AS_CASING "FromAsCasing" "from-as-casing" "The 'as' keyword should match the case of the 'from' keyword";
    NO_EMPTY_CONTINUATION "NoEmptyContinuation" "no-empty-continuation" "Empty continuation lines will become errors in a future release";
    CONSISTENT_INSTRUCTION_CASING "ConsistentInstructionCasing" "consistent-instruction-casing" "All commands within the Dockerfile should use the same casing (either upper or lower)";
    DUPLICATE_STAGE_NAME "DuplicateStageName" "duplicate-stage-name" "Stage names should be unique";
    RESERVED_STAGE_NAME "ReservedStageName" "reserved-stage-name" "Reserved words should not be used as stage names";
    JSON_ARGS_RECOMMENDED "JSONArgsRecommended" "json-args-recommended" "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals";
    MAINTAINER_DEPRECATED "MaintainerDeprecated" "maintainer-deprecated" "The MAINTAINER instruction is deprecated, use a label instead to define an image author";
    UNDEFINED_ARG_IN_FROM "UndefinedArgInFrom" "undefined-arg-in-from" "FROM command must use declared ARGs";
    WORKDIR_RELATIVE_PATH "WorkdirRelativePath" "workdir-relative-path" "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes";
    UNDEFINED_VAR "UndefinedVar" "undefined-var" "Variables should be defined before their use";
    MULTIPLE_INSTRUCTIONS_DISALLOWED "MultipleInstructionsDisallowed" "multiple-instructions-disallowed" "Multiple instructions of the same type should not be used in the same stage";
    LEGACY_KEY_VALUE_FORMAT "LegacyKeyValueFormat" "legacy-key-value-format" "Legacy key/value format with whitespace separator should not be used";
    REDUNDANT_TARGET_PLATFORM "RedundantTargetPlatform" "redundant-target-platform" "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior";
    SECRETS_USED_IN_ARG_OR_ENV "SecretsUsedInArgOrEnv" "secrets-used-in-arg-or-env" "Sensitive data should not be used in the ARG or ENV commands";
    INVALID_DEFAULT_ARG_IN_FROM "InvalidDefaultArgInFrom" "invalid-default-arg-in-from" "Default value for global ARG results in an empty or invalid base image name";
    FROM_PLATFORM_FLAG_CONST_DISALLOWED "FromPlatformFlagConstDisallowed" "from-platform-flag-const-disallowed" "FROM --platform flag should not use a constant value";
    INVALID_BASE_IMAGE_PLATFORM "InvalidBaseImagePlatform" "invalid-base-image-platform" "Base image platform does not match expected target platform";
    COPY_IGNORED_FILE "CopyIgnoredFile" "copy-ignored-file" "Attempting to Copy file that is excluded by .dockerignore";
    EXPOSE_PROTO_CASING "ExposeProtoCasing" "expose-proto-casing" "Protocol in EXPOSE instruction should be lowercase";
    EXPOSE_INVALID_FORMAT "ExposeInvalidFormat" "expose-invalid-format" "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release";
}

/// The `# check=` directive: `skip=Rule1,Rule2` or `skip=all`, and `error=true`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Rules turned off.
    pub skip: Vec<String>,
    /// All rules turned off.
    pub skip_all: bool,
    /// Findings fail the build.
    pub error: bool,
}

impl CheckConfig {
    /// Parses the directive's value; unknown keys are reported in the error.
    pub fn parse(value: Option<&str>) -> Result<CheckConfig, String> {
        let mut config = CheckConfig::default();
        let Some(value) = value else {
            return Ok(config);
        };
        for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, val) = part
                .split_once('=')
                .ok_or_else(|| format!("invalid check directive {part:?}: expected key=value"))?;
            match key.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in val.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            config.skip_all = true;
                        } else {
                            config.skip.push(rule.to_string());
                        }
                    }
                }
                "error" => {
                    config.error = match val.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => {
                            return Err(format!(
                                "invalid check directive error={other}: expected true or false"
                            ));
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "invalid check directive key {other:?}: expected skip or error"
                    ));
                }
            }
        }
        Ok(config)
    }

    /// Whether findings of `rule` are reported.
    pub fn enabled(&self, rule: &Rule) -> bool {
        !self.skip_all && !self.skip.iter().any(|s| s.eq_ignore_ascii_case(rule.name))
    }
}

/// A finding of `rule` at `span`.
pub fn finding(
    dockerfile: &Dockerfile,
    rule: &'static Rule,
    span: Option<Span>,
    message: String,
) -> Diagnostic {
    let mut d = Diagnostic::warning(&dockerfile.file, span, message);
    d.rule = Some(rule);
    d
}

/// Whether an ARG/ENV name looks like it holds a secret (BuildKit's heuristic: one of its
/// `_`-separated words is a secret word, and none is `public`).
pub fn is_secret_name(name: &str) -> bool {
    const SECRET: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let words: Vec<String> = name
        .split(['_', '-'])
        .map(|w| w.to_ascii_lowercase())
        .collect();
    words.iter().any(|w| SECRET.contains(&w.as_str())) && !words.iter().any(|w| w == "public")
}

/// `Some(true)` if `word` has no lowercase letters, `Some(false)` if no uppercase ones.
fn casing(word: &str) -> Option<bool> {
    if !word.bytes().any(|b| b.is_ascii_lowercase()) {
        Some(true)
    } else if !word.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(false)
    } else {
        None
    }
}

/// The span of `word` where it ends `skip_from_end` bytes before the end of `within`, if the
/// file has it there; else `within`.
fn word_span(dockerfile: &Dockerfile, within: Span, word: &str, skip_from_end: usize) -> Span {
    let end = within.end.saturating_sub(skip_from_end);
    let start = end.saturating_sub(word.len());
    match dockerfile.file.text.get(start..end) {
        Some(text) if start >= within.start && text == word => Span::new(start, end),
        _ => within,
    }
}

/// The rules that need only the text, over every stage.
pub fn syntactic(dockerfile: &Dockerfile) -> Vec<Diagnostic> {
    let commands: Vec<(&Instruction, Command)> = dockerfile
        .instructions
        .iter()
        .filter_map(|ins| Some((ins, parse_command(&dockerfile.file, ins).ok()?)))
        .collect();
    syntactic_with(dockerfile, &commands)
}

/// A finding's rule, where, and message.
type Push<'a> = dyn FnMut(&'static Rule, Span, String) + 'a;

/// [`syntactic`] over instructions already parsed into commands.
pub fn syntactic_with(
    dockerfile: &Dockerfile,
    commands: &[(&Instruction, Command)],
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut push = |rule: &'static Rule, span: Span, message: String| {
        out.push(finding(dockerfile, rule, Some(span), message));
    };
    for span in &dockerfile.empty_continuations {
        push(
            &NO_EMPTY_CONTINUATION,
            *span,
            "Empty continuation line".into(),
        );
    }
    check_casing(dockerfile, &mut push);
    let mut stage_names: HashMap<String, usize> = HashMap::new();
    let mut stage: Vec<(&Instruction, &Command)> = Vec::new();
    let mut stages: Vec<Vec<(&Instruction, &Command)>> = Vec::new();
    for (ins, command) in commands {
        let ins = *ins;
        if let Command::From { name, platform, .. } = command {
            if !stage.is_empty() {
                stages.push(std::mem::take(&mut stage));
            }
            let (name, platform) = (name.as_deref(), platform.as_ref());
            check_from(dockerfile, ins, name, platform, &mut stage_names, &mut push);
        }
        stage.push((ins, command));
    }
    if !stage.is_empty() {
        stages.push(stage);
    }
    for stage in &stages {
        check_stage(stage, &mut push);
    }
    out.sort_by_key(|d| d.span.map(|s| s.start));
    out
}

/// ConsistentInstructionCasing: against the majority of upper- or lowercase keywords.
fn check_casing(dockerfile: &Dockerfile, push: &mut Push) {
    let keywords: Vec<&Instruction> = dockerfile.instructions.iter().collect();
    let upper = keywords
        .iter()
        .filter(|i| casing(&i.keyword) == Some(true))
        .count();
    let lower = keywords
        .iter()
        .filter(|i| casing(&i.keyword) == Some(false))
        .count();
    let majority_upper = upper >= lower;
    for ins in &keywords {
        if casing(&ins.keyword) != Some(majority_upper) {
            let name = if majority_upper {
                "uppercase"
            } else {
                "lowercase"
            };
            push(
                &CONSISTENT_INSTRUCTION_CASING,
                ins.keyword_span,
                format!(
                    "Command '{}' should match the case of the command majority ({name})",
                    ins.keyword
                ),
            );
        }
    }
}

/// The checks of a FROM line: FromAsCasing, StageNameCasing, ReservedStageName,
/// DuplicateStageName, RedundantTargetPlatform, FromPlatformFlagConstDisallowed.
fn check_from(
    dockerfile: &Dockerfile,
    ins: &Instruction,
    name: Option<&str>,
    platform: Option<&FlagValue>,
    stage_names: &mut HashMap<String, usize>,
    push: &mut Push,
) {
    if let Args::Words(words) = &ins.args
        && words.len() == 3
        && let (Some(from_upper), Some(as_upper)) = (casing(&ins.keyword), casing(&words[1]))
        && from_upper != as_upper
    {
        let span = word_span(dockerfile, ins.args_span, &words[1], words[2].len() + 1);
        push(
            &FROM_AS_CASING,
            span,
            format!(
                "'{}' and '{}' keywords' casing do not match",
                words[1], ins.keyword
            ),
        );
    }
    if let Some(name) = name {
        let name_span = word_span(dockerfile, ins.args_span, name, 0);
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            push(
                &STAGE_NAME_CASING,
                name_span,
                format!("Stage name '{name}' should be lowercase"),
            );
        }
        let lower = name.to_ascii_lowercase();
        if matches!(lower.as_str(), "scratch" | "context") {
            push(
                &RESERVED_STAGE_NAME,
                name_span,
                format!("Stage name should not use the same name as reserved stage \"{lower}\""),
            );
        }
        let seen = stage_names.entry(lower).or_insert(0);
        *seen += 1;
        if *seen > 1 {
            push(
                &DUPLICATE_STAGE_NAME,
                name_span,
                format!(
                    "Duplicate stage name \"{}\", stage names should be unique",
                    name.to_ascii_lowercase()
                ),
            );
        }
    }
    if let Some(p) = platform {
        if p.value.contains("TARGETPLATFORM")
            && ["$TARGETPLATFORM", "${TARGETPLATFORM}"].contains(&p.value.as_str())
        {
            push(
                &REDUNDANT_TARGET_PLATFORM,
                p.span,
                format!(
                    "Setting platform to predefined {} in FROM is redundant as this is the default behavior",
                    p.value
                ),
            );
        } else if !p.value.contains('$') {
            push(
                &FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                p.span,
                format!(
                    "FROM --platform flag should not use constant value \"{}\"",
                    p.value
                ),
            );
        }
    }
}

/// The checks within one stage's instructions.
fn check_stage(stage: &[(&Instruction, &Command)], push: &mut Push) {
    let mut shell_set = false;
    let mut last: HashMap<&'static str, Vec<Span>> = HashMap::new();
    for (ins, command) in stage {
        match command {
            Command::Maintainer(_) => push(
                &MAINTAINER_DEPRECATED,
                ins.keyword_span,
                "Maintainer instruction is deprecated in favor of using label".into(),
            ),
            Command::Shell(_) => shell_set = true,
            Command::Cmd(cmd) | Command::Entrypoint(cmd) => {
                let name = if matches!(command, Command::Cmd(_)) {
                    "CMD"
                } else {
                    "ENTRYPOINT"
                };
                if matches!(cmd, CommandLine::Shell(_)) && !shell_set {
                    push(
                        &JSON_ARGS_RECOMMENDED,
                        ins.args_span,
                        format!(
                            "JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"
                        ),
                    );
                }
                last.entry(name).or_default().push(ins.keyword_span);
            }
            Command::Healthcheck(_) => last
                .entry("HEALTHCHECK")
                .or_default()
                .push(ins.keyword_span),
            Command::Env(_) | Command::Label(_) | Command::Arg(_) => {
                let word = ins.keyword.to_ascii_uppercase();
                if let Args::KeyValues(pairs) = &ins.args
                    && pairs.iter().any(|kv| kv.separator.is_empty())
                {
                    push(
                        &LEGACY_KEY_VALUE_FORMAT,
                        ins.args_span,
                        format!(
                            "\"{word} key=value\" should be used instead of legacy \"{word} key value\" format"
                        ),
                    );
                }
                let names: Vec<String> = match command {
                    Command::Env(pairs) => pairs.iter().map(|(k, _)| k.clone()).collect(),
                    Command::Arg(args) => args.iter().map(|(k, _)| k.clone()).collect(),
                    _ => vec![],
                };
                for name in names.iter().filter(|n| is_secret_name(n)) {
                    push(
                        &SECRETS_USED_IN_ARG_OR_ENV,
                        ins.args_span,
                        format!(
                            "Do not use ARG or ENV instructions for sensitive data ({word} \"{name}\")"
                        ),
                    );
                }
            }
            Command::Expose(ports) => {
                for port in ports.iter().flat_map(|p| p.split_whitespace()) {
                    if port.contains(':') {
                        push(
                            &EXPOSE_INVALID_FORMAT,
                            ins.args_span,
                            format!(
                                "EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'"
                            ),
                        );
                    } else if let Some((_, proto)) = port.split_once('/')
                        && proto != proto.to_ascii_lowercase()
                    {
                        push(
                            &EXPOSE_PROTO_CASING,
                            ins.args_span,
                            format!(
                                "Defined protocol '{port}' in EXPOSE instruction should be lowercase"
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    for (name, spans) in last {
        for span in &spans[..spans.len() - 1] {
            push(
                &MULTIPLE_INSTRUCTIONS_DISALLOWED,
                *span,
                format!(
                    "Multiple {name} instructions should not be used in the same stage because only the last one will be used"
                ),
            );
        }
    }
}
