//! End to end: the rbuild binary against the real kernel, a real registry and third-party
//! image tools. Needs root (CI runs as root); each test says why it skips elsewhere.

mod common;

use common::{Env, Progress, Registry, testdata, tool};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The digest after `what` in plain progress output.
fn digest_after(stderr: &str, what: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.split(what).nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no {what:?} in:\n{stderr}"))
        .to_string()
}

/// The digest of the manifest a build wrote to the local store.
fn manifest_digest(stderr: &str) -> String {
    digest_after(stderr, "writing manifest ")
}

/// The digest of the manifest a build wrote to its `--output type=oci` archive (its layers
/// compressed, so not the local store's manifest).
fn exported_digest(stderr: &str) -> String {
    digest_after(stderr, "exporting manifest ")
}

/// `skopeo inspect [flag] IMAGE` as JSON (`--raw`: the manifest, `--config`: the config).
fn skopeo_inspect(flag: &str, image: &str) -> serde_json::Value {
    let mut args = vec!["inspect"];
    if !flag.is_empty() {
        args.push(flag);
    }
    args.push(image);
    json(&tool("skopeo", &args))
}

/// The media types of the layers of an OCI archive, bottom first.
fn layer_media_types(archive: &Path) -> Vec<String> {
    let raw = skopeo_inspect("--raw", &format!("oci-archive:{}", archive.display()));
    raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

/// `sha256:<hex>` of some bytes.
fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn unpack(env: &Env, archive: &Path, name: &str) -> std::path::PathBuf {
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

#[test]
fn hello_demo_builds_runs_and_rebuilds_from_cache() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.path("hello");
    copy_dir(&testdata().join("hello"), &ctx);
    let archive = env.path("hello.tar");
    let dest = format!("type=oci,dest={}", archive.display());

    // The short form: no subcommand means build. --load keeps the image in the local store
    // beside the archive.
    let first = env
        .rbuild(&[
            "-t",
            "hello:1.0",
            "--load",
            "--progress=plain",
            "--output",
            &dest,
            ctx.to_str().unwrap(),
        ])
        .ok();
    let digest = manifest_digest(&first.stderr);

    // Third-party tools read the image: the config...
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci-archive:{}", archive.display()),
        ],
    ));
    let c = &config["config"];
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "nobody");
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["sh", "-c", "cat $GREETING_FILE"])
    );
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .contains(&"GREETING_FILE=/app/greeting.txt".into())
    );
    assert_eq!(config["architecture"], "amd64");
    let inspect = json(&tool(
        "skopeo",
        &["inspect", &format!("oci-archive:{}", archive.display())],
    ));
    assert_eq!(inspect["Digest"], exported_digest(&first.stderr).as_str());
    // ...and the root filesystem.
    let rootfs = unpack(&env, &archive, "hello");
    let greeting = std::fs::read_to_string(rootfs.join("app/greeting.txt")).unwrap();
    assert_eq!(
        greeting,
        "Hello from rbuild! This image was built without a daemon.\n(made by a RUN step as uid 0 on host buildkitsandbox)\n"
    );
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(
        !rootfs.join("src").exists(),
        "the builder stage's files stay out of the final image"
    );
    assert!(
        !rootfs.join("proc").exists() && !rootfs.join("etc/resolv.conf").exists(),
        "no mount points leak"
    );

    // `rbuild run` runs it.
    let run = env.rbuild(&["run", "--rm", "hello:1.0"]).ok();
    assert_eq!(run.stdout, greeting);
    let images = env.rbuild(&["images"]).ok();
    assert!(
        images
            .stdout
            .lines()
            .any(|l| l.starts_with("hello ") && l.contains("1.0") && l.contains("MB")),
        "{}",
        images.stdout
    );

    // A rebuild runs nothing and gives the same image.
    let again = env
        .rbuild(&["build", "-t", "hello:1.0", ctx.to_str().unwrap()])
        .ok();
    let progress = Progress::parse(&again.stderr);
    assert!(
        progress.ran().is_empty(),
        "ran: {:?}\n{}",
        progress.ran(),
        again.stderr
    );
    assert_eq!(progress.cached_steps().len(), 6, "{}", again.stderr);
    assert_eq!(manifest_digest(&again.stderr), digest);

    // Exporting again compresses nothing again: the blobs made for the first archive are
    // remembered, so the archive is the same and no blob is added to the store.
    let blobs = || {
        std::fs::read_dir(env.root().join("content/blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blobs();
    let second_archive = env.path("hello-again.tar");
    let exported = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "-t",
            "hello:1.0",
            "--load",
            "-o",
            &format!("type=oci,dest={}", second_archive.display()),
            ctx.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        exported_digest(&exported.stderr),
        exported_digest(&first.stderr)
    );
    assert_eq!(blobs(), before, "{}", exported.stderr);
    assert!(
        std::fs::read(&second_archive).unwrap() == std::fs::read(&archive).unwrap(),
        "the second archive differs from the first"
    );
    // The first export said how much it compressed and how fast.
    let layers_line = first
        .stderr
        .lines()
        .find(|l| l.contains("exporting layers"))
        .unwrap_or_else(|| panic!("{}", first.stderr));
    assert!(
        layers_line.contains("MB") && layers_line.contains("/s"),
        "{layers_line}"
    );

    // A file no COPY reads changes nothing.
    std::fs::write(ctx.join("README"), "not copied").unwrap();
    let unrelated = env
        .rbuild(&["build", "-t", "hello:1.0", ctx.to_str().unwrap()])
        .ok();
    assert!(Progress::parse(&unrelated.stderr).ran().is_empty());

    // Changing one copied file re-runs that COPY and what depends on it, nothing else.
    std::fs::write(ctx.join("message.txt"), "A changed message.\n").unwrap();
    let changed = env
        .rbuild(&["build", "-t", "hello:1.0", ctx.to_str().unwrap()])
        .ok();
    let progress = Progress::parse(&changed.stderr);
    assert_eq!(
        progress.ran(),
        [
            "[builder 3/4] COPY make-greeting.sh message.txt ./",
            "[builder 4/4] RUN sh make-greeting.sh > /greeting.txt",
            "[stage-1 3/3] COPY --from=builder /greeting.txt ./",
        ],
        "{}",
        changed.stderr
    );
    assert!(
        progress
            .cached_steps()
            .iter()
            .any(|n| n.contains("WORKDIR /src"))
    );
    assert_ne!(manifest_digest(&changed.stderr), digest);
    let run = env.rbuild(&["run", "--rm", "hello:1.0"]).ok();
    assert!(
        run.stdout
            .starts_with("Hello from rbuild! A changed message.\n"),
        "{}",
        run.stdout
    );
    assert!(env.leaked_mounts().is_empty());
}

#[test]
fn quiet_file_flag_build_args_and_exit_codes() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context("ctx", &[("data.txt", "data\n")]);
    let dockerfile = env.path("elsewhere/Build.dockerfile");
    std::fs::create_dir_all(dockerfile.parent().unwrap()).unwrap();
    std::fs::write(
        &dockerfile,
        "FROM rbuild-demo/busybox\nARG WHO=nobody\nCOPY data.txt /\nRUN echo \"$WHO $(cat /data.txt)\" > /out\nCMD [\"cat\", \"/out\"]\n",
    )
    .unwrap();
    let quiet = env
        .rbuild(&[
            "build",
            "-q",
            "-f",
            dockerfile.to_str().unwrap(),
            "--build-arg",
            "WHO=world",
            "-t",
            "args:1",
            ctx.to_str().unwrap(),
        ])
        .ok();
    assert!(
        quiet.stdout.trim().starts_with("sha256:") && quiet.stdout.lines().count() == 1,
        "{}",
        quiet.stdout
    );
    assert!(
        !quiet.stderr.contains("#1"),
        "quiet prints no progress: {}",
        quiet.stderr
    );
    assert_eq!(
        env.rbuild(&["run", "--rm", "args:1"]).ok().stdout,
        "world data\n"
    );
    let code = env.rbuild(&[
        "run",
        "--rm",
        "args:1",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 42",
    ]);
    assert_eq!(
        (code.code, code.stdout.as_str(), code.stderr.as_str()),
        (42, "out\n", "err\n")
    );
}

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
fn deletions_become_whiteouts() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox AS base\n\
             RUN mkdir -p /data/sub && echo a > /data/a && echo b > /data/sub/b && echo x > /etc/x\n\
             FROM base\n\
             RUN rm /etc/x /etc/group && rm -rf /data && mkdir /data && echo c > /data/c\n",
        )],
    );
    let archive = env.path("img.tar");
    env.rbuild(&[
        "build",
        "-t",
        "wh:1",
        "-o",
        &format!("type=oci,dest={}", archive.display()),
        ctx.to_str().unwrap(),
    ])
    .ok();
    let rootfs = unpack(&env, &archive, "wh");
    assert!(!rootfs.join("etc/x").exists());
    assert!(
        !rootfs.join("etc/group").exists(),
        "a file of the base image was deleted"
    );
    assert!(rootfs.join("etc/passwd").exists());
    let mut data: Vec<String> = std::fs::read_dir(rootfs.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    data.sort();
    assert_eq!(
        data,
        ["c"],
        "the replaced directory holds only the new file"
    );

    // The last layer says so with OCI whiteouts (read with tar, not with rbuild's code).
    let inspect = json(&tool(
        "skopeo",
        &["inspect", &format!("oci-archive:{}", archive.display())],
    ));
    let last = inspect["Layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let blob = env.path(&format!(
        "wh-layout/blobs/sha256/{}",
        last.trim_start_matches("sha256:")
    ));
    let listing = tool("tar", &["-tzf", blob.to_str().unwrap()]);
    for entry in ["etc/.wh.x", "etc/.wh.group", "data/.wh..wh..opq", "data/c"] {
        assert!(
            listing.lines().any(|l| l == entry),
            "{entry} missing from\n{listing}"
        );
    }
}

