//! Random and mutated input through every parser of untrusted text the builder has: registry
//! answers (manifests, indexes, image configs, `WWW-Authenticate` challenges), image
//! references, and the specs of `--output`, `--secret` and `--ssh`. None may panic or take
//! long. The same parsers are fuzzed with coverage guidance too (`fuzz/`: `registry_answer`,
//! `cli_specs`); these property tests cover them on stable Rust in every test run.

use proptest::prelude::*;
use std::time::{Duration, Instant};

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":3,"annotations":{"a":"b"}}]}"#;
const INDEX: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":4,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#;
const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"Healthcheck":{"Test":["CMD","true"]}},"rootfs":{"type":"layers","diff_ids":["sha256:3333333333333333333333333333333333333333333333333333333333333333"]},"history":[{"created_by":"x","empty_layer":true}]}"#;

/// Every decoder of registry answers, on `bytes`.
fn decode_registry_answer(bytes: &[u8]) {
    let started = Instant::now();
    let _ = serde_json::from_slice::<crate::store::layout::Manifest>(bytes);
    let _ = serde_json::from_slice::<crate::store::layout::Index>(bytes);
    let _ = serde_json::from_slice::<rbuild_frontend::image::Image>(bytes);
    let _ = crate::registry::media_type_of(bytes);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// `base` with a few bytes replaced, inserted or removed at places chosen by `edits`.
fn mutate(base: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut bytes = base.as_bytes().to_vec();
    for &(at, kind, byte) in edits {
        let at = at % (bytes.len() + 1);
        match kind % 3 {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {}
        }
    }
    bytes
}

/// Characters the spec and header parsers care about, and some they should not.
fn spec_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(",".to_string()),
            Just("=".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just(" ".to_string()),
            Just("type".to_string()),
            Just("dest".to_string()),
            Just("id".to_string()),
            Just("src".to_string()),
            Just("env".to_string()),
            Just("realm".to_string()),
            Just("Bearer ".to_string()),
            Just("-".to_string()),
            Just("/".to_string()),
            Just(":".to_string()),
            Just("@".to_string()),
            Just("é".to_string()),
            "[a-z0-9]{1,4}".prop_map(|s| s),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn registry_answers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_registry_answer(&bytes);
    }

    #[test]
    fn mutated_registry_answers_never_panic(
        which in 0..3usize,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        decode_registry_answer(&mutate([MANIFEST, INDEX, CONFIG][which], &edits));
    }

    #[test]
    fn specs_references_and_challenges_never_panic(text in spec_text()) {
        let _ = crate::cli::commands::build::parse_output(&text, &["a:1".to_string()]);
        let _ = crate::worker::mounts::parse_secret(&text, &|_| None);
        let _ = crate::worker::mounts::parse_ssh(&text, &|_| None);
        let _ = crate::remotecache::spec::parse_cache_to(&text);
        let _ = crate::remotecache::spec::parse_cache_from(&text);
        let _ = crate::registry::reference::parse(&text);
        let _ = crate::registry::challenge_params(&text, "Bearer");
    }
}

/// Deeply nested JSON is refused by serde_json's recursion limit, not a stack overflow.
#[test]
fn deeply_nested_registry_answers_are_refused() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    decode_registry_answer(deep.as_bytes());
    let deep = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    decode_registry_answer(deep.as_bytes());
}

#[test]
fn challenges_keep_quoted_commas() {
    let params = crate::registry::challenge_params(
        r#"Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push",error="say \"no\"""#,
        "bearer",
    )
    .unwrap();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("realm"), Some("https://auth.example/token"));
    assert_eq!(get("service"), Some("registry"));
    assert_eq!(get("scope"), Some("repository:a/b:pull,push"));
    assert_eq!(get("error"), Some("say \"no\""));
    assert!(crate::registry::challenge_params("Basic realm=x", "Bearer").is_none());
}
