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
