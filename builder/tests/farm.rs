//! End to end, build farms: the cache shared through Debian's docker-registry and through an
//! OCI layout between state directories that know nothing of each other (other paths, other
//! context mtimes). Needs root.

mod common;

use common::*;
use std::path::Path;

/// A multi-stage Dockerfile on the base image pushed to `registry`: a dependency step that
/// does not read the sources, a build step that does, and a final stage.
fn dockerfile(registry: &str) -> String {
    format!(
        "FROM {registry}/base/busybox AS build\n\
         RUN sleep 1 && echo deps > /deps\n\
         WORKDIR /src\n\
         COPY src/ ./\n\
         RUN sleep 1 && cat *.txt > /out.txt && date +%s%N > /stamp\n\
         FROM {registry}/base/busybox\n\
         COPY --from=build /out.txt /stamp /\n\
         RUN sleep 1 && wc -c /out.txt > /size\n"
    )
}

/// A build context with the Dockerfile and two source files, made afresh (new mtimes).
fn context(env: &Env, registry: &str, main: &str) -> std::path::PathBuf {
    env.context(
        "ctx",
        &[
            ("Dockerfile", &dockerfile(registry)),
            ("src/main.txt", main),
            ("src/lib.txt", "library code\n"),
        ],
    )
}

struct Built {
    image_id: String,
    pushed: String,
    ran: Vec<String>,
    cached: Vec<String>,
    stderr: String,
}

/// Builds `ctx` in `env` with `extra` flags, pushing it as `name` (without the default
/// provenance, whose build times would make each push's index differ: these tests compare
/// what was pushed).
fn build(env: &Env, ctx: &Path, name: &str, extra: &[&str]) -> Built {
    let iid = env.path("iid");
    let meta = env.path("meta.json");
    let mut args = vec![
        "build",
        "--progress=plain",
        "--provenance=false",
        "--push",
        "-t",
        name,
        "--iidfile",
        iid.to_str().unwrap(),
        "--metadata-file",
        meta.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let run = env.rbuild(&args).ok();
    let progress = Progress::parse(&run.stderr);
    let metadata = json(&std::fs::read_to_string(&meta).unwrap());
    // The descriptor describes the manifest the digest names (the pushed one).
    assert_eq!(
        metadata["containerimage.descriptor"]["digest"],
        metadata["containerimage.digest"]
    );
    Built {
        image_id: std::fs::read_to_string(&iid).unwrap(),
        pushed: metadata["containerimage.digest"]
            .as_str()
            .unwrap()
            .to_string(),
        ran: progress.ran(),
        cached: progress.cached_steps(),
        stderr: run.stderr,
    }
}

/// Layer blobs and snapshots in a state directory (manifests and configs are JSON).
fn layers_here(env: &Env) -> (usize, usize) {
    let blobs = std::fs::read_dir(env.root().join("content/blobs/sha256"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    serde_json::from_slice::<serde_json::Value>(&bytes).is_err()
                })
                .count()
        })
        .unwrap_or(0);
    let snapshots = std::fs::read_dir(env.root().join("snapshots"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("sha256"))
                .count()
        })
        .unwrap_or(0);
    (blobs, snapshots)
}

/// A registry, and machine A, which pushed the base image to it.
fn machine_a() -> (Registry, Env) {
    let registry = Registry::start();
    let a = Env::new();
    a.base_image();
    let base = format!("{}/base/busybox", registry.addr);
    a.rbuild(&["push", "rbuild-demo/busybox", &base]).ok();
    (registry, a)
}

/// Whether a new machine building `dockerfile` (with `src/a.txt`) from the cache `from`,
/// with SOURCE_DATE_EPOCH, runs no step. `extra` are more build flags.
fn fresh_machine_runs_nothing(dockerfile: &str, from: &str, extra: &[&str]) -> bool {
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", dockerfile), ("src/a.txt", "same\n")],
    );
    let mut args = vec!["build", "--progress=plain", "--cache-from", from];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    let run = env
        .rbuild_with(&args, "", &[("SOURCE_DATE_EPOCH", "1700000000")])
        .ok();
    let ran = Progress::parse(&run.stderr).ran();
    if !ran.is_empty() {
        eprintln!("{}", run.stderr);
    }
    ran.is_empty()
}

