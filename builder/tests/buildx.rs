//! End to end, what `docker buildx build` takes that a plain directory build does not: the
//! Dockerfile on stdin (`-f -`), a context on stdin (`-`: a tarball, or a Dockerfile alone), a
//! context from an HTTP URL (tarball or Dockerfile) and from a git server (`git daemon` on
//! loopback, with a branch, a tag, a commit and a subdirectory); the sandbox flags (`--add-host`,
//! `--ulimit`, `--shm-size`, `--cgroup-parent`, `--allow security.insecure`) and outputs buildx
//! has (`-o type=cacheonly`). Needs root.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tar.gz of `dir`'s contents.
fn tarball(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["-C"])
        .arg(dir)
        .args(["-czf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Builds `args` into a local directory and returns the content of `file` in it.
fn built_file(env: &Env, args: &[&str], stdin: Vec<u8>, file: &str) -> String {
    let dest = env.path("out");
    let _ = std::fs::remove_dir_all(&dest);
    let output = format!("type=local,dest={}", dest.display());
    let mut all = vec!["build", "-o", &output];
    all.extend_from_slice(args);
    let r = env.rbuild_stdin(&all, stdin).ok();
    std::fs::read_to_string(dest.join(file)).unwrap_or_else(|e| panic!("{file}: {e}\n{}", r.stderr))
}

#[test]
fn dockerfiles_and_contexts_on_stdin() {
    require_root!();
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", "FROM scratch\nCOPY hello.txt /from-file\n"),
            ("hello.txt", "hello\n"),
            (
                "sub/Other.Dockerfile",
                "FROM scratch\nCOPY hello.txt /other\n",
            ),
        ],
    );
    let ctx_arg = ctx.to_str().unwrap();
    // -f -: the Dockerfile from stdin, the context a directory.
    let stdin = b"FROM scratch\nCOPY hello.txt /from-stdin\n".to_vec();
    assert_eq!(
        built_file(&env, &["-f", "-", ctx_arg], stdin, "from-stdin"),
        "hello\n"
    );
    // -: a tarball is the context, its Dockerfile (or -f's, inside it) the Dockerfile.
    let tar = tarball(&ctx);
    assert_eq!(
        built_file(&env, &["-"], tar.clone(), "from-file"),
        "hello\n"
    );
    let args = ["-f", "sub/Other.Dockerfile", "-"];
    assert_eq!(built_file(&env, &args, tar, "other"), "hello\n");
    // -: anything else is the Dockerfile, with an empty context.
    let alone = b"FROM scratch\nCOPY <<EOF /inline\nmade\nEOF\n".to_vec();
    assert_eq!(built_file(&env, &["-"], alone, "inline"), "made\n");
    let r = env.rbuild_stdin(
        &["build", "-"],
        b"FROM scratch\nCOPY hello.txt /\n".to_vec(),
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("hello.txt"), "{}", r.stderr);
    // Errors name the Dockerfile as Docker does for stdin, not a temporary path.
    let r = env.rbuild_stdin(&["build", "-"], b"FROM scratch\nRUN\n".to_vec());
    assert!(r.stderr.contains("Dockerfile:2:1"), "{}", r.stderr);
    assert!(!r.stderr.contains("rbuild-context-"), "{}", r.stderr);
    let r = env.rbuild_stdin(&["build", "-f", "-", "-"], Vec::new());
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("can't use stdin for both"),
        "{}",
        r.stderr
    );
    // Nothing fetched is left behind.
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut c = env.command();
    c.args(["build", "-q", "-"]).env("TMPDIR", &tmp);
    let out = assert_cmd::Command::from_std(c)
        .write_stdin(tarball(&ctx))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "a leftover in TMPDIR"
    );
}

