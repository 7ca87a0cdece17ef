//! Software bills of materials, made by rbuild itself (no scanner image, no network): the
//! packages of an image's root filesystem, each with the layer that introduced it and the
//! instruction that made that layer, as an SPDX 2.3 JSON document (what BuildKit attaches).
//!
//! Read from the layers (their snapshots, bottom first), so that attribution is exact: a
//! package is introduced by the first layer whose view of the file that lists it (a package
//! database, a lockfile, a binary) lists it at its final version. Distributions' databases
//! are in [`os`] (dpkg, distroless `status.d`, apk, RPM's SQLite), language ecosystems in
//! [`lang`] (Cargo, npm, Python, Go).

mod lang;
mod os;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which ecosystem a package belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ecosystem {
    /// dpkg (Debian, Ubuntu, distroless).
    Deb,
    /// apk (Alpine).
    Apk,
    /// RPM (Fedora, RHEL and its rebuilds).
    Rpm,
    /// Rust crates.
    Cargo,
    /// npm packages.
    Npm,
    /// Python distributions.
    Python,
    /// Go modules.
    Go,
}

impl Ecosystem {
    /// The PURL type (and SPDX id part).
    fn purl_type(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Rpm => "rpm",
            Ecosystem::Cargo => "cargo",
            Ecosystem::Npm => "npm",
            Ecosystem::Python => "pypi",
            Ecosystem::Go => "golang",
        }
    }
}

/// One installed package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// Its ecosystem.
    pub ecosystem: Ecosystem,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture, as the database says it.
    pub arch: String,
    /// License, where the database records one (apk, RPM, npm, Python).
    pub license: Option<String>,
    /// The layer (index, bottom first) that introduced it.
    pub layer: usize,
    /// The file that lists it (a language package's lockfile, metadata or binary).
    pub path: Option<String>,
}

/// A package as a file lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture, if the file says.
    pub arch: String,
    /// License, if the file says.
    pub license: Option<String>,
}

/// Which layer's copy of `path` the merged view of each `layers[..=i]` shows, bottom first:
/// a layer that has the file replaces it; one that whites it (or a directory above it) out
/// (overlayfs's `0:0` character device), or makes a directory above it opaque without
/// having the file, removes it; any other keeps what the layers below gave.
fn owners(layers: &[PathBuf], path: &str) -> Vec<Option<usize>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let ancestors: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
    let mut current = None;
    layers
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let whiteout = |m: &std::fs::Metadata| m.file_type().is_char_device() && m.rdev() == 0;
            match std::fs::symlink_metadata(dir.join(path)) {
                Ok(m) if m.is_file() => current = Some(i),
                Ok(m) if whiteout(&m) => current = None,
                _ if current.is_some() => {
                    let removed = ancestors.iter().any(|a| {
                        let p = dir.join(a);
                        std::fs::symlink_metadata(&p).is_ok_and(|m| {
                            whiteout(&m) || (m.is_dir() && rbuild_runner::diff::is_opaque(&p))
                        })
                    });
                    if removed {
                        current = None;
                    }
                }
                _ => {}
            }
            current
        })
        .collect()
}

/// The packages listed by `path` as the merged view of each `layers[..=i]` shows it, each
/// with the first layer from which on it is listed at its final version; `parse` reads one
/// layer's copy of the file (each copy once).
fn attribute(
    layers: &[PathBuf],
    path: &str,
    parse: &dyn Fn(&std::path::Path) -> Vec<(Ecosystem, Entry)>,
) -> Vec<(Ecosystem, Entry, usize)> {
    let owners = owners(layers, path);
    let mut parsed: BTreeMap<usize, Vec<(Ecosystem, Entry)>> = BTreeMap::new();
    for owner in owners.iter().flatten() {
        parsed
            .entry(*owner)
            .or_insert_with(|| parse(&layers[*owner].join(path)));
    }
    let empty = Vec::new();
    let view = |i: usize| owners[i].map_or(&empty, |o| &parsed[&o]);
    let Some(last) = owners.len().checked_sub(1) else {
        return vec![];
    };
    view(last)
        .iter()
        .map(|(ecosystem, e)| {
            let has = |i: usize| {
                view(i)
                    .iter()
                    .any(|(k, x)| k == ecosystem && x.name == e.name && x.version == e.version)
            };
            let from = (0..=last).rev().take_while(|&i| has(i)).count();
            (*ecosystem, e.clone(), owners.len() - from)
        })
        .collect()
}

/// Where the distributions' databases are, and how to read a copy.
const DATABASES: &[(&str, Ecosystem)] = &[
    ("var/lib/dpkg/status", Ecosystem::Deb),
    ("lib/apk/db/installed", Ecosystem::Apk),
    ("var/lib/rpm/rpmdb.sqlite", Ecosystem::Rpm),
    ("usr/lib/sysimage/rpm/rpmdb.sqlite", Ecosystem::Rpm),
];