fn runs(steps: &[String]) -> usize {
    steps.iter().filter(|s| s.contains(" RUN ")).count()
}

/// Why it is one piece: the farm scenario of issue 13 in order: machine A exports, an empty
/// machine B builds from A's cache, changes a file and exports its own, A builds from B's.
/// Each part needs the state the one before left.
#[allow(clippy::too_many_lines)]
#[test]
fn two_machines_share_one_registry_cache() {
    require_root!();
    let (registry, a) = machine_a();
    let reg = registry.addr.as_str();
    let cache_main = format!("type=registry,ref={reg}/cache:main,mode=max");
    let ctx_a = context(&a, reg, "version 1\n");
    let first = build(
        &a,
        &ctx_a,
        &format!("{reg}/app:a"),
        &["--cache-to", &cache_main],
    );
    assert_eq!(runs(&first.ran), 3, "{}", first.stderr);
    assert!(
        first
            .stderr
            .contains(&format!("exporting cache to {reg}/cache:main")),
        "{}",
        first.stderr
    );
    // The cache is an image manifest whose config is the record; skopeo reads it.
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reg}/cache:main"),
        ],
    ));
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.rbuild.cache.config.v1+json"
    );
    assert!(raw["layers"].as_array().unwrap().len() >= 4, "{raw}");

    // B: another root at another path, the context written anew (other mtimes).
    let b = Env::new();
    let ctx_b = context(&b, reg, "version 1\n");
    let from_main = format!("type=registry,ref={reg}/cache:main");
    let second = build(
        &b,
        &ctx_b,
        &format!("{reg}/app:b"),
        &["--cache-from", &from_main],
    );
    assert!(
        second.ran.is_empty(),
        "nothing runs on B: {}",
        second.stderr
    );
    assert_eq!(runs(&second.cached), 3, "{}", second.stderr);
    assert_eq!(second.image_id, first.image_id);
    assert_eq!(second.pushed, first.pushed, "the same manifest is pushed");
    assert_eq!(
        layers_here(&b),
        (0, 0),
        "B downloaded no layer: {}",
        second.stderr
    );

    // B changes a source file: the steps that read it run, the dependency step does not
    // (its layer is downloaded: the COPY needs it); B exports its own cache.
    std::fs::write(ctx_b.join("src/main.txt"), "version 2\n").unwrap();
    let cache_branch = format!("type=registry,ref={reg}/cache:branch,mode=max");
    let third = build(
        &b,
        &ctx_b,
        &format!("{reg}/app:b2"),
        &[
            "--cache-from",
            &from_main,
            "--cache-to",
            &cache_branch,
            "--explain",
        ],
    );
    assert_eq!(runs(&third.ran), 2, "{}", third.stderr);
    // Why, from A's summaries in the cache: the file, then what depends on it.
    assert!(
        third
            .stderr
            .contains("COPY src/ ./: context file src/main.txt: content changed"),
        "{}",
        third.stderr
    );
    let last = b.rbuild(&["explain", "--last"]).ok().stdout;
    assert!(
        last.contains(
            "  context file src/main.txt: content changed
"
        ),
        "{last}"
    );
    assert!(
        last.contains("the result of `[build 4/5] COPY src/ ./` changed"),
        "{last}"
    );
    assert!(
        third.cached.iter().any(|s| s.contains("echo deps")),
        "{}",
        third.stderr
    );
    assert_ne!(third.image_id, first.image_id);

    // A builds the changed sources from B's cache: nothing runs, B's image.
    std::fs::write(ctx_a.join("src/main.txt"), "version 2\n").unwrap();
    let from_branch = format!("type=registry,ref={reg}/cache:branch");
    let fourth = build(
        &a,
        &ctx_a,
        &format!("{reg}/app:a2"),
        &["--cache-from", &from_branch],
    );
    assert!(fourth.ran.is_empty(), "{}", fourth.stderr);
    assert_eq!(fourth.image_id, third.image_id);
    assert_eq!(fourth.pushed, third.pushed);
    // The two branches did not clobber each other: main's cache still gives version 1, also
    // after skopeo copied it to another repository.
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{reg}/cache:main"),
            &format!("docker://{reg}/copied/cache:main"),
        ],
    );
    let c = Env::new();
    let ctx_c = context(&c, reg, "version 1\n");
    let from_copy = format!("{reg}/copied/cache:main");
    let fifth = build(
        &c,
        &ctx_c,
        &format!("{reg}/app:c"),
        &["--cache-from", &from_copy],
    );
    assert!(fifth.ran.is_empty(), "{}", fifth.stderr);
    assert_eq!(fifth.image_id, first.image_id);

    // An unchanged cache is not pushed again: A's records for these steps are B's.
    let again = build(
        &a,
        &ctx_a,
        &format!("{reg}/app:a2"),
        &["--cache-from", &from_branch, "--cache-to", &cache_branch],
    );
    assert!(again.ran.is_empty(), "{}", again.stderr);
    assert!(
        again.stderr.contains("records") && again.stderr.contains(" unchanged"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_cache_in_an_oci_layout_is_shared_too() {
    require_root!();
    let (registry, a) = machine_a();
    let reg = registry.addr.as_str();
    let dir = a.path("cache-dir");
    let ctx_a = context(&a, reg, "local\n");
    let to = format!("type=local,dest={},mode=max", dir.display());
    let first = build(&a, &ctx_a, &format!("{reg}/app:l"), &["--cache-to", &to]);
    assert_eq!(runs(&first.ran), 3, "{}", first.stderr);
    // A valid OCI layout, which skopeo reads.
    let raw = json(&tool(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:latest", dir.display())],
    ));
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.rbuild.cache.config.v1+json"
    );
    let b = Env::new();
    let ctx_b = context(&b, reg, "local\n");
    let from = format!("type=local,src={}", dir.display());
    // Not pushed: named here, so the layers are copied in from the layout.
    let iid = b.path("iid");
    let run = b
        .rbuild(&[
            "build",
            "--progress=plain",
            "-t",
            "app:l",
            "--cache-from",
            &from,
            "--iidfile",
            iid.to_str().unwrap(),
            ctx_b.to_str().unwrap(),
        ])
        .ok();
    assert!(
        Progress::parse(&run.stderr).ran().is_empty(),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), first.image_id);
    let out = b.rbuild(&["run", "--rm", "app:l", "cat", "/out.txt"]).ok();
    assert_eq!(out.stdout, "library code\nlocal\n");
    // B changes a file and writes its cache under another tag of the same layout; A builds
    // the change from that tag and runs nothing; the first tag is still there.
    std::fs::write(ctx_b.join("src/main.txt"), "changed\n").unwrap();
    let to_branch = format!("type=local,dest={},tag=branch,mode=max", dir.display());
    let third = build(
        &b,
        &ctx_b,
        &format!("{reg}/app:l2"),
        &["--cache-from", &from, "--cache-to", &to_branch],
    );
    assert_eq!(runs(&third.ran), 2, "{}", third.stderr);
    std::fs::write(ctx_a.join("src/main.txt"), "changed\n").unwrap();
    let from_branch = format!("type=local,src={},tag=branch", dir.display());
    let fourth = build(
        &a,
        &ctx_a,
        &format!("{reg}/app:l3"),
        &["--cache-from", &from_branch],
    );
    assert!(fourth.ran.is_empty(), "{}", fourth.stderr);
    assert_eq!(fourth.image_id, third.image_id);
    let index = json(&std::fs::read_to_string(dir.join("index.json")).unwrap());
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
}

