//! End to end, COPY and ADD: .dockerignore, --exclude and --parents, heredocs, --link,
//! --chmod, and ADD's downloads (from a local HTTP server, with checksums and
//! Last-Modified). Needs root.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn dockerignore_leaves_files_out_of_copies_and_cache_keys() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM rbuild-demo/busybox\nCOPY . /app/\nRUN ls -R /app > /listing\n",
            ),
            (
                ".dockerignore",
                "# build outputs\n*.log\ntarget\n!target/keep.txt\n**/secret*\n",
            ),
            ("main.c", "int main(){}\n"),
            ("debug.log", "noise\n"),
            ("target/out.o", "binary\n"),
            ("target/keep.txt", "kept\n"),
            ("src/deep/secret.key", "hush\n"),
            ("src/deep/ok.c", "ok\n"),
        ],
    );
    env.rbuild(&["build", "-t", "ign:1", ctx.to_str().unwrap()])
        .ok();
    let find = env
        .rbuild(&["run", "--rm", "ign:1", "find", "/app", "-type", "f"])
        .ok();
    let mut files: Vec<&str> = find.stdout.lines().collect();
    files.sort();
    assert_eq!(
        files,
        [
            "/app/.dockerignore",
            "/app/Dockerfile",
            "/app/main.c",
            "/app/src/deep/ok.c",
            "/app/target/keep.txt"
        ]
    );
    // Ignored files are not part of the cache key.
    std::fs::write(ctx.join("debug.log"), "more noise\n").unwrap();
    std::fs::write(ctx.join("target/out.o"), "rebuilt\n").unwrap();
    let again = env
        .rbuild(&["build", "-t", "ign:1", ctx.to_str().unwrap()])
        .ok();
    assert!(
        Progress::parse(&again.stderr).ran().is_empty(),
        "{}",
        again.stderr
    );
    // Naming an ignored file is an error, as in BuildKit.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM rbuild-demo/busybox\nCOPY debug.log /\n",
    )
    .unwrap();
    let r = env.rbuild(&["build", ctx.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("ctx/Dockerfile:2:1: error: \"/debug.log\": not found"),
        "{}",
        r.stderr
    );
}