#[test]
fn contexts_from_an_http_url() {
    require_root!();
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", "FROM scratch\nCOPY hello.txt /from-url\n"),
            ("hello.txt", "over http\n"),
        ],
    );
    let served = env.path("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::write(served.join("ctx.tar.gz"), tarball(&ctx)).unwrap();
    std::fs::write(
        served.join("Dockerfile"),
        "FROM scratch\nCOPY <<EOF /alone\nno context\nEOF\n",
    )
    .unwrap();
    let server = HttpServer::start(&served);
    let url = format!("http://127.0.0.1:{}/ctx.tar.gz", server.port);
    assert_eq!(built_file(&env, &[&url], vec![], "from-url"), "over http\n");
    let url = format!("http://127.0.0.1:{}/Dockerfile", server.port);
    assert_eq!(built_file(&env, &[&url], vec![], "alone"), "no context\n");
    let url = format!("http://127.0.0.1:{}/missing.tar", server.port);
    let r = env.rbuild(&["build", &url]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("404") && r.stderr.contains(&url),
        "{}",
        r.stderr
    );
}

/// `git daemon` serving the repositories under a directory, on a free loopback port.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // `git daemon` would run git-daemon as its child, which killing `git` leaves serving.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git (Debian package git)");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon (Debian package git)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "git daemon did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs git in `dir` with a fixed identity.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with two commits on `main` (the first tagged `v1`), a branch `feature`, and a
/// subdirectory with its own Dockerfile.
fn repository(base: &Path) -> String {
    let repo = base.join("app.git");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("Dockerfile"), "FROM scratch\nCOPY version /\n").unwrap();
    std::fs::write(repo.join("version"), "one\n").unwrap();
    std::fs::write(repo.join("sub/Dockerfile"), "FROM scratch\nCOPY part /\n").unwrap();
    std::fs::write(repo.join("sub/part"), "sub one\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    git(&repo, &["tag", "v1"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.join("version"), "feature\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "feature"]);
    git(&repo, &["checkout", "-q", "main"]);
    std::fs::write(repo.join("version"), "two\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    first
}

#[test]
fn contexts_from_a_git_server() {
    require_root!();
    let env = Env::new();
    let base = env.path("git");
    let first = repository(&base);
    let daemon = GitDaemon::start(&base);
    let url = format!("git://127.0.0.1:{}/app.git", daemon.port);
    let at = |fragment: &str| format!("{url}{fragment}");
    assert_eq!(built_file(&env, &[&url], vec![], "version"), "two\n");
    assert_eq!(built_file(&env, &[&at("#v1")], vec![], "version"), "one\n");
    assert_eq!(
        built_file(&env, &[&at("#feature")], vec![], "version"),
        "feature\n"
    );
    assert_eq!(
        built_file(&env, &[&at(&format!("#{first}"))], vec![], "version"),
        "one\n"
    );
    assert_eq!(
        built_file(&env, &[&at("#main:sub")], vec![], "part"),
        "sub one\n"
    );
    let r = env.rbuild(&["build", &at("#no-such-branch")]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no-such-branch"), "{}", r.stderr);
}

#[test]
fn sandbox_flags_reach_run_steps() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\n\
             RUN grep db.internal /etc/hosts > /hosts && ulimit -n > /nofile && \\\n\
             df -k /dev/shm | tail -n 1 | awk '{print $2}' > /shm && cat /proc/self/cgroup > /cgroup\n\
             RUN --security=insecure cat /proc/self/status | grep CapEff > /caps\n",
        )],
    );
    let ctx = ctx.to_str().unwrap();
    let mut flags = vec![
        "--add-host",
        "db.internal:10.1.2.3",
        "--ulimit",
        "nofile=512:1024",
        "--shm-size",
        "8m",
        "--annotation",
        "org.example=1",
    ];
    let cgroup = ["--cgroup-parent", "rbuild-buildx-test"];
    if rootless_pass() {
        // Only a cgroup delegated to the user can be used; the error says so.
        let mut args = vec!["build", "--allow", "security.insecure"];
        args.extend(cgroup);
        args.push(ctx);
        let r = env.rbuild(&args);
        assert!(
            r.code != 0 && r.stderr.contains("delegated to the user"),
            "{}",
            r.stderr
        );
    } else {
        flags.extend(cgroup);
    }
    // Without the entitlement, the privileged step is refused where it is written.
    let mut args = vec!["build"];
    args.extend(&flags);
    args.push(ctx);
    let r = env.rbuild(&args);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Dockerfile:4:5") && r.stderr.contains("security.insecure"),
        "{}",
        r.stderr
    );
    let mut args = flags.clone();
    args.extend(["--allow", "security.insecure", ctx]);
    let read = |file: &str| built_file(&env, &args, vec![], file);
    assert_eq!(read("hosts"), "10.1.2.3\tdb.internal\n");
    assert_eq!(read("nofile"), "512\n");
    assert_eq!(read("shm"), "8192\n");
    if !rootless_pass() {
        let cgroups = read("cgroup");
        assert!(
            cgroups.contains("/rbuild-buildx-test/rbuild-step-"),
            "{cgroups}"
        );
    }
    // Every capability: a privileged step, as BuildKit's.
    let caps = read("caps");
    let effective = u64::from_str_radix(caps.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert!(effective.count_ones() > 30, "{caps}");
    // Bad values are refused as Docker refuses them.
    for (flag, value, says) in [
        ("--add-host", "db:not-an-ip", "invalid IP address"),
        ("--ulimit", "nofile=9:1", "soft limit"),
        ("--shm-size", "lots", "invalid --shm-size"),
        ("--allow", "everything", "unknown entitlement"),
    ] {
        let r = env.rbuild(&["build", flag, value, ctx]);
        assert!(
            r.code != 0 && r.stderr.contains(says),
            "{flag} {value}: {}",
            r.stderr
        );
    }
}

