//! Hostile tars against both extractors: layers (`extract::extract_layer`, for base images and
//! cached blobs) and ADD archives (`fileop::extract_archive`). Modelled on containerd's archive
//! breakout tests: each case is a tar crafted to write, link or delete outside the destination.
//!
//! Every case runs in a scratch directory holding `dest/` (the target) and `outside/` (with a
//! `victim` file); afterwards everything but `dest/` must be exactly as before, whatever the
//! outcome. The outcome itself is part of the contract and is asserted: a layer that tries to
//! escape is an error (a registry served a malicious or broken image, the build must stop),
//! while an ADD archive is extracted like GNU tar and Docker do, skipping entries that would
//! escape. Runs as any user; device nodes need root to be created and are skipped otherwise.

use rbuild_runner::extract::extract_layer;
use rbuild_runner::fileop::extract_archive;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use tar::{EntryType, Header};

/// One raw entry; names are written into the header as they are, `..` and all.
enum E {
    File(&'static str, &'static str),
    Dir(&'static str),
    Symlink(&'static str, String),
    Hardlink(&'static str, String),
    Char(&'static str),
    /// A file whose name comes from a PAX `path` record (longer than a header holds).
    PaxFile(String, &'static str),
    /// A file with a PAX xattr record.
    XattrDir(&'static str, &'static str, &'static str),
}

fn header(kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(nix::unistd::geteuid().as_raw().into());
    h.set_gid(nix::unistd::getegid().as_raw().into());
    h.set_mtime(1_000_000);
    h
}

fn set_raw(field: &mut [u8], value: &str) {
    assert!(
        value.len() < field.len(),
        "{value} is too long for a header"
    );
    field.fill(0);
    field[..value.len()].copy_from_slice(value.as_bytes());
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (mut h, name, data): (Header, &str, &[u8]) = match e {
            E::File(name, data) => (
                header(EntryType::Regular, data.len() as u64),
                name,
                data.as_bytes(),
            ),
            E::Dir(name) => (header(EntryType::Directory, 0), name, b""),
            E::Symlink(name, target) | E::Hardlink(name, target) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                };
                let mut h = header(kind, 0);
                set_raw(&mut h.as_old_mut().linkname, target);
                (h, name, b"")
            }
            E::Char(name) => {
                let mut h = header(EntryType::Char, 0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                (h, name, b"")
            }
            E::PaxFile(path, data) => {
                b.append_pax_extensions([("path", path.as_bytes())])
                    .unwrap();
                (
                    header(EntryType::Regular, data.len() as u64),
                    "placeholder",
                    data.as_bytes(),
                )
            }
            E::XattrDir(name, key, value) => {
                let record = format!("SCHILY.xattr.{key}");
                b.append_pax_extensions([(record.as_str(), value.as_bytes())])
                    .unwrap();
                (header(EntryType::Directory, 0), name, b"")
            }
        };
        set_raw(&mut h.as_old_mut().name, name);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// path → (mode, size, content or link target) of everything under `root` except `dest`.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path == root.join("dest") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_file() {
                std::fs::read_to_string(&path).unwrap_or_default()
            } else {
                String::new()
            };
            out.insert(
                path.strip_prefix(root).unwrap().display().to_string(),
                format!("{:o} {} {what}", meta.mode(), meta.nlink()),
            );
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Extraction fails (with a message naming the entry's problem).
    Fails,
    /// Extraction succeeds; the hostile part was contained in `dest` or skipped.
    Contained,
}

use Outcome::{Contained, Fails};

struct Case {
    name: &'static str,
    /// Builds the entries; gets the absolute path of `outside/`.
    entries: fn(&str) -> Vec<E>,
    layer: Outcome,
    archive: Outcome,
    /// Checks on `dest` after a successful extraction.
    check: fn(&Path),
}

fn nothing(_: &Path) {}

/// Why it is one piece: A table: one entry per hostile archive.
#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "absolute name",
            entries: |_| vec![E::File("/outside/abs", "x")],
            layer: Contained,
            archive: Contained,
            check: |d| assert!(d.join("outside/abs").is_file()),
        },
        Case {
            name: "parent in name",
            entries: |_| vec![E::File("../outside/up", "x")],
            layer: Fails,
            archive: Contained,
            check: nothing,
        },
        Case {
            name: "parent in the middle of a name",
            entries: |_| vec![E::Dir("a/"), E::File("a/../../outside/up", "x")],
            layer: Fails,
            archive: Contained,
            check: nothing,
        },
        Case {
            name: "parent in a long PAX name",
            entries: |_| {
                vec![E::PaxFile(
                    format!("{}/../../../outside/pax", "d".repeat(120)),
                    "x",
                )]
            },
            layer: Fails,
            archive: Contained,
            check: nothing,
        },
        Case {
            name: "write through an absolute symlink",
            entries: |outside| {
                vec![
                    E::Symlink("link", outside.to_string()),
                    E::File("link/victim", "pwned"),
                ]
            },
            layer: Fails,
            archive: Fails,
            check: nothing,
        },
        Case {
            name: "write through a relative symlink",
            entries: |_| {
                vec![
                    E::Symlink("link", "../outside".into()),
                    E::File("link/new", "pwned"),
                ]
            },
            layer: Fails,
            archive: Fails,
            check: nothing,
        },
        Case {
            name: "write through a symlink chain",
            entries: |outside| {
                vec![
                    E::Symlink("a", "b".into()),
                    E::Symlink("b", outside.to_string()),
                    E::File("a/victim", "pwned"),
                ]
            },
            layer: Fails,
            archive: Fails,
            check: nothing,
        },
        Case {
            name: "directory through a symlink",
            entries: |outside| vec![E::Symlink("link", outside.to_string()), E::Dir("link/sub/")],
            layer: Fails,
            archive: Fails,
            check: nothing,
        },
        Case {
            name: "symlink replaced by a file",
            entries: |outside| {
                vec![
                    E::Symlink("f", format!("{outside}/victim")),
                    E::File("f", "pwned"),
                ]
            },
            layer: Contained,
            archive: Contained,
            check: |d| {
                assert_eq!(std::fs::read_to_string(d.join("f")).unwrap(), "pwned");
                assert!(!d.join("f").is_symlink());
            },
        },
        Case {
            name: "symlink replaced by a directory",
            entries: |outside| vec![E::Symlink("d", outside.to_string()), E::Dir("d/")],
            layer: Contained,
            archive: Contained,
            check: |d| assert!(d.join("d").is_dir() && !d.join("d").is_symlink()),
        },
        Case {
            name: "hard link to an absolute path",
            entries: |outside| vec![E::Hardlink("h", format!("{outside}/victim"))],
            layer: Fails,
            archive: Fails,
            check: nothing,
        },
        Case {
            name: "hard link with parents",
            entries: |_| vec![E::Hardlink("h", "../outside/victim".into())],
            layer: Fails,
            archive: Fails,
            check: nothing,
        },
        Case {
            name: "hard link through a symlink",
            entries: |outside| {
                vec![
                    E::Symlink("link", outside.to_string()),
                    E::Hardlink("h", "link/victim".into()),
                ]
            },
            layer: Fails,
            archive: Fails,
            check: nothing,
        },
        Case {
            name: "hard link to a symlink, then written",
            entries: |outside| {
                vec![
                    E::Symlink("s", format!("{outside}/victim")),
                    E::Hardlink("h", "s".into()),
                    E::File("h", "pwned"),
                ]
            },
            // A layer links the symlink itself (as Docker); tar refuses a hard link whose
            // target resolves outside the destination.
            layer: Contained,
            archive: Fails,
            check: |d| assert_eq!(std::fs::read_to_string(d.join("h")).unwrap(), "pwned"),
        },
        Case {
            name: "whiteout with parents",
            entries: |_| vec![E::File("../outside/.wh.victim", "")],
            layer: Fails,
            archive: Contained,
            check: nothing,
        },
        Case {
            name: "whiteout through a symlink",
            entries: |outside| {
                vec![
                    E::Symlink("link", outside.to_string()),
                    E::File("link/.wh.victim", ""),
                ]
            },
            layer: Fails,
            archive: Fails,
            check: nothing,
        },
        Case {
            name: "opaque marker through a symlink",
            entries: |outside| {
                vec![
                    E::Symlink("link", outside.to_string()),
                    E::File("link/.wh..wh..opq", ""),
                ]
            },
            layer: Fails,
            archive: Fails,
            check: nothing,
        },
        Case {
            name: "duplicate entries: the last wins",
            entries: |_| {
                vec![
                    E::File("f", "1"),
                    E::File("f", "2"),
                    E::Dir("d/"),
                    E::File("d/x", "x"),
                    E::File("d", "now a file"),
                ]
            },
            layer: Contained,
            archive: Contained,
            check: |d| {
                assert_eq!(std::fs::read_to_string(d.join("f")).unwrap(), "2");
                assert_eq!(std::fs::read_to_string(d.join("d")).unwrap(), "now a file");
            },
        },
        Case {
            // Files are written on threads while the stream goes on: the directory under
            // many pending files is replaced by a symlink to the outside, and a hard link is
            // made to a file that was just handed out.
            name: "a directory with pending files replaced by a symlink",
            entries: |outside| {
                let mut entries = vec![E::Dir("d/")];
                entries.extend((0..40).map(|i| E::File(["d/0", "d/1", "d/2", "d/3"][i % 4], "x")));
                entries.push(E::File("d/victim", "pwned"));
                entries.push(E::Hardlink("h", "d/victim".to_string()));
                entries.push(E::Symlink("d", outside.to_string()));
                entries.push(E::File("g", "y"));
                entries
            },
            layer: Contained,
            archive: Contained,
            check: |d| {
                assert!(d.join("d").is_symlink());
                assert_eq!(std::fs::read_to_string(d.join("h")).unwrap(), "pwned");
                assert_eq!(std::fs::read_to_string(d.join("g")).unwrap(), "y");
            },
        },
        Case {
            name: "overlay attributes are not set",
            entries: |_| vec![E::XattrDir("dir/", "trusted.overlay.redirect", "/outside")],
            layer: Contained,
            archive: Contained,
            check: |d| {
                let out = std::process::Command::new("getfattr")
                    .args(["-d", "-m", "-"])
                    .arg(d.join("dir"))
                    .output();
                if let Ok(out) = out {
                    let text = String::from_utf8_lossy(&out.stdout);
                    assert!(!text.contains("overlay"), "{text}");
                }
            },
        },
        Case {
            name: "device node",
            entries: |_| vec![E::Char("null")],
            layer: Contained,
            archive: Contained,
            check: |d| {
                // Created (inside) with privilege, skipped without.
                if nix::unistd::geteuid().is_root() {
                    use std::os::unix::fs::FileTypeExt;
                    let meta = std::fs::symlink_metadata(d.join("null")).unwrap();
                    assert!(meta.file_type().is_char_device());
                } else {
                    assert!(!d.join("null").exists());
                }
            },
        },
    ]
}

fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dest")).unwrap();
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/victim"), "safe").unwrap();
    std::fs::set_permissions(
        dir.path().join("outside/victim"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    dir
}

#[test]
fn hostile_tars_stay_inside_the_destination() {
    let mut failures = Vec::new();
    for case in cases() {
        for (kind, expected) in [("layer", case.layer), ("archive", case.archive)] {
            let dir = scratch();
            let root = dir.path();
            let outside = root.join("outside").display().to_string();
            let bytes = tar_of(&(case.entries)(&outside));
            let before = snapshot(root);
            let dest = root.join("dest");
            let result: Result<(), String> = if kind == "layer" {
                extract_layer(&bytes[..], &dest).map_err(|e| e.to_string())
            } else {
                let archive = root.join("archive.tar");
                std::fs::File::create(&archive)
                    .unwrap()
                    .write_all(&bytes)
                    .unwrap();
                let r = extract_archive(&archive, &dest).map(|extracted| {
                    assert!(extracted, "{}: not recognized as an archive", case.name)
                });
                std::fs::remove_file(&archive).unwrap();
                r
            };
            let after = snapshot(root);
            if before != after {
                failures.push(format!(
                    "{} ({kind}): changed outside the destination:\n  before {before:?}\n  after  {after:?}",
                    case.name
                ));
            }
            let outcome = if result.is_ok() { Contained } else { Fails };
            if outcome != expected {
                failures.push(format!(
                    "{} ({kind}): expected {expected:?}, got {result:?}",
                    case.name
                ));
            } else if result.is_ok() {
                (case.check)(&dest);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn archives_are_recognized_by_content_in_every_compression() {
    let dir = tempfile::tempdir().unwrap();
    let plain = tar_of(&[E::Dir("d/"), E::File("d/f", "content")]);
    let gzip = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&plain).unwrap();
        e.finish().unwrap()
    };
    let zstd = zstd::encode_all(&plain[..], 1).unwrap();
    let bzip2 = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(&plain).unwrap();
        e.finish().unwrap()
    };
    let xz = {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(&plain).unwrap();
        e.finish().unwrap()
    };
    for (name, bytes) in [
        ("plain", plain.clone()),
        ("gzip", gzip),
        ("zstd", zstd),
        ("bzip2", bzip2),
        ("xz", xz),
    ] {
        // A name that says nothing: only the content counts, as in Docker.
        let archive = dir.path().join(format!("{name}.bin"));
        std::fs::write(&archive, bytes).unwrap();
        let dest = dir.path().join(name);
        std::fs::create_dir(&dest).unwrap();
        assert!(extract_archive(&archive, &dest).unwrap(), "{name}");
        assert_eq!(
            std::fs::read_to_string(dest.join("d/f")).unwrap(),
            "content",
            "{name}"
        );
    }
    let text = dir.path().join("notes.tar.gz");
    std::fs::write(&text, "just text").unwrap();
    assert!(!extract_archive(&text, &dir.path().join("plain")).unwrap());
}