#[test]
fn copy_exclude_and_parents() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let dockerfile = "FROM rbuild-demo/busybox AS base\n\
RUN mkdir -p /st/keep /st/drop && echo k > /st/keep/k && echo d > /st/drop/d\n\
FROM rbuild-demo/busybox\n\
COPY --exclude=*/*.png . /1/\n\
COPY --exclude=*.mp3 dir3/ /2/\n\
COPY --exclude=*.png --exclude=*.pdf dir* /3/\n\
COPY --parents ./x/./y/*.txt /4/\n\
COPY --parents src/**/*.txt /5/\n\
COPY --parents dir1/f2.txt dir3/b.mpeg /6/\n\
COPY --from=base --exclude=drop /st /7/\n\
RUN find /1 /2 /3 /4 /5 /6 /7 | sort > /listing\n";
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", dockerfile),
            ("dir1/f1.png", "1"),
            ("dir1/f2.txt", "2"),
            ("dir2/f3.pdf", "3"),
            ("dir2/f4.png", "4"),
            ("dir3/a.mp3", "5"),
            ("dir3/b.mpeg", "6"),
            ("x/y/a.txt", "7"),
            ("x/y/b.txt", "8"),
            ("src/a.txt", "9"),
            ("src/x/b.txt", "10"),
            ("src/x/y/c.txt", "11"),
            ("src/x/y/c.md", "12"),
        ],
    );
    env.rbuild(&["build", "-t", "sel:1", ctx.to_str().unwrap()])
        .ok();
    let listing = env
        .rbuild(&["run", "--rm", "sel:1", "cat", "/listing"])
        .ok()
        .stdout;
    let expected = [
        // --exclude patterns match below the source path: */*.png reaches into dir1 and dir2.
        "/1",
        "/1/Dockerfile",
        "/1/dir1",
        "/1/dir1/f2.txt",
        "/1/dir2",
        "/1/dir2/f3.pdf",
        "/1/dir3",
        "/1/dir3/a.mp3",
        "/1/dir3/b.mpeg",
        "/1/src",
        "/1/src/a.txt",
        "/1/src/x",
        "/1/src/x/b.txt",
        "/1/src/x/y",
        "/1/src/x/y/c.md",
        "/1/src/x/y/c.txt",
        "/1/x",
        "/1/x/y",
        "/1/x/y/a.txt",
        "/1/x/y/b.txt",
        "/2",
        "/2/b.mpeg",
        // Each directory dir* matches copies its contents, filtered.
        "/3",
        "/3/a.mp3",
        "/3/b.mpeg",
        "/3/f2.txt",
        // Parents below the /./ pivot are kept.
        "/4",
        "/4/y",
        "/4/y/a.txt",
        "/4/y/b.txt",
        // ** reaches any depth; directories with nothing selected are not created.
        "/5",
        "/5/src",
        "/5/src/a.txt",
        "/5/src/x",
        "/5/src/x/b.txt",
        "/5/src/x/y",
        "/5/src/x/y/c.txt",
        "/6",
        "/6/dir1",
        "/6/dir1/f2.txt",
        "/6/dir3",
        "/6/dir3/b.mpeg",
        "/7",
        "/7/keep",
        "/7/keep/k",
    ];
    assert_eq!(listing.lines().collect::<Vec<_>>(), expected);
    // A file that every copy reading it excludes is not part of any cache key.
    std::fs::write(ctx.join("dir1/f1.png"), "changed").unwrap();
    let again = env
        .rbuild(&["build", "-t", "sel:1", ctx.to_str().unwrap()])
        .ok();
    assert!(
        Progress::parse(&again.stderr).ran().is_empty(),
        "{}",
        again.stderr
    );
    // A file a copy selects is.
    std::fs::write(ctx.join("src/x/y/c.txt"), "changed").unwrap();
    let again = env
        .rbuild(&["build", "-t", "sel:1", ctx.to_str().unwrap()])
        .ok();
    let ran = Progress::parse(&again.stderr).ran();
    assert!(
        ran.iter()
            .any(|s| s.contains("COPY --parents src/**/*.txt /5/")),
        "{}",
        again.stderr
    );
    // --parents without wildcards requires the path to exist.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM rbuild-demo/busybox\nCOPY --parents x/./y/missing.txt /d/\n",
    )
    .unwrap();
    let r = env.rbuild(&["build", ctx.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("ctx/Dockerfile:2:1: error: \"/x/y/missing.txt\": not found"),
        "{}",
        r.stderr
    );
}

#[test]
fn heredocs_in_run_and_copy() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let dockerfile = "FROM rbuild-demo/busybox\n\
ARG NAME=world\n\
RUN <<EOF\n\
echo \"hello $NAME\" > /greeting\n\
EOF\n\
RUN <<-SCRIPT\n\
\t#!/bin/sh\n\
\techo \"from a script: $0\" > /script-out\n\
\tSCRIPT\n\
RUN cat <<A > /a && cat <<'B' > /b\n\
first $NAME\n\
A\n\
second $NAME\n\
B\n\
COPY <<EOF /etc/config.txt\n\
name=$NAME\n\
EOF\n\
COPY <<'RAW' <<-TABS /files/\n\
$NOT_EXPANDED \"quoted\"\n\
RAW\n\
\ttabbed\n\
\tTABS\n";
    let ctx = env.context("ctx", &[("Dockerfile", dockerfile)]);
    env.rbuild(&["build", "-t", "here:1", ctx.to_str().unwrap()])
        .ok();
    let cat = |path: &str| {
        env.rbuild(&["run", "--rm", "here:1", "cat", path])
            .ok()
            .stdout
    };
    assert_eq!(cat("/greeting"), "hello world\n");
    assert_eq!(cat("/script-out"), "from a script: /dev/pipes/SCRIPT\n");
    assert_eq!(cat("/a"), "first world\n");
    assert_eq!(cat("/b"), "second $NAME\n");
    assert_eq!(cat("/etc/config.txt"), "name=world\n");
    assert_eq!(cat("/files/RAW"), "$NOT_EXPANDED \"quoted\"\n");
    assert_eq!(cat("/files/TABS"), "tabbed\n");
    let mode = env
        .rbuild(&[
            "run",
            "--rm",
            "here:1",
            "stat",
            "-c",
            "%a %u",
            "/etc/config.txt",
        ])
        .ok()
        .stdout;
    assert_eq!(mode, "644 0\n");
}

