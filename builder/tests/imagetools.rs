//! End to end, `rbuild imagetools create|inspect` (buildx's names) against real registries on
//! loopback: an index made from images already pushed (one with an attestation), pushed to
//! another repository of the same registry (blobs mounted) and to another registry (copied),
//! read back with skopeo; and the readable, `--raw` and `--format` views of remote images.
//! Needs root (to build the images).

mod common;

use common::*;

/// Two images pushed to `registry`: linux/amd64 with the push's default provenance (an index
/// with an attestation), linux/arm64 a plain manifest.
fn pushed_images(env: &Env, registry: &Registry) -> (String, String) {
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", "FROM scratch\nCOPY a.txt /\n"),
            ("a.txt", "a\n"),
        ],
    );
    let dir = ctx.to_str().unwrap();
    let (amd64, arm64) = (
        format!("{}/it/app:amd64", registry.addr),
        format!("{}/it/app:arm64", registry.addr),
    );
    // One with the push's default provenance (an index), one a plain manifest.
    env.rbuild(&[
        "build",
        "--platform",
        "linux/amd64",
        "-t",
        &amd64,
        "--push",
        dir,
    ])
    .ok();
    env.rbuild(&[
        "build",
        "--platform",
        "linux/arm64",
        "--provenance=false",
        "-t",
        &arm64,
        "--push",
        dir,
    ])
    .ok();
    (amd64, arm64)
}

/// `create`: the index of both (attestation kept), pushed to another repository of the same
/// registry (blobs mounted) and to another registry (copied), read back with skopeo.
#[test]
fn imagetools_create_makes_an_index_of_pushed_images() {
    require_root!();
    let registry = Registry::start();
    let other = Registry::start();
    let env = Env::new();
    let (amd64, arm64) = pushed_images(&env, &registry);
    let dry = json(
        &env.rbuild(&["imagetools", "create", "--dry-run", &amd64, &arm64])
            .ok()
            .stdout,
    );
    assert_eq!(dry["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<String> = dry["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "unknown/unknown", "linux/arm64"]);
    let here = format!("{}/it/multi:1", registry.addr);
    let there = format!("{}/copied/multi:1", other.addr);
    let made = env
        .rbuild(&[
            "imagetools",
            "create",
            "-t",
            &here,
            "-t",
            &there,
            "--annotation",
            "index:org.opencontainers.image.title=multi",
            &amd64,
            &arm64,
        ])
        .ok();
    assert!(
        made.stderr.contains("mounted from it/app"),
        "{}",
        made.stderr
    );
    for target in [&here, &there] {
        let index = registry_raw(target);
        assert_eq!(index["manifests"].as_array().unwrap().len(), 3, "{index}");
        assert_eq!(
            index["annotations"]["org.opencontainers.image.title"],
            "multi"
        );
        assert_eq!(
            index["manifests"][1]["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        let config = json(&tool(
            "skopeo",
            &[
                "inspect",
                "--config",
                "--override-arch",
                "arm64",
                "--tls-verify=false",
                &format!("docker://{target}"),
            ],
        ));
        assert_eq!(config["architecture"], "arm64");
        // Every blob is there: the whole index copies.
        let copy = env.path(&format!("copy-{}", target.len()));
        tool(
            "skopeo",
            &[
                "copy",
                "--all",
                "--src-tls-verify=false",
                &format!("docker://{target}"),
                &format!("dir:{}", copy.display()),
            ],
        );
        assert!(
            made.stdout.contains(&format!("{target}@sha256:")),
            "{}",
            made.stdout
        );
    }
}

/// `inspect`: buildx's readable view, `--raw`, and the `--format` fields.
#[test]
fn imagetools_inspect_shows_remote_images() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    let (amd64, arm64) = pushed_images(&env, &registry);
    let here = format!("{}/it/multi:1", registry.addr);
    env.rbuild(&["imagetools", "create", "-t", &here, &amd64, &arm64])
        .ok();
    // Inspect: readable, raw, and buildx's --format fields.
    let shown = env.rbuild(&["imagetools", "inspect", &here]).ok().stdout;
    assert!(
        shown.contains("MediaType: application/vnd.oci.image.index.v1+json"),
        "{shown}"
    );
    assert!(shown.contains("  Platform:    linux/arm64"), "{shown}");
    assert!(
        shown.contains("    vnd.docker.reference.type:   attestation-manifest"),
        "{shown}"
    );
    let raw_bytes = env
        .rbuild(&["imagetools", "inspect", "--raw", &here])
        .ok()
        .stdout;
    assert_eq!(json(&raw_bytes), registry_raw(&here));
    let provenance = json(
        &env.rbuild(&[
            "buildx",
            "imagetools",
            "inspect",
            "--format",
            "{{json .Provenance}}",
            &here,
        ])
        .ok()
        .stdout,
    );
    assert!(
        provenance["linux/amd64"]["SLSA"]["buildDefinition"].is_object(),
        "{provenance}"
    );
    assert!(provenance.get("linux/arm64").is_none(), "{provenance}");
    let image = json(
        &env.rbuild(&[
            "imagetools",
            "inspect",
            "--format",
            "{{json .Image}}",
            &arm64,
        ])
        .ok()
        .stdout,
    );
    assert_eq!(image["architecture"], "arm64");
    let missing = env.rbuild(&[
        "imagetools",
        "inspect",
        &format!("{}/it/none:1", registry.addr),
    ]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
}