#[test]
fn push_and_pull_through_a_real_registry() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    env.base_image();
    let ctx = env.path("hello");
    copy_dir(&testdata().join("hello"), &ctx);
    let built = env
        .rbuild(&["build", "-t", "hello:1.0", ctx.to_str().unwrap()])
        .ok();
    let config_digest = digest_after(&built.stderr, "writing image ");
    let remote = format!("{}/demo/hello:1.0", registry.addr);
    let pushed = env
        .rbuild(&["push", "--oci-mediatypes", "hello:1.0", &remote])
        .ok();
    let digest = pushed
        .stdout
        .trim()
        .strip_prefix(&format!("{remote}@"))
        .unwrap_or_else(|| panic!("{}", pushed.stdout))
        .to_string();
    // The layers the steps made were compressed for the push (the local store keeps them
    // uncompressed); each blob is reported with its size and rate.
    assert!(
        pushed.stderr.contains("compressed layers: "),
        "{}",
        pushed.stderr
    );
    assert!(
        pushed
            .stderr
            .lines()
            .any(|l| l.ends_with(" pushed") && l.contains("/s")),
        "{}",
        pushed.stderr
    );
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ],
    ));
    assert_eq!(raw["config"]["digest"], config_digest.as_str());
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    for layer in raw["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{raw}"
        );
    }
    // build --push, and type=registry with OCI media types.
    let pushed_by_build = format!("{}/demo/built:1", registry.addr);
    let out = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "--push",
            "-t",
            &pushed_by_build,
            ctx.to_str().unwrap(),
        ])
        .ok();
    assert!(
        out.stderr.contains(&format!("pushing {pushed_by_build}@")),
        "{}",
        out.stderr
    );
    let oci = format!("{}/demo/oci:1", registry.addr);
    env.rbuild(&[
        "build",
        "-o",
        &format!("type=registry,name={oci},oci-mediatypes=true"),
        ctx.to_str().unwrap(),
    ])
    .ok();
    for (name, media_type) in [
        (
            &pushed_by_build,
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
        (&oci, "application/vnd.oci.image.manifest.v1+json"),
    ] {
        let raw = json(&tool(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{name}"),
            ],
        ));
        assert_eq!(raw["mediaType"], media_type, "{name}");
        assert_eq!(raw["config"]["digest"], config_digest.as_str(), "{name}");
    }
    // A second push (another repository) compresses nothing again; by default it sends
    // Docker media types, as BuildKit's image exporter does (oci-mediatypes=false).
    let again_name = format!("{}/demo/again:1.0", registry.addr);
    let again = env.rbuild(&["push", "hello:1.0", &again_name]).ok();
    assert!(
        !again.stderr.contains("compressed layers"),
        "{}",
        again.stderr
    );
    assert!(!again.stdout.trim().ends_with(&digest), "{}", again.stdout);
    // Its blobs are in demo/hello of the same registry: mounted from there, none uploaded.
    assert!(
        again.stderr.contains(": mounted from demo/hello") && !again.stderr.contains(" pushed"),
        "{}",
        again.stderr
    );
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{again_name}"),
        ],
    ));
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );

    // skopeo sees the same manifest in the registry and copies it out unchanged.
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ],
    ));
    assert_eq!(inspect["Digest"], digest.as_str());
    let layout = env.path("pulled");
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{remote}"),
            &format!("oci:{}:x", layout.display()),
        ],
    );
    let local = json(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:x", layout.display())],
    ));
    assert_eq!(local["Digest"], digest.as_str());

    // The same image as a Docker schema 2 manifest, and behind a manifest list.
    let docker = format!("{}/demo/hello:docker", registry.addr);
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
            &format!("docker://{remote}"),
            &format!("docker://{docker}"),
        ],
    );
    let size = std::fs::metadata(
        env.root()
            .join("content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
    .len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
             "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    });
    let index_file = env.path("index.json");
    std::fs::write(&index_file, index.to_string()).unwrap();
    tool(
        "curl",
        &[
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
            "--data-binary",
            &format!("@{}", index_file.display()),
            &format!("http://{}/v2/demo/hello/manifests/multi", registry.addr),
        ],
    );

    let docker_digest = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{docker}"),
        ],
    ))["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        docker_digest, digest,
        "the Docker form is a different manifest"
    );

    // Fresh state directories pull each form with oci-client and build on it; the manifest list
    // resolves to its linux/amd64 image.
    for (tag, expected) in [
        ("1.0", &digest),
        ("docker", &docker_digest),
        ("multi", &digest),
    ] {
        let fresh = Env::new();
        let from = format!("{}/demo/hello:{tag}", registry.addr);
        let ctx = fresh.context(
            "ctx",
            &[(
                "Dockerfile",
                &format!("FROM {from}\nUSER root\nRUN cp /app/greeting.txt /copied\n"),
            )],
        );
        let out = fresh
            .rbuild(&["build", "-t", "pulled:1", ctx.to_str().unwrap()])
            .ok();
        assert!(
            out.stderr.contains(&format!("FROM {from}@{expected}")),
            "{tag}: {}",
            out.stderr
        );
        // Each downloaded layer is reported with its size and rate.
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(" / ") && l.contains("/s") && l.ends_with(" done")),
            "{tag}: {}",
            out.stderr
        );
        if tag == "1.0" {
            // The pulled layers are gzip blobs: a zstd export keeps them as they are, unless
            // force-compression asks; the layer the step made is zstd either way.
            let types = |options: &str| -> Vec<String> {
                let archive = fresh.path("z.tar");
                fresh
                    .rbuild(&[
                        "build",
                        "-q",
                        "-o",
                        &format!(
                            "type=oci,dest={},compression=zstd{options}",
                            archive.display()
                        ),
                        ctx.to_str().unwrap(),
                    ])
                    .ok();
                layer_media_types(&archive)
                    .iter()
                    .map(|t| t.replace("application/vnd.oci.image.layer.v1.", ""))
                    .collect()
            };
            let kept = types("");
            assert!(
                kept[..kept.len() - 1].iter().all(|t| t == "tar+gzip"),
                "{kept:?}"
            );
            assert_eq!(kept.last().unwrap(), "tar+zstd");
            let forced = types(",force-compression=true");
            assert!(forced.iter().all(|t| t == "tar+zstd"), "{forced:?}");
        }
        let run = fresh
            .rbuild(&["run", "--rm", "pulled:1", "cat", "/copied"])
            .ok();
        assert!(
            run.stdout.starts_with("Hello from rbuild!"),
            "{tag}: {}",
            run.stdout
        );
    }

    // An image BuildKit built (testdata/docker-save, from Docker 20.10's BuildKit), in the
    // registry: `rbuild pull` fetches it, reporting each layer, and a build uses it as a base.
    let buildkit_image = format!("{}/fixture/buildkit:1", registry.addr);
    tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!(
                "docker-archive:{}",
                testdata().join("docker-save/legacy.tar").display()
            ),
            &format!("docker://{buildkit_image}"),
        ],
    );
    let fresh = Env::new();
    let pulled = fresh.rbuild(&["pull", &buildkit_image]).ok();
    assert!(
        pulled.stdout.contains("Status: Downloaded newer image"),
        "{}",
        pulled.stdout
    );
    assert!(
        pulled
            .stderr
            .lines()
            .filter(|l| l.contains(": Pull complete "))
            .count()
            == 2,
        "{}",
        pulled.stderr
    );
    let again = fresh.rbuild(&["pull", &buildkit_image]).ok();
    assert!(
        again.stdout.contains("Status: Image is up to date"),
        "{}",
        again.stdout
    );
    let ctx = fresh.context(
        "on-buildkit",
        &[(
            "Dockerfile",
            &format!(
                "FROM {buildkit_image}\nCOPY --from={buildkit_image} /greeting.txt /copy.txt\n"
            ),
        )],
    );
    let rootfs = fresh.path("on-buildkit-rootfs");
    fresh
        .rbuild(&[
            "build",
            "-q",
            "-o",
            rootfs.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("copy.txt")).unwrap(),
        "hello from a docker save archive\n"
    );
}

