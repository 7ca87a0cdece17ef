//! Typed instructions: the syntax tree checked against what each instruction accepts (argument
//! counts, flags, forms), still unexpanded. Errors point at the offending keyword, flag or
//! argument.

use crate::ast::{Args, Flag, Heredoc, Instruction};
use crate::diagnostic::Diagnostic;
use crate::source::{SourceFile, Span};
use std::sync::Arc;

/// A command line in exec (JSON) or shell form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandLine {
    /// `["a", "b"]`: run as is.
    Exec(Vec<String>),
    /// `a b`: run by the stage's shell.
    Shell(String),
}

/// A flag value with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagValue {
    /// The value (unexpanded).
    pub value: String,
    /// The whole flag's span.
    pub span: Span,
}

/// What an instruction means, before variable expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `FROM [--platform=p] image [AS name]`.
    From {
        /// The image, stage name or `scratch`.
        image: String,
        /// The stage name after `AS`.
        name: Option<String>,
        /// `--platform`.
        platform: Option<FlagValue>,
    },
    /// `RUN`.
    Run(RunCommand),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `COPY` (or `ADD` when `add` is set).
    Copy(CopyCommand),
    /// `ENV` pairs (unexpanded, quotes still in place).
    Env(Vec<(String, String)>),
    /// `LABEL` pairs (unexpanded).
    Label(Vec<(String, String)>),
    /// `ARG name[=default]…` (defaults unexpanded).
    Arg(Vec<(String, Option<String>)>),
    /// `WORKDIR`.
    Workdir(String),
    /// `USER`.
    User(String),
    /// `EXPOSE` ports (unexpanded).
    Expose(Vec<String>),
    /// `VOLUME` paths (unexpanded).
    Volume(Vec<String>),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `MAINTAINER`.
    Maintainer(String),
    /// `SHELL` (always JSON).
    Shell(Vec<String>),
    /// `HEALTHCHECK NONE` (`None`) or `HEALTHCHECK [options] CMD …`.
    Healthcheck(Option<Healthcheck>),
    /// `ONBUILD` and the trigger's text.
    OnBuild(String),
}

/// `RUN` and its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunCommand {
    /// The command.
    pub cmd: CommandLine,
    /// `--network`.
    pub network: Option<FlagValue>,
    /// `--mount`s, with where each is written.
    pub mounts: Vec<(crate::mounts::MountSpec, Span)>,
    /// `--security`.
    pub security: Option<FlagValue>,
    /// Heredocs of a shell-form command.
    pub heredocs: Vec<Heredoc>,
}

/// `COPY` or `ADD` and their flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyCommand {
    /// Whether this is `ADD` (local archives are extracted).
    pub add: bool,
    /// Sources (unexpanded).
    pub srcs: Vec<String>,
    /// Heredoc sources: files made from inline text.
    pub contents: Vec<Heredoc>,
    /// Destination (unexpanded).
    pub dest: String,
    /// `--from`.
    pub from: Option<FlagValue>,
    /// `--chown`.
    pub chown: Option<FlagValue>,
    /// `--chmod`.
    pub chmod: Option<FlagValue>,
    /// `--link` (accepted; the resulting filesystem is the same).
    pub link: bool,
    /// `--parents`: keep the sources' parent directories (below a `/./` pivot) in the
    /// destination. Never set for `ADD`.
    pub parents: bool,
    /// `--exclude` patterns (not expanded), matched below each source as `.dockerignore`
    /// patterns are.
    pub exclude: Vec<String>,
    /// `ADD --checksum` (only meaningful for URL and git sources).
    pub checksum: Option<FlagValue>,
    /// `ADD --keep-git-dir`: a git source keeps its `.git`.
    pub keep_git_dir: Option<bool>,
    /// `ADD --unpack`: whether local archives are extracted (default: yes for `ADD`).
    pub unpack: Option<bool>,
}

/// `HEALTHCHECK CMD` and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Healthcheck {
    /// The test command.
    pub cmd: CommandLine,
    /// `--interval`, in nanoseconds.
    pub interval: Option<i64>,
    /// `--timeout`, in nanoseconds.
    pub timeout: Option<i64>,
    /// `--start-period`, in nanoseconds.
    pub start_period: Option<i64>,
    /// `--start-interval`, in nanoseconds.
    pub start_interval: Option<i64>,
    /// `--retries`.
    pub retries: Option<i64>,
}

