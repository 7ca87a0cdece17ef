//! Language ecosystems: the lockfiles and installed-package metadata a scanner finds in an
//! image, and the dependency data compiled into binaries. Cargo (`Cargo.lock`, read with
//! RustSec's `cargo-lock`; binaries built with `cargo auditable`, whose `.dep-v0` section is
//! zlib-compressed JSON), npm (`package-lock.json` v1 to v3, `node_modules/**/package.json`),
//! Python (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`) and Go (the build info of Go 1.18+
//! binaries' `.go.buildinfo` section: the module, its dependencies, the toolchain as
//! `stdlib`). ELF files are read through their section table only (the `object` crate).

use super::{Ecosystem, Entry};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a file found in the layers may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Cargo.lock`.
    CargoLock,
    /// `package-lock.json` (outside `node_modules`).
    NpmLock,
    /// `node_modules/NAME/package.json` or `node_modules/@SCOPE/NAME/package.json`.
    NpmPackage,
    /// `*.dist-info/METADATA`, `*.egg-info/PKG-INFO`.
    Python,
    /// An executable: maybe ELF with Go build info or `cargo auditable` data.
    Binary,
}

/// The smallest executable worth opening (an ELF header and section table need more).
const SMALLEST_BINARY: u64 = 1024;
/// The most a `cargo auditable` section may inflate to.
const MOST_AUDIT_DATA: u64 = 8 << 20;

/// What `name` at `path` (relative, `/`-separated) may hold, for a regular file of `mode` and
/// `size`.
fn kind_of(path: &str, name: &str, mode: u32, size: u64) -> Option<Kind> {
    let parent = |p: &str| p.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let dir = parent(path);
    let last = |p: &str| p.rsplit('/').next().unwrap_or("").to_string();
    match name {
        "Cargo.lock" => return Some(Kind::CargoLock),
        "package-lock.json" if !path.contains("node_modules/") => return Some(Kind::NpmLock),
        "package.json" => {
            let up = parent(&dir);
            let scoped = last(&up).starts_with('@') && last(&parent(&up)) == "node_modules";
            if last(&up) == "node_modules" || scoped {
                return Some(Kind::NpmPackage);
            }
        }
        "METADATA" if dir.ends_with(".dist-info") => return Some(Kind::Python),
        "PKG-INFO" if dir.ends_with(".egg-info") => return Some(Kind::Python),
        _ => {}
    }
    (mode & 0o111 != 0 && size >= SMALLEST_BINARY).then_some(Kind::Binary)
}

/// Every file of any of `layers` (snapshot directories) that may hold packages, by relative
/// path.
pub fn candidates(layers: &[PathBuf]) -> BTreeMap<String, Kind> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    for layer in layers {
        let mut stack = vec![(layer.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = match rel.is_empty() {
                    true => name.clone(),
                    false => format!("{rel}/{name}"),
                };
                if kind.is_dir() {
                    stack.push((entry.path(), path));
                } else if kind.is_file() {
                    let Ok(meta) = entry.metadata() else { continue };
                    let mode = meta.permissions().mode();
                    if let Some(k) = kind_of(&path, &name, mode, meta.len()) {
                        out.insert(path, k);
                    }
                }
            }
        }
    }
    out
}

/// The packages the file at `path` (a layer's copy) holds.
pub fn parse(kind: Kind, path: &Path) -> Vec<(Ecosystem, Entry)> {
    let text = || std::fs::read_to_string(path).unwrap_or_default();
    let tag =
        |ecosystem, entries: Vec<Entry>| entries.into_iter().map(|e| (ecosystem, e)).collect();
    match kind {
        Kind::CargoLock => tag(Ecosystem::Cargo, cargo_lock(&text())),
        Kind::NpmLock => tag(Ecosystem::Npm, npm_lock(&text())),
        Kind::NpmPackage => tag(Ecosystem::Npm, npm_package(&text()).into_iter().collect()),
        Kind::Python => tag(Ecosystem::Python, python(&text()).into_iter().collect()),
        Kind::Binary => binary(path),
    }
}

fn entry(name: &str, version: &str, license: Option<String>) -> Entry {
    Entry {
        name: name.to_string(),
        version: version.to_string(),
        arch: String::new(),
        license,
    }
}

/// The crates a `Cargo.lock` pins from a registry or git (the workspace's own crates have no
/// source and are the application, not its dependencies).
fn cargo_lock(text: &str) -> Vec<Entry> {
    let Ok(lock) = text.parse::<cargo_lock::Lockfile>() else {
        return vec![];
    };
    lock.packages
        .iter()
        .filter(|p| p.source.is_some())
        .map(|p| entry(p.name.as_str(), &p.version.to_string(), None))
        .collect()
}

/// A `license` field: a string, or the old `{"type": …}` form.
fn npm_license(v: &serde_json::Value) -> Option<String> {
    match &v["license"] {
        serde_json::Value::String(s) => Some(s.clone()),
        other => other["type"].as_str().map(str::to_string),
    }
}

/// The packages of a `package-lock.json`: lockfile v2/v3's `packages` (keyed by their
/// `node_modules/…` path; links and the root left out), else v1's nested `dependencies`.
fn npm_lock(text: &str) -> Vec<Entry> {
    let Ok(lock) = serde_json::from_str::<serde_json::Value>(text) else {
        return vec![];
    };
    let mut out = Vec::new();
    if let Some(packages) = lock["packages"].as_object() {
        for (key, p) in packages {
            let Some(at) = key.rfind("node_modules/") else {
                continue;
            };
            let name = p["name"].as_str().unwrap_or(&key[at + 13..]);
            if let (Some(version), false) = (p["version"].as_str(), p["link"] == true) {
                out.push(entry(name, version, npm_license(p)));
            }
        }
        return out;
    }
    fn nested(deps: &serde_json::Value, out: &mut Vec<Entry>) {
        for (name, d) in deps.as_object().into_iter().flatten() {
            if let Some(version) = d["version"].as_str() {
                out.push(entry(name, version, None));
            }
            nested(&d["dependencies"], out);
        }
    }
    nested(&lock["dependencies"], &mut out);
    out
}

/// An installed npm package's `package.json`.
fn npm_package(text: &str) -> Option<Entry> {
    let p: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(entry(
        p["name"].as_str()?,
        p["version"].as_str()?,
        npm_license(&p),
    ))
}

/// A Python distribution's core metadata (the header fields before the first blank line).
fn python(text: &str) -> Option<Entry> {
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines().take_while(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(": ") {
            fields.entry(k).or_insert(v.trim());
        }
    }
    let license = fields
        .get("License-Expression")
        .or(fields.get("License"))
        .map(|s| s.to_string());
    Some(entry(fields.get("Name")?, fields.get("Version")?, license))
}

/// The packages compiled into an ELF executable: Go build info, `cargo auditable` data.
fn binary(path: &Path) -> Vec<(Ecosystem, Entry)> {
    use object::{Object, ObjectSection};
    let Ok(mut file) = std::fs::File::open(path) else {
        return vec![];
    };
    let mut magic = [0u8; 4];
    if std::io::Read::read_exact(&mut file, &mut magic).is_err() || &magic != b"\x7fELF" {
        return vec![];
    }
    let cache = object::ReadCache::new(file);
    let Ok(elf) = object::File::parse(&cache) else {
        return vec![];
    };
    let mut out = Vec::new();
    if let Some(data) = elf
        .section_by_name(".go.buildinfo")
        .and_then(|s| s.data().ok())
    {
        out.extend(go_buildinfo(data).into_iter().map(|e| (Ecosystem::Go, e)));
    }
    if let Some(data) = elf.section_by_name(".dep-v0").and_then(|s| s.data().ok()) {
        out.extend(auditable(data).into_iter().map(|e| (Ecosystem::Cargo, e)));
    }
    out
}

/// An unsigned LEB128 number at the start of `data`, and its length.
fn uvarint(data: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &b) in data.iter().enumerate().take(9) {
        value |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The modules of a Go 1.18+ `.go.buildinfo` section: 14 bytes of magic, the pointer size,
/// flags (bit 2: strings inline), and from offset 32 the toolchain version and the module info
/// (`mod`, `dep` and `=>` lines between 16-byte sentinels), each length-prefixed.
fn go_buildinfo(data: &[u8]) -> Vec<Entry> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if !data.starts_with(MAGIC) || data.get(15).is_none_or(|f| f & 2 == 0) {
        return vec![];
    }
    let string = |at: usize| -> Option<(&[u8], usize)> {
        let (len, n) = uvarint(data.get(at..)?)?;
        Some((data.get(at + n..at + n + len)?, at + n + len))
    };
    let Some((toolchain, next)) = string(32) else {
        return vec![];
    };
    let Some((mut modinfo, _)) = string(next) else {
        return vec![];
    };
    // The sentinels are bytes that are not UTF-8: cut before decoding.
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    let toolchain = String::from_utf8_lossy(toolchain);
    let modinfo = String::from_utf8_lossy(modinfo);
    let mut out = vec![entry("stdlib", toolchain.trim_start_matches("go"), None)];
    let mut main = None;
    for line in modinfo.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            // Built outside module mode (as Debian builds Go), a binary names only its main
            // package, with no version.
            ["path", path] => main = Some(entry(path, "(devel)", None)),
            ["mod", path, version, ..] => {
                main = None;
                out.push(entry(path, version, None));
            }
            ["dep", path, version, ..] => out.push(entry(path, version, None)),
            // A replacement of the dependency before it.
            ["=>", path, version, ..] if out.len() > 1 => {
                let last = out.len() - 1;
                out[last] = entry(path, version, None);
            }
            _ => {}
        }
    }
    out.extend(main);
    out
}

/// The crates of a `cargo auditable` section (zlib-compressed JSON, `packages` with name,
/// version and source), the local ones (the binary's own workspace) left out.
fn auditable(data: &[u8]) -> Vec<Entry> {
    use std::io::Read as _;
    let mut json = Vec::new();
    let decoder = flate2::read::ZlibDecoder::new(data);
    if decoder
        .take(MOST_AUDIT_DATA)
        .read_to_end(&mut json)
        .is_err()
    {
        return vec![];
    }
    let Ok(info) = serde_json::from_slice::<serde_json::Value>(&json) else {
        return vec![];
    };
    info["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["source"] != "local")
        .filter_map(|p| Some(entry(p["name"].as_str()?, p["version"].as_str()?, None)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_hold_packages_are_recognized_by_path() {
        let k = |path: &str, mode| kind_of(path, path.rsplit('/').next().unwrap(), mode, 10);
        assert_eq!(k("app/Cargo.lock", 0o644), Some(Kind::CargoLock));
        assert_eq!(k("app/package-lock.json", 0o644), Some(Kind::NpmLock));
        assert_eq!(k("app/node_modules/.package-lock.json", 0o644), None);
        assert_eq!(
            k("app/node_modules/left-pad/package.json", 0o644),
            Some(Kind::NpmPackage)
        );
        assert_eq!(
            k("a/node_modules/@types/node/package.json", 0o644),
            Some(Kind::NpmPackage)
        );
        assert_eq!(k("a/node_modules/x/lib/package.json", 0o644), None);
        let dist = "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA";
        assert_eq!(k(dist, 0o644), Some(Kind::Python));
        assert_eq!(
            kind_of("usr/bin/tool", "tool", 0o755, 4096),
            Some(Kind::Binary)
        );
        assert_eq!(kind_of("usr/bin/tiny", "tiny", 0o755, 10), None);
    }

    #[test]
    fn lockfiles_and_metadata_name_their_packages() {
        let lock = "version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\n\
            [[package]]\nname = \"serde\"\nversion = \"1.0.200\"\n\
            source = \"registry+https://github.com/rust-lang/crates.io-index\"\n";
        let found = cargo_lock(lock);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].name.as_str(), found[0].version.as_str()),
            ("serde", "1.0.200")
        );
        let v3 = r#"{"lockfileVersion": 3, "packages": {"": {"name": "app"},
            "node_modules/left-pad": {"version": "1.3.0", "license": "WTFPL"},
            "node_modules/@scope/x": {"version": "2.0.0"},
            "node_modules/a/node_modules/b": {"version": "0.1.0"},
            "node_modules/linked": {"resolved": "../linked", "link": true}}}"#;
        let names: Vec<(String, String)> = npm_lock(v3)
            .into_iter()
            .map(|e| (e.name, e.version))
            .collect();
        let want = [("@scope/x", "2.0.0"), ("b", "0.1.0"), ("left-pad", "1.3.0")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, want);
        let v1 = r#"{"lockfileVersion": 1, "dependencies": {"a": {"version": "1.0.0",
            "dependencies": {"b": {"version": "2.0.0"}}}}}"#;
        assert_eq!(npm_lock(v1).len(), 2);
        let pkg =
            npm_package(r#"{"name": "left-pad", "version": "1.3.0", "license": {"type": "MIT"}}"#)
                .unwrap();
        assert_eq!(pkg.license.as_deref(), Some("MIT"));
        let meta = "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nLicense: Apache 2.0\n\n\
            Name: not-this\n";
        let p = python(meta).unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str()),
            ("requests", "2.31.0")
        );
    }

    #[test]
    fn go_build_info_lists_modules_with_replacements() {
        let modinfo = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n\
            dep\tgolang.org/x/sys\tv0.1.0\th1:abc=\n\
            dep\texample.com/old\tv1.0.0\th1:x=\n=>\texample.com/new\tv1.2.0\th1:y=\n";
        // Sentinels of bytes that are not UTF-8, as Go's are.
        let framed = [&[0xf9u8; 16][..], modinfo.as_bytes(), b"\n", &[0x30; 16]].concat();
        let mut data = b"\xff Go buildinf:".to_vec();
        data.extend([8, 2]);
        data.resize(32, 0);
        for s in [&b"go1.22.1"[..], &framed] {
            data.push(s.len() as u8 | if s.len() > 127 { 0x80 } else { 0 });
            if s.len() > 127 {
                data.push((s.len() >> 7) as u8);
            }
            data.extend(s);
        }
        let found: Vec<(String, String)> = go_buildinfo(&data)
            .into_iter()
            .map(|e| (e.name, e.version))
            .collect();
        let want = [
            ("stdlib", "1.22.1"),
            ("example.com/app", "(devel)"),
            ("golang.org/x/sys", "v0.1.0"),
            ("example.com/new", "v1.2.0"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(found, want);
        assert!(go_buildinfo(b"not build info").is_empty());
    }

    #[test]
    fn cargo_auditable_data_lists_crates() {
        use std::io::Write as _;
        let json = r#"{"packages":[{"name":"app","version":"0.1.0","source":"local"},
            {"name":"libc","version":"0.2.150","source":"crates.io"}]}"#;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json.as_bytes()).unwrap();
        let found = auditable(&z.finish().unwrap());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "libc");
    }
}
