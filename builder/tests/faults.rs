//! Faults with nothing lost: builds that fail or are killed part way, registries that
//! misbehave. Afterwards `rbuild check` finds the state directory clean and the next build
//! works, reusing what was finished.

mod common;

use common::*;

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

    // Pushing: the first blob upload gets a 503, the first manifest PUT a 502.
    let flaky = FaultProxy::start(
        &registry.addr,
        vec![
            rule("PUT", "/blobs/uploads/", Fault::Status(503), 1),
            rule("PUT", "/manifests/", Fault::Status(502), 1),
        ],
    );
    let image = format!("{}/faults/busybox:1", flaky.addr);
    let r = env.rbuild(&["push", "rbuild-demo/busybox", &image]).ok();
    assert_eq!(flaky.injected(), 2);
    assert_eq!(
        r.stderr.matches("warning: retrying").count(),
        2,
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
    let r = Env::new().rbuild(&["--registry-timeout", "2", "pull", &image]);
    assert_ne!(r.code, 0);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        r.stderr.contains(&stalled.addr) && r.stderr.contains("did not answer within 2 s"),
        "{}",
        r.stderr
    );
}