#[test]
fn a_cacheonly_output_builds_and_keeps_nothing_but_the_cache() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo built > /f\n",
        )],
    );
    let ctx = ctx.to_str().unwrap();
    let names = || -> Vec<String> {
        let out = env.rbuild(&["images", "--format", "json"]).ok().stdout;
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{}:{}", v["Repository"], v["Tag"])
            })
            .collect()
    };
    let before = names();
    let r = env
        .rbuild(&["build", "-o", "type=cacheonly", "-t", "named:1", ctx])
        .ok();
    assert!(r.stderr.contains("RUN echo built"), "{}", r.stderr);
    assert_eq!(names(), before, "no image was stored");
    // The steps are cached for the next build.
    let r = env.rbuild(&["build", "--progress=plain", ctx]).ok();
    let progress = Progress::parse(&r.stderr);
    assert!(
        progress
            .cached_steps()
            .iter()
            .any(|s| s.contains("RUN echo built")),
        "{}",
        r.stderr
    );
}

/// `--progress=rawjson`: every line of stderr is one of BuildKit's SolveStatus objects.
#[test]
fn rawjson_progress_is_buildkits_solve_status_stream() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo from-the-step\n",
        )],
    );
    let ctx = ctx.to_str().unwrap();
    let statuses = |r: &Run| -> Vec<serde_json::Value> {
        r.stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let vertices = |s: &[serde_json::Value]| -> Vec<serde_json::Value> {
        s.iter()
            .flat_map(|v| v["vertexes"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let r = env.rbuild(&["build", "--progress=rawjson", ctx]).ok();
    let s = statuses(&r);
    let run = vertices(&s)
        .into_iter()
        .find(|v| v["name"] == "[2/2] RUN echo from-the-step" && v["completed"].is_string())
        .expect("the RUN vertex completes");
    let logs: String = s
        .iter()
        .flat_map(|v| v["logs"].as_array().cloned().unwrap_or_default())
        .filter(|l| l["vertex"] == run["digest"])
        .map(|l| {
            use base64::Engine;
            let data = base64::engine::general_purpose::STANDARD
                .decode(l["data"].as_str().unwrap())
                .unwrap();
            String::from_utf8(data).unwrap()
        })
        .collect();
    assert_eq!(logs, "from-the-step\n");
    let r = env.rbuild(&["build", "--progress=rawjson", ctx]).ok();
    let cached = vertices(&statuses(&r))
        .into_iter()
        .any(|v| v["name"] == "[2/2] RUN echo from-the-step" && v["cached"] == true);
    assert!(cached, "{}", r.stderr);
}

/// `--build-context NAME=…`: a directory (for `COPY --from`, as a base, and replacing a stage
/// of that name), `docker-image://`, `oci-layout://` and a git URL.
#[test]
fn named_build_contexts_as_buildx_gives_them() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let dir = env.context(
        "extra",
        &[
            ("note.txt", "from the named context\n"),
            ("deps.txt", "deps from the context\n"),
            ("ignored.log", "x"),
            (".dockerignore", "*.log\n"),
        ],
    );
    let extra = format!("extra={}", dir.display());
    let deps = format!("deps={}", dir.display());
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox AS deps\nRUN echo from-the-stage > /deps.txt\n\
             FROM extra AS base\nFROM rbuild-demo/busybox\nCOPY --from=extra /note.txt /note\n\
             COPY --from=deps /deps.txt /deps\nCOPY --from=base / /base/\n\
             RUN ls /base > /base-list\n",
        )],
    );
    let ctx = ctx.to_str().unwrap();
    let read = |args: &[&str], file: &str| built_file(&env, args, vec![], file);
    let args = ["--build-context", &extra, "--build-context", &deps, ctx];
    assert_eq!(read(&args, "note"), "from the named context\n");
    // The stage `deps` is replaced by the context: its RUN never runs.
    assert_eq!(read(&args, "deps"), "deps from the context\n");
    // FROM a directory: its files (without what its .dockerignore leaves out) as a base.
    assert_eq!(read(&args, "base-list"), "deps.txt\nnote.txt\n");
    // Without --build-context, FROM extra is an image that does not exist.
    let r = env.rbuild(&["build", "--build-context", &deps, ctx]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("extra"), "{}", r.stderr);

    // docker-image:// stands in for an image name, in its familiar form.
    let ctx = env.context(
        "image-ctx",
        &[(
            "Dockerfile",
            "FROM docker.io/library/alpine:latest\nRUN echo ran-on-busybox > /ran\n",
        )],
    );
    let ctx = ctx.to_str().unwrap();
    let args = [
        "--build-context",
        "alpine=docker-image://rbuild-demo/busybox",
        ctx,
    ];
    assert_eq!(read(&args, "ran"), "ran-on-busybox\n");

    // oci-layout:// of an image written as an OCI layout (skopeo's), by tag.
    let archive = env.path("busybox.tar");
    let out = format!("type=oci,dest={}", archive.display());
    env.rbuild(&[
        "build",
        "-q",
        "-o",
        &out,
        env.path("busybox-ctx").to_str().unwrap(),
    ])
    .ok();
    let layout = env.path("layout");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}", archive.display()),
            &format!("oci:{}:v1", layout.display()),
        ],
    );
    let from_layout = format!("alpine=oci-layout://{}:v1", layout.display());
    let args = ["--build-context", from_layout.as_str(), ctx];
    assert_eq!(read(&args, "ran"), "ran-on-busybox\n");
    let missing = format!("alpine=oci-layout://{}:v2", layout.display());
    let r = env.rbuild(&["build", "--build-context", &missing, ctx]);
    assert!(
        r.code != 0 && r.stderr.contains("has no image v2"),
        "{}",
        r.stderr
    );

    // A git repository.
    let base = env.path("git");
    repository(&base);
    let daemon = GitDaemon::start(&base);
    let repo = format!("repo=git://127.0.0.1:{}/app.git#v1", daemon.port);
    let ctx = env.context(
        "git-ctx",
        &[("Dockerfile", "FROM scratch\nCOPY --from=repo /version /\n")],
    );
    let args = ["--build-context", repo.as_str(), ctx.to_str().unwrap()];
    assert_eq!(read(&args, "version"), "one\n");
}

