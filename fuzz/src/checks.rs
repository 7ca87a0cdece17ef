//! What each fuzz target checks, shared by the fuzz targets (`fuzz/fuzz_targets/`, run with
//! cargo-fuzz) and by the replay of their corpora and of every crash found on stable Rust
//! (`builder/tests/fuzz_replay.rs`, which includes this file), so that a crash once found stays
//! a regression test. Each function takes the fuzzer's bytes and panics on a defect: the
//! frontend, the matchers or the builder's parsers panicking, a check that takes too long, a
//! layer tar that writes outside its destination.

use rbuild_frontend::image::Image;
use rbuild_frontend::source::SourceFile;
use rbuild_frontend::{BuildOptions, ImageResolver, Platform, ResolvedImage, lower, parser};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one input may take (the fuzzer's inputs are at most a few KiB).
const LIMIT: Duration = Duration::from_secs(2);

fn within_limit(started: Instant, what: &str, data: &[u8]) {
    assert!(
        started.elapsed() < LIMIT,
        "{what} took {:?} on {:?}",
        started.elapsed(),
        String::from_utf8_lossy(data)
    );
}

/// A resolver that knows every image, each with ONBUILD triggers of its own.
struct AnyImage;

impl ImageResolver for AnyImage {
    fn resolve(&self, reference: &str, _platform: &Platform) -> Result<ResolvedImage, String> {
        let mut image = Image::default();
        image.config.on_build = Some(vec!["RUN echo ${X:-y}".into()]);
        Ok(ResolvedImage {
            reference: reference.into(),
            digest: rbuild_solver::Digest::of(reference.as_bytes()),
            image,
        })
    }
}

/// A Dockerfile: parsed, its diagnostics rendered, and lowered (every stage) when it parses.
pub fn dockerfile(data: &[u8]) {
    let started = Instant::now();
    let file = SourceFile::new("Dockerfile", data);
    let parsed = parser::parse(&file);
    for d in &parsed.diagnostics {
        let _ = d.render();
    }
    if !parsed.has_errors() {
        let options = BuildOptions {
            build_args: [("A".to_string(), "1".to_string())].into(),
            all_stages: true,
            allow_network_host: true,
            ..Default::default()
        };
        if let Err(d) = lower(&parsed.dockerfile, &options, &AnyImage) {
            let _ = d.render();
        }
    }
    within_limit(started, "parsing and lowering", data);
}

/// A shell word (the first line) expanded against variables (`KEY=value` lines after it),
/// by every lexer the frontend uses.
pub fn expand(data: &[u8]) {
    use rbuild_frontend::shell::Lexer;
    let started = Instant::now();
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let word = lines.next().unwrap_or_default();
    let env: Vec<String> = lines.map(str::to_string).collect();
    for lexer in [
        Lexer::new('\\'),
        Lexer::new('`'),
        Lexer::for_display('\\'),
        Lexer::for_heredoc_body('\\'),
        Lexer::for_heredoc_markers(),
    ] {
        let _ = lexer.process_word(word, &env);
        let _ = lexer.process_words(word, &env);
    }
    within_limit(started, "expanding", data);
}

/// `.dockerignore` and copy patterns (lines up to a blank line) against paths (the lines
/// after it), through every matcher a copy uses.
pub fn ignore(data: &[u8]) {
    use rbuild_solver::pattern::{CopyFilter, IgnoreMatcher, matches};
    let started = Instant::now();
    let text = String::from_utf8_lossy(data);
    let (patterns, paths) = text.split_once("\n\n").unwrap_or((&text, "a/b\nc"));
    let patterns: Vec<String> = patterns.lines().map(str::to_string).collect();
    let matcher = IgnoreMatcher::new(&patterns);
    let filter = CopyFilter::new(&patterns, &patterns, &patterns);
    for path in paths.lines() {
        for is_dir in [false, true] {
            let _ = matcher.visit(path, is_dir);
            let _ = filter.visit(path, path, is_dir);
        }
        let _ = matcher.is_excluded(path);
        for pattern in &patterns {
            let _ = matches(pattern, path);
        }
    }
    within_limit(started, "matching", data);
}

/// Every path under `root`, with its kind and, for files, its content.
fn listing(root: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else {
                format!("{:?} {}", meta.file_type(), meta.len())
            };
            out.push((path, what));
        }
    }
    out.sort();
    out
}