#[test]
fn bad_input_gives_clear_errors_and_leaves_nothing_behind() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let good = env.context(
        "good",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo fine > /f\n",
        )],
    );
    let check_then_recover = |what: &str| {
        assert!(
            env.leaked_mounts().is_empty(),
            "{what}: mounts left: {:?}",
            env.leaked_mounts()
        );
        env.rbuild(&["build", "--no-cache", good.to_str().unwrap()])
            .ok();
    };

    let empty = env.context("empty", &[("README", "no Dockerfile here")]);
    let r = env.rbuild(&["build", empty.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("failed to read the Dockerfile") && r.stderr.contains("empty/Dockerfile"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("No such file or directory"),
        "{}",
        r.stderr
    );
    check_then_recover("missing Dockerfile");

    let typo = env.context(
        "typo",
        &[("Dockerfile", "FROM rbuild-demo/busybox\n\nCOPPY a b\n")],
    );
    let r = env.rbuild(&["build", typo.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(
            "typo/Dockerfile:3:1: error: unknown instruction: COPPY (did you mean COPY?)"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("3 | COPPY a b"), "{}", r.stderr);
    check_then_recover("unknown instruction");

    let unreachable = env.context(
        "unreachable",
        &[(
            "Dockerfile",
            "FROM 127.0.0.1:1/nothing/here:1.0\nRUN true\n",
        )],
    );
    let started = Instant::now();
    let r = env.rbuild(&["build", unreachable.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("127.0.0.1:1/nothing/here:1.0")
            && r.stderr.contains("registry 127.0.0.1:1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("Connection refused"),
        "the root cause is shown: {}",
        r.stderr
    );
    assert!(r.stderr.contains("Dockerfile:1:6"), "{}", r.stderr);
    assert!(started.elapsed() < Duration::from_secs(30));
    check_then_recover("unreachable registry");

    let failing = env.context(
        "failing",
        &[("Dockerfile", "FROM rbuild-demo/busybox\nRUN echo first-line && \\\n    echo second-line >&2 && exit 3\nRUN echo never\n")],
    );
    let r = env.rbuild(&["build", failing.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    let e = &r.stderr;
    assert!(
        e.contains("failing/Dockerfile:2:1: error: process \"/bin/sh -c echo first-line &&     echo second-line >&2 && exit 3\" did not complete successfully: exit code: 3"),
        "{e}"
    );
    assert!(
        e.contains("2 | >>> RUN echo first-line && \\\n3 | >>>     echo second-line >&2 && exit 3"),
        "{e}"
    );
    assert!(
        e.contains("> first-line") && e.contains("> second-line"),
        "{e}"
    );
    assert!(
        !e.contains("RUN echo never\n#"),
        "the next step did not run: {e}"
    );
    check_then_recover("failing RUN");
}

fn sleeping(marker: &str) -> bool {
    let ps = tool("ps", &["-eo", "args"]);
    ps.lines().any(|l| l.trim() == marker)
}

#[test]
fn interrupted_builds_leave_no_mounts_or_processes() {
    require_root!();
    let env = Env::new();
    env.base_image();
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        let marker = format!("sleep {}", 3000 + signal as i32);
        let ctx = env.context(
            &format!("ctx-{signal}"),
            &[(
                "Dockerfile",
                &format!("FROM rbuild-demo/busybox\nRUN echo started && {marker}\n"),
            )],
        );
        let mut child = env
            .command()
            .args(["build", "--progress=plain", ctx.to_str().unwrap()])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = lines.next().expect("rbuild ended early").unwrap();
            if line.ends_with(" started") {
                break;
            }
            assert!(Instant::now() < deadline, "the step did not start");
        }
        assert!(sleeping(&marker));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "{signal}: rbuild should fail");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sleeping(&marker) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!sleeping(&marker), "{signal}: the step's process survived");
        assert!(
            env.leaked_mounts().is_empty(),
            "{signal}: mounts left: {:?}",
            env.leaked_mounts()
        );
    }
    // The store is consistent: the next build works and leftovers were cleaned.
    let good = env.context(
        "good",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo ok > /ok\n",
        )],
    );
    env.rbuild(&["build", "-t", "after:1", good.to_str().unwrap()])
        .ok();
    assert_eq!(
        env.rbuild(&["run", "--rm", "after:1", "cat", "/ok"])
            .ok()
            .stdout,
        "ok\n"
    );
    assert_eq!(
        std::fs::read_dir(env.root().join("snapshots/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn independent_stages_run_in_parallel() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox AS a\nRUN sleep 2 && echo a > /a\n\
             FROM rbuild-demo/busybox AS b\nRUN sleep 2 && echo b > /b\n\
             FROM rbuild-demo/busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
        )],
    );
    let r = env
        .rbuild(&["build", "--jobs", "2", "-t", "par:1", ctx.to_str().unwrap()])
        .ok();
    // Both sleeps start before either finishes.
    let lines: Vec<&str> = r.stderr.lines().collect();
    let number_of = |needle: &str| -> String {
        let l = lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}:\n{}", r.stderr));
        l.split(' ').next().unwrap().to_string()
    };
    let (a, b) = (number_of("[a 2/2] RUN"), number_of("[b 2/2] RUN"));
    let pos = |prefix: &str, what: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(&format!("{prefix} {what}")))
            .unwrap()
    };
    let started_last = pos(&a, "[a 2/2]").max(pos(&b, "[b 2/2]"));
    let done_first = pos(&a, "DONE").min(pos(&b, "DONE"));
    assert!(
        started_last < done_first,
        "stages ran one after the other:\n{}",
        r.stderr
    );
    assert_eq!(
        env.rbuild(&["run", "--rm", "par:1", "cat", "/a", "/b"])
            .ok()
            .stdout,
        "a\nb\n"
    );
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file()
                && let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn run_mounts_bind_cache_tmpfs_and_secrets() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let dockerfile = "FROM rbuild-demo/busybox AS build\n\
RUN mkdir -p /out && echo built > /out/artifact\n\
FROM rbuild-demo/busybox\n\
WORKDIR /src\n\
RUN --mount=type=cache,target=/cache,id=counter \\\n\
    --mount=from=build,source=/out,target=/in \\\n\
    --mount=source=data,target=ctx \\\n\
    --mount=type=tmpfs,target=/scratch \\\n\
    --mount=type=secret,id=tok,required \\\n\
    --mount=type=secret,id=tok,env=TOKEN \\\n\
    cat /in/artifact /src/ctx/d.txt /run/secrets/tok > /src/result && \\\n\
    echo \"$TOKEN\" >> /src/result && echo x >> /cache/count && \\\n\
    wc -l < /cache/count > /src/count && echo hi > /scratch/f && \\\n\
    stat -c %a /run/secrets/tok >> /src/result && \\\n\
    if touch /in/new 2>/dev/null; then echo bind-writable >> /src/result; fi\n\
RUN --mount=target=/c,rw echo changed > /c/data/d.txt && ls -a /c > /src/ctx-listing\n";
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", dockerfile),
            ("data/d.txt", "data"),
            ("other.txt", "not mounted"),
            ("private.key", "ignored"),
            (".dockerignore", "private.key\n"),
        ],
    );
    let secret = env.path("tok.txt");
    std::fs::write(&secret, "S3CRET-VALUE").unwrap();
    let secret_arg = format!("id=tok,src={}", secret.display());
    let archive = env.path("m.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain", "-t", "mounts:1"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        env.rbuild(&args)
    };
    build(&["--secret", &secret_arg, "-o", &dest]).ok();
    let rootfs = unpack(&env, &archive, "m");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("src/result")).unwrap(),
        "built\ndataS3CRET-VALUES3CRET-VALUE\n400\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("src/count"))
            .unwrap()
            .trim(),
        "1"
    );
    // A writable bind of the context changes a copy, never the user's files, and shows only
    // what .dockerignore lets through.
    assert_eq!(
        std::fs::read_to_string(ctx.join("data/d.txt")).unwrap(),
        "data"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("src/ctx-listing")).unwrap(),
        ".\n..\n.dockerignore\nDockerfile\ndata\nother.txt\n"
    );
    // Mount points and mounted files never reach the image.
    for gone in ["cache", "in", "src/ctx", "scratch", "run"] {
        assert!(!rootfs.join(gone).exists(), "/{gone} is in the image");
    }
    // The secret is nowhere but in the file the RUN itself wrote: not in the config or
    // history, not in the cache index, snapshots or blobs.
    let config = tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci-archive:{}", archive.display()),
        ],
    );
    assert!(!config.contains("S3CRET"), "{config}");
    let leaks: Vec<String> = files_containing(&env.root(), b"S3CRET")
        .into_iter()
        .filter(|p| !p.ends_with("/src/result"))
        .collect();
    assert!(leaks.is_empty(), "the secret leaked into {leaks:?}");

    // The cache mount persists across builds; the step's key does not depend on the secret's
    // value, so a new value alone keeps the step cached (as in BuildKit).
    std::fs::write(&secret, "OTHER-VALUE").unwrap();
    // Whether the first RUN (which mounts data/, not the whole context) was cached.
    let first_run_cached = |stderr: &str| {
        Progress::parse(stderr)
            .cached_steps()
            .iter()
            .any(|s| s.contains("RUN --mount=type=cache"))
    };
    let again = build(&["--secret", &secret_arg]).ok();
    assert!(first_run_cached(&again.stderr), "{}", again.stderr);
    // Files of the context that the mount does not read do not invalidate it either.
    std::fs::write(ctx.join("other.txt"), "changed").unwrap();
    let again = build(&["--secret", &secret_arg]).ok();
    assert!(first_run_cached(&again.stderr), "{}", again.stderr);
    // ...but what it mounts does.
    std::fs::write(ctx.join("data/d.txt"), "data2").unwrap();
    let rebuilt = build(&["--secret", &secret_arg]).ok();
    assert!(!first_run_cached(&rebuilt.stderr), "{}", rebuilt.stderr);
    let count = env
        .rbuild(&["run", "--rm", "mounts:1", "cat", "/src/count"])
        .ok()
        .stdout;
    assert_eq!(count.trim(), "2", "the cache mount kept its contents");

    // A required secret that is not given fails the step with a clear message.
    let failed = build(&["--no-cache"]);
    assert_ne!(failed.code, 0);
    assert!(
        failed
            .stderr
            .contains("secret tok is required but was not given"),
        "{}",
        failed.stderr
    );
    assert!(env.leaked_mounts().is_empty(), "{:?}", env.leaked_mounts());
}

#[test]
fn source_date_epoch_makes_builds_reproducible() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM rbuild-demo/busybox\nCOPY a.txt /app/\nRUN mkdir -p /data/sub && echo x > /data/sub/f && touch /data/now\n",
            ),
            ("a.txt", "a"),
        ],
    );
    let build_with = |name: &str, cache: bool, options: &str| {
        let archive = env.path(&format!("{name}.tar"));
        let mut c = assert_cmd::Command::from_std(env.command());
        c.args(["build", "--progress=plain"]);
        if !cache {
            c.arg("--no-cache");
        }
        let out = c
            .args([
                "-o",
                &format!("type=oci,dest={}{options}", archive.display()),
                ctx.to_str().unwrap(),
            ])
            .env("SOURCE_DATE_EPOCH", "1000000000")
            .output()
            .unwrap();
        let run = common::run_of(out).ok();
        (archive, exported_digest(&run.stderr))
    };
    let build = |name: &str| build_with(name, false, "");
    // A build without SOURCE_DATE_EPOCH first: its (unclamped) layers must not be reused by
    // the builds below, which use the cache.
    env.rbuild(&["build", "-q", ctx.to_str().unwrap()]).ok();
    let (_, warm) = build_with("warm", true, ",rewrite-timestamp=true");
    let (archive, first) = build("one");
    assert_eq!(
        warm, first,
        "the cache kept layers made without SOURCE_DATE_EPOCH apart"
    );
    // Two builds a second apart, every step re-run (so every file is written again, with a new
    // time): the same image, byte for byte.
    std::thread::sleep(Duration::from_millis(1100));
    let (_, second) = build("two");
    assert_eq!(first, second);
    let rootfs = unpack(&env, &archive, "sde");
    use std::os::unix::fs::MetadataExt;
    for path in ["app/a.txt", "data", "data/sub", "data/sub/f", "data/now"] {
        let mtime = std::fs::symlink_metadata(rootfs.join(path))
            .unwrap()
            .mtime();
        assert!(mtime <= 1_000_000_000, "{path} has mtime {mtime}");
    }
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci-archive:{}", archive.display()),
        ],
    ));
    assert_eq!(config["created"], "2001-09-09T01:46:40Z");
}

