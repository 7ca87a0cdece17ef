//! Faults with nothing lost: builds that fail or are killed part way, registries that
//! misbehave. Afterwards `rbuild check` finds the state directory clean and the next build
//! works, reusing what was finished.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A build that fails while its base image is still being pulled and unpacked (a COPY source
/// that does not exist fails at once) leaves the pulled image tagged with its blobs but maybe
/// not yet unpacked: a cache not filled yet, which `check` must not call damage.
#[test]
fn a_failed_build_racing_the_base_images_unpack_leaves_a_clean_store() {
    require_root!();
    let registry = Registry::start();
    let seed = Env::new();
    seed.base_image();
    let remote = format!("{}/faults/busybox:1", registry.addr);
    seed.rbuild(&["push", "rbuild-demo/busybox", &remote]).ok();

    let failing = format!("FROM {remote}\nCOPY missing.txt /\nRUN true\n");
    let good = format!("FROM {remote}\nRUN echo fine > /f\n");
    for round in 0..5 {
        let env = Env::new();
        let bad = env.context("bad", &[("Dockerfile", &failing)]);
        let r = env.rbuild(&["build", bad.to_str().unwrap()]);
        assert_ne!(r.code, 0, "round {round}");
        assert!(r.stderr.contains("missing.txt"), "{}", r.stderr);
        let check = env.rbuild(&["check"]);
        assert_eq!(
            check.code, 0,
            "round {round}: {}{}",
            check.stdout, check.stderr
        );
        let ok = env.context("good", &[("Dockerfile", &good)]);
        env.rbuild(&["build", "-t", "good", ok.to_str().unwrap()])
            .ok();
        let r = env.rbuild(&["run", "--rm", "good", "cat", "/f"]).ok();
        assert_eq!(r.stdout, "fine\n");
        assert_eq!(env.rbuild(&["check"]).code, 0);
        assert!(env.leaked_mounts().is_empty());
    }
}

