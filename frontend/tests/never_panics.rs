//! The frontend never panics and never hangs, whatever the input: arbitrary bytes, and BuildKit's
//! corpus files with random edits that favour the characters the parser cares about. Each input
//! is parsed and, when it parses, lowered with a resolver that knows every image. Runs in CI with
//! a bounded number of cases.

use proptest::prelude::*;
use rbuild_frontend::image::Image;
use rbuild_frontend::source::SourceFile;
use rbuild_frontend::{BuildOptions, ImageResolver, Platform, ResolvedImage, lower, parser};
use rbuild_solver::Digest;
use std::path::Path;
use std::time::{Duration, Instant};

struct AnyImage;

impl ImageResolver for AnyImage {
    fn resolve(&self, reference: &str, _platform: &Platform) -> Result<ResolvedImage, String> {
        let mut image = Image::default();
        image.config.on_build = Some(vec!["RUN echo ${X:-y}".into(), "ENV A=\"b".into()]);
        Ok(ResolvedImage {
            reference: reference.into(),
            digest: Digest::of(reference.as_bytes()),
            image,
        })
    }
}

fn check(bytes: &[u8]) {
    let started = Instant::now();
    let file = SourceFile::new("Dockerfile", bytes);
    let parsed = parser::parse(&file);
    for d in &parsed.diagnostics {
        let _ = d.render();
    }
    for i in &parsed.dockerfile.instructions {
        let _ = i.dump();
    }
    if !parsed.has_errors() {
        let options = BuildOptions {
            build_args: [("A".to_string(), "1".to_string())].into(),
            target: None,
            dockerignore: vec!["*.tmp".into()],
            all_stages: true,
            platform: None,
            multi_platform: false,
            ..Default::default()
        };
        if let Err(d) = lower(&parsed.dockerfile, &options, &AnyImage) {
            let _ = d.render();
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?} on {:?}",
        started.elapsed(),
        String::from_utf8_lossy(bytes)
    );
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/buildkit-parser/testfiles");
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path().join("Dockerfile")).unwrap())
        .collect();
    files.sort();
    files
}

const INTERESTING: &[&str] = &[
    "\\",
    "\n",
    "\r\n",
    "\"",
    "'",
    "$",
    "${",
    "}",
    "${A:-",
    "${A/",
    "[",
    "]",
    "<<",
    "<<-EOF",
    "EOF\n",
    "#",
    "# escape=`\n",
    "`",
    "--",
    "--mount=",
    "=",
    " ",
    "\t",
    "FROM ",
    "RUN ",
    "COPY ",
    "ONBUILD ",
    "ARG ",
    "ENV ",
    "AS ",
    "\u{feff}",
    "é",
    "\0",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_tokens(tokens in proptest::collection::vec(0..INTERESTING.len(), 0..120)) {
        let text: String = tokens.iter().map(|&i| INTERESTING[i]).collect();
        check(text.as_bytes());
    }

    #[test]
    fn mutated_corpus(
        which in 0usize..64,
        edits in proptest::collection::vec((any::<u16>(), 0..INTERESTING.len(), 0u8..3), 1..12),
    ) {
        let files = corpus();
        let mut bytes = files[which % files.len()].clone();
        for (at, token, kind) in edits {
            let at = if bytes.is_empty() { 0 } else { at as usize % (bytes.len() + 1) };
            match kind {
                0 => bytes.splice(at..at, INTERESTING[token].bytes()).for_each(drop),
                1 if at < bytes.len() => { bytes.remove(at); }
                _ => {
                    let end = (at + 8).min(bytes.len());
                    bytes.splice(at..end, INTERESTING[token].bytes()).for_each(drop);
                }
            }
        }
        check(&bytes);
    }
}

/// Lowers `text` on a thread with a small stack (256 KiB), as a library caller might run it:
/// the frontend's recursion must not depend on the size of the caller's stack.
fn lower_on_small_stack(text: String) -> Result<rbuild_frontend::Build, String> {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let file = SourceFile::new("Dockerfile", text.as_bytes());
            let parsed = parser::parse(&file);
            assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
            lower(&parsed.dockerfile, &BuildOptions::default(), &AnyImage).map_err(|d| d.render())
        })
        .unwrap()
        .join()
        .unwrap()
}

fn nested(levels: usize) -> String {
    let mut word = String::from("deep");
    for i in 0..levels {
        word = format!("${{u{}:-{word}}}", i % 10);
    }
    word
}

/// Words nested thousands deep expand as BuildKit expands them (its Go stack grows to 1 GiB);
/// past `MAX_NESTING` a clear error says so instead of the process overflowing its stack.
#[test]
fn deep_nesting_expands_or_fails_clearly() {
    let build = lower_on_small_stack(format!("FROM scratch\nENV X={}\n", nested(12_000))).unwrap();
    let env = build.image.config.env.unwrap_or_default();
    assert!(env.contains(&"X=deep".to_string()), "{env:?}");

    let quoted = format!(
        "FROM scratch\nENV X=\"{}\"\n",
        nested(3_000).replace("-", "-\"'x'\"")
    );
    lower_on_small_stack(quoted).unwrap();

    let levels = rbuild_frontend::shell::MAX_NESTING + 1;
    let err = lower_on_small_stack(format!("FROM scratch\nENV X={}\n", nested(levels)))
        .err()
        .unwrap();
    assert!(
        err.starts_with("Dockerfile:2:5: error: failed to process \"${u")
            && err.contains("the word nests more than 100000 levels"),
        "{}",
        &err[..err.len().min(500)]
    );
    // The message and the snippet are cut, not the whole word repeated.
    assert!(err.len() < 1000, "{} bytes", err.len());
}

/// A chain of stages, each built on the one before, lowers however long it is (each stage is
/// lowered before the stage that needs it, recursively).
#[test]
fn long_chains_of_stages_lower() {
    // (Each stage inherits its base's history, so stages that each add an instruction would
    // make the test quadratic in memory; the depth is what is tested.)
    let mut text = String::from("FROM scratch AS s0\nENV N=0\n");
    for i in 1..20_000 {
        text.push_str(&format!("FROM s{} AS s{i}\n", i - 1));
    }
    text.push_str("ENV M=last\n");
    let build = lower_on_small_stack(text).unwrap();
    let env = build.image.config.env.unwrap_or_default();
    assert!(
        env.ends_with(&["N=0".to_string(), "M=last".to_string()]),
        "{env:?}"
    );
}
