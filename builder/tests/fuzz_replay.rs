//! The fuzz targets' corpora and every crash the fuzzers found (`fuzz/regressions/TARGET/`),
//! replayed through the same checks on stable Rust, so that what was found stays fixed even
//! where no nightly toolchain runs the fuzzers (`scripts/fuzz.sh` does where one is).

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

fn replay(target: &str, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no inputs for {target}");
    for (name, data) in inputs {
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{target}: {name} fails its check");
    }
}

#[test]
fn dockerfile_inputs() {
    replay("dockerfile", checks::dockerfile);
}

#[test]
fn expand_inputs() {
    replay("expand", checks::expand);
}

#[test]
fn ignore_inputs() {
    replay("ignore", checks::ignore);
}

#[test]
fn layer_tar_inputs() {
    replay("layer_tar", checks::layer_tar);
}

#[test]
fn registry_answer_inputs() {
    replay("registry_answer", checks::registry_answer);
}

#[test]
fn cli_specs_inputs() {
    replay("cli_specs", checks::cli_specs);
}
