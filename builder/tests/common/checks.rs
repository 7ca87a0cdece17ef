//! Helpers that read what rbuild produced: digests in its progress output, archives and
//! their layers, JSON, and files copied into contexts.

use super::{Env, tool};
use std::path::Path;

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The digest after `what` in plain progress output.
pub fn digest_after(stderr: &str, what: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.split(what).nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no {what:?} in:\n{stderr}"))
        .to_string()
}

/// The digest of the manifest a build wrote to the local store.
pub fn manifest_digest(stderr: &str) -> String {
    digest_after(stderr, "writing manifest ")
}

/// The digest of the manifest a build wrote to its `--output type=oci` archive (its layers
/// compressed, so not the local store's manifest).
pub fn exported_digest(stderr: &str) -> String {
    digest_after(stderr, "exporting manifest ")
}

/// `skopeo inspect [flag] IMAGE` as JSON (`--raw`: the manifest, `--config`: the config).
pub fn skopeo_inspect(flag: &str, image: &str) -> serde_json::Value {
    let mut args = vec!["inspect"];
    if !flag.is_empty() {
        args.push(flag);
    }
    args.push(image);
    json(&tool("skopeo", &args))
}

/// The raw manifest or index `reference` names in a registry on loopback (plain HTTP).
pub fn registry_raw(reference: &str) -> serde_json::Value {
    let image = format!("docker://{reference}");
    json(&tool(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &image],
    ))
}

/// The media types of the layers of an OCI archive, bottom first.
pub fn layer_media_types(archive: &Path) -> Vec<String> {
    let raw = skopeo_inspect("--raw", &format!("oci-archive:{}", archive.display()));
    raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

pub fn unpack(env: &Env, archive: &Path, name: &str) -> std::path::PathBuf {
    let layout = env.path(&format!("{name}-layout"));
    let bundle = env.path(&format!("{name}-bundle"));
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}", archive.display()),
            &format!("oci:{}:{name}", layout.display()),
        ],
    );
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{name}", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    bundle.join("rootfs")
}

/// A dpkg status entry of an installed package, escaped for a `printf` in a RUN step.
pub fn dpkg_entry(name: &str, version: &str) -> String {
    format!(
        "Package: {name}\\nStatus: install ok installed\\nArchitecture: amd64\\nVersion: {version}\\n"
    )
}

/// A program of the test venv (`target/test-venv`, which scripts/install-deps.sh makes), or
/// `None` after saying why it is missing (a failure under CI).
pub fn venv_tool(name: &str) -> Option<std::path::PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-venv/bin")
        .join(name);
    if path.exists() {
        return Some(path);
    }
    super::skip_or_fail(&format!(
        "{name} is not in target/test-venv (scripts/install-deps.sh installs it)"
    ));
    None
}

/// Checks `document` against the JSON schema `testdata/schemas/SCHEMA` with PyPI's
/// jsonschema (in the test venv); the validator's complaint, if any. `None` result with no
/// venv means the check was skipped (a failure under CI).
pub fn schema_errors(document: &serde_json::Value, schema: &str) -> Option<Result<(), String>> {
    let python = venv_tool("python3")?;
    let schema = super::testdata().join("schemas").join(schema);
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        doc = json.load(sys.stdin)\n\
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]\n\
        print('\\n'.join(errors)); sys.exit(1 if errors else 0)\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .arg(schema)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(document.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Some(match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    })
}