pub use crate::parser::{KEYWORDS, keyword_forms};

/// The closest candidate within a small edit distance, compared case-insensitively.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (levenshtein(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of neighbours (the
/// optimal string alignment distance), so `form` is one edit from `from`.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

struct Flags<'a> {
    file: &'a Arc<SourceFile>,
    instruction: &'a str,
    flags: &'a [Flag],
    used: Vec<bool>,
}

impl<'a> Flags<'a> {
    fn new(file: &'a Arc<SourceFile>, instruction: &'a str, flags: &'a [Flag]) -> Self {
        Flags {
            file,
            instruction,
            flags,
            used: vec![false; flags.len()],
        }
    }

    fn find(&mut self, name: &str) -> Result<Option<(Option<&'a str>, Span)>, Diagnostic> {
        let mut found = None;
        for (i, flag) in self.flags.iter().enumerate() {
            let body = flag.text.trim_start_matches('-');
            let (n, v) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            if n.eq_ignore_ascii_case(name) {
                if found.is_some() {
                    return Err(Diagnostic::error(
                        self.file,
                        Some(flag.span),
                        format!("duplicate flag specified: --{name}"),
                    ));
                }
                self.used[i] = true;
                found = Some((v, flag.span));
            }
        }
        Ok(found)
    }

    /// Every occurrence of a repeatable flag.
    fn strings(&mut self, name: &str) -> Result<Vec<FlagValue>, Diagnostic> {
        let mut out = Vec::new();
        for (i, flag) in self.flags.iter().enumerate() {
            let body = flag.text.trim_start_matches('-');
            let (n, v) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            if n.eq_ignore_ascii_case(name) {
                self.used[i] = true;
                let value = v.ok_or_else(|| {
                    Diagnostic::error(
                        self.file,
                        Some(flag.span),
                        format!("missing a value on flag: --{name}"),
                    )
                })?;
                out.push(FlagValue {
                    value: value.to_string(),
                    span: flag.span,
                });
            }
        }
        Ok(out)
    }

    fn string(&mut self, name: &str) -> Result<Option<FlagValue>, Diagnostic> {
        match self.find(name)? {
            None => Ok(None),
            Some((Some(value), span)) => Ok(Some(FlagValue {
                value: value.to_string(),
                span,
            })),
            Some((None, span)) => Err(Diagnostic::error(
                self.file,
                Some(span),
                format!("missing a value on flag: --{name}"),
            )),
        }
    }

    /// Whether the flag is given at all.
    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|flag| {
            let body = flag.text.trim_start_matches('-');
            body.split_once('=')
                .map_or(body, |(n, _)| n)
                .eq_ignore_ascii_case(name)
        })
    }

    fn boolean(&mut self, name: &str) -> Result<bool, Diagnostic> {
        match self.find(name)? {
            None => Ok(false),
            Some((None, _)) => Ok(true),
            Some((Some(v), span)) => match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Diagnostic::error(
                    self.file,
                    Some(span),
                    format!("expecting boolean value for flag {name}, not: {v}"),
                )),
            },
        }
    }

    /// Errors on flags this instruction does not know; `unsupported` are known to BuildKit but
    /// not implemented here yet.
    fn finish(&self, known: &[&str], unsupported: &[&str]) -> Result<(), Diagnostic> {
        for (flag, used) in self.flags.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let body = flag.text.trim_start_matches('-');
            let name = body.split_once('=').map_or(body, |(n, _)| n);
            if unsupported.iter().any(|u| u.eq_ignore_ascii_case(name)) {
                return Err(Diagnostic::error(
                    self.file,
                    Some(flag.span),
                    format!(
                        "{} --{name} is not supported by rbuild yet",
                        self.instruction
                    ),
                ));
            }
            let mut d = Diagnostic::error(
                self.file,
                Some(flag.span),
                format!("unknown flag: --{name}"),
            );
            let candidates = known.iter().chain(unsupported).copied();
            if let Some(s) = suggest(name, candidates) {
                d = d.with_help(format!("did you mean --{s}?"));
            } else if !known.is_empty() {
                let list: Vec<String> = known.iter().map(|k| format!("--{k}")).collect();
                d = d.with_help(format!("{} accepts {}", self.instruction, list.join(", ")));
            }
            return Err(d);
        }
        Ok(())
    }
}