#[test]
fn add_downloads_urls_with_checksum_and_last_modified() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let served = env.path("served");
    std::fs::create_dir_all(&served).unwrap();
    let set_file = |name: &str, content: &[u8], mtime: u64| {
        let path = served.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(mtime))
            .unwrap();
    };
    set_file("data.txt", b"v1", 1_600_000_000);
    // A real gzip'd tar: ADD never extracts downloads.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "inside", &b"x"[..]).unwrap();
    let tgz = tar.into_inner().unwrap().finish().unwrap();
    set_file("a.tar.gz", &tgz, 1_500_000_000);
    let server = HttpServer::start(&served);
    let base = format!("http://127.0.0.1:{}", server.port);
    let sum = sha256_digest(b"v1");
    let dockerfile = format!(
        "FROM rbuild-demo/busybox\n\
ADD {base}/data.txt /d/\n\
ADD --checksum={sum} {base}/data.txt /named.txt\n\
ADD --chmod=644 {base}/a.tar.gz /arch/\n\
RUN stat -c '%n %a %Y %s' /d/data.txt /named.txt /arch/a.tar.gz > /stats && ls /arch > /arch-list\n"
    );
    let ctx = env.context("ctx", &[("Dockerfile", &dockerfile)]);
    let build = || {
        env.rbuild(&[
            "build",
            "--progress=plain",
            "-t",
            "dl:1",
            ctx.to_str().unwrap(),
        ])
    };
    build().ok();
    let cat = |path: &str| {
        env.rbuild(&["run", "--rm", "dl:1", "cat", path])
            .ok()
            .stdout
    };
    // As BuildKit: mode 0600 unless --chmod, the Last-Modified time, and archives stay files.
    assert_eq!(
        cat("/stats"),
        format!(
            "/d/data.txt 600 1600000000 2\n/named.txt 600 1600000000 2\n/arch/a.tar.gz 644 1500000000 {}\n",
            tgz.len()
        )
    );
    assert_eq!(cat("/arch-list"), "a.tar.gz\n");

    // Nothing changed on the server: every step is cached.
    let again = build().ok();
    let progress = Progress::parse(&again.stderr);
    assert!(
        progress
            .ran()
            .iter()
            .all(|s| !s.contains("ADD") && !s.contains("RUN")),
        "{}",
        again.stderr
    );

    // New content on the server: the plain ADD downloads it and runs again; the one pinned by
    // its checksum keeps the content it has (no request needed), as with BuildKit.
    set_file("data.txt", b"v2", 1_700_000_000);
    build().ok();
    assert_eq!(cat("/d/data.txt"), "v2");
    assert_eq!(cat("/named.txt"), "v1");
    assert!(cat("/stats").starts_with("/d/data.txt 600 1700000000 2\n"));

    // A checksum that the content does not have fails the download, naming both digests.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let ctx_sum = env.context(
        "ctx-sum",
        &[(
            "Dockerfile",
            &format!("FROM rbuild-demo/busybox\nADD --checksum={wrong} {base}/data.txt /\n"),
        )],
    );
    let failed = env.rbuild(&["build", ctx_sum.to_str().unwrap()]);
    assert_ne!(failed.code, 0);
    assert!(
        failed.stderr.contains("checksum mismatch") && failed.stderr.contains(&wrong),
        "{}",
        failed.stderr
    );

    // A missing file is a clear error naming the URL and the status.
    let ctx404 = env.context(
        "ctx404",
        &[(
            "Dockerfile",
            &format!("FROM rbuild-demo/busybox\nADD {base}/nope.txt /\n"),
        )],
    );
    let missing = env.rbuild(&["build", ctx404.to_str().unwrap()]);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains(&format!("{base}/nope.txt")) && missing.stderr.contains("404"),
        "{}",
        missing.stderr
    );
    assert!(env.leaked_mounts().is_empty());
}