/// `ADD` from git: branches, tags, commits, subdirectories, `--keep-git-dir`, `--checksum` of
/// the commit; the key is the commit's, not the URL's.
#[test]
fn add_checks_out_git_repositories() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let base = env.path("git");
    let first = repository(&base);
    // The same repository under a second name: another URL, the same commits.
    std::os::unix::fs::symlink(base.join("app.git"), base.join("mirror.git")).unwrap();
    let daemon = GitDaemon::start(&base);
    let url = format!("git://127.0.0.1:{}/app.git", daemon.port);
    let dockerfile = |lines: &str| {
        let ctx = env.context(
            &format!("ctx-{}", lines.len()),
            &[("Dockerfile", &format!("FROM rbuild-demo/busybox\n{lines}"))],
        );
        ctx.to_str().unwrap().to_string()
    };
    let ctx = dockerfile(&format!(
        "ADD {url} /main/\nADD {url}#v1 /tag/\nADD {url}#feature /branch/\n\
         ADD {url}#{first} /commit/\nADD {url}#main:sub /sub/\n\
         ADD --keep-git-dir=true {url}#v1 /kept/\nRUN cat /main/version /tag/version \
         /branch/version /commit/version /sub/part > /all && git -C /kept log 2>/dev/null; \
         ls -a /kept > /kept-list; ls -a /main > /main-list\n"
    ));
    assert_eq!(
        built_file(&env, &[&ctx], vec![], "all"),
        "two\none\nfeature\none\nsub one\n"
    );
    assert!(built_file(&env, &[&ctx], vec![], "kept-list").contains(".git\n"));
    assert!(!built_file(&env, &[&ctx], vec![], "main-list").contains(".git\n"));
    // --checksum names the commit; another one fails the step and says which it is.
    let short = &first[..12];
    let ctx = dockerfile(&format!("ADD --checksum={short} {url}#v1 /v1/\n"));
    env.rbuild(&["build", &ctx]).ok();
    let ctx = dockerfile(&format!("ADD --checksum=0123abcd {url}#v1 /v1/\n"));
    let r = env.rbuild(&["build", &ctx]);
    assert!(r.code != 0 && r.stderr.contains(&first), "{}", r.stderr);
    // The same commit from another URL is the same step; a branch that moves is not.
    let plain = |r: &Run| Progress::parse(&r.stderr);
    let one = dockerfile(&format!("ADD {url}#v1 /v1/\nRUN ls /v1 > /ls\n"));
    env.rbuild(&["build", &one]).ok();
    let mirror = format!("git://127.0.0.1:{}/mirror.git", daemon.port);
    let two = dockerfile(&format!("ADD {mirror}#v1 /v1/\nRUN ls /v1 > /ls\n"));
    let r = env.rbuild(&["build", "--progress=plain", &two]).ok();
    assert!(
        plain(&r)
            .cached_steps()
            .iter()
            .any(|s| s.contains("RUN ls /v1")),
        "{}",
        r.stderr
    );
    git(&base.join("app.git"), &["tag", "-f", "v1", "feature"]);
    let r = env.rbuild(&["build", "--progress=plain", &two]).ok();
    assert!(
        plain(&r).ran().iter().any(|s| s.contains("RUN ls /v1")),
        "{}",
        r.stderr
    );
    // A ref that does not exist is an error that names it.
    let ctx = dockerfile(&format!("ADD {url}#nope /x/\n"));
    let r = env.rbuild(&["build", &ctx]);
    assert!(
        r.code != 0 && r.stderr.contains("\"nope\" not found"),
        "{}",
        r.stderr
    );
}

