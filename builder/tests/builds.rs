//! End to end, building: the demo, flags and exit codes, RUN mounts, whiteouts, reproducible
//! builds, parallel stages and bad input. The rbuild binary against the real kernel and
//! third-party image tools; needs root (CI runs as root; `require_root!` fails under CI
//! instead of skipping).

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why it is one piece: One scenario, as a user lives it: build, run, rebuild from the cache, edit, rebuild; each
/// part checks what the one before left.
#[allow(clippy::too_many_lines)]
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