/// A registry behind a proxy that fails requests: what the protocol lets rbuild try again
/// (5xx, dropped connections, truncated bodies) is retried and succeeds; what it cannot (a
/// blob whose content is not its digest, a manifest the registry keeps refusing, a registry
/// that never answers) fails with an error naming the registry, tags nothing, and leaves a
/// clean store.
#[test]
fn registry_faults_are_retried_or_reported_clearly() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    env.base_image();
    let rule = |method, path_part, fault, times| Rule {
        method,
        path_part,
        fault,
        times,
    };

    // Pushing: the first look for a blob gets a 500 (as the distribution registry answers
    // now and then while another machine uploads that blob), the first blob upload a 503, the
    // first manifest PUT a 502. (The base's layer is stored uncompressed: its first upload is
    // the one streamed while it is compressed, which is not retried but pushed again whole.)
    let flaky = FaultProxy::start(
        &registry.addr,
        vec![
            rule("HEAD", "/blobs/sha256:", Fault::Status(500), 1),
            rule("PUT", "/blobs/uploads/", Fault::Status(503), 1),
            rule("PUT", "/manifests/", Fault::Status(502), 1),
        ],
    );
    let image = format!("{}/faults/busybox:1", flaky.addr);
    let r = env.rbuild(&["push", "rbuild-demo/busybox", &image]).ok();
    assert_eq!(flaky.injected(), 3);
    assert_eq!(
        r.stderr.matches("warning: retrying").count(),
        2,
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("pushing the blob again").count(),
        1,
        "{}",
        r.stderr
    );

    // Pulling: the first blob download is dropped, the next one cut short; both are retried.
    let flaky = FaultProxy::start(
        &registry.addr,
        vec![
            rule("GET", "/blobs/sha256:", Fault::Close, 1),
            rule("GET", "/blobs/sha256:", Fault::Truncate(100), 1),
        ],
    );
    let image = format!("{}/faults/busybox:1", flaky.addr);
    let fresh = Env::new();
    let r = fresh.rbuild(&["pull", &image]).ok();
    assert!(flaky.injected() >= 2, "{}", r.stderr);
    let r = fresh
        .rbuild(&["run", "--rm", &image, "cat", "/etc/passwd"])
        .ok();
    assert!(r.stdout.starts_with("root:"), "{}", r.stdout);
    assert_eq!(fresh.rbuild(&["check"]).code, 0);

    // A blob whose bytes are not its digest, every time: refused, nothing tagged.
    let corrupt = FaultProxy::start(
        &registry.addr,
        vec![rule("GET", "/blobs/sha256:", Fault::Corrupt, usize::MAX)],
    );
    let image = format!("{}/faults/busybox:1", corrupt.addr);
    let fresh = Env::new();
    let r = fresh.rbuild(&["pull", &image]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains(&corrupt.addr), "{}", r.stderr);
    let images = fresh.rbuild(&["images"]).ok();
    assert!(
        !images.stdout.contains("faults/busybox"),
        "{}",
        images.stdout
    );
    // What was unpacked while the bad blob arrived is not kept either.
    let snapshots: Vec<_> = std::fs::read_dir(fresh.path("root/snapshots"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        snapshots
            .iter()
            .all(|n| !n.to_string_lossy().chars().all(|c| c.is_ascii_hexdigit())),
        "{snapshots:?}"
    );
    assert_eq!(fresh.rbuild(&["check"]).code, 0);
    let build = fresh.context(
        "from",
        &[("Dockerfile", &format!("FROM {image}\nRUN true\n"))],
    );
    let r = fresh.rbuild(&["build", build.to_str().unwrap()]);
    assert!(
        r.code != 0 && r.stderr.contains("Dockerfile:1:6"),
        "{}",
        r.stderr
    );

    // A manifest the registry keeps refusing: the push fails naming it.
    let refusing = FaultProxy::start(
        &registry.addr,
        vec![rule("PUT", "/manifests/", Fault::Status(500), usize::MAX)],
    );
    let image = format!("{}/faults/other:1", refusing.addr);
    let r = env.rbuild(&["push", "rbuild-demo/busybox", &image]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("failed to push the manifest") && r.stderr.contains(&refusing.addr),
        "{}",
        r.stderr
    );
    assert!(
        registry
            .get("/v2/faults/other/tags/list")
            .unwrap()
            .contains("404")
    );

    // A registry that takes connections and never answers: given up on after
    // --registry-timeout, not after minutes, with an error that says so.
    let stalled = FaultProxy::start(
        &registry.addr,
        vec![
            rule("GET", "/", Fault::Stall, usize::MAX),
            rule("HEAD", "/", Fault::Stall, usize::MAX),
        ],
    );
    let started = std::time::Instant::now();
    let image = format!("{}/faults/busybox:1", stalled.addr);
    let r = Env::new().rbuild(&["--registry-timeout", "7", "pull", &image]);
    assert_ne!(r.code, 0);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // Said while waiting, and when giving up.
    let waiting = format!(
        "waiting for {} to answer (the manifest, 5 s so far; giving up after 7 s",
        stalled.addr
    );
    assert!(r.stderr.contains(&waiting), "{}", r.stderr);
    assert!(
        r.stderr.contains(&stalled.addr) && r.stderr.contains("did not answer within 7 s"),
        "{}",
        r.stderr
    );
}