#[test]
fn copy_link_layers_do_not_depend_on_the_stage() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let dockerfile = |marker: &str| {
        format!(
            "FROM rbuild-demo/busybox\n\
RUN mkdir /real && ln -s /real /app && echo {marker} > /marker\n\
COPY --link a.txt /app/\n\
RUN ls -ld /app | cut -c1 > /app-kind && cat /app/a.txt > /seen\n"
        )
    };
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", &dockerfile("one")), ("a.txt", "linked")],
    );
    let first = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "-t",
            "link:1",
            ctx.to_str().unwrap(),
        ])
        .ok();
    let cat = |path: &str| {
        env.rbuild(&["run", "--rm", "link:1", "cat", path])
            .ok()
            .stdout
    };
    // The copy was made on an empty filesystem: /app is a directory in its layer, which
    // replaces the stage's symlink (BuildKit's --link semantics), rather than a write through
    // the symlink into /real.
    assert_eq!(cat("/app-kind"), "d\n");
    assert_eq!(cat("/seen"), "linked");
    let copy_step = |stderr: &str| {
        Progress::parse(stderr)
            .cached_steps()
            .iter()
            .any(|s| s.contains("COPY --link"))
    };
    assert!(!copy_step(&first.stderr));
    // A change below it re-runs the RUN before it, but the linked copy is reused.
    std::fs::write(ctx.join("Dockerfile"), dockerfile("two")).unwrap();
    let second = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "-t",
            "link:1",
            ctx.to_str().unwrap(),
        ])
        .ok();
    assert!(copy_step(&second.stderr), "{}", second.stderr);
    assert_eq!(cat("/marker"), "two\n");
    assert_eq!(cat("/seen"), "linked");
}

#[test]
fn copy_chmod_octal_and_symbolic() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM rbuild-demo/busybox\n\
COPY --chmod=u+x,g-r run.sh /bin/\n\
COPY --chmod=a=rX dir /d/\n\
COPY --chmod=600 run.sh /octal\n\
RUN stat -c '%n %a' /bin/run.sh /d /d/f /d/sub /octal > /modes\n",
            ),
            ("run.sh", "#!/bin/sh\n"),
            ("dir/f", "f"),
            ("dir/sub/g", "g"),
        ],
    );
    env.rbuild(&["build", "-t", "chmod:1", ctx.to_str().unwrap()])
        .ok();
    let modes = env
        .rbuild(&["run", "--rm", "chmod:1", "cat", "/modes"])
        .ok()
        .stdout;
    // Symbolic modes apply to each file's own mode (0644 files, 0755 directories here); X
    // gives execute to directories only.
    assert_eq!(
        modes,
        "/bin/run.sh 704\n/d 755\n/d/f 444\n/d/sub 555\n/octal 600\n"
    );
    let bad = env.context(
        "bad",
        &[
            (
                "Dockerfile",
                "FROM rbuild-demo/busybox\nCOPY --chmod=u+q run.sh /\n",
            ),
            ("run.sh", ""),
        ],
    );
    let failed = env.rbuild(&["build", bad.to_str().unwrap()]);
    assert_ne!(failed.code, 0);
    assert!(failed.stderr.contains("Dockerfile:2:"), "{}", failed.stderr);
}
