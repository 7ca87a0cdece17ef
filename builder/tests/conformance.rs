//! BuildKit conformance: every `testdata/conformance/<case>/` is built by rbuild and compared
//! with what dockerd's BuildKit built from the same Dockerfile and context, recorded in
//! `<case>/buildkit.txt`: the image config, the history (without dates), and every file of the
//! root filesystem that differs from the base image (path, mode, owner, type, size of regular
//! files, link target). Needs root (CI runs as root).
//!
//! To (re)record after adding a case, with the reference builders running
//! (`../shared/tools/reference-builders.sh`):
//! `RBUILD_RECORD_BUILDKIT=1 DOCKER_HOST=unix:///tmp/ref/docker/docker.sock cargo test -p rbuild-builder --test conformance`
//! The base image is pushed to the reference registry at 127.0.0.1:5000 and BuildKit builds the
//! case with `FROM rbuild-demo/busybox` pointed there.
//!
//! The reference is dockerd's BuildKit v0.8. Where current BuildKit behaves differently and rbuild
//! follows it (ARCHITECTURE.md, "BuildKit after v0.8"), `<case>/after-v0.8.txt` says so: `#`
//! lines say why, then pairs of a `- ` line as v0.8 recorded it and the `+ ` line current
//! BuildKit writes instead, applied to `buildkit.txt` before comparing (a recording keeps v0.8's
//! truth; the deviations stay written down).

mod common;