fn command_line(args: &Args) -> CommandLine {
    match args {
        Args::Json(items) => CommandLine::Exec(items.clone()),
        Args::Shell(text) | Args::Text(text) => CommandLine::Shell(text.clone()),
        Args::Words(words) => CommandLine::Shell(words.join(" ")),
        _ => CommandLine::Exec(vec![]),
    }
}

fn list(args: &Args) -> Vec<String> {
    match args {
        Args::Json(items) | Args::Words(items) => items.clone(),
        Args::Text(t) | Args::Shell(t) => vec![t.clone()],
        _ => vec![],
    }
}

/// Whether `name` may name a stage: BuildKit's `^[a-z][a-z0-9-_.]*$`, matched lowercased
/// (StageNameCasing warns about the case).
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars().map(|c| c.to_ascii_lowercase());
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Parses a Go-style duration (`30s`, `1m30s`, `500ms`, `1h`) into nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

/// What the checks of one instruction share.
struct Checker<'a> {
    file: &'a Arc<SourceFile>,
    ins: &'a Instruction,
    /// The keyword in lower case (`copy`), and as messages write it (`COPY`).
    name: &'static str,
    upper: &'static str,
    flags: Flags<'a>,
}

impl Checker<'_> {
    fn err(&self, span: Span, message: String) -> Diagnostic {
        Diagnostic::error(self.file, Some(span), message)
    }

    fn no_args(&self) -> Diagnostic {
        self.err(
            self.ins.keyword_span,
            format!("{} requires at least one argument", self.upper),
        )
    }
}

/// `FROM image [AS name]` and `--platform`.
fn check_from(mut c: Checker) -> Result<Command, Diagnostic> {
    let ins = c.ins;
    let platform = c.flags.string("platform")?;
    c.flags.finish(&["platform"], &[])?;
    let words = list(&ins.args);
    Ok(match words.as_slice() {
        [image] => Command::From {
            image: image.clone(),
            name: None,
            platform,
        },
        [image, as_kw, stage] if as_kw.eq_ignore_ascii_case("as") => {
            if !valid_stage_name(stage) {
                return Err(c.err(
                    ins.args_span,
                    format!(
                        "invalid name for build stage: {stage:?}, name can't start with \
                             a number or contain symbols"
                    ),
                ));
            }
            Command::From {
                image: image.clone(),
                name: Some(stage.clone()),
                platform,
            }
        }
        [] => return Err(c.no_args()),
        _ => {
            return Err(c.err(
                ins.args_span,
                "FROM requires either one or three arguments: FROM image [AS name]".into(),
            ));
        }
    })
}

/// `RUN` and its `--network`, `--security` and `--mount` flags.
fn check_run(mut c: Checker) -> Result<Command, Diagnostic> {
    let ins = c.ins;
    let network = c.flags.string("network")?;
    if let Some(n) = &network
        && !n.value.contains('$')
        && !matches!(n.value.as_str(), "default" | "none" | "host")
    {
        return Err(c
            .err(n.span, format!("unsupported network mode \"{}\"", n.value))
            .with_help("RUN --network accepts default, none or host"));
    }
    let security = c.flags.string("security")?;
    if let Some(sec) = &security
        && !matches!(sec.value.as_str(), "insecure" | "sandbox")
    {
        return Err(c
            .err(
                sec.span,
                format!("unsupported security mode \"{}\"", sec.value),
            )
            .with_help("RUN --security accepts insecure or sandbox"));
    }
    let mut mounts = Vec::new();
    for flag in c.flags.strings("mount")? {
        let spec = crate::mounts::parse(&flag.value)
            .map_err(|m| c.err(flag.span, format!("invalid --mount: {m}")))?;
        mounts.push((spec, flag.span));
    }
    c.flags.finish(&["network", "mount", "security"], &[])?;
    if ins.args == Args::Empty {
        return Err(c.no_args());
    }
    Ok(Command::Run(RunCommand {
        cmd: command_line(&ins.args),
        network,
        mounts,
        security,
        heredocs: ins.heredocs.clone(),
    }))
}

