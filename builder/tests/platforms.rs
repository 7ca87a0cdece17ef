//! End to end, platforms: base images chosen per platform, multi-platform indexes, and RUN
//! steps for another CPU under QEMU user emulation. Needs root.

mod common;

use common::*;
use std::path::Path;

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

/// Why it is one piece: One registry of multi-platform base images, set up once and read by every part.
#[allow(clippy::too_many_lines)]
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
            "--provenance=false",
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

/// Why it is one piece: One multi-platform build, then every way its index leaves the machine.
#[allow(clippy::too_many_lines)]
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
            "--provenance=false",
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
    // The local store keeps the index under the name (buildx's docker driver cannot):
    // `images` says which platforms it has, `save`/`load` keep them all.
    let r = env
        .rbuild(&[
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "mp:1",
            ctx.to_str().unwrap(),
        ])
        .ok();
    assert!(
        r.stderr.contains("naming to docker.io/library/mp:1"),
        "{}",
        r.stderr
    );
    let listing = env.rbuild(&["images", "mp"]).ok().stdout;
    assert!(
        listing.starts_with("REPOSITORY")
            && listing.contains("PLATFORMS")
            && listing.contains("linux/amd64,linux/arm64"),
        "{listing}"
    );
    let saved = env.path("mp-saved.tar");
    env.rbuild(&[
        "save",
        "--format",
        "oci",
        "-o",
        saved.to_str().unwrap(),
        "mp:1",
    ])
    .ok();
    let other = Env::new();
    other.rbuild(&["load", "-i", saved.to_str().unwrap()]).ok();
    let loaded = other
        .rbuild(&["images", "--format", "{{.Platforms}}", "mp:1"])
        .ok();
    assert_eq!(loaded.stdout.trim(), "linux/amd64,linux/arm64");
    let arm = other
        .rbuild(&["inspect", "-f", "{{.Architecture}}", "mp:1"])
        .ok();
    assert_eq!(
        arm.stdout.trim(),
        std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64")
    );
    let r = other.rbuild(&["run", "--rm", "--platform", "linux/riscv64", "mp:1", "true"]);
    assert!(
        r.code != 0
            && r.stderr.contains("has no linux/riscv64 manifest")
            && r.stderr.contains("linux/arm64"),
        "{}",
        r.stderr
    );
    // An output that holds one platform says so before anything is built.
    let refused = env.rbuild(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        "type=docker,dest=x.tar",
        ctx.to_str().unwrap(),
    ]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("use type=oci"),
        "{}",
        refused.stderr
    );
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