/// A buildx CI line, unchanged but for the program's name, against a real registry: base from
/// the registry (`--pull`), two tags, a build arg, a named context, the network flags, a
/// secret, a registry cache, metadata, pushed; the result checked with skopeo.
#[test]
fn a_buildx_ci_invocation_runs_unchanged() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    env.base_image();
    let base = format!("{}/ci/busybox:1", registry.addr);
    env.rbuild(&["push", "rbuild-demo/busybox", &base]).ok();
    let assets = env.context("assets", &[("logo.txt", "a logo\n")]);
    let ctx = env.context(
        "app",
        &[(
            "Dockerfile",
            &format!(
                "ARG BASE={base}\nFROM ${{BASE}}\nARG VERSION\n\
                 COPY --from=assets logo.txt /srv/\n\
                 RUN --mount=type=secret,id=token test \"$(cat /run/secrets/token)\" = s3cret \
                 && grep db.internal /etc/hosts > /srv/hosts && echo $VERSION > /srv/version\n"
            ),
        )],
    );
    let image = format!("{}/ci/app", registry.addr);
    let (tag, latest, cache) = (
        format!("{image}:1.2"),
        format!("{image}:latest"),
        format!("type=registry,ref={image}:buildcache,mode=max"),
    );
    let metadata = env.path("metadata.json");
    let assets_flag = format!("assets={}", assets.display());
    let platform = format!(
        "linux/{}",
        if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        }
    );
    let line: Vec<&str> = vec![
        "build",
        "--pull",
        "--platform",
        &platform,
        "-t",
        &tag,
        "-t",
        &latest,
        "--build-arg",
        "VERSION=1.2",
        "--build-context",
        &assets_flag,
        "--network",
        "default",
        "--add-host",
        "db.internal:10.1.2.3",
        "--secret",
        "id=token,env=TOKEN",
        "--cache-from",
        &cache,
        "--cache-to",
        &cache,
        "--metadata-file",
        metadata.to_str().unwrap(),
        "--annotation",
        "org.opencontainers.image.title=ci app",
        "--provenance=false",
        "--progress",
        "plain",
        "--push",
        ctx.to_str().unwrap(),
    ];
    let r = env.rbuild_with(&line, "", &[("TOKEN", "s3cret")]).ok();
    // The first build had no cache to read: a warning that names it, not a failure.
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("warning") && l.contains(":buildcache")),
        "{}",
        r.stderr
    );
    let meta = json(&std::fs::read_to_string(&metadata).unwrap());
    let digest = meta["containerimage.digest"].as_str().unwrap().to_string();
    assert_eq!(meta["containerimage.descriptor"]["digest"], digest.as_str());
    let inspect = |flag: Option<&str>, name: &str| {
        let mut args = vec!["inspect", "--tls-verify=false"];
        args.extend(flag);
        let reference = format!("docker://{name}");
        args.push(&reference);
        json(&tool("skopeo", &args))
    };
    for name in [&tag, &latest] {
        let listed = inspect(None, name);
        assert_eq!(listed["Digest"], digest.as_str(), "{name}");
        assert_eq!(
            listed["Architecture"],
            platform.trim_start_matches("linux/")
        );
    }
    let raw = inspect(Some("--raw"), &tag);
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.title"], "ci app",
        "{raw}"
    );
    let config = inspect(Some("--config"), &tag);
    let history = config["history"].to_string();
    assert!(history.contains("VERSION=1.2"), "{history}");
    // The same line on a fresh machine: everything comes from the registry cache.
    let fresh = Env::new();
    fresh.base_image();
    let r = fresh.rbuild_with(&line, "", &[("TOKEN", "s3cret")]).ok();
    let progress = Progress::parse(&r.stderr);
    assert!(
        progress.ran().iter().all(|s| !s.contains("RUN")),
        "{}",
        r.stderr
    );
    let again = json(&std::fs::read_to_string(&metadata).unwrap());
    assert_eq!(again["containerimage.digest"], digest.as_str());
    // On a machine without the base, its pull says it unpacks the layer (while downloading
    // it), as BuildKit's says it: `extracting sha256:… done`.
    let empty = Env::new();
    let ctx = empty.context(
        "on-base",
        &[("Dockerfile", &format!("FROM {base}\nRUN true\n"))],
    );
    let r = empty
        .rbuild(&["build", "--progress=plain", ctx.to_str().unwrap()])
        .ok();
    let progress = Progress::parse(&r.stderr);
    let run = progress.ran().iter().position(|s| s.contains("RUN true"));
    assert!(run.is_some(), "{}", r.stderr);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains(" extracting sha256:") && l.ends_with(" done")),
        "{}",
        r.stderr
    );
    // A base the registry does not have is "not found", as Docker says it.
    let missing = format!("{}/ci/missing:1", registry.addr);
    let ctx = env.context("missing", &[("Dockerfile", &format!("FROM {missing}\n"))]);
    let r = env.rbuild(&["build", ctx.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(&format!("{missing}: not found")),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("envelope"), "{}", r.stderr);
}