/// `python3 -m http.server` on loopback, serving `dir`; killed on drop.
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        let mut child = std::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (Debian package python3) serves files for this test");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line
            .split("port ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
fn oci_outputs_compress_layers_as_asked() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN head -c 200000 /dev/zero > /zeros && echo made > /made\n",
        )],
    );
    // The media types of the layers in an archive, bottom first.
    let export = |name: &str, options: &str| -> (std::path::PathBuf, Vec<String>) {
        let archive = env.path(&format!("{name}.tar"));
        env.rbuild(&[
            "build",
            "-q",
            "-o",
            &format!("type=oci,dest={}{options}", archive.display()),
            ctx.to_str().unwrap(),
        ])
        .ok();
        let types = layer_media_types(&archive);
        (archive, types)
    };
    let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
    let tar = "application/vnd.oci.image.layer.v1.tar";
    // gzip by default.
    let (default, types) = export("default", "");
    assert_eq!(types, [gzip, gzip]);
    let rootfs = unpack(&env, &default, "default");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("made")).unwrap(),
        "made\n"
    );
    // zstd (both layers were made here, the base image by `ADD rootfs.tar`, so both are
    // compressed as asked; push_and_pull_through_a_real_registry checks that pulled layers
    // keep their compression unless force-compression asks).
    let (zstd_archive, types) = export("zstd", ",compression=zstd,compression-level=19");
    assert_eq!(types, [zstd, zstd]);
    // skopeo reads zstd layers: copying the archive to a directory decompresses and checks them.
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}", zstd_archive.display()),
            &format!("dir:{}", env.path("zstd-dir").display()),
        ],
    );
    // Uncompressed: each layer is its tar, whose digest is its diff id.
    let (plain, types) = export("plain", ",compression=uncompressed");
    assert_eq!(types, [tar, tar]);
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci-archive:{}", plain.display()),
        ],
    ));
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}", plain.display()),
        ],
    ));
    assert_eq!(raw["layers"][1]["digest"], config["rootfs"]["diff_ids"][1]);
    let rootfs = unpack(&env, &plain, "plain");
    assert_eq!(
        std::fs::metadata(rootfs.join("zeros")).unwrap().len(),
        200_000
    );
    // A gzip level changes the blob (and so the manifest) but not the image.
    let (fast, _) = export("fast", ",compression-level=1");
    let digest_of = |archive: &Path| {
        json(&tool(
            "skopeo",
            &["inspect", &format!("oci-archive:{}", archive.display())],
        ))["Digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        digest_of(&fast),
        digest_of(&default),
        "the gzip blob made first is reused"
    );
    let bad = env.rbuild(&[
        "build",
        "-o",
        &format!(
            "type=oci,dest={},compression=lz4",
            env.path("x.tar").display()
        ),
        ctx.to_str().unwrap(),
    ]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.contains("unknown compression \"lz4\""),
        "{}",
        bad.stderr
    );
}

#[test]
fn every_output_type_and_the_result_files() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN mkdir -p /out && echo made > /out/made && rm /etc/group\nCMD [\"cat\", \"/out/made\"]\n",
        )],
    );
    let docker_tar = env.path("docker.tar");
    let local = env.path("local");
    let rootfs_tar = env.path("rootfs.tar");
    let iid = env.path("iid");
    let metadata = env.path("metadata.json");
    let out = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "-t",
            "outputs:1",
            "--load",
            "-o",
            &format!("type=docker,dest={}", docker_tar.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
            "-o",
            &format!("type=tar,dest={}", rootfs_tar.display()),
            "--label",
            "org.example.team=builders",
            "--label",
            "empty",
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            metadata.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ])
        .ok();
    let image_id = digest_after(&out.stderr, "writing image ");
    // --iidfile and --metadata-file, with BuildKit's keys.
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), image_id);
    let meta = json(&std::fs::read_to_string(&metadata).unwrap());
    assert_eq!(meta["containerimage.config.digest"], image_id.as_str());
    assert_eq!(
        meta["containerimage.digest"],
        manifest_digest(&out.stderr).as_str()
    );
    assert_eq!(meta["image.name"], "docker.io/library/outputs:1");
    // --load kept the image in the local store beside the other outputs.
    let run = env.rbuild(&["run", "--rm", "outputs:1"]).ok();
    assert_eq!(run.stdout, "made\n");
    // type=docker: Docker's manifest.json names the image; skopeo reads it as a docker-archive
    // (what `docker load` reads), with Docker media types.
    let listing = tool("tar", &["-tf", docker_tar.to_str().unwrap()]);
    assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");
    let archive = format!("docker-archive:{}", docker_tar.display());
    let inspect = skopeo_inspect("--raw", &archive);
    assert_eq!(
        inspect["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let config = skopeo_inspect("--config", &archive);
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["cat", "/out/made"])
    );
    // --label: on the config, no history entry (as BuildKit).
    assert_eq!(
        config["config"]["Labels"],
        serde_json::json!({"empty": "", "org.example.team": "builders"})
    );
    assert!(
        !config["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["created_by"].as_str().unwrap_or("").contains("builders"))
    );
    let tags = json(&tool(
        "tar",
        &["-xOf", docker_tar.to_str().unwrap(), "manifest.json"],
    ));
    assert_eq!(tags[0]["RepoTags"], serde_json::json!(["outputs:1"]));
    // type=local: the root filesystem, deletions applied.
    assert_eq!(
        std::fs::read_to_string(local.join("out/made")).unwrap(),
        "made\n"
    );
    assert!(local.join("bin/busybox").is_file());
    assert!(local.join("etc/passwd").is_file());
    assert!(
        !local.join("etc/group").exists(),
        "the deleted file is not there"
    );
    // type=tar: the same files in one tar.
    let listing = tool("tar", &["-tf", rootfs_tar.to_str().unwrap()]);
    assert!(listing.lines().any(|l| l == "out/made"), "{listing}");
    assert!(listing.lines().any(|l| l == "bin/busybox"), "{listing}");
    // dest=- streams to stdout (and -q then prints no id there).
    let streamed = env
        .command()
        .args([
            "build",
            "-q",
            "-o",
            "type=oci,dest=-",
            ctx.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(streamed.status.success());
    let piped = env.path("piped.tar");
    std::fs::write(&piped, &streamed.stdout).unwrap();
    let layers = layer_media_types(&piped);
    assert_eq!(layers.len(), 2, "{layers:?}");
    // A bare path is type=local.
    let bare = env.path("bare");
    env.rbuild(&[
        "build",
        "-q",
        "-o",
        bare.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ])
    .ok();
    assert!(bare.join("out/made").is_file());
    // Mistakes are named.
    let bad = env.rbuild(&[
        "build",
        "-o",
        "type=oci,dest=x.tar,colour=red",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        bad.stderr
            .contains("--output type=oci does not take colour="),
        "{}",
        bad.stderr
    );
    let bad = env.rbuild(&["build", "--push", ctx.to_str().unwrap()]);
    assert!(
        bad.stderr.contains("--push needs an image name"),
        "{}",
        bad.stderr
    );
}

#[test]
fn daily_image_commands_and_archives() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo daily > /daily\nCMD [\"cat\", \"/daily\"]\n",
        )],
    );
    let built = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "-t",
            "daily:1",
            ctx.to_str().unwrap(),
        ])
        .ok();
    let id = digest_after(&built.stderr, "writing image ");
    let short = &id["sha256:".len().."sha256:".len() + 12];
    // images: a row per name, Docker's columns; JSON with Docker's keys; digests.
    let images = env.rbuild(&["images"]).ok().stdout;
    assert!(images.starts_with("REPOSITORY "), "{images}");
    let row = images
        .lines()
        .find(|l| l.starts_with("daily "))
        .unwrap_or_else(|| panic!("{images}"));
    assert!(row.contains(short) && row.contains("ago"), "{row}");
    let listed: Vec<serde_json::Value> = env
        .rbuild(&["images", "--format", "json"])
        .ok()
        .stdout
        .lines()
        .map(json)
        .collect();
    let daily = listed.iter().find(|i| i["Repository"] == "daily").unwrap();
    assert_eq!(daily["Tag"], "1");
    assert_eq!(daily["ID"], short);
    let digests = env.rbuild(&["images", "--digests"]).ok().stdout;
    assert!(
        digests.contains(&manifest_digest(&built.stderr)),
        "{digests}"
    );
    // history: newest first, the image id on top, the RUN with the size of what it wrote.
    let history = env.rbuild(&["history", "daily:1"]).ok().stdout;
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines[0].starts_with("IMAGE "), "{history}");
    assert!(lines[1].starts_with(short) && lines[1].contains("CMD [\"cat\" \"/daily\"]"));
    assert!(
        lines[2].starts_with("<missing>")
            && lines[2].contains("RUN /bin/sh -c echo daily > /daily # buildkit")
            && lines[2].contains(" 6B "),
        "{history}"
    );
    let full = env
        .rbuild(&["history", "--no-trunc", "daily:1"])
        .ok()
        .stdout;
    assert!(full.lines().nth(1).unwrap().starts_with(&id), "{full}");
    // inspect: Docker's keys.
    let inspect = json(&env.rbuild(&["inspect", "daily:1"]).ok().stdout);
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(inspect[0]["RepoTags"], serde_json::json!(["daily:1"]));
    assert_eq!(
        inspect[0]["Config"]["Cmd"],
        serde_json::json!(["cat", "/daily"])
    );
    // tag and rmi: an id with two names needs a name or --force.
    env.rbuild(&["tag", short, "daily:2"]).ok();
    assert!(
        env.rbuild(&["images"])
            .ok()
            .stdout
            .contains("daily                 2")
    );
    let ambiguous = env.rbuild(&["rmi", short]);
    assert!(
        ambiguous.code != 0 && ambiguous.stderr.contains("several names"),
        "{}",
        ambiguous.stderr
    );
    let removed = env.rbuild(&["rmi", "daily:2"]).ok().stdout;
    assert_eq!(removed, "Untagged: daily:2\n");
    assert!(env.rbuild(&["inspect", "daily:2"]).code != 0);
    // save (Docker's format by default, and OCI), read by skopeo; load into a fresh root.
    let docker_archive = env.path("daily.tar");
    let oci_archive = env.path("daily-oci.tar");
    env.rbuild(&["save", "daily:1", "-o", docker_archive.to_str().unwrap()])
        .ok();
    env.rbuild(&[
        "save",
        "--format",
        "oci",
        "-o",
        oci_archive.to_str().unwrap(),
        "daily:1",
    ])
    .ok();
    let config = skopeo_inspect(
        "--config",
        &format!("docker-archive:{}", docker_archive.display()),
    );
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["cat", "/daily"])
    );
    let layers = layer_media_types(&oci_archive);
    assert!(
        layers
            .iter()
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar"),
        "save writes layers uncompressed, as docker save: {layers:?}"
    );
    let fresh = Env::new();
    let loaded = fresh
        .rbuild(&["load", "-i", docker_archive.to_str().unwrap()])
        .ok()
        .stdout;
    assert_eq!(loaded, "Loaded image: daily:1\n");
    assert_eq!(
        fresh.rbuild(&["run", "--rm", "daily:1"]).ok().stdout,
        "daily\n"
    );
    let again = json(&fresh.rbuild(&["inspect", "daily:1"]).ok().stdout);
    assert_eq!(again[0]["Id"], id.as_str(), "the same image");
    // From stdin, an OCI layout written by another tool (skopeo, to a directory: its archive
    // transport cannot write when the tests run rootless), tarred, into another root.
    let skopeo_layout = env.path("daily-skopeo");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}", oci_archive.display()),
            &format!("oci:{}:daily:1", skopeo_layout.display()),
        ],
    );
    let skopeo_archive = env.path("daily-skopeo.tar");
    let mut tarball = tar::Builder::new(std::fs::File::create(&skopeo_archive).unwrap());
    tarball.append_dir_all(".", &skopeo_layout).unwrap();
    tarball.into_inner().unwrap();
    let other = Env::new();
    let mut load = other
        .command()
        .args(["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::copy(
        &mut std::fs::File::open(&skopeo_archive).unwrap(),
        load.stdin.as_mut().unwrap(),
    )
    .unwrap();
    drop(load.stdin.take());
    let out = load.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Loaded image: daily:1\n"
    );
    // A legacy `docker save` archive (testdata/docker-save): loaded, then used as a base.
    let legacy = testdata().join("docker-save/legacy.tar");
    let loaded = other
        .rbuild(&["load", "-i", legacy.to_str().unwrap()])
        .ok()
        .stdout;
    assert_eq!(loaded, "Loaded image: rbuild-fixture/saved:1\n");
    let from = other.context("from", &[("Dockerfile", "FROM rbuild-fixture/saved:1\n")]);
    let rootfs = other.path("rootfs");
    other
        .rbuild(&[
            "build",
            "-q",
            "-o",
            rootfs.to_str().unwrap(),
            from.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("again/greeting.txt")).unwrap(),
        "hello from a docker save archive\n"
    );
    let garbage = other.path("garbage.tar");
    std::fs::write(&garbage, "not a tar at all").unwrap();
    let bad = other.rbuild(&["load", "-i", garbage.to_str().unwrap()]);
    assert!(
        bad.code != 0 && bad.stderr.contains("is it a `docker save` or OCI archive?"),
        "{}",
        bad.stderr
    );
}

