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

#[test]
fn line_numbers_of_testfile_line() {
    // BuildKit's TestLineInformation: the instructions span lines 5, 11-12 and 17-31.
    let bytes = std::fs::read(corpus().join("testfile-line/Dockerfile")).unwrap();
    let parsed = parse(&SourceFile::new("Dockerfile", &bytes));
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    let lines: Vec<(usize, usize)> = parsed
        .dockerfile
        .instructions
        .iter()
        .map(|i| (i.start_line, i.end_line))
        .collect();
    assert_eq!(lines, [(5, 5), (11, 12), (17, 31)]);
}

#[test]
fn crlf_and_bom_parse_like_lf() {
    for case in cases("testfiles") {
        let bytes = std::fs::read(case.join("Dockerfile")).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let crlf = format!("\u{feff}{}", text.replace('\n', "\r\n"));
        let a = parse(&SourceFile::new("Dockerfile", &bytes));
        let b = parse(&SourceFile::new("Dockerfile", crlf.as_bytes()));
        let dump = |p: &rbuild_frontend::parser::Parsed| {
            p.dockerfile
                .instructions
                .iter()
                .map(|i| i.dump())
                .collect::<Vec<_>>()
        };
        assert_eq!(dump(&a), dump(&b), "{}", case.display());
    }
}