/// `COPY` and `ADD`: flags, sources, destination, heredoc sources.
fn check_copy(mut c: Checker) -> Result<Command, Diagnostic> {
    let ins = c.ins;
    let upper = c.upper;
    let add = c.name == "add";
    let from = if add { None } else { c.flags.string("from")? };
    let chown = c.flags.string("chown")?;
    let chmod = c.flags.string("chmod")?;
    let link = c.flags.boolean("link")?;
    let parents = !add && c.flags.boolean("parents")?;
    // BuildKit takes the patterns as written: no variable expansion.
    let exclude = c
        .flags
        .strings("exclude")?
        .into_iter()
        .map(|f| f.value)
        .collect();
    let (mut checksum, mut unpack, mut keep_git_dir) = (None, None, None);
    if add {
        checksum = c.flags.string("checksum")?;
        if c.flags.has("unpack") {
            unpack = Some(c.flags.boolean("unpack")?);
        }
        if c.flags.has("keep-git-dir") {
            keep_git_dir = Some(c.flags.boolean("keep-git-dir")?);
        }
        c.flags.finish(
            &[
                "chown",
                "chmod",
                "link",
                "exclude",
                "checksum",
                "keep-git-dir",
                "unpack",
            ],
            &[],
        )?;
    } else {
        c.flags.finish(
            &["from", "chown", "chmod", "link", "parents", "exclude"],
            &[],
        )?;
    }
    let mut items = list(&ins.args);
    if items.len() < 2 {
        return Err(c.err(
                if items.is_empty() {
                    ins.keyword_span
                } else {
                    ins.args_span
                },
                format!(
                    "{upper} requires at least two arguments, but only {} provided: the destination could not be determined",
                    if items.is_empty() {
                        "none was".to_string()
                    } else {
                        "one was".to_string()
                    }
                ),
            ));
    }
    let dest = items.pop().expect("two or more");
    if crate::parser::parse_heredoc_word(&dest).is_some() {
        return Err(c.err(
            ins.args_span,
            format!("{upper} cannot accept a heredoc as a destination"),
        ));
    }
    // Heredoc markers among the sources stand for their bodies, in order.
    let mut heredocs = ins.heredocs.iter();
    let mut srcs = Vec::new();
    let mut contents = Vec::new();
    for item in items {
        if crate::parser::parse_heredoc_word(&item).is_some()
            && let Some(heredoc) = heredocs.next()
        {
            contents.push(heredoc.clone());
        } else {
            srcs.push(item);
        }
    }
    Ok(Command::Copy(CopyCommand {
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
        keep_git_dir,
        unpack,
    }))
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD …`.
fn check_healthcheck(mut c: Checker) -> Result<Command, Diagnostic> {
    let ins = c.ins;
    let interval = c.flags.string("interval")?;
    let timeout = c.flags.string("timeout")?;
    let start_period = c.flags.string("start-period")?;
    let start_interval = c.flags.string("start-interval")?;
    let retries = c.flags.string("retries")?;
    c.flags.finish(
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        &[],
    )?;
    let Args::Healthcheck { kind, cmd } = &ins.args else {
        return Err(c.no_args());
    };
    Ok(match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if **cmd != Args::Empty {
                return Err(c.err(ins.args_span, "HEALTHCHECK NONE takes no arguments".into()));
            }
            Command::Healthcheck(None)
        }
        "CMD" => {
            if **cmd == Args::Empty {
                return Err(c.err(
                    ins.args_span,
                    "missing command after HEALTHCHECK CMD".into(),
                ));
            }
            let duration = |f: Option<FlagValue>, n: &str| -> Result<Option<i64>, Diagnostic> {
                let Some(f) = f else { return Ok(None) };
                match parse_duration(&f.value) {
                    Some(d) if d >= 0 => Ok(Some(d)),
                    _ => Err(c.err(f.span, format!("invalid duration for --{n}: {:?}", f.value))),
                }
            };
            let retries = match retries {
                None => None,
                Some(f) => Some(f.value.parse::<i64>().map_err(|_| {
                    c.err(
                        f.span,
                        format!("invalid value for --retries: {:?}", f.value),
                    )
                })?),
            };
            Command::Healthcheck(Some(Healthcheck {
                cmd: command_line(cmd),
                interval: duration(interval, "interval")?,
                timeout: duration(timeout, "timeout")?,
                start_period: duration(start_period, "start-period")?,
                start_interval: duration(start_interval, "start-interval")?,
                retries,
            }))
        }
        other => {
            return Err(c.err(
                ins.args_span,
                format!("unknown type {other:?} in HEALTHCHECK (try CMD)"),
            ));
        }
    })
}

/// `ONBUILD` and its trigger (itself checked, and not ONBUILD, FROM or MAINTAINER).
fn check_onbuild(c: Checker) -> Result<Command, Diagnostic> {
    let ins = c.ins;
    let file = c.file;
    c.flags.finish(&[], &[])?;
    let Args::OnBuild(inner) = &ins.args else {
        return Err(c.no_args());
    };
    match keyword_forms(&inner.keyword).map_or("", |k| k.0) {
        "onbuild" => {
            return Err(c.err(
                inner.keyword_span,
                "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
            ));
        }
        "from" | "maintainer" => {
            return Err(c.err(
                inner.keyword_span,
                format!(
                    "{} isn't allowed as an ONBUILD trigger",
                    inner.keyword.to_ascii_uppercase()
                ),
            ));
        }
        _ => {}
    }
    parse_command(file, inner)?;
    let start = inner.keyword_span.start;
    let text = file.text[start..ins.span.end.max(start)].to_string();
    Ok(Command::OnBuild(text))
}

/// Checks one instruction and gives its meaning.
pub fn parse_command(file: &Arc<SourceFile>, ins: &Instruction) -> Result<Command, Diagnostic> {
    // An unknown keyword falls through to the error at the end of the match.
    let (name, upper) = keyword_forms(&ins.keyword).unwrap_or(("", ""));
    let c = Checker {
        file,
        ins,
        name,
        upper,
        flags: Flags::new(file, upper, &ins.flags),
    };
    let err = |span: Span, message: String| Diagnostic::error(file, Some(span), message);
    let no_args = || {
        Diagnostic::error(
            file,
            Some(ins.keyword_span),
            format!("{upper} requires at least one argument"),
        )
    };
    let command = match name {
        "from" => check_from(c)?,
        "run" => check_run(c)?,
        "cmd" | "entrypoint" => {
            c.flags.finish(&[], &[])?;
            let cmd = command_line(&ins.args);
            if name == "cmd" {
                Command::Cmd(cmd)
            } else {
                Command::Entrypoint(cmd)
            }
        }
        "copy" | "add" => check_copy(c)?,
        "env" | "label" => {
            c.flags.finish(&[], &[])?;
            let Args::KeyValues(pairs) = &ins.args else {
                return Err(no_args());
            };
            let pairs = pairs
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect();
            if name == "env" {
                Command::Env(pairs)
            } else {
                Command::Label(pairs)
            }
        }
        "arg" => {
            c.flags.finish(&[], &[])?;
            let words = list(&ins.args);
            if words.is_empty() {
                return Err(no_args());
            }
            Command::Arg(
                words
                    .into_iter()
                    .map(|w| match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w, None),
                    })
                    .collect(),
            )
        }
        "workdir" | "user" | "stopsignal" | "maintainer" => {
            c.flags.finish(&[], &[])?;
            let Args::Text(text) = &ins.args else {
                return Err(err(
                    ins.keyword_span,
                    format!("{upper} requires exactly one argument"),
                ));
            };
            match name {
                "workdir" => Command::Workdir(text.clone()),
                "user" => Command::User(text.clone()),
                "stopsignal" => Command::StopSignal(text.clone()),
                _ => Command::Maintainer(text.clone()),
            }
        }
        "expose" | "volume" => {
            c.flags.finish(&[], &[])?;
            let items = list(&ins.args);
            if items.is_empty() || items.iter().all(|i| i.trim().is_empty()) {
                return Err(no_args());
            }
            if name == "expose" {
                Command::Expose(items)
            } else {
                Command::Volume(items)
            }
        }
        "shell" => {
            c.flags.finish(&[], &[])?;
            match &ins.args {
                Args::Json(items) if !items.is_empty() => Command::Shell(items.clone()),
                _ => {
                    return Err(err(
                        ins.args_span,
                        "SHELL requires the arguments to be in JSON form".into(),
                    ));
                }
            }
        }
        "healthcheck" => check_healthcheck(c)?,
        "onbuild" => check_onbuild(c)?,
        _ => {
            let mut d = err(
                ins.keyword_span,
                format!("unknown instruction: {}", ins.keyword),
            );
            if let Some(s) = suggest(&ins.keyword, KEYWORDS.iter().map(|k| k.1)) {
                d.message = format!("unknown instruction: {} (did you mean {s}?)", ins.keyword);
            }
            return Err(d);
        }
    };
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    fn commands(text: &str) -> Vec<Result<Command, String>> {
        let file = SourceFile::new("Dockerfile", text.as_bytes());
        let parsed = parse(&file);
        parsed
            .dockerfile
            .instructions
            .iter()
            .map(|i| parse_command(&file, i).map_err(|d| d.render()))
            .collect()
    }

    #[test]
    fn unknown_instruction_suggests_and_points_at_it() {
        let c = commands("FROM x\n  COPPY a b\n");
        let e = c[1].clone().unwrap_err();
        assert!(
            e.starts_with("Dockerfile:2:3: error: unknown instruction: COPPY (did you mean COPY?)"),
            "{e}"
        );
    }

    #[test]
    fn unknown_flag_suggests() {
        let c = commands("FROM x\nCOPY --form=a b c\n");
        let e = c[1].clone().unwrap_err();
        assert!(
            e.contains("Dockerfile:2:6: error: unknown flag: --form"),
            "{e}"
        );
        assert!(e.contains("did you mean --from?"), "{e}");
    }

    #[test]
    fn copy_exclude_and_parents_flags() {
        let c = commands(
            "FROM x\nCOPY --parents --exclude=a --exclude=b/** s /d/\nADD --parents s /d/\n\
             COPY --exclude s /d/\nCOPY --parents=false s /d/\n",
        );
        match &c[1] {
            Ok(Command::Copy(CopyCommand {
                parents, exclude, ..
            })) => {
                assert!(parents);
                assert_eq!(exclude, &["a", "b/**"]);
            }
            other => panic!("{other:?}"),
        }
        let e = c[2].clone().unwrap_err();
        assert!(e.contains("unknown flag: --parents"), "{e}");
        let e = c[3].clone().unwrap_err();
        assert!(e.contains("missing a value on flag: --exclude"), "{e}");
        assert!(matches!(
            &c[4],
            Ok(Command::Copy(CopyCommand { parents: false, .. }))
        ));
    }

    #[test]
    fn stage_names_are_checked_as_buildkit_checks_them() {
        let c = commands("FROM a AS 1bad!\nFROM a AS Build-1.x_y\nFROM a AS b@c\nFROM a AS -x\n");
        let e = c[0].clone().unwrap_err();
        assert!(
            e.contains(
                "invalid name for build stage: \"1bad!\", name can't start with a number or \
                 contain symbols"
            ),
            "{e}"
        );
        assert!(c[1].is_ok(), "{:?}", c[1]);
        assert!(c[2].is_err() && c[3].is_err());
    }

    #[test]
    fn copy_and_from_shapes() {
        let c = commands("FROM a AS b\nCOPY --from=b --chown=1:2 x y /z/\nFROM a b\nCOPY x\n");
        assert_eq!(
            c[0],
            Ok(Command::From {
                image: "a".into(),
                name: Some("b".into()),
                platform: None
            })
        );
        match &c[1] {
            Ok(Command::Copy(CopyCommand {
                srcs,
                dest,
                from,
                chown,
                ..
            })) => {
                assert_eq!(srcs, &["x", "y"]);
                assert_eq!(dest, "/z/");
                assert_eq!(from.as_ref().unwrap().value, "b");
                assert_eq!(chown.as_ref().unwrap().value, "1:2");
            }
            other => panic!("{other:?}"),
        }
        assert!(c[2].clone().unwrap_err().contains("one or three arguments"));
        assert!(c[3].clone().unwrap_err().contains("at least two arguments"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("5"), None);
    }
}