/// A push uploads each layer it compresses while it compresses it; when that upload fails
/// (here its first PATCH gets a 500), the layer is pushed again from its blob, and the image
/// in the registry is whole either way.
#[test]
fn layers_stream_to_the_registry_while_compressed_and_fall_back_when_that_fails() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "fresh",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN head -c 6000000 /dev/urandom > /noise && seq 200000 > /text\n",
        )],
    );
    for (name, rules) in [
        ("streamed", vec![]),
        (
            "again",
            vec![Rule {
                method: "PATCH",
                path_part: "/blobs/uploads/",
                fault: Fault::Status(500),
                times: 1,
            }],
        ),
    ] {
        let proxy = FaultProxy::start(&registry.addr, rules);
        let image = format!("{}/stream/{name}:1", proxy.addr);
        // A layer nobody has compressed yet: each round builds it anew.
        let r = env
            .rbuild(&["build", "--no-cache", "-t", name, ctx.to_str().unwrap()])
            .ok();
        assert_eq!(r.code, 0);
        let r = env.rbuild(&["push", name, &image]).ok();
        let streamed = r.stderr.contains("pushed while compressed");
        let again = r.stderr.contains("pushing the blob again");
        match name {
            "streamed" => assert!(streamed && !again, "{}", r.stderr),
            _ => assert!(!streamed && again && proxy.injected() == 1, "{}", r.stderr),
        }
        // Every blob there, with its digest: skopeo checks them as it copies.
        let dest = env.path(&format!("{name}-copy"));
        tool(
            "skopeo",
            &[
                "copy",
                "-q",
                "--src-tls-verify=false",
                &format!("docker://{}/stream/{name}:1", registry.addr),
                &format!("oci:{}:x", dest.display()),
            ],
        );
        let seen = env
            .rbuild(&[
                "run",
                "--rm",
                &image,
                "sh",
                "-c",
                "wc -c < /noise; tail -1 /text",
            ])
            .ok();
        assert_eq!(seen.stdout, "6000000\n200000\n");
    }
}

/// Builds the image `big` in `env` (the base image first): one layer of tens of MB made by
/// the shell command `run`. Returns its context.
fn build_big(env: &Env, run: &str) -> std::path::PathBuf {
    env.base_image();
    let dockerfile = format!("FROM rbuild-demo/busybox\nRUN {run}\n");
    let ctx = env.context("big", &[("Dockerfile", &dockerfile)]);
    env.rbuild(&["build", "-q", "-t", "big", ctx.to_str().unwrap()])
        .ok();
    ctx
}

/// SIGKILL at pseudo-random moments of an export, a push and a pull: afterwards the state
/// directory checks clean, nothing is left mounted, and doing it again succeeds. The moments
/// are fractions of how long each operation took when it last ran whole (the fractions are
/// the same from one run of the test to the next), so the kills land inside the operations
/// however fast this machine is.
#[test]
fn sigkill_during_export_push_and_pull_leaves_a_consistent_state() {
    use std::process::Stdio;
    use std::time::Duration;
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    // A layer of ~40 MB that compresses (base64 of random bytes), so that exports and
    // pushes take long enough to be interrupted.
    let ctx = build_big(&env, "head -c 30000000 /dev/urandom | base64 > /big");
    let size = |env: &Env, image: &str| {
        env.rbuild(&["run", "--rm", image, "sh", "-c", "wc -c < /big"])
            .ok()
            .stdout
    };
    let expected = size(&env, "big");
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    // A moment within an operation that took `whole`: between 5% and 90% of it.
    let mut next_delay = |whole: Duration| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        whole.mul_f64(0.05 + ((seed >> 33) % 1000) as f64 / 1000.0 * 0.85)
    };
    let timed = |env: &Env, args: &[&str]| {
        let started = std::time::Instant::now();
        env.rbuild(args).ok();
        started.elapsed()
    };
    let killed_during = |env: &Env, args: &[&str], delay: Duration| {
        let mut child = env
            .command()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        finished
    };
    let consistent = |env: &Env, what: &str| {
        let check = env.rbuild(&["check"]);
        assert_eq!(check.code, 0, "{what}: {}{}", check.stdout, check.stderr);
        assert!(
            env.leaked_mounts().is_empty(),
            "{what}: {:?}",
            env.leaked_mounts()
        );
    };
    // How long each operation takes whole, measured once before any kill and again after each.
    let first = format!("{}/kill/first:1", registry.addr);
    let output = |archive: &std::path::Path| {
        format!("type=oci,dest={},force-compression=true", archive.display())
    };
    let first_archive = output(&env.path("first.tar"));
    let mut export_time = timed(
        &env,
        &["build", "-q", "-o", &first_archive, ctx.to_str().unwrap()],
    );
    let mut push_time = timed(&env, &["push", "big", &first]);
    let mut pull_time = timed(&Env::new(), &["pull", &first]);
    let mut interrupted = 0;
    for round in 0..4 {
        // Export: a fresh compression each round (force-compression), to an OCI archive.
        let archive = env.path(&format!("big-{round}.tar"));
        let output = output(&archive);
        let args = ["build", "-q", "-o", &output, ctx.to_str().unwrap()];
        let delay = next_delay(export_time);
        interrupted += usize::from(!killed_during(&env, &args, delay));
        consistent(&env, &format!("export, round {round} ({delay:?})"));
        export_time = timed(&env, &args);
        tool(
            "skopeo",
            &["inspect", &format!("oci-archive:{}", archive.display())],
        );

        // Push to a repository of its own.
        let remote = format!("{}/kill/big{round}:1", registry.addr);
        let delay = next_delay(push_time);
        interrupted += usize::from(!killed_during(&env, &["push", "big", &remote], delay));
        consistent(&env, &format!("push, round {round} ({delay:?})"));
        push_time = timed(&env, &["push", "big", &remote]);

        // Pull into a fresh state directory.
        let puller = Env::new();
        let delay = next_delay(pull_time);
        interrupted += usize::from(!killed_during(&puller, &["pull", &remote], delay));
        consistent(&puller, &format!("pull, round {round} ({delay:?})"));
        pull_time = timed(&puller, &["pull", &remote]);
        assert_eq!(size(&puller, &remote), expected, "round {round}");
        consistent(&puller, &format!("pull, round {round}, after"));
    }
    // The kills did land in the middle of operations (the test would prove nothing otherwise).
    assert!(
        interrupted >= 4,
        "only {interrupted} of 12 operations were interrupted"
    );
}

