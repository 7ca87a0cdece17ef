//! COPY/ADD/mkdir semantics against real overlay mounts. Needs root (CI runs as root); skips
//! elsewhere with a message.

use rbuild_runner::fileop::{self, FileOpSpec, Source};
use rbuild_runner::snapshot::Snapshotter;
use rbuild_solver::FileAction;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The three pattern lists of a copy (the fields of `FileAction::Copy` of the same names).
#[derive(Default)]
struct Selection {
    ignore: Vec<String>,
    include_patterns: Vec<String>,
    exclude_patterns: Vec<String>,
}

/// The snapshot store under `dir`, with the snapshotter `RBUILD_SNAPSHOTTER` names (CI runs
/// these tests once with overlayfs and once with `native`).
fn open_snapshots(dir: &Path) -> Snapshotter {
    let native = std::env::var("RBUILD_SNAPSHOTTER").as_deref() == Ok("native");
    Snapshotter::open(dir).unwrap().with_native(native)
}

/// Whether the tests that need root can run; under CI (`CI` set), where they must, a panic
/// when they cannot.
fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    assert!(
        root || std::env::var_os("CI").is_none(),
        "this test needs root, and under CI every test must run"
    );
    root
}

fn base_layer(s: &Snapshotter) -> String {
    let id = format!("sha256:{}", "c".repeat(64));
    let u = s.new_upper().unwrap();
    std::fs::create_dir_all(u.fs.join("etc")).unwrap();
    std::fs::write(
        u.fs.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(u.fs.join("etc/group"), "root:x:0:\napp:x:1001:\n").unwrap();
    std::fs::create_dir_all(u.fs.join("data")).unwrap();
    std::fs::write(u.fs.join("data/owned"), "o").unwrap();
    std::os::unix::fs::lchown(u.fs.join("data/owned"), Some(123), Some(456)).unwrap();
    std::os::unix::fs::symlink("/data", u.fs.join("link-to-data")).unwrap();
    s.commit(u, &id).unwrap();
    id
}

fn context(dir: &Path) -> PathBuf {
    let c = dir.join("context");
    std::fs::create_dir_all(c.join("sub/deeper")).unwrap();
    std::fs::write(c.join("a.txt"), "a").unwrap();
    std::fs::write(c.join("b.txt"), "b").unwrap();
    std::fs::write(c.join("sub/s"), "s").unwrap();
    std::fs::write(c.join("sub/deeper/d"), "d").unwrap();
    std::fs::set_permissions(c.join("sub/s"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::lchown(c.join("a.txt"), Some(1000), Some(1000)).unwrap();
    // A gzipped tar for ADD.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o640);
    h.set_uid(7);
    h.set_gid(8);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, "inner/x", &b"xx"[..]).unwrap();
    std::fs::write(
        c.join("archive.tgz"),
        tar.into_inner().unwrap().finish().unwrap(),
    )
    .unwrap();
    c
}

/// A COPY of `path` from the context (source 1) to `dest`, with no options.
fn plain_copy(path: &str, dest: &str) -> FileAction {
    FileAction::Copy {
        source: 1,
        paths: vec![path.into()],
        dest: dest.into(),
        owner: None,
        mode: None,
        chmod: None,
        unpack_archives: false,
        ignore: vec![],
        include_patterns: vec![],
        exclude_patterns: vec![],
    }
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// Why it is one piece: One file op with every kind of copy, checked entry by entry afterwards: a table.
#[allow(clippy::too_many_lines)]
#[test]
fn copy_semantics() {
    if !is_root() {
        eprintln!("skipped: needs root for mount namespaces and overlayfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open_snapshots(&dir.path().join("snapshots"));
    let base = vec![base_layer(&s)];
    let ctx = context(dir.path());
    let upper = s.new_upper().unwrap();
    let copy = |source: usize,
                paths: &[&str],
                dest: &str,
                owner: Option<&str>,
                mode: Option<u32>,
                unpack: bool| FileAction::Copy {
        source,
        paths: paths.iter().map(|p| p.to_string()).collect(),
        dest: dest.into(),
        owner: owner.map(String::from),
        mode,
        chmod: None,
        unpack_archives: unpack,
        ignore: vec![],
        include_patterns: vec![],
        exclude_patterns: vec![],
    };
    let filtered = |paths: &[&str], dest: &str, selection: Selection| FileAction::Copy {
        source: 1,
        paths: paths.iter().map(|p| p.to_string()).collect(),
        dest: dest.into(),
        owner: None,
        mode: None,
        chmod: None,
        unpack_archives: false,
        ignore: selection.ignore,
        include_patterns: selection.include_patterns,
        exclude_patterns: selection.exclude_patterns,
    };
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let actions = vec![
        copy(1, &["a.txt"], "/file", None, None, false),
        copy(1, &["*.txt"], "/many/", None, None, false),
        copy(1, &["sub"], "/app", Some("app"), None, false),
        copy(1, &["b.txt"], "/link-to-data/", None, Some(0o600), false),
        copy(1, &["archive.tgz"], "/unpacked/", None, None, true),
        copy(1, &["archive.tgz"], "/kept.tgz", None, None, false),
        copy(
            2,
            &["/data/owned", "/link-to-data/../etc/group"],
            "/fromstage/",
            None,
            None,
            false,
        ),
        FileAction::Mkdir {
            path: "/w/x/y".into(),
            mode: 0o755,
            parents: true,
            owner: Some("app".into()),
        },
        // .dockerignore patterns: a whole directory, and a re-included file in an excluded one.
        filtered(
            &["."],
            "/filtered/",
            Selection {
                ignore: strings(&["*.txt", "!b.txt", "sub", "!sub/deeper/d", "archive.tgz"]),
                ..Selection::default()
            },
        ),
        // --exclude: matched below each source path; a source path itself is never excluded
        // (BuildKit's behaviour, moby/buildkit#5489), so the wildcard's a.txt stays.
        filtered(
            &["sub", "a.txt"],
            "/excluded/",
            Selection {
                exclude_patterns: strings(&["deeper/d", "a.txt"]),
                ..Selection::default()
            },
        ),
        // --parents: the include pattern selects below the pivot, parents are recreated, and
        // directories with nothing selected inside are not created.
        filtered(
            &["/"],
            "/parents/",
            Selection {
                include_patterns: strings(&["sub/**/d"]),
                ..Selection::default()
            },
        ),
        filtered(
            &["sub"],
            "/pivot/",
            Selection {
                include_patterns: strings(&["deeper"]),
                exclude_patterns: strings(&["deeper/nothing"]),
                ..Selection::default()
            },
        ),
    ];
    let sources = vec![
        Source::Layers(vec![]),
        Source::Host(ctx.clone()),
        Source::Layers(base.clone()),
    ];
    let run_dir = dir.path().join("run");
    fileop::run(
        &FileOpSpec {
            snapshots: &s,
            base: &base,
            upper: &upper,
            sources: &sources,
        },
        &actions,
        &run_dir,
    )
    .unwrap();
    let u = &upper.fs;
    let meta =
        |p: &str| std::fs::symlink_metadata(u.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(std::fs::read_to_string(u.join("file")).unwrap(), "a");
    assert_eq!(
        (meta("file").uid(), meta("file").gid()),
        (0, 0),
        "context files belong to root"
    );
    assert!(u.join("many/a.txt").is_file() && u.join("many/b.txt").is_file());
    assert_eq!(
        std::fs::read_to_string(u.join("app/deeper/d")).unwrap(),
        "d",
        "a directory copies its contents"
    );
    assert_eq!(meta("app/s").mode() & 0o777, 0o700);
    assert_eq!((meta("app/s").uid(), meta("app/s").gid()), (1000, 1001));
    assert_eq!(
        (meta("app").uid(), meta("app").gid()),
        (1000, 1001),
        "created destination belongs to --chown"
    );
    assert_eq!(
        meta("data/b.txt").mode() & 0o777,
        0o600,
        "symlinked destination resolved inside the root"
    );
    assert_eq!(
        std::fs::read_to_string(u.join("unpacked/inner/x")).unwrap(),
        "xx"
    );
    assert_eq!(
        (
            meta("unpacked/inner/x").uid(),
            meta("unpacked/inner/x").gid()
        ),
        (7, 8)
    );
    assert!(u.join("kept.tgz").is_file(), "COPY does not extract");
    assert_eq!(
        (meta("fromstage/owned").uid(), meta("fromstage/owned").gid()),
        (123, 456),
        "stage files keep owners"
    );
    assert!(u.join("fromstage/group").is_file());
    assert_eq!((meta("w/x/y").uid(), meta("w/x").uid()), (1000, 1000));
    let mut filtered = Vec::new();
    for entry in walk(&u.join("filtered")) {
        filtered.push(entry);
    }
    filtered.sort();
    assert_eq!(filtered, ["b.txt", "sub", "sub/deeper", "sub/deeper/d"]);
    let listing = |dir: &str| {
        let mut v = walk(&u.join(dir));
        v.sort();
        v
    };
    assert_eq!(listing("excluded"), ["a.txt", "deeper", "s"]);
    assert_eq!(listing("parents"), ["sub", "sub/deeper", "sub/deeper/d"]);
    assert_eq!(
        meta("parents/sub").mode() & 0o7777,
        std::fs::metadata(ctx.join("sub")).unwrap().mode() & 0o7777,
        "a recreated parent has the source directory's mode"
    );
    assert_eq!(listing("pivot"), ["deeper", "deeper/d"]);
    // Nothing else reached the upper directory.
    let mut top: Vec<String> = std::fs::read_dir(u)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        [
            "app",
            "data",
            "excluded",
            "file",
            "filtered",
            "fromstage",
            "kept.tgz",
            "many",
            "parents",
            "pivot",
            "unpacked",
            "w"
        ]
    );
}

#[test]
fn missing_source_is_reported() {
    if !is_root() {
        eprintln!("skipped: needs root for mount namespaces and overlayfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open_snapshots(&dir.path().join("snapshots"));
    let ctx = context(dir.path());
    let upper = s.new_upper().unwrap();
    let err = fileop::run(
        &FileOpSpec {
            snapshots: &s,
            base: &[],
            upper: &upper,
            sources: &[Source::Layers(vec![]), Source::Host(ctx)],
        },
        &[plain_copy("nope", "/x")],
        &dir.path().join("run"),
    )
    .unwrap_err();
    assert!(
        matches!(&err, fileop::Error::Action(m) if m == "\"/nope\": not found"),
        "{err:?}"
    );
}

/// A copy of more files than one queue holds (they are written by several threads, in
/// batches): every file's content, mode and time, and every directory's mode and time (set
/// after its files were written), are the source's.
#[test]
fn a_big_tree_is_copied_exactly() {
    if !is_root() {
        eprintln!("skipped: needs root for mount namespaces and overlayfs");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let s = open_snapshots(&dir.path().join("snapshots"));
    let ctx = dir.path().join("context");
    let set_time = |path: &Path, secs: u64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        std::fs::File::open(path).unwrap().set_modified(t).unwrap();
    };
    let mut dirs = Vec::new();
    for d in 0..60u64 {
        let sub = ctx.join(format!("tree/d{d}/e{}", d % 7));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..90u64 {
            let file = sub.join(format!("f{f}"));
            std::fs::write(&file, format!("{d}/{f}").repeat(f as usize + 1)).unwrap();
            let mode = [0o644, 0o600, 0o755][(f % 3) as usize];
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            set_time(&file, 1_000_000 + d * 100 + f);
        }
        dirs.push((sub, 2_000_000 + d));
    }
    for (i, (sub, secs)) in dirs.iter().enumerate() {
        std::fs::set_permissions(sub, std::fs::Permissions::from_mode(0o750 + i as u32 % 2))
            .unwrap();
        set_time(sub, *secs);
        set_time(sub.parent().unwrap(), secs + 1);
    }
    let upper = s.new_upper().unwrap();
    fileop::run(
        &FileOpSpec {
            snapshots: &s,
            base: &[],
            upper: &upper,
            sources: &[Source::Layers(vec![]), Source::Host(ctx.clone())],
        },
        &[plain_copy("tree", "/copied")],
        &dir.path().join("run"),
    )
    .unwrap();
    let source = ctx.join("tree");
    let copied = upper.fs.join("copied");
    let mut entries = walk(&source);
    entries.sort();
    let mut found = walk(&copied);
    found.sort();
    assert_eq!(entries, found);
    assert!(entries.len() > 5400, "{}", entries.len());
    for rel in &entries {
        let (a, b) = (source.join(rel), copied.join(rel));
        let (ma, mb) = (a.symlink_metadata().unwrap(), b.symlink_metadata().unwrap());
        assert_eq!(ma.mode(), mb.mode(), "{rel}");
        assert_eq!(ma.mtime(), mb.mtime(), "{rel}");
        assert_eq!((mb.uid(), mb.gid()), (0, 0), "{rel}");
        if ma.is_file() {
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "{rel}"
            );
        }
    }
}

/// A loop filesystem made by `mkfs` (`kind`), mounted on `dir`, unmounted when dropped.
struct LoopFs {
    dir: PathBuf,
}

impl LoopFs {
    fn make(kind: &str, image: &Path, dir: &Path) -> LoopFs {
        let run = |program: &str, args: &[&str]| {
            let out = std::process::Command::new(program)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("{program}: {e} (Debian package xfsprogs)"));
            assert!(out.status.success(), "{program} {args:?}: {out:?}");
        };
        std::fs::File::create(image)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        run(
            &format!("mkfs.{kind}"),
            &["-q", "-f", image.to_str().unwrap()],
        );
        std::fs::create_dir_all(dir).unwrap();
        run(
            "mount",
            &["-o", "loop", image.to_str().unwrap(), dir.to_str().unwrap()],
        );
        LoopFs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
    }
}

/// Whether every extent of `path` is shared with another file (`FIEMAP`'s flag, as
/// `filefrag -v` prints it).
fn extents_shared(path: &Path) -> bool {
    let out = std::process::Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let extents: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    !extents.is_empty() && extents.iter().all(|l| l.contains("shared"))
}

/// On xfs, whose `copy_file_range` shares extents, a COPY from a context on the same
/// filesystem as the state directory copies no data: the layer's files are reflinks of the
/// context's (the data goes into the overlay's upper directory, not through the overlay, which
/// is another filesystem).
#[test]
fn copies_on_xfs_share_the_contexts_extents() {
    if !is_root() {
        eprintln!("skipped: needs root for loop mounts and overlayfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = LoopFs::make("xfs", &dir.path().join("xfs.img"), &dir.path().join("xfs"));
    let s = open_snapshots(&fs.dir.join("snapshots"));
    let ctx = fs.dir.join("context");
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(ctx.join("src/big"), &data).unwrap();
    std::fs::write(ctx.join("src/small"), "small").unwrap();
    let upper = s.new_upper().unwrap();
    let copy = plain_copy("src", "/app");
    let spec = FileOpSpec {
        snapshots: &s,
        base: &[base_layer(&s)],
        upper: &upper,
        sources: &[Source::Layers(vec![]), Source::Host(ctx.clone())],
    };
    fileop::run(&spec, &[copy], &fs.dir.join("run")).unwrap();
    let copied = upper.fs.join("app/big");
    assert_eq!(std::fs::read(&copied).unwrap(), data);
    assert_eq!(
        std::fs::read_to_string(upper.fs.join("app/small")).unwrap(),
        "small"
    );
    assert!(
        extents_shared(&copied),
        "not a reflink of the context's file"
    );
    assert!(extents_shared(&ctx.join("src/big")));
}