#[test]
fn caches_that_cannot_be_read_or_written_are_warnings() {
    require_root!();
    let registry = Registry::start();
    let reg = registry.addr.as_str();
    let a = Env::new();
    a.base_image();
    let ctx = a.context(
        "ctx",
        &[("Dockerfile", "FROM rbuild-demo/busybox\nRUN echo hi > /x\n")],
    );
    let missing = format!("{reg}/cache:nope");
    // A registry that is not there, for the export.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("type=registry,ref={}/cache:x", closed.local_addr().unwrap());
    drop(closed);
    let not_a_cache = format!("{reg}/base/busybox");
    a.rbuild(&["push", "rbuild-demo/busybox", &not_a_cache])
        .ok();
    let run = a
        .rbuild(&[
            "build",
            "--progress=plain",
            "--cache-from",
            &missing,
            "--cache-from",
            &not_a_cache,
            "--cache-to",
            &gone,
            ctx.to_str().unwrap(),
        ])
        .ok();
    assert!(
        run.stderr
            .contains(&format!("cache {missing} not imported")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("it is not an rbuild cache"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("cache not exported to"),
        "{}",
        run.stderr
    );
    // Asked to fail: it does, naming the cache.
    let strict = format!("{gone},ignore-error=false");
    let run = a.rbuild(&["build", "--cache-to", &strict, ctx.to_str().unwrap()]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("exporting the cache to"),
        "{}",
        run.stderr
    );
    // Bad specs are usage errors.
    let run = a.rbuild(&["build", "--cache-to", "type=gha", ctx.to_str().unwrap()]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("\"gha\" is not supported"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_image_with_an_inline_cache_seeds_the_next_build() {
    require_root!();
    let (registry, a) = machine_a();
    let reg = registry.addr.as_str();
    let ctx_a = context(&a, reg, "inline\n");
    let first = build(
        &a,
        &ctx_a,
        &format!("{reg}/app:inline"),
        &["--cache-to", "type=inline"],
    );
    assert_eq!(runs(&first.ran), 3, "{}", first.stderr);
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reg}/app:inline"),
        ],
    ));
    let records = config["rbuild.cache.v1"]["records"].as_array().unwrap();
    assert!(!records.is_empty(), "{config}");
    // B has only the image: its final stage comes from it, and the builder stage, which the
    // final stage no longer needs, does not run either.
    let b = Env::new();
    let ctx_b = context(&b, reg, "inline\n");
    let from = format!("{reg}/app:inline");
    let second = build(
        &b,
        &ctx_b,
        &format!("{reg}/app:inline2"),
        &["--cache-from", &from, "--cache-to", "type=inline"],
    );
    assert!(second.ran.is_empty(), "{}", second.stderr);
    assert_eq!(second.image_id, first.image_id);
    assert_eq!(layers_here(&b), (0, 0), "{}", second.stderr);
    // B changes a file: an inline cache holds only the final stage, so B runs the builder
    // stage too, and pushes an image carrying the new cache; A, whose sources changed the
    // same way, takes its final stage from that image and runs nothing.
    std::fs::write(ctx_b.join("src/main.txt"), "inline 2\n").unwrap();
    let from_second = format!("{reg}/app:inline2");
    let third = build(
        &b,
        &ctx_b,
        &format!("{reg}/app:inline3"),
        &["--cache-from", &from_second, "--cache-to", "type=inline"],
    );
    assert_eq!(runs(&third.ran), 3, "{}", third.stderr);
    std::fs::write(ctx_a.join("src/main.txt"), "inline 2\n").unwrap();
    let from_third = format!("{reg}/app:inline3");
    let fourth = build(
        &a,
        &ctx_a,
        &format!("{reg}/app:inline4"),
        &["--cache-from", &from_third, "--cache-to", "type=inline"],
    );
    assert!(fourth.ran.is_empty(), "{}", fourth.stderr);
    assert_eq!(fourth.image_id, third.image_id);
}

#[test]
fn four_machines_building_at_once_share_one_cache_ref() {
    require_root!();
    let (registry, a) = machine_a();
    let reg = registry.addr.as_str();
    let dockerfile = format!(
        "FROM {reg}/base/busybox AS build\n\
         COPY src/ /src/\n\
         RUN sleep 1 && cat /src/* > /out.txt\n\
         FROM {reg}/base/busybox\n\
         COPY --from=build /out.txt /\n\
         RUN sleep 1 && wc -c /out.txt > /size\n"
    );
    let cache = format!("{reg}/cache:shared");
    let to = format!("type=registry,ref={cache},mode=max");
    let machines: Vec<Env> = (0..4).map(|_| Env::new()).collect();
    let handles: Vec<_> = machines
        .iter()
        .enumerate()
        .map(|(n, env)| {
            let ctx = env.context(
                "ctx",
                &[("Dockerfile", &dockerfile), ("src/a.txt", "same\n")],
            );
            let mut c = env.command();
            c.env("SOURCE_DATE_EPOCH", "1700000000");
            // The snapshotter is not part of any key or layer: one machine copies.
            if n == 3 {
                c.env("RBUILD_SNAPSHOTTER", "native");
            }
            c.args([
                "build",
                "--progress=plain",
                "--push",
                "--cache-from",
                &cache,
            ])
            .args(["--cache-to", &to, "-t", &format!("{reg}/app:m{n}")])
            .arg("--iidfile")
            .arg(env.path("iid"))
            .arg(ctx)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for handle in handles {
        let out = handle.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ids: Vec<String> = machines
        .iter()
        .map(|m| std::fs::read_to_string(m.path("iid")).unwrap())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    // Pushed to another registry, the layers the cache registry has are fetched and uploaded.
    let other = Registry::start();
    let moved = format!("{}/app:moved", other.addr);
    assert!(fresh_machine_runs_nothing(
        &dockerfile,
        &cache,
        &["--push", "-t", &moved]
    ));
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{moved}"),
            &format!("oci:{}:moved", a.path("copied").display()),
        ],
    );
    // skopeo copies the cache itself to the other registry: a build there runs nothing.
    let copied = format!("{}/cache:copied", other.addr);
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{cache}"),
            &format!("docker://{copied}"),
        ],
    );
    assert!(fresh_machine_runs_nothing(&dockerfile, &copied, &[]));
    // Whichever wrote the ref last, it is whole: a fifth machine runs nothing.
    assert!(fresh_machine_runs_nothing(&dockerfile, &cache, &[]));
    drop(a);
}

