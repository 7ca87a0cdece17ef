//! `--progress=rawjson`: BuildKit's `SolveStatus` updates, one compact JSON object per line on
//! stderr, as `buildx build --progress=rawjson` prints them, so tools that read buildx's
//! stream read rbuild's:
//!
//! ```text
//! {"vertexes":[{"digest":"sha256:…","name":"[2/3] RUN make","started":"2026-…Z"}]}
//! {"logs":[{"vertex":"sha256:…","stream":1,"data":"YnVpbGRpbmcK","timestamp":"2026-…Z"}]}
//! {"vertexes":[{"digest":"sha256:…","name":"[2/3] RUN make","started":"…","completed":"…"}]}
//! ```
//!
//! A vertex's digest names it for the stream's readers (a hash of the build and its number);
//! a cached vertex is `"cached":true`, a failed one has `"error"`; a transfer is a status
//! (`id`, `current`, `total`); a build check or other warning is in `warnings`.

use base64::Engine;
use rbuild_solver::VertexId;
use rbuild_solver::progress::{Event, Stream};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// A vertex's state, re-sent whole with each change, as BuildKit does.
struct Vertex {
    digest: String,
    name: String,
    started: String,
}

/// Turns progress into `SolveStatus` lines.
pub struct RawJson {
    /// What makes digests of this build different from another's.
    build: String,
    next: usize,
    vertices: HashMap<VertexId, Vertex>,
    /// When each transfer started.
    transfers: HashMap<String, String>,
}

fn now() -> String {
    crate::units::rfc3339(SystemTime::now())
}

fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

impl Default for RawJson {
    fn default() -> Self {
        RawJson::new()
    }
}

impl RawJson {
    /// A stream for a new build.
    pub fn new() -> RawJson {
        RawJson {
            build: format!("{}-{}", std::process::id(), now()),
            next: 0,
            vertices: HashMap::new(),
            transfers: HashMap::new(),
        }
    }

    fn digest(&mut self) -> String {
        self.next += 1;
        let name = format!("{}/{}", self.build, self.next);
        rbuild_solver::Digest::of(name.as_bytes())
            .as_str()
            .to_string()
    }

    fn vertex_json(v: &Vertex, extra: Value) -> Value {
        let mut object = json!({"digest": v.digest, "name": v.name, "started": v.started});
        if let (Some(o), Value::Object(extra)) = (object.as_object_mut(), extra) {
            o.extend(extra);
        }
        json!({ "vertexes": [object] })
    }

    /// The lines for one solver event.
    pub fn event(&mut self, event: Event) -> Vec<Value> {
        match event {
            Event::Started { vertex, name } => {
                let v = Vertex {
                    digest: self.digest(),
                    name,
                    started: now(),
                };
                let line = Self::vertex_json(&v, json!({}));
                self.vertices.insert(vertex, v);
                vec![line]
            }
            Event::Cached { vertex } => self.finish(vertex, json!({"cached": true})),
            Event::Done { vertex, .. } => self.finish(vertex, json!({})),
            Event::Failed { vertex, error, .. } => self.finish(vertex, json!({"error": error})),
            // BuildKit's error of a vertex stopped by a cancelled solve.
            Event::Canceled { vertex, .. } => {
                self.finish(vertex, json!({"error": "context canceled"}))
            }
            Event::Log {
                vertex,
                stream,
                data,
                ..
            } => {
                let Some(v) = self.vertices.get(&vertex) else {
                    return vec![];
                };
                let stream = match stream {
                    Stream::Stdout => 1,
                    Stream::Stderr => 2,
                };
                vec![json!({"logs": [{
                    "vertex": v.digest,
                    "stream": stream,
                    "data": base64(&data),
                    "timestamp": now(),
                }]})]
            }
            Event::Progress {
                vertex,
                id,
                current,
                total,
                done,
                ..
            } => {
                let Some(v) = self.vertices.get(&vertex) else {
                    return vec![];
                };
                let started = self.transfers.entry(id.clone()).or_insert_with(now).clone();
                let mut status = json!({
                    "id": id,
                    "vertex": v.digest,
                    "current": current,
                    "timestamp": now(),
                    "started": started,
                });
                if let Some(total) = total {
                    status["total"] = json!(total);
                }
                if done {
                    status["completed"] = json!(now());
                }
                vec![json!({ "statuses": [status] })]
            }
        }
    }

    fn finish(&mut self, vertex: VertexId, extra: Value) -> Vec<Value> {
        let Some(v) = self.vertices.get(&vertex) else {
            return vec![];
        };
        let mut extra = extra;
        extra["completed"] = json!(now());
        vec![Self::vertex_json(v, extra)]
    }

    /// A step that is not a solver vertex (loading the Dockerfile, exporting): started,
    /// its lines as logs, completed.
    pub fn step(&mut self, name: &str, lines: &[String], elapsed: Duration) -> Vec<Value> {
        let end = SystemTime::now();
        let v = Vertex {
            digest: self.digest(),
            name: name.to_string(),
            started: crate::units::rfc3339(end - elapsed),
        };
        let mut out = vec![Self::vertex_json(&v, json!({}))];
        if !lines.is_empty() {
            let data: String = lines.iter().map(|l| format!("{l}\n")).collect();
            out.push(json!({"logs": [{
                "vertex": v.digest,
                "stream": 1,
                "data": base64(data.as_bytes()),
                "timestamp": now(),
            }]}));
        }
        out.push(Self::vertex_json(&v, json!({"completed": now()})));
        out
    }

    /// A warning (a build check's finding), as BuildKit's `VertexWarning`.
    pub fn warning(d: &rbuild_frontend::Diagnostic) -> Value {
        let mut warning = json!({
            "level": 1,
            "short": base64(d.message.as_bytes()),
            "detail": [base64(d.render().as_bytes())],
        });
        if let Some(rule) = d.rule {
            warning["url"] = json!(rule.url);
        }
        if let Some(span) = d.span {
            let (start, end) = (d.file.position(span.start), d.file.position(span.end));
            warning["sourceInfo"] = json!({"filename": d.file.name, "language": "Dockerfile"});
            warning["range"] = json!([{
                "start": {"line": start.line, "character": start.column - 1},
                "end": {"line": end.line, "character": end.column - 1},
            }]);
        }
        json!({ "warnings": [warning] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_solve_status_lines() {
        let mut raw = RawJson::new();
        let v = VertexId::new(3);
        let started = raw.event(Event::Started {
            vertex: v,
            name: "[1/2] RUN make".into(),
        });
        let digest = started[0]["vertexes"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(digest.starts_with("sha256:") && digest.len() == 71);
        assert!(started[0]["vertexes"][0]["completed"].is_null());
        let log = raw.event(Event::Log {
            vertex: v,
            stream: Stream::Stderr,
            data: b"hi\n".to_vec(),
            at: Duration::ZERO,
        });
        assert_eq!(log[0]["logs"][0]["vertex"], digest.as_str());
        assert_eq!(log[0]["logs"][0]["stream"], 2);
        assert_eq!(log[0]["logs"][0]["data"], "aGkK");
        let done = raw.event(Event::Cached { vertex: v });
        let vertex = &done[0]["vertexes"][0];
        assert_eq!(
            (vertex["digest"].as_str(), vertex["cached"].as_bool()),
            (Some(&*digest), Some(true))
        );
        assert!(vertex["completed"].is_string());
        let step = raw.step(
            "exporting to image",
            &["done".into()],
            Duration::from_millis(5),
        );
        assert_eq!(step.len(), 3);
        assert_ne!(step[0]["vertexes"][0]["digest"], digest.as_str());
    }
}
