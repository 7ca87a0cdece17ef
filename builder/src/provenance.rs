//! SLSA v1 provenance predicates, as current BuildKit writes them
//! (`solver/llbsolver/provenance/types`: `externalParameters.request`,
//! `internalParameters.builderPlatform`, the `buildkit_*` metadata extensions), filled from
//! what rbuild knows of a build. `mode=min` keeps the request's options but drops the build
//! args, labels, secrets and SSH ids; `mode=max` keeps them (secret *ids* only: no value is
//! ever known here) and adds the build graph: every step's op as keyed, its inputs and its
//! cache key (`digestMapping`), and the Dockerfile as the steps' source, so that another
//! machine can check it would build the same thing.
//!
//! Where rbuild goes beyond BuildKit: `resolvedDependencies` names the context by the digest
//! of the files the build read from it (BuildKit lists a local context by name only), and
//! `configSource.digest` is the Dockerfile's sha256.

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The predicate type of SLSA provenance v1.
pub const PREDICATE: &str = "https://slsa.dev/provenance/v1";
/// The build type, BuildKit's for SLSA v1 (the structure of the parameters is BuildKit's).
pub const BUILD_TYPE: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";

/// How much the provenance says (`mode=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Dependencies, the frontend options, times; no build args, secrets or graph.
    #[default]
    Min,
    /// Everything: build args, secret and SSH ids, the build graph and its source.
    Max,
}

/// A digest set (`{"sha256": "…"}`).
pub type DigestSet = BTreeMap<String, String>;

/// A digest set of one `algorithm:hex` digest.
pub fn digest_set(digest: &str) -> DigestSet {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    BTreeMap::from([(algorithm.to_string(), hex.to_string())])
}

/// An artifact the build read, pinned by digest (a SLSA resource descriptor).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dependency {
    /// Where it is (`pkg:docker/…`, a URL); none for the local context.
    pub uri: Option<String>,
    /// Its name, for what has no URI (`context`).
    pub name: Option<String>,
    /// Its digests.
    pub digest: DigestSet,
}

/// What the build was asked to do.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// The frontend options, named as BuildKit receives them (`build-arg:NAME`, `label:NAME`,
    /// `target`, `filename`…).
    pub args: BTreeMap<String, String>,
    /// The secrets the build's steps mount: id and whether it is optional.
    pub secrets: Vec<(String, bool)>,
    /// The SSH agents they mount, likewise.
    pub ssh: Vec<(String, bool)>,
    /// The local directories it read (`context`, `dockerfile`, named contexts).
    pub locals: Vec<String>,
    /// Where the build definition came from: a remote context's URL and digest, and the
    /// Dockerfile's path and digest.
    pub config_uri: Option<String>,
    /// The remote context's digest (a git commit's `sha1`), or else the Dockerfile's.
    pub config_digest: DigestSet,
    /// The Dockerfile's path in the context.
    pub config_path: String,
}

/// How and when the build ran.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// `runDetails.builder.id`.
    pub builder_id: String,
    /// rbuild's version.
    pub version: String,
    /// The invocation's id, shared by every platform of one build.
    pub invocation_id: String,
    /// RFC 3339 start time.
    pub started: String,
    /// RFC 3339 finish time.
    pub finished: String,
    /// Whether a step could reach the network (a RUN without `--network=none`).
    pub network: bool,
    /// `reproducible=true` was given.
    pub reproducible: bool,
    /// The build machine's platform.
    pub builder_platform: String,
    /// VCS hints (`vcs:source`, `vcs:revision` build options).
    pub vcs: BTreeMap<String, String>,
}

/// The build graph, for `mode=max`.
#[derive(Clone, Debug, Default)]
pub struct BuildGraph {
    /// `llbDefinition`: `{id, op, inputs}` per step, inputs first.
    pub steps: Vec<Value>,
    /// Each step's cache key → its id.
    pub digest_mapping: BTreeMap<String, String>,
    /// `buildkit_metadata.source`: the steps' places in the Dockerfile and the Dockerfile.
    pub source: Value,
}

/// Whether a frontend option is dropped by `mode=min`.
fn max_only(key: &str) -> bool {
    key.starts_with("build-arg:") || key.starts_with("label:")
}