#[test]
fn cache_mount_contents_travel_when_asked() {
    require_root!();
    let (registry, a) = machine_a();
    let reg = registry.addr.as_str();
    let fill = format!(
        "FROM {reg}/base/busybox\n\
         RUN --mount=type=cache,target=/root/.cache sh -c 'mkdir -p /root/.cache/pkgs && \
         echo downloaded-on-a > /root/.cache/pkgs/lib.tgz'\n"
    );
    let ctx = a.context("fill", &[("Dockerfile", &fill)]);
    let to = format!("type=registry,ref={reg}/cache:mounts,mode=max,cache-mounts=true");
    a.rbuild(&["build", "--cache-to", &to, ctx.to_str().unwrap()])
        .ok();
    // B's first step that mounts the cache sees A's files; without cache-mounts=true it would
    // start empty.
    let b = Env::new();
    let read = format!(
        "FROM {reg}/base/busybox\n\
         RUN --mount=type=cache,target=/root/.cache cat /root/.cache/pkgs/lib.tgz > /got\n"
    );
    let ctx = b.context("read", &[("Dockerfile", &read)]);
    let from = format!("{reg}/cache:mounts");
    let run = b
        .rbuild(&[
            "build",
            "--progress=plain",
            "-t",
            "got",
            "--cache-from",
            &from,
            ctx.to_str().unwrap(),
        ])
        .ok();
    assert!(run.stderr.contains("1 cache mounts"), "{}", run.stderr);
    let out = b.rbuild(&["run", "--rm", "got", "cat", "/got"]).ok();
    assert_eq!(out.stdout, "downloaded-on-a\n");
    // Without them, a third machine's cache starts empty, and the step fails.
    let c = Env::new();
    let ctx = c.context("read", &[("Dockerfile", &read)]);
    let plain = format!("{reg}/cache:plain");
    let fill_ctx = a.context("fill2", &[("Dockerfile", &fill)]);
    let to_plain = format!("type=registry,ref={plain},mode=max");
    a.rbuild(&["build", "--cache-to", &to_plain, fill_ctx.to_str().unwrap()])
        .ok();
    let run = c.rbuild(&["build", "--cache-from", &plain, ctx.to_str().unwrap()]);
    assert_ne!(run.code, 0, "{}", run.stderr);
}