/// The live view in a real terminal (tmux's): when the build ends, every step's line is on the
/// screen, as Docker's; elsewhere `--progress=tty` falls back to plain.
#[test]
fn the_terminal_view_keeps_every_steps_line() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let long = "x".repeat(150);
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                &format!(
                    "FROM rbuild-demo/busybox\nCOPY a.txt /\nRUN echo {long} && sleep 0.3\n\
                     RUN echo second\n{}",
                    (1..=50)
                        .map(|n| format!("RUN echo step-{n}\n"))
                        .collect::<String>()
                ),
            ),
            ("a.txt", "a\n"),
        ],
    );
    let session = format!("rbuild-tty-{}", std::process::id());
    let command = format!(
        "DOCKER_CONFIG={} {} --root {} build --progress=tty {}; echo EXIT=$?; sleep 60",
        env.docker_config().display(),
        assert_cmd::cargo::cargo_bin!("rbuild").display(),
        env.root().display(),
        ctx.display()
    );
    tool(
        "tmux",
        &[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "150",
            "-y",
            "45",
            &command,
        ],
    );
    let capture = || tool("tmux", &["capture-pane", "-p", "-S", "-", "-t", &session]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let screen = loop {
        let screen = capture();
        if screen.contains("EXIT=") {
            break screen;
        }
        assert!(
            Instant::now() < deadline,
            "the build did not end:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    assert!(screen.contains("EXIT=0"), "{screen}");
    // More steps than the terminal has lines: they stay in its scrollback.
    let mut steps: Vec<String> = [
        "✔ [internal] load build definition",
        "✔ [ 1/54] FROM docker.io/rbuild-demo/busybox",
        "✔ [ 2/54] COPY a.txt /",
        "✔ [ 3/54] RUN echo xxxx",
        "✔ [ 4/54] RUN echo second",
        "✔ exporting to image",
        "built in ",
    ]
    .map(String::from)
    .to_vec();
    steps.extend((1..=50).map(|n| format!("✔ [{:>2}/54] RUN echo step-{n} ", n + 4)));
    for step in &steps {
        assert!(
            screen.lines().any(|l| l.starts_with(step.as_str())),
            "{step}:\n{screen}"
        );
    }
    // Not a terminal: plain.
    let r = env
        .rbuild(&["build", "--progress=tty", ctx.to_str().unwrap()])
        .ok();
    assert!(
        r.stderr.contains("#1 [internal] load build definition"),
        "{}",
        r.stderr
    );
}

/// `ADD` of a repository with a submodule checks the submodule out too, as BuildKit does.
#[test]
fn add_checks_out_submodules() {
    require_root!();
    let env = Env::new();
    let base = env.path("git");
    std::fs::create_dir_all(&base).unwrap();
    let daemon = GitDaemon::start(&base);
    let lib = base.join("lib.git");
    std::fs::create_dir_all(&lib).unwrap();
    git(&lib, &["init", "-q"]);
    std::fs::write(lib.join("lib.txt"), "from the submodule\n").unwrap();
    git(&lib, &["add", "."]);
    git(&lib, &["commit", "-q", "-m", "lib"]);
    let app = base.join("withsub.git");
    std::fs::create_dir_all(&app).unwrap();
    git(&app, &["init", "-q"]);
    std::fs::write(app.join("main.txt"), "main\n").unwrap();
    let lib_url = format!("git://127.0.0.1:{}/lib.git", daemon.port);
    git(&app, &["submodule", "add", "-q", &lib_url, "lib"]);
    git(&app, &["add", "."]);
    git(&app, &["commit", "-q", "-m", "with a submodule"]);
    let url = format!("git://127.0.0.1:{}/withsub.git", daemon.port);
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", &format!("FROM scratch\nADD {url} /src/\n"))],
    );
    let ctx = ctx.to_str().unwrap();
    assert_eq!(built_file(&env, &[ctx], vec![], "src/main.txt"), "main\n");
    assert_eq!(
        built_file(&env, &[ctx], vec![], "src/lib/lib.txt"),
        "from the submodule\n"
    );
}

/// `ADD` over HTTP from a server that wants credentials: the `GIT_AUTH_TOKEN` secret, as
/// BuildKit sends it (basic auth, user `x-access-token`); without it, the error says so.
#[test]
fn add_from_git_authenticates_with_buildkits_secrets() {
    require_root!();
    use base64::Engine;
    let env = Env::new();
    let base = env.path("git");
    repository(&base);
    let served = env.path("served");
    std::fs::create_dir_all(&served).unwrap();
    let bare = served.join("app.git");
    git(
        &served,
        &[
            "clone",
            "-q",
            "--bare",
            base.join("app.git").to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(&bare, &["update-server-info"]);
    let token = "s3cret-token";
    let expected = format!(
        "basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    // git's dumb HTTP protocol from a server that refuses requests without the header.
    let script = "import http.server, sys, functools\n\
        class H(http.server.SimpleHTTPRequestHandler):\n\
        \x20   def do_GET(self):\n\
        \x20       if self.headers.get('Authorization', '').lower() != sys.argv[2].lower():\n\
        \x20           self.send_response(401)\n\
        \x20           self.send_header('WWW-Authenticate', 'Basic realm=\"git\"')\n\
        \x20           self.end_headers()\n\
        \x20           return\n\
        \x20       super().do_GET()\n\
        \x20   def log_message(self, *args):\n\
        \x20       pass\n\
        srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(H, directory=sys.argv[1]))\n\
        print(srv.server_address[1], flush=True)\n\
        srv.serve_forever()\n";
    let mut server = Command::new("python3")
        .args(["-c", script])
        .arg(&served)
        .arg(&expected)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{}/app.git#v1", port.trim());
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", &format!("FROM scratch\nADD {url} /app/\n"))],
    );
    let ctx = ctx.to_str().unwrap();
    let r = env.rbuild(&["build", ctx]);
    assert_ne!(r.code, 0, "it built without credentials");
    let dest = env.path("out");
    let output = format!("type=local,dest={}", dest.display());
    env.rbuild_with(
        &[
            "build",
            "--secret",
            "id=GIT_AUTH_TOKEN,env=TOKEN",
            "-o",
            &output,
            ctx,
        ],
        "",
        &[("TOKEN", token)],
    )
    .ok();
    assert_eq!(
        std::fs::read_to_string(dest.join("app/version")).unwrap(),
        "one\n"
    );
    let _ = server.kill();
    let _ = server.wait();
}
