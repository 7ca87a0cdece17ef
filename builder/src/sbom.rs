//! Software bills of materials, made by rbuild itself (no scanner image, no network): the
//! packages of an image's root filesystem, each with the layer that introduced it and the
//! instruction that made that layer, as an SPDX 2.3 JSON document (what BuildKit attaches).
//!
//! Read from the layers (their snapshots, bottom first), so that attribution is exact: a
//! package is introduced by the first layer whose view of the package database lists it at
//! its final version. Databases: Debian's `var/lib/dpkg/status` (and distroless images'
//! `var/lib/dpkg/status.d/*`), Alpine's `lib/apk/db/installed`.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which package database a package came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ecosystem {
    /// dpkg (Debian, Ubuntu, distroless).
    Deb,
    /// apk (Alpine).
    Apk,
}

/// One installed package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// Its database.
    pub ecosystem: Ecosystem,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture, as the database says it.
    pub arch: String,
    /// License, where the database records one (apk).
    pub license: Option<String>,
    /// The layer (index, bottom first) that introduced it.
    pub layer: usize,
}

/// Where a database's content lives in a layer, and how to read it.
const DATABASES: &[(&str, Ecosystem)] = &[
    ("var/lib/dpkg/status", Ecosystem::Deb),
    ("lib/apk/db/installed", Ecosystem::Apk),
];

/// The content of `path` as the merged view of each `layers[..=i]` shows it, bottom first:
/// a layer that has the file replaces it, one that whites it out (overlayfs's `0:0`
/// character device) removes it, any other keeps what the layers below gave. Each file is
/// read once.
fn views(layers: &[PathBuf], path: &str) -> Vec<Option<std::rc::Rc<str>>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut current: Option<std::rc::Rc<str>> = None;
    layers
        .iter()
        .map(|dir| {
            match std::fs::symlink_metadata(dir.join(path)) {
                Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => current = None,
                Ok(m) if m.is_file() => {
                    current = std::fs::read_to_string(dir.join(path)).ok().map(Into::into)
                }
                _ => {}
            }
            current.clone()
        })
        .collect()
}

/// A database entry: name, version, architecture, license.
type Entry = (String, String, String, Option<String>);

/// The installed packages of a dpkg status file.
fn dpkg(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let field = |key: &str| {
            paragraph
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let installed = field("Status").is_none_or(|s| s.ends_with(" installed"));
        if let (Some(name), Some(version), true) = (field("Package"), field("Version"), installed) {
            let arch = field("Architecture").unwrap_or_default();
            out.push((name, version, arch, None));
        }
    }
    out
}

/// The packages of an apk `installed` database.
fn apk(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for paragraph in text.split("\n\n") {
        let field = |key: &str| {
            paragraph
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(str::to_string)
        };
        if let (Some(name), Some(version)) = (field("P"), field("V")) {
            out.push((name, version, field("A").unwrap_or_default(), field("L")));
        }
    }
    out
}

/// The packages of the image whose layer directories (snapshots, bottom first) are `layers`.
pub fn scan(layers: &[PathBuf]) -> Vec<Package> {
    let mut out = Vec::new();
    for (path, ecosystem) in DATABASES {
        let parse = |text: &str| match ecosystem {
            Ecosystem::Deb => dpkg(text),
            Ecosystem::Apk => apk(text),
        };
        let views: Vec<Vec<Entry>> = views(layers, path)
            .iter()
            .map(|v| v.as_deref().map(parse).unwrap_or_default())
            .collect();
        let Some(last) = views.last() else { continue };
        for (name, version, arch, license) in last.clone() {
            // The first layer from which on the package is there at this version.
            let has =
                |view: &Vec<Entry>| view.iter().any(|(n, v, _, _)| *n == name && *v == version);
            let layer = views.len() - views.iter().rev().take_while(|v| has(v)).count();
            out.push(Package {
                ecosystem: *ecosystem,
                name,
                version,
                arch,
                license,
                layer,
            });
        }
    }
    // distroless: one status file per package.
    out.extend(distroless(layers));
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out
}

/// Packages of `var/lib/dpkg/status.d/*` (distroless images), each from the layer that holds
/// its file.
fn distroless(layers: &[PathBuf]) -> Vec<Package> {
    let mut found: BTreeMap<String, Package> = BTreeMap::new();
    for (i, dir) in layers.iter().enumerate() {
        let Ok(entries) = std::fs::read_dir(dir.join("var/lib/dpkg/status.d")) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            for (name, version, arch, _) in dpkg(&text) {
                let key = format!("{name} {version}");
                found.entry(key).or_insert(Package {
                    ecosystem: Ecosystem::Deb,
                    name,
                    version,
                    arch,
                    license: None,
                    layer: i,
                });
            }
        }
    }
    found.into_values().collect()
}

/// The distribution's id (`debian`, `alpine`) from the image's `os-release`, for PURLs.
pub fn distro(layers: &[PathBuf]) -> Option<String> {
    let last = |path: &str| views(layers, path).pop().flatten();
    let text = last("etc/os-release").or_else(|| last("usr/lib/os-release"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("ID="))
        .map(|v| v.trim_matches('"').to_string())
}

/// A package's PURL (`pkg:deb/debian/bash@5.2?arch=amd64`).
pub fn purl(p: &Package, distro: Option<&str>) -> String {
    let (kind, default) = match p.ecosystem {
        Ecosystem::Deb => ("deb", "debian"),
        Ecosystem::Apk => ("apk", "alpine"),
    };
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace(':', "%3A")
            .replace('+', "%2B")
    };
    let mut out = format!(
        "pkg:{kind}/{}/{}@{}",
        distro.unwrap_or(default),
        enc(&p.name),
        enc(&p.version)
    );
    if !p.arch.is_empty() {
        out.push_str(&format!("?arch={}", p.arch));
    }
    out
}

