//! Lowering of the instructions that change the image config and the working directory:
//! WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL, MAINTAINER, CMD, ENTRYPOINT, SHELL,
//! HEALTHCHECK, and how BuildKit writes them into the history.

use super::{Lowerer, StageState, concat};
use crate::ast::Instruction;
use crate::diagnostic::Diagnostic;
use crate::image::HealthConfig;
use crate::instructions::{CommandLine, Healthcheck};
use crate::lint;
use rbuild_solver::contenthash::clean_relative;
use rbuild_solver::{FileAction, FileOp, Op};
use std::collections::BTreeMap;

impl Lowerer<'_> {
    /// WORKDIR: the config's working directory, and a step that makes it (unless it is `/`).
    pub(super) fn lower_workdir(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        path: &str,
    ) -> Result<(), Diagnostic> {
        let span = ins.args_span;
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
        let step = state.next_step(&self.display_name(ins, &*state));
        if wd != "/" {
            let vertex = self.graph.add_step(
                Op::File(FileOp {
                    actions: vec![FileAction::Mkdir {
                        path: wd.clone(),
                        mode: 0o755,
                        parents: true,
                        owner: state.image.config.user.clone().filter(|u| !u.is_empty()),
                    }],
                }),
                vec![state.vertex],
                step,
            );
            self.locate(vertex, ins.span);
            state.vertex = vertex;
            state.history(concat(&["WORKDIR ", &wd]), Some(vertex));
        } else {
            state.history(concat(&["WORKDIR ", &wd]), None);
        }
        Ok(())
    }

    /// USER.
    pub(super) fn lower_user(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        user: &str,
    ) -> Result<(), Diagnostic> {
        let span = ins.args_span;
        let user = self.expand(user, &*state, span)?;
        state.history(format!("USER {user}"), None);
        state.image.config.user = Some(user);
        Ok(())
    }

    /// LABEL: labels of the image config.
    pub(super) fn lower_label(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        pairs: &[(String, String)],
    ) -> Result<(), Diagnostic> {
        let span = ins.args_span;
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
        Ok(())
    }

    /// EXPOSE: ports as Docker normalizes them (`80` is `80/tcp`, ranges expanded).
    pub(super) fn lower_expose(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        ports: &[String],
    ) -> Result<(), Diagnostic> {
        let span = ins.args_span;
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
        Ok(())
    }

    /// VOLUME.
    pub(super) fn lower_volume(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        paths: &[String],
    ) -> Result<(), Diagnostic> {
        let span = ins.args_span;
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
        Ok(())
    }

    /// STOPSIGNAL.
    pub(super) fn lower_stop_signal(
        &mut self,
        state: &mut StageState,
        ins: &Instruction,
        signal: &str,
    ) -> Result<(), Diagnostic> {
        let span = ins.args_span;
        let signal = self.expand(signal, &*state, span)?;
        state.history(format!("STOPSIGNAL {signal}"), None);
        state.image.config.stop_signal = Some(signal);
        Ok(())
    }

    /// MAINTAINER: the image's author.
    pub(super) fn lower_maintainer(
        &mut self,
        state: &mut StageState,
        _ins: &Instruction,
        who: &str,
    ) -> Result<(), Diagnostic> {
        state.image.author = Some(who.to_string());
        state.history(format!("MAINTAINER {who}"), None);
        Ok(())
    }

    /// CMD.
    pub(super) fn lower_cmd(
        &mut self,
        state: &mut StageState,
        _ins: &Instruction,
        cmd: &CommandLine,
    ) -> Result<(), Diagnostic> {
        let args = self.shell_command(state, cmd);
        state.history(format!("CMD {}", go_quote_list(&args)), None);
        state.image.config.cmd = Some(args);
        state.image.config.args_escaped = Some(true);
        state.cmd_set = true;
        Ok(())
    }

    /// ENTRYPOINT: an inherited CMD is reset unless this stage set one.
    pub(super) fn lower_entrypoint(
        &mut self,
        state: &mut StageState,
        _ins: &Instruction,
        cmd: &CommandLine,
    ) -> Result<(), Diagnostic> {
        let args = self.shell_command(state, cmd);
        state.history(format!("ENTRYPOINT {}", go_quote_list(&args)), None);
        state.image.config.entrypoint = Some(args);
        state.image.config.args_escaped = Some(true);
        if !state.cmd_set {
            state.image.config.cmd = None;
        }
        Ok(())
    }

    /// SHELL.
    pub(super) fn lower_shell(
        &mut self,
        state: &mut StageState,
        _ins: &Instruction,
        shell: &[String],
    ) -> Result<(), Diagnostic> {
        state.history(format!("SHELL [{}]", shell.join(" ")), None);
        state.image.config.shell = Some(shell.to_vec());
        Ok(())
    }

    /// HEALTHCHECK (`None`: `HEALTHCHECK NONE`).
    pub(super) fn lower_healthcheck(
        &mut self,
        state: &mut StageState,
        _ins: &Instruction,
        check: Option<&Healthcheck>,
    ) -> Result<(), Diagnostic> {
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
pub(super) fn go_duration(ns: i64) -> String {
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

/// Go's `%q` of a list of strings, as `fmt` prints a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| crate::ast::go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
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
