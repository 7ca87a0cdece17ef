//! `--call` (and `--check`): buildx's way to ask the frontend something instead of building
//! (BuildKit's subrequests). `check` runs the build checks and builds nothing, `outline` lists
//! what a target can be given, `targets` lists the stages; each prints what buildx prints, or
//! BuildKit's JSON with `format=json`, and exits 1 where buildx does (a check that found
//! something).

use super::BuildArgs;
use crate::cli::Global;
use crate::cli::commands::images::columns;
use crate::cli::diagnostics::{self, Target};
use crate::pipeline::BuildRequest;
use anyhow::{Result, anyhow, bail};
use base64::Engine;
use rbuild_frontend::diagnostic::Diagnostic;
use rbuild_frontend::outline::{self, Needed, Outline};
use serde_json::{Value, json};

/// What `--call` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    /// Build (the default).
    Build,
    /// The build checks only (`check`, or buildx's `lint`).
    Check,
    /// What the target can be given.
    Outline,
    /// The stages.
    Targets,
}

/// A parsed `--call` value: `NAME[,format=json|text][,ignorestatus=true]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// The function.
    pub func: Func,
    /// `format=json`.
    pub json: bool,
    /// `ignorestatus=true`: exit 0 even when a check found something.
    pub ignore_status: bool,
}

/// Parses `--call`, as buildx (`check` and `lint` are one; `format` and `ignorestatus` may
/// follow).
pub fn parse(value: &str) -> Result<Call> {
    let mut fields = value.split(',');
    let func = match fields.next().unwrap_or_default().trim() {
        "" | "build" => Func::Build,
        "check" | "lint" => Func::Check,
        "outline" => Func::Outline,
        "targets" => Func::Targets,
        other => bail!(
            "--call {other}: unknown function (rbuild knows build, check, outline and targets)"
        ),
    };
    let mut call = Call {
        func,
        json: false,
        ignore_status: false,
    };
    for field in fields {
        match field.split_once('=') {
            Some(("format", "json")) => call.json = true,
            Some(("format", "text" | "")) => call.json = false,
            Some(("ignorestatus", v)) => {
                call.ignore_status = v
                    .parse()
                    .map_err(|_| anyhow!("--call: ignorestatus={v} is not true or false"))?
            }
            _ => bail!("--call: unknown option {field:?} (format=json|text, ignorestatus=true)"),
        }
    }
    Ok(call)
}

/// Answers a `--call` other than `build`; returns the exit code.
pub fn answer(
    global: &Global,
    args: &BuildArgs,
    call: Call,
    dockerfile_name: Option<&str>,
) -> Result<i32> {
    let mut request = BuildRequest {
        target: args.target.clone(),
        dockerfile_name: dockerfile_name.map(str::to_string),
        // Without a target, the checks look at every stage (BuildKit's lint does).
        all_stages: call.func == Func::Check && args.target.is_none(),
        ..BuildRequest::new(args.file.as_deref(), &args.context, &args.build_args)
    };
    match call.func {
        Func::Build => unreachable!("a build is not a call"),
        Func::Check => check(global, request, call),
        Func::Outline | Func::Targets => {
            let loaded = request.load()?;
            diagnostics::print(&loaded.parsed.diagnostics, Target::Stderr, true);
            if loaded.parsed.has_errors() {
                return Ok(1);
            }
            let source = base64::engine::general_purpose::STANDARD.encode(&loaded.file.text);
            if call.func == Func::Targets {
                print_targets(&outline::targets(&loaded.parsed), &source, call.json);
            } else {
                let found =
                    outline::outline(&loaded.parsed, args.target.as_deref(), &request.build_args)
                        .map_err(|e| anyhow!(e))?;
                print_outline(&found, &source, call.json);
            }
            Ok(0)
        }
    }
}

/// `--call=check`: the build checks of the stages the build would lower, printed as buildx
/// prints them (a count, then each finding), or as BuildKit's lint JSON.
fn check(global: &Global, request: BuildRequest, call: Call) -> Result<i32> {
    let Some(inspected) = super::super::inspect(global, request)? else {
        return Ok(1);
    };
    let findings: Vec<Diagnostic> = inspected
        .build
        .warnings
        .iter()
        .filter(|d| d.rule.is_some())
        .cloned()
        .collect();
    if call.json {
        println!("{}", lint_json(&findings));
    } else if findings.is_empty() {
        println!("Check complete, no warnings found.");
    } else {
        match findings.len() {
            1 => println!("Check complete, 1 warning has been found!"),
            n => println!("Check complete, {n} warnings have been found!"),
        }
        diagnostics::print(&findings, Target::Stdout, true);
    }
    Ok(i32::from(!findings.is_empty() && !call.ignore_status))
}

/// BuildKit's `LintResults` JSON: warnings with rule, description, URL, detail and location
/// (1-based lines, 0-based characters), and the Dockerfile as the one source.
fn lint_json(findings: &[Diagnostic]) -> String {
    let warnings: Vec<Value> = findings
        .iter()
        .map(|d| {
            let rule = d.rule.expect("a finding");
            let ranges: Vec<Value> = d
                .span
                .map(|s| {
                    let (start, end) = (d.file.position(s.start), d.file.position(s.end));
                    json!([{
                        "start": {"line": start.line, "character": start.column - 1},
                        "end": {"line": end.line, "character": end.column - 1},
                    }])
                })
                .unwrap_or_else(|| json!([]))
                .as_array()
                .cloned()
                .unwrap_or_default();
            json!({
                "ruleName": rule.name,
                "description": rule.description,
                "url": rule.url,
                "detail": d.message,
                "location": {"sourceIndex": 0, "ranges": ranges},
            })
        })
        .collect();
    let sources: Vec<Value> = findings
        .first()
        .map(|d| {
            json!({
                "filename": d.file.name,
                "language": "Dockerfile",
                "data": base64::engine::general_purpose::STANDARD.encode(&d.file.text),
            })
        })
        .into_iter()
        .collect();
    let results = json!({"warnings": warnings, "sources": sources});
    serde_json::to_string_pretty(&results).expect("JSON values serialize")
}

