//! What went into a cache key, kept beside it (the index's `summaries`, and exported caches),
//! and the answer to "why did this step miss the cache?": the nearest earlier build of the
//! same step, and exactly what differs ([`explain`]).
//!
//! A key is a hash: it says *that* something changed, not *what*. A [`Summary`] keeps the
//! inputs of the hash readable: the op as keyed, the input keys, the content digest, the salt,
//! and for a local source the list of the files it selected (path, kind and mode, content
//! digest). Comparing two summaries of the same step names the changed file, build arg,
//! environment value, base image or earlier step.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The inputs of one cache key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The op's kind (`exec`, `file`, `image`, `local`, `http`, `merge`).
    pub kind: String,
    /// The step's progress name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The stage it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The op, as keyed.
    pub op: serde_json::Value,
    /// The keys of its inputs.
    pub inputs: Vec<Digest>,
    /// A source's content digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Digest>,
    /// The key's salt (`SOURCE_DATE_EPOCH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// A local source's files: `"path"\tkind mode\tdigest` per entry, in walk order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// The most differences [`explain`] lists per changed input, before "and N more".
const MOST: usize = 8;

/// Why the step summarized by `current` missed: the differences from the nearest of
/// `candidates` (earlier builds of a step of the same kind and stage, not this key; fewest
/// differences wins, then the same progress name, then the first given), or `None` when
/// there is no candidate. `current_inputs` are the
/// summaries of this build's inputs of the step, `summary_of` finds a candidate's inputs'.
pub fn explain(
    current: &Summary,
    current_inputs: &[Option<&Summary>],
    candidates: &[(Digest, Summary)],
    summary_of: &dyn Fn(&Digest) -> Option<Summary>,
) -> Option<(Digest, Vec<String>)> {
    candidates
        .iter()
        .filter(|(_, c)| c.kind == current.kind)
        .map(|(key, c)| {
            let differences = differences(current, current_inputs, c, summary_of);
            (key.clone(), differences, c.name != current.name)
        })
        .min_by_key(|(_, d, renamed)| (d.len(), *renamed))
        .map(|(key, d, _)| (key, d))
}

/// What differs between `current` and `candidate`, in words.
pub fn differences(
    current: &Summary,
    current_inputs: &[Option<&Summary>],
    candidate: &Summary,
    summary_of: &dyn Fn(&Digest) -> Option<Summary>,
) -> Vec<String> {
    let mut out = op_differences(&current.op, &candidate.op);
    if current.content != candidate.content && current.kind == "http" {
        out.push("the downloaded file changed".to_string());
    }
    if current.files != candidate.files {
        out.extend(file_differences(&candidate.files, &current.files));
    }
    let inputs = current.inputs.len().max(candidate.inputs.len());
    for i in 0..inputs {
        let (now, then) = (current.inputs.get(i), candidate.inputs.get(i));
        if now == then {
            continue;
        }
        let now_summary = current_inputs.get(i).copied().flatten();
        let then_summary = then.and_then(summary_of);
        out.extend(input_difference(i, now_summary, then_summary.as_ref()));
    }
    if current.salt != candidate.salt {
        out.push(format!(
            "the build's SOURCE_DATE_EPOCH: {} → {}",
            shown(candidate.salt.as_deref()),
            shown(current.salt.as_deref())
        ));
    }
    if out.is_empty() {
        out.push("its inputs are the same as an earlier build's, whose result is gone".into());
    }
    out
}

fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "unset".to_string(), |v| format!("{v:?}"))
}