/// A layer tar, extracted into a scratch directory: whatever it holds (`..`, absolute paths,
/// symlinks and hard links that point out, devices), nothing outside the destination changes.
pub fn layer_tar(data: &[u8]) {
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    // Bait beside and above the destination, where escapes would land.
    std::fs::write(scratch.path().join("outside"), "untouched").unwrap();
    std::fs::create_dir(scratch.path().join("sibling")).unwrap();
    let before: Vec<_> = listing(scratch.path())
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&dest))
        .collect();
    let _ = rbuild_runner::extract::extract_layer(data, &dest);
    let after: Vec<_> = listing(scratch.path())
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&dest))
        .collect();
    assert_eq!(before, after, "the tar wrote outside its destination");
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("outside")).unwrap(),
        "untouched"
    );
    within_limit(started, "extracting", data);
}

/// A registry's answer (a manifest, an index, an image config), through every decoder the
/// builder applies to one.
pub fn registry_answer(data: &[u8]) {
    let started = Instant::now();
    let _ = serde_json::from_slice::<rbuild_builder::store::layout::Manifest>(data);
    if let Ok(index) = serde_json::from_slice::<rbuild_builder::store::layout::Index>(data) {
        for platform in ["linux/amd64", "linux/arm/v7", "linux/arm64"] {
            let platform = Platform::parse(platform).unwrap();
            let _ = rbuild_builder::store::layout::entry_for(&index, &platform);
        }
    }
    let _ = serde_json::from_slice::<Image>(data);
    let _ = rbuild_builder::registry::media_type_of(data);
    cache_record(data);
    within_limit(started, "decoding a registry answer", data);
}

/// A cache manifest's record (`--cache-from`), decoded against a manifest of three layers.
fn cache_record(data: &[u8]) {
    use rbuild_builder::remotecache::record;
    use rbuild_builder::store::layout::Descriptor;
    let Ok(config) = serde_json::from_slice::<record::CacheConfig>(data) else {
        return;
    };
    let layer = |n: u8| Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: rbuild_solver::Digest::of(&[n]),
        size: 1,
        platform: None,
        annotations: [(
            record::UNCOMPRESSED.to_string(),
            rbuild_solver::Digest::of(&[n, n]).to_string(),
        )]
        .into(),
    };
    let manifest = record::manifest(layer(0), vec![layer(1), layer(2), layer(3)]);
    let _ = record::decode(&manifest, &config);
}

/// Text the builder parses from a command line or a registry header: `--output`, `--secret`
/// and `--ssh` specs, image references, `WWW-Authenticate` challenges. Each line is tried as
/// each.
pub fn cli_specs(data: &[u8]) {
    let started = Instant::now();
    let text = String::from_utf8_lossy(data);
    let tags = ["docker.io/library/app:1".to_string()];
    for line in text.lines() {
        let _ = rbuild_builder::cli::commands::build::parse_output(line, &tags);
        let _ = rbuild_builder::worker::mounts::parse_secret(line, &|_| Some("v".into()));
        let _ = rbuild_builder::worker::mounts::parse_ssh(line, &|_| Some("/s".into()));
        let _ = rbuild_builder::remotecache::spec::parse_cache_to(line);
        let _ = rbuild_builder::remotecache::spec::parse_cache_from(line);
        if let Ok(reference) = rbuild_builder::registry::reference::parse(line) {
            let _ = reference.whole();
        }
        for scheme in ["Bearer", "Basic"] {
            let _ = rbuild_builder::registry::challenge_params(line, scheme);
        }
    }
    within_limit(started, "parsing specs", data);
}