#[test]
fn the_builders_umask_does_not_reach_the_layers() {
    require_root!();
    let dockerfile = "FROM rbuild-demo/busybox\nWORKDIR /made/by/workdir\nCOPY f /deep/dir/\n\
                      RUN mkdir /d && touch /d/f\n";
    let rootfs: Vec<String> = ["0022", "0002"]
        .iter()
        .map(|umask| {
            let env = Env::new();
            env.base_image();
            let ctx = env.context("ctx", &[("Dockerfile", dockerfile), ("f", "x")]);
            let rbuild = assert_cmd::cargo::cargo_bin!("rbuild");
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
                .arg(rbuild)
                .arg("--root")
                .arg(env.root())
                .args([
                    "build",
                    "-q",
                    "-o",
                    "type=tar,dest=-",
                    ctx.to_str().unwrap(),
                ])
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            sha256_digest(&out.stdout)
        })
        .collect();
    // The root filesystems, modes and all, are the same bytes.
    assert_eq!(rootfs[0], rootfs[1]);
}

#[test]
fn a_rootless_build_finds_what_a_rootful_one_cached() {
    require_root!();
    if rootless_pass() {
        // Switching to another user needs the real root: the rootful pass runs this.
        return;
    }
    let (registry, a) = machine_a();
    let reg = registry.addr.as_str();
    let ctx = context(&a, reg, "rootless\n");
    let dir = a.path("cache");
    let to = format!("type=local,dest={},mode=max", dir.display());
    a.rbuild(&["build", "--cache-to", &to, ctx.to_str().unwrap()])
        .ok();
    // An unprivileged user (nobody) with a state directory of its own: rbuild enters a user
    // namespace, and every step comes from the rootful build's cache.
    let home = tempfile::tempdir().unwrap();
    for open in [a.dir.path(), home.path()] {
        std::fs::set_permissions(open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
    }
    tool("chmod", &["-R", "a+rX", a.dir.path().to_str().unwrap()]);
    let rbuild = assert_cmd::cargo::cargo_bin!("rbuild");
    let from = format!("type=local,src={}", dir.display());
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(rbuild)
        .arg("--root")
        .arg(home.path().join("root"))
        .args(["build", "--progress=plain", "--cache-from", &from])
        .arg(&ctx)
        .env("HOME", home.path())
        .env("DOCKER_CONFIG", home.path().join("docker"))
        .env_remove("RBUILD_ROOT")
        .output()
        .unwrap();
    let run = run_of(out).ok();
    assert!(
        Progress::parse(&run.stderr).ran().is_empty(),
        "{}",
        run.stderr
    );
    assert_eq!(
        runs(&Progress::parse(&run.stderr).cached_steps()),
        3,
        "{}",
        run.stderr
    );
}