use common::{Env, testdata, tool};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Copies a case the way a git checkout has it: files 0644 (0755 if executable), directories
/// 0755, symlinks as they are, so recorded and tested builds see the same context.
fn checkout(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name == "buildkit.txt" || name == "after-v0.8.txt" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let meta = std::fs::symlink_metadata(&src).unwrap();
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if meta.is_dir() {
            checkout(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
            let mode = if meta.mode() & 0o100 != 0 {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// path → "mode uid:gid type size link" for every entry of an unpacked root filesystem.
fn entries(rootfs: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![rootfs.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let (kind, size, link) = if ft.is_symlink() {
                (
                    "l",
                    String::new(),
                    std::fs::read_link(&path).unwrap().display().to_string(),
                )
            } else if ft.is_dir() {
                stack.push(path.clone());
                ("d", String::new(), String::new())
            } else if ft.is_file() {
                ("f", meta.len().to_string(), String::new())
            } else {
                ("o", String::new(), String::new())
            };
            let rel = path.strip_prefix(rootfs).unwrap().display().to_string();
            let (uid, gid) = owner(&path, &meta);
            let desc = format!(
                "{:o} {uid}:{gid} {kind} {size} {link}",
                meta.mode() & 0o7777,
            );
            out.insert(rel, desc.trim_end().to_string());
        }
    }
    out
}

/// `desc` with the owners of symlinks replaced by `?:?`.
fn symlink_owners_unknown(desc: &str) -> String {
    desc.lines()
        .map(|l| {
            let fields: Vec<&str> = l.splitn(5, ' ').collect();
            // "+ PATH MODE UID:GID KIND SIZE LINK"
            if fields.len() == 5 && fields[0] == "+" && fields[4].starts_with("l ") {
                format!("+ {} {} ?:? {}", fields[1], fields[2], fields[4])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The owner an image gives `path`. Unpacked as root, the file's own; unpacked rootless
/// (`umoci unpack --rootless`, when the tests run unprivileged), every file belongs to the
/// user and umoci keeps the image's owner in the `user.rootlesscontainers` xattr (a protobuf
/// message: uid = field 1, gid = field 2; absent means 0:0).
fn owner(path: &Path, meta: &std::fs::Metadata) -> (u32, u32) {
    if nix::unistd::geteuid().is_root() {
        return (meta.uid(), meta.gid());
    }
    let Ok(Some(bytes)) = rbuild_runner::sys::xattr::get(path, "user.rootlesscontainers") else {
        return (0, 0);
    };
    let (mut uid, mut gid, mut i) = (0u32, 0u32, 0usize);
    let varint = |i: &mut usize| {
        let (mut v, mut shift) = (0u64, 0);
        while *i < bytes.len() {
            let b = bytes[*i];
            *i += 1;
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    };
    while i < bytes.len() {
        let tag = varint(&mut i);
        // u32::MAX is the protocol's "not set": the image's owner is then root.
        let value = (varint(&mut i) as u32) % u32::MAX;
        match tag >> 3 {
            1 => uid = value,
            2 => gid = value,
            _ => {}
        }
    }
    (uid, gid)
}

/// The comparable description of an image: config, history, and files differing from the base.
fn describe(
    layout: &Path,
    reference: &str,
    rootfs: &Path,
    base: &BTreeMap<String, String>,
) -> String {
    let config: serde_json::Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci:{}:{reference}", layout.display()),
        ],
    ))
    .unwrap();
    let mut out = format!(
        "config {}\n",
        serde_json::to_string(&config["config"]).unwrap()
    );
    for h in config["history"].as_array().into_iter().flatten() {
        let layer = if h["empty_layer"].as_bool().unwrap_or(false) {
            "empty"
        } else {
            "layer"
        };
        out.push_str(&format!(
            "history {} {layer}\n",
            h["created_by"].as_str().unwrap_or("")
        ));
    }
    let files = entries(rootfs);
    for (path, desc) in &files {
        if base.get(path) != Some(desc) {
            out.push_str(&format!("+ {path} {desc}\n"));
        }
    }
    for path in base.keys().filter(|p| !files.contains_key(*p)) {
        out.push_str(&format!("- {path}\n"));
    }
    out
}

fn unpack(layout: &Path, reference: &str, bundle: &Path) -> PathBuf {
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{reference}", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    bundle.join("rootfs")
}

/// `expected` (v0.8's recording) with the lines current BuildKit writes differently replaced,
/// as `<case>/after-v0.8.txt` lists them.
fn after_v08(case: &Path, expected: String) -> String {
    let Ok(text) = std::fs::read_to_string(case.join("after-v0.8.txt")) else {
        return expected;
    };
    let mut lines: Vec<String> = expected.lines().map(String::from).collect();
    let mut pending: Option<&str> = None;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        match (line.split_at(2), pending.take()) {
            (("- ", old), None) => pending = Some(old),
            (("+ ", new), Some(old)) => {
                let at = lines
                    .iter()
                    .position(|l| l == old)
                    .unwrap_or_else(|| panic!("{}: no line {old:?} to replace", case.display()));
                lines[at] = new.to_string();
            }
            _ => panic!("{}: expected `- ` then `+ `: {line}", case.display()),
        }
    }
    assert!(
        pending.is_none(),
        "{}: a `- ` line without `+ `",
        case.display()
    );
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(testdata().join("conformance"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    cases
}

#[test]
fn rbuild_builds_what_buildkit_builds() {
    require_root!();
    let env = Env::new();
    env.base_image();
    // The base image's own files, as rbuild exports it.
    let base_ctx = env.path("busybox-ctx");
    let base_tar = env.path("base.tar");
    env.rbuild(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={}", base_tar.display()),
        base_ctx.to_str().unwrap(),
    ])
    .ok();
    let base_layout = env.path("base-layout");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}", base_tar.display()),
            &format!("oci:{}:base", base_layout.display()),
        ],
    );
    let base = entries(&unpack(&base_layout, "base", &env.path("base-bundle")));

    let record = std::env::var_os("RBUILD_RECORD_BUILDKIT").is_some();
    if record {
        env.rbuild(&[
            "push",
            "rbuild-demo/busybox",
            "127.0.0.1:5000/rbuild-demo/busybox:latest",
        ])
        .ok();
    }
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let ctx = env.path(&format!("ctx-{name}"));
        checkout(&case, &ctx);
        let expected_file = case.join("buildkit.txt");
        if record {
            // BuildKit reads the base from the registry, through a Dockerfile outside the
            // context (the context, Dockerfile included, stays as rbuild sees it).
            let text = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
            let dockerfile = env.path(&format!("bk-{name}.Dockerfile"));
            std::fs::write(
                &dockerfile,
                text.replace("rbuild-demo/busybox", "127.0.0.1:5000/rbuild-demo/busybox"),
            )
            .unwrap();
            let image = format!("rbuild-conformance-{name}");
            let status = Command::new("/usr/bin/docker")
                .args([
                    "build",
                    "--network=host",
                    "-q",
                    "-t",
                    &image,
                    "-f",
                    dockerfile.to_str().unwrap(),
                    ctx.to_str().unwrap(),
                ])
                .env("DOCKER_BUILDKIT", "1")
                .status()
                .unwrap();
            assert!(status.success(), "BuildKit failed on {name}");
            let archive = env.path(&format!("bk-{name}.tar"));
            let saved = Command::new("/usr/bin/docker")
                .args(["save", &image, "-o", archive.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(saved.success());
            let layout = env.path(&format!("bk-{name}"));
            tool(
                "skopeo",
                &[
                    "copy",
                    &format!("docker-archive:{}", archive.display()),
                    &format!("oci:{}:x", layout.display()),
                ],
            );
            let rootfs = unpack(&layout, "x", &env.path(&format!("bk-{name}-bundle")));
            std::fs::write(&expected_file, describe(&layout, "x", &rootfs, &base)).unwrap();
        }
        let archive = env.path(&format!("rb-{name}.tar"));
        let built = env.rbuild(&[
            "build",
            "-q",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            ctx.to_str().unwrap(),
        ]);
        if built.code != 0 {
            failures.push(format!("{name}: rbuild failed:\n{}", built.stderr));
            continue;
        }
        let layout = env.path(&format!("rb-{name}"));
        tool(
            "skopeo",
            &[
                "copy",
                &format!("oci-archive:{}", archive.display()),
                &format!("oci:{}:x", layout.display()),
            ],
        );
        let rootfs = unpack(&layout, "x", &env.path(&format!("rb-{name}-bundle")));
        let got = describe(&layout, "x", &rootfs, &base);
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_else(|_| {
            panic!(
                "{} is missing: record it (see this file's docs)",
                expected_file.display()
            )
        });
        let expected = after_v08(&case, expected);
        // A rootless unpack cannot record the owner of a symlink (no user xattrs on them).
        let (got, expected) = if nix::unistd::geteuid().is_root() {
            (got, expected)
        } else {
            (
                symlink_owners_unknown(&got),
                symlink_owners_unknown(&expected),
            )
        };
        if got != expected {
            let diff: Vec<String> = expected
                .lines()
                .filter(|l| !got.lines().any(|g| g == *l))
                .map(|l| format!("  BuildKit: {l}"))
                .chain(
                    got.lines()
                        .filter(|l| !expected.lines().any(|e| e == *l))
                        .map(|l| format!("  rbuild:   {l}")),
                )
                .collect();
            failures.push(format!(
                "{name} differs from BuildKit:\n{}",
                diff.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