/// What changed in input `i`: a local source's files, a base image, or an earlier step.
fn input_difference(i: usize, now: Option<&Summary>, then: Option<&Summary>) -> Vec<String> {
    match (now, then) {
        (Some(now), Some(then)) if now.kind == "local" && then.kind == "local" => {
            let files = file_differences(&then.files, &now.files);
            if files.is_empty() {
                vec!["the files it reads from the context changed".to_string()]
            } else {
                files
            }
        }
        (Some(now), Some(then)) if now.kind == "image" && then.kind == "image" => vec![format!(
            "base image {}: {} → {}",
            now.op["reference"].as_str().unwrap_or("?"),
            then.op["digest"].as_str().unwrap_or("?"),
            now.op["digest"].as_str().unwrap_or("?")
        )],
        (Some(now), _) => vec![format!(
            "the result of {} changed",
            now.name.as_deref().map_or_else(
                || format!("its input {i} ({})", now.kind),
                |n| format!("`{n}`")
            )
        )],
        (None, _) => vec![format!("its input {i} changed")],
    }
}

/// The fields of two ops that differ; an exec's environment variable by variable (build args
/// are there too).
fn op_differences(now: &serde_json::Value, then: &serde_json::Value) -> Vec<String> {
    let (Some(now), Some(then)) = (now.as_object(), then.as_object()) else {
        return (now != then)
            .then(|| "the step changed".to_string())
            .into_iter()
            .collect();
    };
    let mut out = Vec::new();
    let fields: std::collections::BTreeSet<&String> = now.keys().chain(then.keys()).collect();
    for field in fields {
        let (a, b) = (then.get(field), now.get(field));
        if a == b {
            continue;
        }
        match field.as_str() {
            "env" => out.extend(env_differences(a, b)),
            "args" => out.push(format!("the command: {} → {}", brief(a), brief(b))),
            "digest" => out.push(format!("the image digest: {} → {}", brief(a), brief(b))),
            other => out.push(format!("{other}: {} → {}", brief(a), brief(b))),
        }
    }
    out
}

fn env_differences(
    then: Option<&serde_json::Value>,
    now: Option<&serde_json::Value>,
) -> Vec<String> {
    let vars = |v: Option<&serde_json::Value>| -> BTreeMap<String, String> {
        v.and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|kv| kv.as_str())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let (then, now) = (vars(then), vars(now));
    let names: std::collections::BTreeSet<&String> = then.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| match (then.get(name), now.get(name)) {
            (a, b) if a == b => None,
            (Some(a), Some(b)) => Some(format!("build arg or environment {name}: {a:?} → {b:?}")),
            (None, Some(b)) => Some(format!("build arg or environment {name} added: {b:?}")),
            (Some(a), None) => Some(format!(
                "build arg or environment {name} removed (was {a:?})"
            )),
            (None, None) => None,
        })
        .collect()
}

fn brief(value: Option<&serde_json::Value>) -> String {
    let text = match value {
        None => "unset".to_string(),
        Some(serde_json::Value::Array(items)) if items.iter().all(|i| i.is_string()) => items
            .iter()
            .filter_map(|i| i.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        format!("`{text}`")
    }
}

/// The entries of a file listing: path → (kind and mode, digest).
fn listing(lines: &[String]) -> BTreeMap<&str, (&str, &str)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            let path = parts.next()?;
            Some((
                path,
                (parts.next().unwrap_or(""), parts.next().unwrap_or("")),
            ))
        })
        .collect()
}

/// The files added, removed or changed (content, or kind and mode) from `then` to `now`.
pub fn file_differences(then: &[String], now: &[String]) -> Vec<String> {
    let (then, now) = (listing(then), listing(now));
    let paths: std::collections::BTreeSet<&&str> = then.keys().chain(now.keys()).collect();
    let mut out: Vec<String> = paths
        .into_iter()
        .filter_map(|path| {
            let path_text = unquote(path);
            match (then.get(*path), now.get(*path)) {
                (Some(a), Some(b)) if a == b => None,
                (Some((ka, da)), Some((kb, db))) if ka == kb && da != db => {
                    Some(format!("context file {path_text}: content changed"))
                }
                (Some((ka, _)), Some((kb, _))) => {
                    Some(format!("context file {path_text}: {ka} → {kb}"))
                }
                (None, Some(_)) => Some(format!("context file {path_text}: added")),
                (Some(_), None) => Some(format!("context file {path_text}: removed")),
                (None, None) => None,
            }
        })
        .collect();
    if out.len() > MOST {
        let more = out.len() - MOST;
        out.truncate(MOST);
        out.push(format!("and {more} more context files"));
    }
    out
}

