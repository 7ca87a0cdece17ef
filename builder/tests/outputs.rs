//! End to end, outputs: every --output type and its files, compression of exported layers,
//! the JSON progress stream and the live terminal view. Needs root.

mod common;

use common::*;
use std::path::Path;

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

/// An OCI archive unpacked into a directory, and its `index.json`.
fn untar_index(env: &Env, archive: &Path) -> (std::path::PathBuf, serde_json::Value) {
    let unpacked = env.path("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    tool(
        "tar",
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            unpacked.to_str().unwrap(),
        ],
    );
    let top = json(&std::fs::read_to_string(unpacked.join("index.json")).unwrap());
    (unpacked, top)
}

/// `--annotation manifest-descriptor:` and `index-descriptor:` (buildx's descriptor
/// annotations): on the manifests' entries in the index (one platform's with `[os/arch]`) and
/// on the index's entry in an OCI archive's `index.json`; pushed, the index keeps the
/// manifests' entries' annotations.
#[test]
fn descriptor_annotations_go_on_the_entries() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", "FROM scratch\nCOPY a.txt /\n"),
            ("a.txt", "a\n"),
        ],
    );
    let archive = env.path("multi.tar");
    let image = format!("{}/annotated/app:1", registry.addr);
    let flags = [
        "--annotation",
        "manifest-descriptor:org.example.entry=every",
        "--annotation",
        "manifest-descriptor[linux/arm64]:org.example.arm=only",
        "--annotation",
        "index-descriptor:org.example.index=top",
    ];
    let mut args = vec!["build", "--platform", "linux/amd64,linux/arm64"];
    args.extend(flags);
    let oci = format!("type=oci,dest={}", archive.display());
    let push = format!("type=registry,name={image}");
    args.extend(["-o", &oci, "-o", &push, ctx.to_str().unwrap()]);
    env.rbuild(&args).ok();
    let (unpacked, top) = untar_index(&env, &archive);
    let entry = &top["manifests"][0];
    assert_eq!(entry["annotations"]["org.example.index"], "top", "{top}");
    let hex = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let index = json(&std::fs::read_to_string(unpacked.join("blobs/sha256").join(hex)).unwrap());
    let pushed = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ],
    ));
    for index in [&index, &pushed] {
        // The push's default provenance adds attestation entries: only the images' count.
        let images = index["manifests"].as_array().unwrap().iter();
        for m in images.filter(|m| m["platform"]["os"] != "unknown") {
            let arch = m["platform"]["architecture"].as_str().unwrap();
            assert_eq!(m["annotations"]["org.example.entry"], "every", "{index}");
            let arm = m["annotations"].get("org.example.arm").is_some();
            assert_eq!(arm, arch == "arm64", "{index}");
        }
    }
    let bad = env.rbuild(&[
        "build",
        "--annotation",
        "index-descriptor[linux/amd64]:k=v",
        ".",
    ]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("for every platform"), "{}", bad.stderr);
}

/// `--label-annotations`: the image's `org.opencontainers.image.*` labels (the Dockerfile's
/// and `--label`'s) annotate its manifest too; other labels do not, and an `--annotation` of
/// the same key wins.
#[test]
fn oci_labels_become_annotations_when_asked() {
    require_root!();
    let env = Env::new();
    let dockerfile =
        "FROM scratch\nLABEL org.opencontainers.image.title=app other=x\nCOPY a.txt /\n";
    let ctx = env.context("ctx", &[("Dockerfile", dockerfile), ("a.txt", "a\n")]);
    let archive = env.path("labelled.tar");
    env.rbuild(&[
        "build",
        "--label-annotations",
        "--label",
        "org.opencontainers.image.version=1.0",
        "--annotation",
        "org.opencontainers.image.description=explicit",
        "--label",
        "org.opencontainers.image.description=from a label",
        "-o",
        &format!("type=oci,dest={}", archive.display()),
        ctx.to_str().unwrap(),
    ])
    .ok();
    let (unpacked, top) = untar_index(&env, &archive);
    let hex = top["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let manifest = json(&std::fs::read_to_string(unpacked.join("blobs/sha256").join(hex)).unwrap());
    let annotations = manifest["annotations"].as_object().unwrap();
    assert_eq!(annotations["org.opencontainers.image.title"], "app");
    assert_eq!(annotations["org.opencontainers.image.version"], "1.0");
    assert_eq!(
        annotations["org.opencontainers.image.description"],
        "explicit"
    );
    assert!(!annotations.contains_key("other"), "{manifest}");
}

/// `--trace FILE`: a Chrome trace of the build (what Perfetto opens): the build's phases, each
/// step's phases on a track of its own, and the work of its process (preparing, running,
/// diffing) on the thread that did it, within the step's `execute`; a failed build writes
/// its trace too.
#[test]
fn a_trace_shows_where_the_time_went() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN sleep 0.2 && echo made > /made\nCOPY Dockerfile /d\n",
        )],
    );
    let file = env.path("trace.json");
    let trace = |file: &Path| -> Vec<serde_json::Value> {
        let value = json(&std::fs::read_to_string(file).unwrap());
        value["traceEvents"].as_array().unwrap().clone()
    };
    env.rbuild(&[
        "build",
        "--trace",
        file.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ])
    .ok();
    let events = trace(&file);
    let complete: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    let named = |name: &str| complete.iter().filter(|e| e["name"] == name).count();
    for phase in [
        "parse", "lower", "solve", "export", "execute", "prepare", "run",
    ] {
        assert!(named(phase) > 0, "no {phase} in {complete:#?}");
    }
    assert!(
        named("diff and commit") >= 2,
        "the RUN and the COPY make layers"
    );
    let run = complete.iter().find(|e| e["name"] == "run").unwrap();
    assert!(
        run["args"]["detail"]
            .as_str()
            .unwrap()
            .contains("sleep 0.2")
    );
    assert!(run["dur"].as_u64().unwrap() >= 200_000, "{run}");
    // The step's track, named as its progress line, holds an execute around the run.
    let track = events
        .iter()
        .find(|e| {
            e["name"] == "thread_name" && e["args"]["name"].as_str().unwrap().contains("RUN sleep")
        })
        .expect("a track for the RUN step");
    let execute = complete
        .iter()
        .find(|e| e["tid"] == track["tid"] && e["name"] == "execute")
        .unwrap();
    let span = |e: &serde_json::Value| (e["ts"].as_u64().unwrap(), e["dur"].as_u64().unwrap());
    let ((r0, rd), (e0, ed)) = (span(run), span(execute));
    assert!(
        e0 <= r0 && r0 + rd <= e0 + ed,
        "run {run} outside execute {execute}"
    );
    // A failed build writes its trace too.
    let failing = env.context(
        "failing",
        &[("Dockerfile", "FROM rbuild-demo/busybox\nRUN exit 3\n")],
    );
    let failed = env.path("failed.json");
    let r = env.rbuild(&[
        "build",
        "--trace",
        failed.to_str().unwrap(),
        failing.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1);
    assert!(trace(&failed).iter().any(|e| e["name"] == "run"));
}
