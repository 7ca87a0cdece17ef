//! End to end, the cache: `rbuild graph` agreeing with builds, --no-cache-filter and --pull,
//! du and prune, concurrent builds sharing one state directory. Needs root.

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;

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
    let steps_on = |value: &'static str, network: &str| {
        let text = env
            .rbuild_with(
                &[
                    "graph",
                    "--format",
                    "json",
                    "--build-arg",
                    "NAME",
                    "--network",
                    network,
                    dir,
                ],
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
    let steps = |value: &'static str| steps_on(value, "default");
    assert_eq!(
        steps("one"),
        [serde_json::json!(true), serde_json::json!(true)]
    );
    assert_eq!(
        steps("two"),
        [serde_json::json!(false), serde_json::json!(false)]
    );
    // The build's network is part of a RUN's key (and so of what follows it): graph takes
    // the flag too.
    assert_eq!(
        steps_on("one", "none"),
        [serde_json::json!(false), serde_json::json!(false)]
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
fn explain_names_what_made_a_step_miss() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nARG V\nRUN echo $V > /v\nRUN cat /v > /w\n",
        )],
    );
    let build = |v: &str| {
        env.rbuild(&[
            "build",
            "--progress=plain",
            "--explain",
            "--build-arg",
            &format!("V={v}"),
            ctx.to_str().unwrap(),
        ])
        .ok()
        .stderr
    };
    let first = build("1");
    assert!(
        first.contains("no earlier build of this step is known"),
        "{first}"
    );
    let second = build("2");
    assert!(
        second.contains("missed [2/3] RUN echo 2 > /v: build arg or environment V: \"1\" → \"2\""),
        "{second}"
    );
    assert!(
        second.contains(
            "missed [3/3] RUN cat /v > /w: build arg or environment V: \"1\" → \"2\"; the \
             result of `[2/3] RUN echo 2 > /v` changed"
        ),
        "{second}"
    );
    let json = json(
        &env.rbuild(&["explain", "--last", "--format", "json"])
            .ok()
            .stdout,
    );
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
    build("2");
    let text = env.rbuild(&["explain", "--last"]).ok().stdout;
    assert_eq!(text, "every step of the last build came from the cache\n");
}
