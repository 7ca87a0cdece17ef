//! BuildKit's own parser test corpus (tests/buildkit-parser, see its SOURCE.txt): every positive
//! case must dump byte for byte as BuildKit does, every negative case must be rejected.

use rbuild_frontend::parser::parse;
use rbuild_frontend::source::SourceFile;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/buildkit-parser")
}

fn cases(dir: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    cases
}

#[test]
fn positive_cases_dump_like_buildkit() {
    let cases = cases("testfiles");
    assert_eq!(cases.len(), 33);
    let mut failures = Vec::new();
    for case in &cases {
        let bytes = std::fs::read(case.join("Dockerfile")).unwrap();
        let expected = std::fs::read_to_string(case.join("result")).unwrap();
        let parsed = parse(&SourceFile::new("Dockerfile", &bytes));
        let mut dump = String::new();
        for instruction in &parsed.dockerfile.instructions {
            dump.push_str(&instruction.dump());
            dump.push('\n');
        }
        if parsed.has_errors() || dump != expected {
            failures.push(format!(
                "{}:\n  errors: {:?}\n  expected:\n{expected}\n  got:\n{dump}",
                case.display(),
                parsed
                    .diagnostics
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_cases_are_rejected() {
    let cases = cases("testfiles-negative");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let bytes = std::fs::read(case.join("Dockerfile")).unwrap();
        let parsed = parse(&SourceFile::new("Dockerfile", &bytes));
        assert!(parsed.has_errors(), "{} was accepted", case.display());
    }
}