/// Pushing `image` to `remote` without credentials is refused with an error that names the
/// registry and what to run; logging in as `user` with a wrong password fails naming it.
fn assert_refusals(env: &Env, image: &str, remote: &str, user: &str) {
    let addr = remote.split('/').next().unwrap();
    let refused = env.rbuild(&["push", image, remote]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains(&format!("rbuild login {addr}")),
        "{}",
        refused.stderr
    );
    let wrong = env.rbuild_with(
        &["login", addr, "-u", user, "--password-stdin"],
        "wrong\n",
        &[],
    );
    assert_ne!(wrong.code, 0);
    assert!(
        wrong.stderr.contains(&format!("login to {addr} failed")),
        "{}",
        wrong.stderr
    );
}

#[test]
fn registry_login_credential_helpers_and_tls() {
    require_root!();
    use base64::Engine as _;
    let env = Env::new();
    env.base_image();
    let registry = Registry::start_with(common::RegistrySetup {
        user: Some(("tester", "s3cret")),
        ..Default::default()
    });
    let addr = registry.addr.clone();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo auth > /auth\n",
        )],
    );
    env.rbuild(&["build", "-q", "-t", "auth:1", ctx.to_str().unwrap()])
        .ok();
    let remote = format!("{addr}/demo/auth:1");
    let config_json = env.docker_config().join("config.json");
    assert_refusals(&env, "auth:1", &remote, "tester");
    assert!(!config_json.exists(), "a failed login stores nothing");
    // The right one: stored as docker login stores it.
    let ok = env
        .rbuild_with(
            &["login", &addr, "-u", "tester", "--password-stdin"],
            "s3cret\n",
            &[],
        )
        .ok();
    assert_eq!(ok.stdout, "Login Succeeded\n");
    let config = json(&std::fs::read_to_string(&config_json).unwrap());
    assert_eq!(
        config["auths"][&addr]["auth"],
        base64::engine::general_purpose::STANDARD.encode("tester:s3cret")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config_json)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Now pushes work, and skopeo (with the same credentials) reads the image.
    env.rbuild(&["push", "auth:1", &remote]).ok();
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "tester:s3cret",
            &format!("docker://{remote}"),
        ],
    ));
    assert!(inspect["Digest"].as_str().unwrap().starts_with("sha256:"));
    // Another root with the same credentials builds on the pushed image.
    let fresh = env.with_same_logins();
    let from = fresh.context(
        "from",
        &[(
            "Dockerfile",
            &format!("FROM {remote}\nRUN cat /auth > /seen\n"),
        )],
    );
    fresh
        .rbuild(&["build", "-q", "-t", "seen:1", from.to_str().unwrap()])
        .ok();
    assert_eq!(
        fresh
            .rbuild(&["run", "--rm", "seen:1", "cat", "/seen"])
            .ok()
            .stdout,
        "auth\n"
    );
    // logout forgets them.
    let out = env.rbuild(&["logout", &addr]).ok();
    assert_eq!(
        out.stdout,
        format!("Removing login credentials for {addr}\n")
    );
    assert_ne!(env.rbuild(&["push", "auth:1", &remote]).code, 0);
    // A credential helper named by credHelpers answers for the registry (the helper protocol:
    // `get` with the server on stdin, JSON on stdout; `store` with JSON on stdin).
    let helpers = env.path("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-rbuildtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  get) read server; printf '{{\"ServerURL\":\"%s\",\"Username\":\"tester\",\"Secret\":\"s3cret\"}}' \"$server\" ;;\n  store) cat > {0}/stored.json ;;\n  erase) read server; echo \"$server\" > {0}/erased ;;\nesac\n",
            helpers.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        &config_json,
        serde_json::json!({"credHelpers": {addr.clone(): "rbuildtest"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    env.rbuild_with(&["push", "auth:1", &remote], "", &[("PATH", &path)])
        .ok();
    env.rbuild_with(
        &["login", &addr, "-u", "tester", "--password-stdin"],
        "s3cret",
        &[("PATH", &path)],
    )
    .ok();
    let stored = json(&std::fs::read_to_string(helpers.join("stored.json")).unwrap());
    assert_eq!(stored["Username"], "tester");
    assert_eq!(stored["ServerURL"], addr.as_str());
    // A registry with TLS from a CA of its own: trusted with --registry-ca, refused without.
    let certs = env.path("certs");
    let (ca, cert, key) = common::test_certificates(&certs);
    let secure = Registry::start_with(common::RegistrySetup {
        tls: Some((&cert, &key)),
        ..Default::default()
    });
    let secure_remote = format!("{}/demo/tls:1", secure.addr);
    let untrusted = env.rbuild(&["push", "auth:1", &secure_remote]);
    assert_ne!(untrusted.code, 0);
    assert!(
        untrusted.stderr.contains("TLS certificate is not trusted")
            && untrusted.stderr.contains("--registry-ca"),
        "{}",
        untrusted.stderr
    );
    env.rbuild(&[
        "--registry-ca",
        ca.to_str().unwrap(),
        "push",
        "auth:1",
        &secure_remote,
    ])
    .ok();
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--cert-dir",
            certs.to_str().unwrap(),
            &format!("docker://{secure_remote}"),
        ],
    ));
    assert!(inspect["Digest"].as_str().unwrap().starts_with("sha256:"));
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

#[test]
fn graph_shows_stages_and_cached_steps() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.path("hello");
    copy_dir(&testdata().join("hello"), &ctx);
    let graph = |format: &str| {
        env.rbuild(&["graph", "--format", format, ctx.to_str().unwrap()])
            .ok()
            .stdout
    };
    let dot = graph("dot");
    assert!(dot.starts_with("digraph rbuild {"), "{dot}");
    assert!(
        dot.contains("label=\"builder\"") && dot.contains("label=\"stage-1\""),
        "{dot}"
    );
    assert!(!dot.contains("(cached)"), "nothing is built yet:\n{dot}");
    let cached = |text: &str| -> Vec<(String, serde_json::Value)> {
        json(text)["vertices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v["cached"].clone()))
            .collect()
    };
    let before = cached(&graph("json"));
    let run = before
        .iter()
        .find(|(n, _)| n.starts_with("RUN "))
        .expect("the RUN step");
    assert_eq!(run.1, serde_json::json!(false));
    env.rbuild(&["build", "-q", ctx.to_str().unwrap()]).ok();
    // After a build, every step of the graph has a cache record.
    for (name, is_cached) in cached(&graph("json")) {
        if name.starts_with("RUN ") || name.starts_with("COPY ") || name.starts_with("WORKDIR ") {
            assert_eq!(is_cached, serde_json::json!(true), "{name}");
        }
    }
    // Editing a file the builder copies un-caches that COPY and what follows it.
    std::fs::write(ctx.join("message.txt"), "changed\n").unwrap();
    let after = cached(&graph("json"));
    let state = |prefix: &str| {
        after
            .iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, c)| c.clone())
            .unwrap()
    };
    assert_eq!(state("RUN "), serde_json::json!(false));
    assert_eq!(state("WORKDIR /src"), serde_json::json!(true));

    // Builds with SOURCE_DATE_EPOCH keep their own cache records; the graph looks them up
    // the way the build does.
    let sde = env.context(
        "sde",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo sde > /sde\n",
        )],
    );
    let epoch = [("SOURCE_DATE_EPOCH", "1000000000")];
    env.rbuild_with(&["build", "-q", sde.to_str().unwrap()], "", &epoch)
        .ok();
    let run_cached = |envs: &[(&str, &str)]| {
        let text = env
            .rbuild_with(
                &["graph", "--format", "json", sde.to_str().unwrap()],
                "",
                envs,
            )
            .ok()
            .stdout;
        cached(&text)
            .into_iter()
            .find(|(n, _)| n.starts_with("RUN "))
            .map(|(_, c)| c)
            .unwrap()
    };
    assert_eq!(run_cached(&epoch), serde_json::json!(true));
    assert_eq!(run_cached(&[]), serde_json::json!(false));

    // `--build-arg NAME` takes the value from the environment in graph as in build (one
    // pipeline), so the same environment finds the same keys, with SOURCE_DATE_EPOCH too.
    let args = env.context(
        "args",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nARG NAME\nRUN echo $NAME > /name\nCOPY --chmod=u+x Dockerfile /d\n",
        )],
    );
    let dir = args.to_str().unwrap();
    let with = |value: &'static str| [("NAME", value), epoch[0]];
    env.rbuild_with(
        &["build", "-q", "--build-arg", "NAME", dir],
        "",
        &with("one"),
    )
    .ok();
    let steps = |value: &'static str| {
        let text = env
            .rbuild_with(
                &["graph", "--format", "json", "--build-arg", "NAME", dir],
                "",
                &with(value),
            )
            .ok()
            .stdout;
        cached(&text)
            .into_iter()
            .filter(|(n, _)| n.starts_with("RUN ") || n.starts_with("COPY "))
            .map(|(_, c)| c)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        steps("one"),
        [serde_json::json!(true), serde_json::json!(true)]
    );
    assert_eq!(
        steps("two"),
        [serde_json::json!(false), serde_json::json!(false)]
    );
}