/// What made each layer: for layer `i`, its digest and the instruction (`RUN apt-get install
/// … (Dockerfile:4)` when the builder knows where, else the history's `created_by`).
pub struct LayerOrigin {
    /// The layer's diff id.
    pub diff_id: String,
    /// The instruction.
    pub instruction: String,
}

/// A license expression SPDX accepts as written (ids joined by AND/OR/WITH), else none.
fn spdx_license(license: Option<&str>) -> Option<String> {
    let l = license?.trim();
    let ok = !l.is_empty()
        && l.split_whitespace().all(|w| {
            matches!(w, "AND" | "OR" | "WITH")
                || w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        });
    ok.then(|| l.to_string())
}

/// An SPDX 2.3 JSON document for the image `name` (`digest` makes its namespace unique),
/// created at `created` (RFC 3339; the image's own time, so the same image gives the same
/// document).
pub fn spdx(
    name: &str,
    digest: &str,
    created: &str,
    packages: &[Package],
    origins: &[LayerOrigin],
    distro: Option<&str>,
) -> Value {
    let mut spdx_packages = Vec::new();
    let mut relationships = Vec::new();
    for (n, p) in packages.iter().enumerate() {
        let kind = match p.ecosystem {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
        };
        let id: String = format!("SPDXRef-Package-{kind}-{}-{n}", p.name)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let origin = origins.get(p.layer);
        let comment = match origin {
            Some(o) => format!(
                "introduced by layer {} ({}): {}",
                p.layer, o.diff_id, o.instruction
            ),
            None => format!("introduced by layer {}", p.layer),
        };
        spdx_packages.push(json!({
            "name": p.name,
            "SPDXID": id,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": spdx_license(p.license.as_deref()).unwrap_or_else(|| "NOASSERTION".into()),
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(p, distro),
            }],
            "comment": comment,
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": id,
        }));
    }
    let hex = digest.trim_start_matches("sha256:");
    // SPDX wants whole seconds in UTC (`2026-01-01T00:00:00Z`).
    let created = match created.get(..19) {
        Some(seconds) if created.len() > 19 || created.ends_with('Z') => format!("{seconds}Z"),
        _ => created.to_string(),
    };
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("https://rbuild.invalid/spdx/{hex}"),
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: rbuild-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": spdx_packages,
        "relationships": relationships,
    })
}

/// The SPDX document of the image `name` (manifest `digest`, created at `created`) whose layers
/// are `layers` (unpacked first where they are not), each made by `origins[i]`.
pub fn document(
    state: &crate::store::state::State,
    layers: &[rbuild_solver::OutputLayer],
    (name, digest, created): (&str, &str, &str),
    origins: &[LayerOrigin],
) -> crate::store::Result<Value> {
    crate::store::layer::ensure_snapshots(state, layers)?;
    let dirs: Vec<PathBuf> = layers
        .iter()
        .map(|l| state.snapshots.layer_dir(l.diff_id.as_str()))
        .collect();
    let packages = scan(&dirs);
    Ok(spdx(
        name,
        digest,
        created,
        &packages,
        origins,
        distro(&dirs).as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    const ONE: &str =
        "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n";
    const HALF: &str = "Package: removed\nStatus: deinstall ok config-files\nVersion: 1\n";

    #[test]
    fn packages_are_attributed_to_the_layer_that_introduced_them() {
        let l0 = layer(&[
            ("var/lib/dpkg/status", &format!("{ONE}\n{HALF}")),
            ("etc/os-release", "ID=debian\n"),
        ]);
        let l1 = layer(&[("usr/bin/x", "")]);
        let two = format!(
            "{ONE}\nPackage: curl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 7.88.1-10+deb12u5\n"
        );
        let l2 = layer(&[("var/lib/dpkg/status", &two)]);
        let layers: Vec<PathBuf> = [&l0, &l1, &l2]
            .iter()
            .map(|d| d.path().to_path_buf())
            .collect();
        let found = scan(&layers);
        let names: Vec<(&str, usize)> = found.iter().map(|p| (p.name.as_str(), p.layer)).collect();
        assert_eq!(
            names,
            [("base-files", 0), ("curl", 2)],
            "not-installed packages are left out"
        );
        assert_eq!(distro(&layers).as_deref(), Some("debian"));
        assert_eq!(
            purl(&found[1], Some("debian")),
            "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64"
        );
        let apk_layer = layer(&[(
            "lib/apk/db/installed",
            "P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\nP:busybox\nV:1.36.1-r5\nL:GPL-2.0-only\n",
        )]);
        let found = scan(&[apk_layer.path().to_path_buf()]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].license.as_deref(), Some("MIT"));
        let doc = spdx(
            "app",
            "sha256:ab",
            "2026-01-01T00:00:00Z",
            &found,
            &[],
            Some("alpine"),
        );
        assert_eq!(doc["packages"][1]["licenseDeclared"], "MIT");
        assert_eq!(doc["packages"].as_array().unwrap().len(), 2);
        assert_eq!(
            spdx_license(Some("GPL-2.0-only OR MIT")).as_deref(),
            Some("GPL-2.0-only OR MIT")
        );
        assert_eq!(spdx_license(Some("custom:weird license")), None);
    }
}