fn print_targets(targets: &[outline::Target], source: &str, json: bool) {
    if json {
        let list: Vec<Value> = targets
            .iter()
            .map(|t| {
                let mut v = json!({"base": t.base, "location": location(t.line)});
                let o = v.as_object_mut().expect("an object");
                if let Some(name) = &t.name {
                    o.insert("name".into(), json!(name));
                }
                if t.default {
                    o.insert("default".into(), json!(true));
                }
                if let Some(d) = &t.description {
                    o.insert("description".into(), json!(d));
                }
                if let Some(p) = &t.platform {
                    o.insert("platform".into(), json!(p));
                }
                v
            })
            .collect();
        let out = json!({"targets": list, "sources": [source]});
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serializes")
        );
        return;
    }
    let mut rows = vec![vec!["TARGET".to_string(), "DESCRIPTION".to_string()]];
    for t in targets {
        let name = match (&t.name, t.default) {
            (None, true) => "(default)".to_string(),
            (Some(n), true) => format!("{n} (default)"),
            (n, false) => n.clone().unwrap_or_default(),
        };
        rows.push(vec![name, t.description.clone().unwrap_or_default()]);
    }
    print!("{}", columns(&rows, 1));
}

/// A location as BuildKit's subrequests give one: the line's range.
fn location(line: usize) -> Value {
    json!({"ranges": [{"start": {"line": line}, "end": {"line": line}}]})
}

fn print_outline(o: &Outline, source: &str, json: bool) {
    if json {
        let needed = |list: &[Needed]| -> Vec<Value> {
            list.iter()
                .map(|n| {
                    let mut v = json!({"name": n.name, "location": location(n.line)});
                    if n.required {
                        v["required"] = json!(true);
                    }
                    v
                })
                .collect()
        };
        let mut out = json!({"sources": [source]});
        if let Some(name) = &o.name {
            out["name"] = json!(name);
        }
        if let Some(d) = &o.description {
            out["description"] = json!(d);
        }
        let args: Vec<Value> = o
            .args
            .iter()
            .map(|a| {
                let mut v = json!({"name": a.name, "location": location(a.line)});
                if let Some(value) = &a.value {
                    v["value"] = json!(value);
                }
                if let Some(d) = &a.description {
                    v["description"] = json!(d);
                }
                v
            })
            .collect();
        for (key, list) in [
            ("args", args),
            ("secrets", needed(&o.secrets)),
            ("ssh", needed(&o.ssh)),
        ] {
            if !list.is_empty() {
                out[key] = json!(list);
            }
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serializes")
        );
        return;
    }
    let mut text = String::new();
    if o.name.is_some() || o.description.is_some() {
        let mut rows = vec![vec![
            "TARGET:".to_string(),
            o.name.clone().unwrap_or_else(|| "(default)".into()),
        ]];
        if let Some(d) = &o.description {
            rows.push(vec!["DESCRIPTION:".into(), d.clone()]);
        }
        text.push_str(&columns(&rows, 1));
        text.push('\n');
    }
    if !o.args.is_empty() {
        let mut rows = vec![vec![
            "BUILD ARG".to_string(),
            "VALUE".into(),
            "DESCRIPTION".into(),
        ]];
        rows.extend(o.args.iter().map(|a| {
            vec![
                a.name.clone(),
                a.value.clone().unwrap_or_default(),
                a.description.clone().unwrap_or_default(),
            ]
        }));
        text.push_str(&columns(&rows, 3));
        text.push('\n');
    }
    for (title, list) in [("SECRET", &o.secrets), ("SSH", &o.ssh)] {
        if list.is_empty() {
            continue;
        }
        let mut rows = vec![vec![title.to_string(), "REQUIRED".into()]];
        rows.extend(list.iter().map(|n| {
            vec![
                n.name.clone(),
                if n.required { "true" } else { "" }.to_string(),
            ]
        }));
        text.push_str(&columns(&rows, 3));
        text.push('\n');
    }
    print!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_call_values() {
        let c = parse("check,format=json").unwrap();
        assert_eq!(
            (c.func, c.json, c.ignore_status),
            (Func::Check, true, false)
        );
        assert_eq!(parse("lint").unwrap().func, Func::Check);
        assert_eq!(parse("targets").unwrap().func, Func::Targets);
        assert!(parse("check,ignorestatus=true").unwrap().ignore_status);
        assert!(parse("describe-everything").is_err());
        assert!(parse("check,colour=red").is_err());
    }

    #[test]
    fn tables_pad_as_go_tabwriter() {
        let rows = vec![
            vec!["TARGET".to_string(), "DESCRIPTION".to_string()],
            vec!["build".into(), "".into()],
            vec!["release (default)".into(), "ships it".into()],
        ];
        assert_eq!(
            columns(&rows, 1),
            "TARGET            DESCRIPTION\nbuild             \nrelease (default) ships it\n"
        );
    }
}