fn unquote(path: &str) -> String {
    serde_json::from_str::<String>(path).unwrap_or_else(|_| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(args: &[&str], env: &[&str], inputs: Vec<Digest>) -> Summary {
        Summary {
            kind: "exec".into(),
            name: Some("[build 3/3] RUN make".into()),
            stage: Some("build".into()),
            op: serde_json::json!({"op": "exec", "args": args, "env": env, "cwd": "/"}),
            inputs,
            content: None,
            salt: None,
            files: vec![],
        }
    }

    fn local(files: &[&str]) -> Summary {
        Summary {
            kind: "local".into(),
            name: None,
            stage: Some("build".into()),
            op: serde_json::json!({"op": "local", "name": "context"}),
            inputs: vec![],
            content: Some(Digest::of(files.join("").as_bytes())),
            salt: None,
            files: files.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn a_changed_context_file_is_named() {
        let before = local(&["\"src\"\tdir 755\t", "\"src/a.c\"\tfile 644\tsha256:1"]);
        let after = local(&[
            "\"src\"\tdir 755\t",
            "\"src/a.c\"\tfile 644\tsha256:2",
            "\"src/b.c\"\tfile 600\tsha256:3",
        ]);
        let (k_before, k_after) = (Digest::of(b"before"), Digest::of(b"after"));
        let then = exec(&["make"], &["PATH=/bin"], vec![k_before.clone()]);
        let now = exec(&["make"], &["PATH=/bin"], vec![k_after]);
        let find = |k: &Digest| (*k == k_before).then(|| before.clone());
        let (_, why) = explain(
            &now,
            &[Some(&after)],
            &[(Digest::of(b"old step"), then)],
            &find,
        )
        .unwrap();
        assert_eq!(
            why,
            [
                "context file src/a.c: content changed",
                "context file src/b.c: added"
            ]
        );
    }

    #[test]
    fn build_args_commands_and_bases_are_named_and_the_nearest_wins() {
        let input = Digest::of(b"i");
        let now = exec(
            &["make", "all"],
            &["PATH=/bin", "MODE=release"],
            vec![input.clone()],
        );
        let near = exec(
            &["make", "all"],
            &["PATH=/bin", "MODE=debug"],
            vec![input.clone()],
        );
        let far = exec(&["make"], &["PATH=/usr/bin"], vec![Digest::of(b"j")]);
        let none = |_: &Digest| None;
        let (key, why) = explain(
            &now,
            &[None],
            &[(Digest::of(b"far"), far), (Digest::of(b"near"), near)],
            &none,
        )
        .unwrap();
        assert_eq!(key, Digest::of(b"near"));
        assert_eq!(
            why,
            ["build arg or environment MODE: \"debug\" → \"release\""]
        );
        let base = |digest: &str| Summary {
            kind: "image".into(),
            name: None,
            stage: None,
            op: serde_json::json!({"op": "image", "reference": "debian:12", "digest": digest}),
            inputs: vec![],
            content: None,
            salt: None,
            files: vec![],
        };
        let why = input_difference(0, Some(&base("sha256:b")), Some(&base("sha256:a")));
        assert_eq!(why, ["base image debian:12: sha256:a → sha256:b"]);
        let other = exec(
            &["make", "install"],
            &["PATH=/bin", "MODE=release"],
            vec![input],
        );
        let why = differences(&now, &[None], &other, &none);
        assert_eq!(why, ["the command: `make install` → `make all`"]);
        assert!(explain(&now, &[None], &[], &none).is_none());
    }
}
