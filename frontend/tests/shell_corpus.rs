//! BuildKit's shell-lexer corpus: `shell/envVarTest` (A and U lines) for single-word expansion
//! and `shell/wordsTest` for word splitting.

use rbuild_frontend::shell::Lexer;
use std::path::Path;

fn read(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/buildkit-parser/shell")
            .join(name),
    )
    .unwrap()
}

#[test]
fn env_var_test() {
    let env: Vec<String> = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]
        .map(String::from)
        .to_vec();
    let lexer = Lexer::default();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (n, line) in read("envVarTest").lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 3, "line {}", n + 1);
        let (platform, source, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
        if platform == "W" {
            continue;
        }
        checked += 1;
        let got = lexer.process_word(source, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(w), e) => w == e && e != "error",
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "line {}: {source:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert!(checked > 100, "only {checked} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn words_test() {
    let lexer = Lexer::default();
    let mut env: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for (n, line) in read("wordsTest").lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            env.push(rest.trim_start_matches(' ').to_string());
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 2, "line {}", n + 1);
        let source = parts[0].trim();
        let expected: Vec<&str> = parts[1].trim_start_matches(' ').split(',').collect();
        let got = lexer.process_words(source, &env);
        match got {
            Ok(words) if words == expected => {}
            Err(_) if expected == ["error"] => {}
            other => failures.push(format!(
                "line {}: {source:?} expected {expected:?}, got {other:?}",
                n + 1
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