#[test]
fn json_progress_is_one_object_per_event_with_a_summary() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.path("hello");
    copy_dir(&testdata().join("hello"), &ctx);
    let run = env
        .rbuild(&["build", "--progress=json", ctx.to_str().unwrap()])
        .ok();
    let events: Vec<serde_json::Value> = run.stderr.lines().map(json).collect();
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["status"], "ok");
    // Every step that started ended as cached or done.
    assert_eq!(summary["steps"], count("started"));
    assert_eq!(count("started"), count("cached") + count("done"));
    assert_eq!(summary["ran"], count("done"));
    assert!(count("done") >= 3, "{}", run.stderr);
    assert!(
        events
            .iter()
            .all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
    // A failing step: its output as log events, the error, the diagnostic, a failed summary.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM rbuild-demo/busybox\nRUN echo oops >&2; exit 4\n",
    )
    .unwrap();
    let failed = env.rbuild(&["build", "--progress=json", ctx.to_str().unwrap()]);
    assert_eq!(failed.code, 1);
    let events: Vec<serde_json::Value> = failed.stderr.lines().map(json).collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "log" && e["data"] == "oops\n" && e["stream"] == "stderr")
    );
    let diagnostic = events.iter().find(|e| e["event"] == "diagnostic").unwrap();
    assert_eq!(
        (diagnostic["line"].clone(), diagnostic["severity"].clone()),
        (2.into(), "error".into())
    );
    assert_eq!(events.last().unwrap()["status"], "failed");
    // Plain progress ends with the same summary, in words.
    std::fs::copy(testdata().join("hello/Dockerfile"), ctx.join("Dockerfile")).unwrap();
    let plain = env
        .rbuild(&["build", "--progress=plain", ctx.to_str().unwrap()])
        .ok();
    let last = plain.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("built in ") && last.contains(" cached, 0 run"),
        "{last}"
    );
}

#[test]
fn no_cache_filter_and_pull() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.path("hello");
    copy_dir(&testdata().join("hello"), &ctx);
    env.rbuild(&["build", "-q", ctx.to_str().unwrap()]).ok();
    let again = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "--no-cache-filter",
            "builder",
            ctx.to_str().unwrap(),
        ])
        .ok();
    let progress = Progress::parse(&again.stderr);
    // The builder stage's steps run again; the other stage's come from the cache.
    assert!(
        progress
            .ran()
            .iter()
            .any(|s| s.starts_with("[builder 4/4] RUN")),
        "{}",
        again.stderr
    );
    assert!(
        progress
            .cached_steps()
            .iter()
            .any(|s| s.starts_with("[stage-1 2/3] WORKDIR")),
        "{}",
        again.stderr
    );
    assert!(
        !progress.ran().iter().any(|s| s.starts_with("[stage-1")),
        "{}",
        again.stderr
    );
    // --pull asks the registry even for a tag the store has: this base exists only locally,
    // so the build fails at the FROM, naming the image.
    let pulled = env.rbuild(&["build", "--pull", ctx.to_str().unwrap()]);
    assert_ne!(pulled.code, 0);
    assert!(
        pulled.stderr.contains("rbuild-demo/busybox"),
        "{}",
        pulled.stderr
    );
}

#[test]
fn du_and_prune_never_touch_tagged_images() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let hello = env.path("hello");
    copy_dir(&testdata().join("hello"), &hello);
    env.rbuild(&["build", "-q", "-t", "hello:1", hello.to_str().unwrap()])
        .ok();
    let big = env.context(
        "big",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN head -c 600000 /dev/urandom > /big\n",
        )],
    );
    // Exported, so that a compressed blob is made (and remembered) for its layer.
    let archive = env.path("big.tar");
    let build_big = || {
        env.rbuild(&[
            "build",
            "--progress=plain",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            big.to_str().unwrap(),
        ])
        .ok()
    };
    build_big();
    let du = || json(&env.rbuild(&["du", "--format", "json"]).ok().stdout);
    let usage = du();
    // The untagged build's layer is reclaimable, as blob and as snapshot.
    assert!(
        usage["blobs"]["reclaimable"].as_u64().unwrap() >= 600_000,
        "{usage}"
    );
    assert!(
        usage["snapshots"]["reclaimable"].as_u64().unwrap() >= 600_000,
        "{usage}"
    );
    // Everything was used just now: a filter keeping the last hour removes nothing.
    let kept = env.rbuild(&["prune", "--filter", "until=1h"]).ok().stdout;
    assert!(kept.starts_with("Removed 0 cache records"), "{kept}");
    let pruned = env.rbuild(&["prune"]).ok().stdout;
    assert!(!pruned.starts_with("Removed 0 "), "{pruned}");
    let usage = du();
    assert_eq!(usage["blobs"]["reclaimable"], 0, "{usage}");
    assert_eq!(usage["snapshots"]["reclaimable"], 0, "{usage}");
    // The tagged image is whole; the pruned build runs again.
    let greeting = env.rbuild(&["run", "--rm", "hello:1"]).ok().stdout;
    assert!(greeting.starts_with("Hello from rbuild!"), "{greeting}");
    let again = build_big();
    assert!(
        Progress::parse(&again.stderr)
            .ran()
            .iter()
            .any(|s| s.contains("RUN head")),
        "{}",
        again.stderr
    );
    // --keep-storage removes least recently used cache only while it is over the size.
    let under = env
        .rbuild(&["prune", "--keep-storage", "100GB"])
        .ok()
        .stdout;
    assert!(under.starts_with("Removed 0 cache records"), "{under}");
    let over = env.rbuild(&["prune", "--keep-storage", "1kB"]).ok().stdout;
    assert!(!over.starts_with("Removed 0 "), "{over}");
    assert_eq!(du()["blobs"]["reclaimable"], 0);
    // --all removes every record, still not the image.
    env.rbuild(&["prune", "--all"]).ok();
    assert_eq!(du()["records"], 0);
    let greeting = env.rbuild(&["run", "--rm", "hello:1"]).ok().stdout;
    assert!(greeting.starts_with("Hello from rbuild!"), "{greeting}");
    assert!(env.rbuild(&["prune", "--filter", "colour=red"]).code != 0);
    // A layer a step made exists only as its snapshot; `check` notices when one was changed.
    assert_eq!(env.rbuild(&["check"]).code, 0);
    let snapshots = env.root().join("snapshots");
    let greeting = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("fs/app/greeting.txt"))
        .find(|p| p.is_file())
        .expect("a snapshot with the greeting");
    std::fs::write(&greeting, "tampered\n").unwrap();
    let check = env.rbuild(&["check"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(check.stdout.contains("has changed"), "{}", check.stdout);
}

#[test]
fn sigkill_at_random_moments_leaves_a_consistent_state() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context("ctx", &[("a.txt", "a")]);
    // A fixed pseudo-random sequence: the moments differ from round to round, and from one
    // run of the test to the next they are the same (a failure can be replayed).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    // Rounds killed before the image was written, and those among them with finished steps.
    let (mut interrupted, mut partial) = (0, 0);
    for round in 0..8 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis(50 + (seed >> 33) % 900);
        // A first step that differs per round, so every round has work to interrupt.
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM rbuild-demo/busybox\n\
RUN echo {round} > /round && sleep 0.3\n\
RUN head -c 300000 /dev/urandom > /two && sleep 0.3\n\
COPY a.txt /three\n\
RUN sleep 0.3 && cat /three > /four\n"
            ),
        )
        .unwrap();
        let log = env.path(&format!("killed-{round}.log"));
        let mut child = env
            .command()
            .args(["build", "--progress=plain", ctx.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let killed = std::fs::read_to_string(&log).unwrap();
        if !killed.contains("writing manifest") {
            interrupted += 1;
            if !Progress::parse(&killed).ran().is_empty() {
                partial += 1;
            }
        }
        // The state is consistent, nothing is left mounted, and no step process survives.
        let check = env.rbuild(&["check"]);
        assert_eq!(check.code, 0, "round {round} ({delay:?}): {}", check.stdout);
        assert!(env.leaked_mounts().is_empty(), "{:?}", env.leaked_mounts());
        assert!(!sleeping("sleep 0.3"), "a step of round {round} survived");
        // The next build succeeds and reuses every step that had finished.
        let next = env
            .rbuild(&["build", "--progress=plain", ctx.to_str().unwrap()])
            .ok();
        let cached = Progress::parse(&next.stderr).cached_steps();
        for done in Progress::parse(&killed).ran() {
            assert!(
                cached.contains(&done),
                "round {round} ({delay:?}): {done} had finished but ran again:\n{}",
                next.stderr
            );
        }
    }
    // The kills did land in the middle of builds (the test would prove nothing otherwise).
    assert!(
        interrupted >= 3 && partial >= 1,
        "{interrupted} interrupted, {partial} with finished steps"
    );
}