/// The SLSA v1 predicate.
pub fn predicate(
    mode: Mode,
    request: &Request,
    dependencies: &[Dependency],
    run: &Run,
    graph: Option<&BuildGraph>,
) -> Value {
    let max = mode == Mode::Max;
    let args: BTreeMap<&String, &String> = request
        .args
        .iter()
        .filter(|(k, _)| max || !max_only(k))
        .collect();
    let complete_request = max || request.args.keys().all(|k| !max_only(k));
    let ids = |list: &[(String, bool)]| -> Vec<Value> {
        list.iter()
            .map(|(id, optional)| match optional {
                true => json!({"id": id, "optional": true}),
                false => json!({"id": id}),
            })
            .collect()
    };
    let mut req = json!({"frontend": "dockerfile.v0"});
    if !args.is_empty() {
        req["args"] = json!(args);
    }
    if max && !request.secrets.is_empty() {
        req["secrets"] = Value::Array(ids(&request.secrets));
    }
    if max && !request.ssh.is_empty() {
        req["ssh"] = Value::Array(ids(&request.ssh));
    }
    if !request.locals.is_empty() {
        req["locals"] = request
            .locals
            .iter()
            .map(|n| json!({"name": n}))
            .collect::<Vec<_>>()
            .into();
    }
    let mut config = json!({"path": request.config_path});
    if let Some(uri) = &request.config_uri {
        config["uri"] = uri.clone().into();
    }
    if !request.config_digest.is_empty() {
        config["digest"] = json!(request.config_digest);
    }
    let mut internal = json!({"builderPlatform": run.builder_platform});
    let mut buildkit_metadata = json!({});
    if let (true, Some(graph)) = (max, graph) {
        internal["buildConfig"] = json!({
            "llbDefinition": graph.steps,
            "digestMapping": graph.digest_mapping,
        });
        buildkit_metadata["source"] = graph.source.clone();
    }
    if !run.vcs.is_empty() {
        buildkit_metadata["vcs"] = json!(run.vcs);
    }
    let resolved: Vec<Value> = dependencies.iter().map(resource).collect();
    // Local directories are not tracked sources (BuildKit's rule), however exactly their
    // content is digested here.
    let complete_dependencies = request.locals.is_empty();
    let mut metadata = json!({
        "invocationID": run.invocation_id,
        "startedOn": run.started,
        "finishedOn": run.finished,
        "buildkit_metadata": buildkit_metadata,
        "buildkit_completeness": {
            "request": complete_request,
            "resolvedDependencies": complete_dependencies,
        },
    });
    if complete_dependencies && !run.network {
        metadata["buildkit_hermetic"] = true.into();
    }
    if run.reproducible {
        metadata["buildkit_reproducible"] = true.into();
    }
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"configSource": config, "request": req},
            "internalParameters": internal,
            "resolvedDependencies": resolved,
        },
        "runDetails": {
            "builder": {"id": run.builder_id, "version": {"rbuild": run.version}},
            "metadata": metadata,
        },
    })
}

/// A dependency as a SLSA resource descriptor.
fn resource(d: &Dependency) -> Value {
    let mut out = json!({"digest": d.digest});
    if let Some(uri) = &d.uri {
        out["uri"] = uri.clone().into();
    }
    if let Some(name) = &d.name {
        out["name"] = name.clone().into();
    }
    out
}

/// The package URL of an image reference (`docker.io/library/busybox:1.35` →
/// `pkg:docker/busybox@1.35?platform=linux%2Famd64`), as BuildKit's `RefToPURL`: the familiar
/// name, split into namespace and name, the tag as the version, a digest and the platform as
/// qualifiers (sorted by key).
pub fn image_purl(reference: &str, platform: Option<&str>) -> String {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    // A tag follows the last colon after the last slash (a port is before it).
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
        None => (name, None),
    };
    let tag = match (tag, digest) {
        (Some(t), _) => Some(t),
        (None, None) => Some("latest"),
        (None, Some(_)) => None,
    };
    let familiar = crate::registry::reference::familiar(name);
    let mut out = format!("pkg:docker/{familiar}");
    if let Some(tag) = tag {
        out.push('@');
        out.push_str(tag);
    }
    let mut qualifiers = Vec::new();
    if let Some(d) = digest {
        qualifiers.push(format!("digest={}", d.replace(':', "%3A")));
    }
    if let Some(p) = platform {
        qualifiers.push(format!("platform={}", p.replace('/', "%2F")));
    }
    if !qualifiers.is_empty() {
        out.push('?');
        out.push_str(&qualifiers.join("&"));
    }
    out
}

/// An invocation id as BuildKit makes them (25 base-36 characters), from `seed`.
pub fn invocation_id(seed: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(seed);
    let mut n = u128::from_be_bytes(hash[..16].try_into().expect("16 bytes"));
    let alphabet = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..25)
        .map(|_| {
            let c = alphabet[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_purls_follow_buildkit() {
        let amd64 = Some("linux/amd64");
        assert_eq!(
            image_purl("docker.io/library/busybox:1.35", amd64),
            "pkg:docker/busybox@1.35?platform=linux%2Famd64"
        );
        assert_eq!(
            image_purl("docker.io/library/alpine", None),
            "pkg:docker/alpine@latest"
        );
        assert_eq!(
            image_purl("127.0.0.1:5000/library/busybox:1.35", amd64),
            "pkg:docker/127.0.0.1:5000/library/busybox@1.35?platform=linux%2Famd64"
        );
        assert_eq!(
            image_purl("docker.io/me/app@sha256:abcd", None),
            "pkg:docker/me/app?digest=sha256%3Aabcd"
        );
    }

    #[test]
    fn min_mode_drops_build_args_and_secret_ids() {
        let request = Request {
            args: BTreeMap::from([
                ("build-arg:TOKEN_NAME".into(), "x".into()),
                ("target".into(), "app".into()),
            ]),
            secrets: vec![("token".into(), false)],
            locals: vec!["context".into()],
            config_path: "Dockerfile".into(),
            ..Request::default()
        };
        let run = Run::default();
        let min = predicate(Mode::Min, &request, &[], &run, None);
        let req = &min["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(req["args"], json!({"target": "app"}));
        assert!(req.get("secrets").is_none());
        let meta = &min["runDetails"]["metadata"];
        assert_eq!(meta["buildkit_completeness"]["request"], false);
        assert_eq!(meta["buildkit_completeness"]["resolvedDependencies"], false);
        assert!(meta.get("buildkit_hermetic").is_none());
        let max = predicate(Mode::Max, &request, &[], &run, None);
        let req = &max["buildDefinition"]["externalParameters"]["request"];
        assert_eq!(req["args"]["build-arg:TOKEN_NAME"], "x");
        assert_eq!(req["secrets"], json!([{"id": "token"}]));
    }

    #[test]
    fn invocation_ids_look_like_buildkits() {
        let id = invocation_id(b"seed");
        assert_eq!(id.len(), 25);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() && !c.is_uppercase())
        );
        assert_eq!(id, invocation_id(b"seed"));
        assert_ne!(id, invocation_id(b"other"));
    }
}