/// The packages of the image whose layer directories (snapshots, bottom first) are `layers`:
/// each once (a package several files list is attributed to the earliest layer).
pub fn scan(layers: &[PathBuf]) -> Vec<Package> {
    let mut found = Vec::new();
    for &(path, ecosystem) in DATABASES {
        let parse = move |file: &std::path::Path| -> Vec<(Ecosystem, Entry)> {
            let entries = match ecosystem {
                Ecosystem::Rpm => os::rpm(file),
                _ => {
                    let text = std::fs::read_to_string(file).unwrap_or_default();
                    match ecosystem {
                        Ecosystem::Apk => os::apk(&text),
                        _ => os::dpkg(&text),
                    }
                }
            };
            entries.into_iter().map(|e| (ecosystem, e)).collect()
        };
        found.extend(
            attribute(layers, path, &parse)
                .into_iter()
                .map(|f| (f, None)),
        );
    }
    for (path, kind) in lang::candidates(layers) {
        let parse = |file: &std::path::Path| lang::parse(kind, file);
        let listed = attribute(layers, &path, &parse);
        found.extend(listed.into_iter().map(|f| (f, Some(path.clone()))));
    }
    let mut out: Vec<Package> = found
        .into_iter()
        .map(|((ecosystem, e, layer), path)| Package {
            ecosystem,
            name: e.name,
            version: e.version,
            arch: e.arch,
            license: e.license,
            layer,
            path,
        })
        .collect();
    // distroless: one status file per package.
    out.extend(distroless(layers));
    out.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.version, a.layer).cmp(&(
            b.ecosystem,
            &b.name,
            &b.version,
            b.layer,
        ))
    });
    out.dedup_by(|b, a| (a.ecosystem, &a.name, &a.version) == (b.ecosystem, &b.name, &b.version));
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
            for e in os::dpkg(&text) {
                let key = format!("{} {}", e.name, e.version);
                found.entry(key).or_insert(Package {
                    ecosystem: Ecosystem::Deb,
                    name: e.name,
                    version: e.version,
                    arch: e.arch,
                    license: None,
                    layer: i,
                    path: None,
                });
            }
        }
    }
    found.into_values().collect()
}

/// The distribution's id (`debian`, `alpine`) from the image's `os-release`, for PURLs.
pub fn distro(layers: &[PathBuf]) -> Option<String> {
    let last = |path: &str| {
        let owner = owners(layers, path).pop().flatten()?;
        std::fs::read_to_string(layers[owner].join(path)).ok()
    };
    let text = last("etc/os-release").or_else(|| last("usr/lib/os-release"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("ID="))
        .map(|v| v.trim_matches('"').to_string())
}

/// A package's PURL (`pkg:deb/debian/bash@5.2?arch=amd64`, `pkg:npm/%40types/node@20.1.0`).
pub fn purl(p: &Package, distro: Option<&str>) -> String {
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace(':', "%3A")
            .replace('+', "%2B")
            .replace('@', "%40")
    };
    let kind = p.ecosystem.purl_type();
    let name = match p.ecosystem {
        // The namespace is the distribution.
        Ecosystem::Deb | Ecosystem::Apk | Ecosystem::Rpm => {
            let default = match p.ecosystem {
                Ecosystem::Deb => "debian",
                Ecosystem::Apk => "alpine",
                _ => "fedora",
            };
            format!("{}/{}", distro.unwrap_or(default), enc(&p.name))
        }
        // PEP 503 normalized.
        Ecosystem::Python => p.name.to_lowercase().replace(['_', '.'], "-"),
        // A scope or module path keeps its slashes.
        Ecosystem::Npm | Ecosystem::Go => p.name.split('/').map(enc).collect::<Vec<_>>().join("/"),
        Ecosystem::Cargo => enc(&p.name),
    };
    let mut out = format!("pkg:{kind}/{name}@{}", enc(&p.version));
    if !p.arch.is_empty() {
        out.push_str(&format!("?arch={}", p.arch));
    }
    out
}

/// What made each layer: for layer `i`, its digest and the instruction (`RUN apt-get install
/// … (Dockerfile:4)` when the builder knows where, else the history's `created_by`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
        let kind = p.ecosystem.purl_type();
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
        let mut comment = match origin {
            Some(o) => format!(
                "introduced by layer {} ({}): {}",
                p.layer, o.diff_id, o.instruction
            ),
            None => format!("introduced by layer {}", p.layer),
        };
        if let Some(path) = &p.path {
            comment.push_str(&format!("; listed in /{path}"));
        }
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
    names: (&str, &str, &str),
    origins: &[LayerOrigin],
) -> crate::store::Result<Value> {
    crate::store::layer::ensure_snapshots(state, layers)?;
    let dirs: Vec<PathBuf> = layers
        .iter()
        .map(|l| state.snapshots.layer_dir(l.diff_id.as_str()))
        .collect();
    Ok(document_of(&dirs, names, origins))
}

/// The SPDX document of the directories `dirs` taken as layers, bottom first (an image's
/// snapshots, or a build context alone), `name`d, its namespace made unique by `digest`.
pub fn document_of(
    dirs: &[PathBuf],
    (name, digest, created): (&str, &str, &str),
    origins: &[LayerOrigin],
) -> Value {
    let packages = scan(dirs);
    spdx(
        name,
        digest,
        created,
        &packages,
        origins,
        distro(dirs).as_deref(),
    )
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