#[test]
fn concurrent_builds_on_one_root_share_results() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let contexts: Vec<std::path::PathBuf> = (0..4)
        .map(|i| {
            env.context(
                &format!("ctx{i}"),
                &[(
                    "Dockerfile",
                    &format!(
                        "FROM rbuild-demo/busybox\n\
RUN sleep 0.3 && echo shared > /shared\n\
RUN sleep 1 && echo {i} > /own\n"
                    ),
                )],
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let children: Vec<std::process::Child> = contexts
        .iter()
        .map(|ctx| {
            env.command()
                .args(["build", "--progress=plain", ctx.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ran_shared = 0;
    let mut cached_shared = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let progress = Progress::parse(&stderr);
        let shared =
            |steps: Vec<String>| steps.iter().filter(|s| s.contains("echo shared")).count();
        ran_shared += shared(progress.ran());
        cached_shared += shared(progress.cached_steps());
    }
    // The step all four have in common ran once; the others waited for it and took its
    // result.
    assert_eq!((ran_shared, cached_shared), (1, 3));
    // The builds ran at the same time: one after another, their 1 s steps alone would take 4 s.
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(3500),
        "four builds took {elapsed:?}"
    );
    assert_eq!(env.rbuild(&["check"]).code, 0);
}

#[test]
fn a_terminal_gets_the_live_view() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.path("hello");
    copy_dir(&testdata().join("hello"), &ctx);
    // `script` gives rbuild a pseudo-terminal, where --progress=auto picks the live view.
    let rbuild = assert_cmd::cargo::cargo_bin!("rbuild");
    let command = format!(
        "{} --root {} build {}",
        rbuild.display(),
        env.root().display(),
        ctx.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("RBUILD_ROOT")
        .output()
        .expect("script (util-linux) runs a command in a terminal");
    assert!(out.status.success());
    let screen = String::from_utf8_lossy(&out.stdout);
    // Finished steps stay as one line each with a mark and a time; no `#N` plain lines.
    assert!(
        screen.contains("✔ [builder 4/4] RUN sh make-greeting.sh > /greeting.txt"),
        "{screen}"
    );
    assert!(screen.contains("built in "), "{screen}");
    assert!(!screen.contains("#5 DONE"), "{screen}");
}

/// A 64-byte ELF header for an executable of a CPU nothing here runs or emulates (Knuth's MMIX):
/// the kernel refuses it with ENOEXEC, as it refuses any foreign program without an emulator.
fn foreign_elf_header() -> Vec<u8> {
    let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    h.resize(16, 0);
    h.extend(2u16.to_le_bytes()); // e_type: executable
    h.extend(80u16.to_le_bytes()); // e_machine: MMIX
    h.extend(1u32.to_le_bytes()); // e_version
    h.extend(0x400000u64.to_le_bytes()); // e_entry
    h.extend(64u64.to_le_bytes()); // e_phoff
    h.extend(0u64.to_le_bytes()); // e_shoff
    h.extend(0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 0, 0, 0, 0] {
        h.extend(v.to_le_bytes()); // header, program and section header sizes and counts
    }
    h
}

#[test]
fn platforms_choose_base_images_and_name_the_result() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    env.base_image();
    let addr = &registry.addr;

    // One image per platform, each saying which it is, pushed by rbuild...
    let per_platform = env.context(
        "per-platform",
        &[
            (
                "Dockerfile",
                "FROM scratch\nARG TARGETARCH\nCOPY arch-$TARGETARCH /arch\n",
            ),
            ("arch-amd64", "amd64\n"),
            ("arch-arm64", "arm64\n"),
        ],
    );
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let name = format!("{addr}/demo/multi:{arch}");
        env.rbuild(&[
            "build",
            "--platform",
            &format!("linux/{arch}"),
            "-o",
            &format!("type=registry,name={name}"),
            per_platform.to_str().unwrap(),
        ])
        .ok();
        let remote = format!("docker://{name}");
        let config = json(&tool(
            "skopeo",
            &["inspect", "--config", "--tls-verify=false", &remote],
        ));
        assert_eq!(
            (config["os"].as_str(), config["architecture"].as_str()),
            (Some("linux"), Some(arch)),
            "{config}"
        );
        let raw = tool(
            "skopeo",
            &["inspect", "--raw", "--tls-verify=false", &remote],
        );
        let digest = sha256_digest(raw.as_bytes());
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": digest,
            "size": raw.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    // ...and a manifest list of both (as `docker manifest push` makes).
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": entries,
    });
    let list_file = env.path("list.json");
    std::fs::write(&list_file, list.to_string()).unwrap();
    tool(
        "curl",
        &[
            "-sSf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.docker.distribution.manifest.list.v2+json",
            "--data-binary",
            &format!("@{}", list_file.display()),
            &format!("http://{addr}/v2/demo/multi/manifests/latest"),
        ],
    );
    let multi = format!("{addr}/demo/multi");

    // The cross-compiling pattern: a build stage on the build platform, told the target.
    let cross = env.context(
        "cross",
        &[(
            "Dockerfile",
            &format!(
                "FROM --platform=$BUILDPLATFORM rbuild-demo/busybox AS tools\n\
                 ARG TARGETPLATFORM TARGETARCH BUILDPLATFORM\n\
                 RUN echo \"$TARGETPLATFORM $TARGETARCH $BUILDPLATFORM\" > /built-for\n\
                 FROM {multi}\n\
                 COPY --from=tools /built-for /\n"
            ),
        )],
    );
    for (platform, arch) in [(Some("linux/arm64"), "arm64"), (None, "amd64")] {
        let out = env.path(&format!("cross-{arch}"));
        let dest = format!("type=local,dest={}", out.display());
        let mut args = vec!["build", "--load", "-t", "cross:1", "-o", &dest];
        if let Some(p) = platform {
            args.extend(["--platform", p]);
        }
        args.push(cross.to_str().unwrap());
        env.rbuild(&args).ok();
        assert_eq!(
            std::fs::read_to_string(out.join("arch")).unwrap(),
            format!("{arch}\n"),
            "the base image for {platform:?}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("built-for")).unwrap(),
            format!("linux/{arch} {arch} linux/amd64\n")
        );
        let inspected = json(&env.rbuild(&["inspect", "cross:1"]).ok().stdout);
        let config = &inspected[0];
        assert_eq!(config["Architecture"], arch, "{inspected}");
        assert_eq!(config["Os"], "linux");
    }

    // graph --platform keys steps as that build does: the tools RUN (TARGETARCH=arm64) is
    // cached for arm64, and not for a platform never built.
    let tools_run_cached = |platform: &str| {
        let text = env
            .rbuild(&[
                "graph",
                "--format",
                "json",
                "--platform",
                platform,
                cross.to_str().unwrap(),
            ])
            .ok()
            .stdout;
        json(&text)["vertices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str().unwrap().starts_with("RUN echo"))
            .map(|v| v["cached"].clone())
            .unwrap()
    };
    assert_eq!(tools_run_cached("linux/arm64"), serde_json::json!(true));
    assert_eq!(tools_run_cached("linux/s390x"), serde_json::json!(false));

    // Without --platform, FROM --platform is the image's platform (as with BuildKit).
    let pinned = env.context(
        "pinned",
        &[(
            "Dockerfile",
            &format!("FROM --platform=linux/arm64 {multi}\nLABEL pinned=1\n"),
        )],
    );
    env.rbuild(&["build", "-t", "pinned:1", pinned.to_str().unwrap()])
        .ok();
    let inspected = json(&env.rbuild(&["inspect", "pinned:1"]).ok().stdout);
    assert_eq!(inspected[0]["Architecture"], "arm64", "{inspected}");

    // pull takes the platform asked for.
    let pulled = env
        .rbuild(&["pull", "--platform", "linux/arm64", &multi])
        .ok();
    let arm64_digest = entries[1]["digest"].as_str().unwrap();
    assert!(
        pulled.stdout.contains(&format!("Digest: {arm64_digest}")),
        "{}",
        pulled.stdout
    );

    // A platform the index does not have: a clear error that lists the ones it has.
    let missing = env.rbuild(&[
        "build",
        "--platform",
        "linux/s390x",
        "--pull",
        cross.to_str().unwrap(),
    ]);
    assert_ne!(missing.code, 0);
    assert!(
        missing
            .stderr
            .contains("has no linux/s390x image (it has: linux/amd64, linux/arm64)"),
        "{}",
        missing.stderr
    );
    let bad = env.rbuild(&["build", "--platform", "linux/", cross.to_str().unwrap()]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("invalid --platform"), "{}", bad.stderr);

    // A RUN of a program for another CPU, with no emulator for it: the error says what is
    // missing.
    {
        let foreign = env.context(
            "foreign",
            &[(
                "Dockerfile",
                "FROM scratch\nCOPY --chmod=755 prog /prog\nRUN [\"/prog\"]\n",
            )],
        );
        std::fs::write(foreign.join("prog"), foreign_elf_header()).unwrap();
        let run = env.rbuild(&[
            "build",
            "--platform",
            "linux/arm64",
            foreign.to_str().unwrap(),
        ]);
        assert_ne!(run.code, 0);
        assert!(
            run.stderr.contains("exec format error") && run.stderr.contains("binfmt_misc"),
            "{}",
            run.stderr
        );
        assert!(env.leaked_mounts().is_empty());
    }
}

#[test]
fn bearer_token_login_push_and_pull() {
    require_root!();
    let tokens = common::TokenServer::start("alice", "t0ken-pw");
    let registry = Registry::start_with(common::RegistrySetup {
        token: Some(&tokens),
        ..Default::default()
    });
    let addr = registry.addr.clone();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo bearer > /b\n",
        )],
    );
    env.rbuild(&["build", "-q", "-t", "bearer:1", ctx.to_str().unwrap()])
        .ok();
    let remote = format!("{addr}/demo/bearer:1");
    // Anonymous, the token service grants nothing; a wrong password it refuses.
    assert_refusals(&env, "bearer:1", &remote, "alice");
    env.rbuild_with(
        &["login", &addr, "-u", "alice", "--password-stdin"],
        "t0ken-pw\n",
        &[],
    )
    .ok();
    // Push and pull through the bearer flow: tokens scoped to the repository.
    env.rbuild(&["push", "bearer:1", &remote]).ok();
    let asked = tokens.requests.lock().unwrap().clone();
    assert!(
        asked.iter().any(|(who, scopes)| who == "alice"
            && scopes
                .iter()
                .any(|s| s.starts_with("repository:demo/bearer:") && s.contains("push"))),
        "{asked:?}"
    );
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "alice:t0ken-pw",
            &format!("docker://{remote}"),
        ],
    ));
    assert!(inspect["Digest"].as_str().unwrap().starts_with("sha256:"));
    let fresh = env.with_same_logins();
    fresh.rbuild(&["pull", &remote]).ok();
    let from = fresh.context(
        "from",
        &[(
            "Dockerfile",
            &format!("FROM {remote}\nRUN cat /b > /seen\n"),
        )],
    );
    let out = fresh.path("out");
    fresh
        .rbuild(&[
            "build",
            "-o",
            &format!("type=local,dest={}", out.display()),
            from.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        std::fs::read_to_string(out.join("seen")).unwrap(),
        "bearer\n"
    );
}