/// A tmpfs mounted for the test (root only), whose size the test changes; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let disk = SmallDisk { dir };
        disk.mount_with("size=512m");
        disk
    }

    fn mount_with(&self, options: &str) {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -o {options}");
    }

    /// Leaves `room` bytes free (rounded to pages): the size becomes what is used plus that.
    fn leave(&self, room: u64) {
        let used = nix::sys::statvfs::statvfs(self.dir.path())
            .map(|s| (s.blocks() - s.blocks_free()) * s.fragment_size())
            .unwrap();
        self.mount_with(&format!("remount,size={}", used + room));
    }

    /// Makes the disk big again: space is freed.
    fn grow(&self) {
        self.mount_with("remount,size=512m");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A full file system at each place rbuild writes (a step's files, an export's blobs, a
/// pull's blobs and snapshots) fails with an error that says a file system is full and how
/// much room the state directory has, leaves a consistent store, and the same command
/// succeeds once there is space again.
#[test]
fn a_full_disk_fails_clearly_and_loses_nothing() {
    require_root!();
    if rootless_pass() {
        eprintln!("skipped: mounting the small file system needs root; the rootful pass runs this");
        return;
    }
    const MB: u64 = 1 << 20;
    let registry = Registry::start();
    // An image of ~30 MB in the registry, pushed from an ordinary state directory.
    let seed = Env::new();
    build_big(&seed, "head -c 30000000 /dev/urandom > /big");
    let remote = format!("{}/full/big:1", registry.addr);
    seed.rbuild(&["push", "big", &remote]).ok();

    let disk = SmallDisk::mount();
    let env = Env::new_in(disk.dir.path());
    env.base_image();
    let full = |r: &Run, what: &str| {
        assert_ne!(r.code, 0, "{what} succeeded on a full disk");
        let check = env.rbuild(&["check"]);
        assert_eq!(check.code, 0, "{what}: {}{}", check.stdout, check.stderr);
        assert!(
            env.leaked_mounts().is_empty(),
            "{what}: {:?}",
            env.leaked_mounts()
        );
    };
    let says_full = |r: &Run| {
        r.stderr.contains("a file system is full")
            && r.stderr
                .contains(&format!("the state directory {}", env.root().display()))
    };

    // A step that writes more than there is room for.
    let step = env.context(
        "step",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN head -c 20000000 /dev/urandom > /f\n",
        )],
    );
    let step = step.to_str().unwrap();
    disk.leave(8 * MB);
    let r = env.rbuild(&["build", step]);
    full(&r, "a step");
    assert!(r.stderr.contains("Dockerfile:2:1"), "{}", r.stderr);
    disk.grow();
    env.rbuild(&["build", "-t", "step", step]).ok();

    // An export whose compressed blob does not fit.
    let archive = env.path("step.tar");
    let output = format!("type=oci,dest={},force-compression=true", archive.display());
    disk.leave(8 * MB);
    let r = env.rbuild(&["build", "-o", &output, step]);
    full(&r, "an export");
    assert!(says_full(&r), "{}", r.stderr);
    disk.grow();
    env.rbuild(&["build", "-o", &output, step]).ok();

    // A pull whose blobs and snapshot do not fit.
    disk.leave(20 * MB);
    let r = env.rbuild(&["pull", &remote]);
    full(&r, "a pull");
    assert!(says_full(&r), "{}", r.stderr);
    disk.grow();
    env.rbuild(&["pull", &remote]).ok();
    let r = env
        .rbuild(&["run", "--rm", &remote, "sh", "-c", "wc -c < /big"])
        .ok();
    assert_eq!(r.stdout.trim(), "30000000");
    assert_eq!(env.rbuild(&["check"]).code, 0);
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
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        if signal == nix::sys::signal::Signal::SIGINT {
            // As BuildKit: the running step is CANCELED, not an error of its own.
            let rest = rest.join("\n");
            assert!(
                rest.lines()
                    .any(|l| l.starts_with('#') && l.ends_with(" CANCELED")),
                "{rest}"
            );
            assert!(!rest.contains(" ERROR: "), "{rest}");
        }
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

/// A stopped `rbuild run` stops its container: SIGTERM ends it cleanly (exit 143, the
/// directory removed with --rm); after SIGKILL the directory is left, `check` reports it and
/// `prune` removes it, but never a running container's.
#[test]
fn stopped_runs_leave_no_processes_and_prune_removes_their_containers() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let containers = env.root().join("containers");
    let start = |marker: &str| {
        let child = env
            .command()
            .args(["run", "--rm", "rbuild-demo/busybox", "sh", "-c", marker])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sleeping(marker) {
            assert!(Instant::now() < deadline, "the container did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    let gone = |marker: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sleeping(marker) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        !sleeping(marker)
    };
    let mut child = start("sleep 4321");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    assert!(
        gone("sleep 4321"),
        "the container's process survived SIGTERM"
    );
    assert_eq!(std::fs::read_dir(&containers).unwrap().count(), 0, "--rm");

    let mut killed = start("sleep 4322");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    killed.wait().unwrap();
    assert!(
        gone("sleep 4322"),
        "the container's process survived SIGKILL"
    );
    let mut running = start("sleep 4323");
    let check = env.rbuild(&["check"]).ok();
    assert!(
        check.stdout.contains("note: 1 stopped container"),
        "{}",
        check.stdout
    );
    let pruned = env.rbuild(&["prune"]).ok();
    assert!(
        pruned.stdout.contains("Removed 1 stopped container"),
        "{}",
        pruned.stdout
    );
    assert_eq!(
        std::fs::read_dir(&containers).unwrap().count(),
        1,
        "the running one stays"
    );
    assert!(sleeping("sleep 4323"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(running.wait().unwrap().code(), Some(130));
    assert!(gone("sleep 4323"));
    assert!(
        !env.rbuild(&["check"])
            .ok()
            .stdout
            .contains("stopped container")
    );
}
