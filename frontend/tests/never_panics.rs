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