#[test]
fn multi_platform_builds_make_an_index() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM --platform=$BUILDPLATFORM rbuild-demo/busybox AS tools\n\
             ARG TARGETARCH\n\
             RUN echo \"$TARGETARCH\" > /arch\n\
             FROM --platform=$BUILDPLATFORM rbuild-demo/busybox AS common\n\
             RUN echo common > /common\n\
             FROM scratch\n\
             COPY --from=tools /arch /arch\n\
             COPY --from=common /common /common\n",
        )],
    );
    let remote = format!("{}/demo/mp:1", registry.addr);
    let archive = env.path("mp.tar");
    let dir = env.path("mp-dir");
    let metadata = env.path("metadata.json");
    let iid = env.path("iid");
    let built = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            &format!("type=registry,name={remote}"),
            "-o",
            &format!("type=oci,dest={},name=mp:oci", archive.display()),
            "-o",
            &format!("type=local,dest={}", dir.display()),
            "--metadata-file",
            metadata.to_str().unwrap(),
            "--iidfile",
            iid.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ])
        .ok();
    // Steps are named with their platform; what does not depend on it runs once.
    let ran = Progress::parse(&built.stderr).ran();
    let count = |text: &str| ran.iter().filter(|n| n.contains(text)).count();
    assert_eq!(count("RUN echo common"), 1, "{ran:?}");
    assert_eq!(count("> /arch"), 2, "{ran:?}");
    assert!(
        ran.iter()
            .any(|n| n.starts_with("[linux/amd64->arm64 tools 2/2] RUN")),
        "{ran:?}"
    );
    assert!(
        ran.iter()
            .any(|n| n.starts_with("[linux/arm64 stage-2 1/2] COPY --from=tools")),
        "{ran:?}"
    );
    for arch in ["amd64", "arm64"] {
        let root = dir.join(format!("linux_{arch}"));
        assert_eq!(
            std::fs::read_to_string(root.join("arch")).unwrap(),
            format!("{arch}\n")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("common")).unwrap(),
            "common\n"
        );
    }
    // The registry has a manifest list (Docker media types, the image exporter's default)...
    let raw = |transport: &str| {
        json(&tool(
            "skopeo",
            &["inspect", "--raw", "--tls-verify=false", transport],
        ))
    };
    let pushed = format!("docker://{remote}");
    let list = raw(&pushed);
    assert_eq!(
        list["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json",
        "{list}"
    );
    let platforms: Vec<String> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]).replace('"', "")
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    // ...and the OCI archive an OCI index; each platform's config says which it is.
    let oci = format!("oci-archive:{}", archive.display());
    assert_eq!(
        raw(&oci)["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    for transport in [&pushed, &oci] {
        let config = json(&tool(
            "skopeo",
            &[
                "--override-arch",
                "arm64",
                "inspect",
                "--config",
                "--tls-verify=false",
                transport,
            ],
        ));
        assert_eq!(config["architecture"], "arm64", "{transport}: {config}");
    }
    // The image id and metadata name the index, as buildx does for several platforms.
    let meta = json(&std::fs::read_to_string(&metadata).unwrap());
    let digest = meta["containerimage.digest"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), digest);
    assert!(meta.get("containerimage.config.digest").is_none(), "{meta}");
    // load takes the platform asked for from the archive's index.
    let loaded = env
        .rbuild(&[
            "load",
            "--platform",
            "linux/arm64",
            "-i",
            archive.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(loaded.stdout, "Loaded image: mp:oci\n");
    let inspected = json(&env.rbuild(&["inspect", "mp:oci"]).ok().stdout);
    assert_eq!(inspected[0]["Architecture"], "arm64", "{inspected}");
    // rbuild builds on its own multi-platform image, choosing the platform's entry.
    let user = env.context(
        "user",
        &[(
            "Dockerfile",
            &format!("FROM {remote}\nCOPY --from={remote} /arch /copied\n"),
        )],
    );
    let out = env.path("user-out");
    env.rbuild(&[
        "build",
        "--platform",
        "linux/arm64",
        "-o",
        &format!("type=local,dest={}", out.display()),
        user.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(out.join("arch")).unwrap(),
        "arm64\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("copied")).unwrap(),
        "arm64\n"
    );
    // Outputs that hold one platform say so before anything is built.
    for (flags, expected) in [
        (vec!["-t", "mp:1"], "cannot go to the local image store"),
        (vec!["-o", "type=docker,dest=x.tar"], "use type=oci"),
    ] {
        let mut args = vec!["build", "--platform", "linux/amd64,linux/arm64"];
        args.extend(flags);
        args.push(ctx.to_str().unwrap());
        let refused = env.rbuild(&args);
        assert_ne!(refused.code, 0);
        assert!(refused.stderr.contains(expected), "{}", refused.stderr);
    }
}

/// Where scripts/install-emulation.sh puts Debian's busybox for arm64.
const ARM64_BUSYBOX: &str = "/var/lib/rbuild-test/arm64/busybox";

#[test]
fn run_steps_for_another_cpu_run_under_emulation() {
    require_root!();
    // Needs a binfmt_misc handler for arm64 and an arm64 busybox: scripts/install-emulation.sh
    // (which CI runs) sets both up.
    if !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists()
        || !Path::new(ARM64_BUSYBOX).exists()
    {
        eprintln!(
            "skipped: needs QEMU's arm64 emulator registered with binfmt_misc and {ARM64_BUSYBOX} \
             (run scripts/install-emulation.sh as root)"
        );
        return;
    }
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM scratch\nARG TARGETARCH\nADD rootfs-$TARGETARCH.tar /\n\
             RUN uname -m > /machine && echo \"$TARGETARCH\" > /target\n",
        )],
    );
    for (arch, busybox) in [("amd64", "/bin/busybox"), ("arm64", ARM64_BUSYBOX)] {
        let status = std::process::Command::new(testdata().join("busybox/make-rootfs.sh"))
            .arg(ctx.join(format!("rootfs-{arch}.tar")))
            .env("BUSYBOX", busybox)
            .status()
            .unwrap();
        assert!(status.success());
    }
    // One build, two platforms: each platform's RUN runs its own busybox, arm64's emulated.
    let out = env.path("out");
    env.rbuild(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=local,dest={}", out.display()),
        ctx.to_str().unwrap(),
    ])
    .ok();
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let root = out.join(format!("linux_{arch}"));
        assert_eq!(
            std::fs::read_to_string(root.join("machine")).unwrap(),
            format!("{machine}\n")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("target")).unwrap(),
            format!("{arch}\n")
        );
    }
    assert!(env.leaked_mounts().is_empty());
}
