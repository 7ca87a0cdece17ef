//! End to end, attestations as buildx asks for them and BuildKit stores them: `--sbom` and
//! `--provenance` (SLSA v1, `mode=min` by default on push) attached as an attestation manifest
//! per platform in the image index, pushed to a registry and read back with skopeo; checked
//! against the in-toto and SLSA v1 schemas (PyPI jsonschema) and SPDX's validator; written as
//! files by `type=local`; reproducible with `SOURCE_DATE_EPOCH`. Needs root.

mod common;

use common::*;

/// The in-toto statements attached to the pushed `image` (its index's attestation manifests),
/// each with its layer's predicate type annotation; everything the registry holds of it is
/// copied to `dir` first (`skopeo copy --all`).
fn pushed_statements(image: &str, dir: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    tool(
        "skopeo",
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{image}"),
            &format!("dir:{}", dir.display()),
        ],
    );
    let index = registry_raw(image);
    let repo = image.rsplit_once(':').unwrap().0;
    let mut out = Vec::new();
    for entry in index["manifests"].as_array().unwrap() {
        if entry["annotations"]["vnd.docker.reference.type"] != "attestation-manifest" {
            continue;
        }
        let manifest = registry_raw(&format!("{repo}@{}", entry["digest"].as_str().unwrap()));
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
            let hex = layer["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:");
            let statement = json(&std::fs::read_to_string(dir.join(hex)).unwrap());
            let kind = layer["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap();
            assert_eq!(statement["predicateType"], kind);
            out.push((kind.to_string(), statement));
        }
    }
    out
}

/// A context whose Dockerfile copies one file onto scratch.
fn small_context(env: &Env) -> std::path::PathBuf {
    let dockerfile = "FROM scratch\nCOPY a.txt /\n";
    env.context("ctx", &[("Dockerfile", dockerfile), ("a.txt", "a\n")])
}

const SLSA: &str = "https://slsa.dev/provenance/v1";

/// Both schemas accept `statement` (and a copy without `runDetails.builder.id`, which SLSA
/// requires, is refused: the check can fail).
fn assert_valid_provenance(statement: &serde_json::Value) {
    for schema in [
        "in-toto-statement.schema.json",
        "slsa-provenance-v1.schema.json",
    ] {
        let Some(result) = schema_errors(statement, schema) else {
            return;
        };
        result.unwrap_or_else(|e| panic!("{schema}: {e}\n{statement:#}"));
    }
    let mut broken = statement.clone();
    broken["predicate"]["runDetails"]["builder"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    let refused = schema_errors(&broken, "slsa-provenance-v1.schema.json").unwrap();
    assert!(
        refused.is_err(),
        "the schema accepts a provenance without a builder id"
    );
}

/// `mode=max`'s build graph: every step, each cache key mapped to one of them, the
/// Dockerfile as their source, and a complete request.
fn assert_max_graph(p: &serde_json::Value) {
    let config = &p["buildDefinition"]["internalParameters"]["buildConfig"];
    let steps = config["llbDefinition"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(
        steps.iter().any(|s| s["op"]["exec"].is_object()),
        "{steps:?}"
    );
    let mapping = config["digestMapping"].as_object().unwrap();
    assert_eq!(mapping.len(), steps.len());
    assert!(
        mapping
            .values()
            .all(|id| ids.contains(&id.as_str().unwrap()))
    );
    let meta = &p["runDetails"]["metadata"];
    assert_eq!(meta["buildkit_completeness"]["request"], true);
    assert!(meta["buildkit_metadata"]["source"]["infos"][0]["data"].is_string());
    assert_eq!(
        p["runDetails"]["builder"]["version"]["rbuild"],
        env!("CARGO_PKG_VERSION")
    );
}

/// `--provenance=mode=max`: the SLSA v1 statement names every base image and `COPY --from`
/// image by digest, the context by the digest of the files read, the `ADD` URL by its
/// content's digest, the build args and the secret's id, never the secret's value; it passes
/// the in-toto and SLSA schemas, and its build graph maps each step's cache key.
#[test]
fn max_provenance_names_every_input_and_no_secret() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    env.base_image();
    let base = format!("{}/prov/busybox:1", registry.addr);
    env.rbuild(&["push", "rbuild-demo/busybox", &base]).ok();
    let files = env.context("served", &[("notes.txt", "release notes\n")]);
    let server = HttpServer::start(&files);
    let url = format!("http://127.0.0.1:{}/notes.txt", server.port);
    let dockerfile = format!(
        "FROM {base}\nARG VERSION\nCOPY app.txt /srv/\n\
         COPY --from={base} /bin/busybox /srv/busybox\n\
         ADD {url} /srv/\n\
         RUN --mount=type=secret,id=token test \"$(wc -c < /run/secrets/token)\" -eq 12 \
         && echo $VERSION > /srv/version\n"
    );
    let ctx = env.context("ctx", &[("Dockerfile", &dockerfile), ("app.txt", "app\n")]);
    let image = format!("{}/prov/app:1", registry.addr);
    let metadata = env.path("metadata.json");
    let args = [
        "build",
        "--provenance=mode=max",
        "--secret",
        "id=token,env=TOKEN",
        "--build-arg",
        "VERSION=1.2",
        "--metadata-file",
        metadata.to_str().unwrap(),
        "-t",
        &image,
        "--push",
        ctx.to_str().unwrap(),
    ];
    env.rbuild_with(&args, "", &[("TOKEN", "s3cr3t-value")])
        .ok();
    let dir = env.path("copied");
    let statements = pushed_statements(&image, &dir);
    assert_eq!(statements.len(), 1, "provenance only");
    let (_, statement) = &statements[0];
    assert_valid_provenance(statement);
    // No secret value in anything pushed, attestations included.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(12).any(|w| w == b"s3cr3t-value"));
    }
    let index = registry_raw(&image);
    let platform_manifest = index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        platform_manifest.trim_start_matches("sha256:")
    );
    assert!(
        statement["subject"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "pkg:docker/{}/prov/app@1?platform=linux%2F",
                registry.addr
            ))
    );
    let p = &statement["predicate"];
    let deps = p["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let base_digest = sha256_digest(
        tool(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{base}"),
            ],
        )
        .as_bytes(),
    );
    let base_uri = format!(
        "pkg:docker/{}/prov/busybox@1?platform=linux%2F",
        registry.addr
    );
    let bases: Vec<_> = deps
        .iter()
        .filter(|d| d["uri"].as_str().is_some_and(|u| u.starts_with(&base_uri)))
        .collect();
    assert_eq!(
        bases.len(),
        1,
        "FROM and COPY --from name one image: {deps:?}"
    );
    assert_eq!(
        bases[0]["digest"]["sha256"],
        base_digest.trim_start_matches("sha256:")
    );
    let added = deps
        .iter()
        .find(|d| d["uri"] == url.as_str())
        .expect("the ADD URL");
    assert_eq!(
        added["digest"]["sha256"],
        sha256_digest(b"release notes\n").trim_start_matches("sha256:")
    );
    let context = deps
        .iter()
        .find(|d| d["name"] == "context")
        .expect("the context");
    assert_eq!(context["digest"]["sha256"].as_str().unwrap().len(), 64);
    let external = &p["buildDefinition"]["externalParameters"];
    assert_eq!(external["configSource"]["path"], "Dockerfile");
    assert_eq!(
        external["configSource"]["digest"]["sha256"],
        sha256_digest(dockerfile.as_bytes()).trim_start_matches("sha256:")
    );
    assert_eq!(external["request"]["frontend"], "dockerfile.v0");
    assert_eq!(external["request"]["args"]["build-arg:VERSION"], "1.2");
    assert_eq!(
        external["request"]["secrets"],
        serde_json::json!([{"id": "token", "optional": true}])
    );
    assert_max_graph(p);
    // The metadata file names what was pushed: the index.
    let meta = json(&std::fs::read_to_string(&metadata).unwrap());
    assert_eq!(
        meta["containerimage.digest"],
        sha256_digest(
            tool(
                "skopeo",
                &[
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    &format!("docker://{image}"),
                ]
            )
            .as_bytes()
        )
    );
}

/// A push gets `mode=min` provenance by default, as with buildx: no build args in it (and so
/// an incomplete request); `--provenance=false` and `BUILDX_NO_DEFAULT_ATTESTATIONS=1` push a
/// plain image manifest.
#[test]
fn pushes_get_min_provenance_by_default() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", "FROM scratch\nARG NOTE\nCOPY a.txt /\n"),
            ("a.txt", "a\n"),
        ],
    );
    let dir = ctx.to_str().unwrap();
    let image = format!("{}/default/app:1", registry.addr);
    env.rbuild(&[
        "build",
        "--build-arg",
        "NOTE=hello",
        "-t",
        &image,
        "--push",
        dir,
    ])
    .ok();
    let statements = pushed_statements(&image, &env.path("copied"));
    assert_eq!(statements.len(), 1);
    let (kind, statement) = &statements[0];
    assert_eq!(kind, SLSA);
    assert_valid_provenance(statement);
    let p = &statement["predicate"];
    let request = &p["buildDefinition"]["externalParameters"]["request"];
    assert!(request.get("args").is_none(), "{request}");
    assert!(
        p["buildDefinition"]["internalParameters"]
            .get("buildConfig")
            .is_none()
    );
    let meta = &p["runDetails"]["metadata"];
    assert_eq!(meta["buildkit_completeness"]["request"], false);
    assert!(meta["startedOn"].as_str().unwrap() <= meta["finishedOn"].as_str().unwrap());
    let off = format!("{}/default/off:1", registry.addr);
    env.rbuild(&["build", "--provenance=false", "-t", &off, "--push", dir])
        .ok();
    let media = |m: serde_json::Value| m["mediaType"].as_str().unwrap_or("docker").to_string();
    assert_ne!(
        media(registry_raw(&off)),
        "application/vnd.oci.image.index.v1+json"
    );
    let env_off = format!("{}/default/env-off:1", registry.addr);
    env.rbuild_with(
        &["build", "-t", &env_off, "--push", dir],
        "",
        &[("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")],
    )
    .ok();
    assert_eq!(media(registry_raw(&env_off)), media(registry_raw(&off)));
}

/// `type=local` writes the attestations next to the root filesystem, as BuildKit's local
/// exporter does: `sbom.spdx.json` and `provenance.json`, the in-toto statements.
#[test]
fn local_exports_write_attestation_files() {
    require_root!();
    let env = Env::new();
    let ctx = small_context(&env);
    let out = env.path("out");
    let dest = format!("type=local,dest={}", out.display());
    env.rbuild(&[
        "build",
        "--sbom=true",
        "--provenance=true",
        "-o",
        &dest,
        ctx.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "a\n");
    let sbom = json(&std::fs::read_to_string(out.join("sbom.spdx.json")).unwrap());
    assert_eq!(sbom["predicateType"], "https://spdx.dev/Document");
    assert_eq!(sbom["predicate"]["spdxVersion"], "SPDX-2.3");
    let provenance = json(&std::fs::read_to_string(out.join("provenance.json")).unwrap());
    assert_valid_provenance(&provenance);
}

/// With `SOURCE_DATE_EPOCH`, two machines (state directories) building the same thing write
/// the same provenance, and so the same image index.
#[test]
fn provenance_is_reproducible_with_source_date_epoch() {
    require_root!();
    let mut digests = Vec::new();
    let mut provenances = Vec::new();
    for machine in ["one", "two"] {
        let env = Env::new();
        let ctx = small_context(&env);
        let out = env.path("out");
        let meta = env.path("meta.json");
        let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
        let archive = format!("type=oci,dest={}", env.path("image.tar").display());
        let local = format!("type=local,dest={}", out.display());
        for output in [&archive, &local] {
            let args = [
                "build",
                "--provenance=mode=max",
                "--metadata-file",
                meta.to_str().unwrap(),
                "-o",
                output,
                ctx.to_str().unwrap(),
            ];
            env.rbuild_with(&args, "", &epoch).ok();
        }
        let meta = json(&std::fs::read_to_string(&meta).unwrap());
        digests.push((machine, meta["containerimage.digest"].clone()));
        provenances.push(std::fs::read_to_string(out.join("provenance.json")).unwrap());
    }
    assert_eq!(provenances[0], provenances[1]);
    assert!(provenances[0].contains("\"startedOn\": \"2023-11-14T22:13:20Z\""));
    assert_eq!(digests[0].1, digests[1].1, "{digests:?}");
}

/// `--sbom=true`: the SPDX document is attached as BuildKit attaches it (an attestation
/// manifest in the index, `unknown/unknown`, with BuildKit's annotations and an in-toto
/// layer), pushed and read back with skopeo, kept by `skopeo copy --all`, ignored by a
/// platform copy; each package names the instruction (`Dockerfile:line`) that added it.
#[test]
fn sbom_attestations_are_stored_as_buildkit_stores_them() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    env.base_image();
    let status = dpkg_entry;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!(
                "FROM rbuild-demo/busybox\n\
                 RUN mkdir -p /var/lib/dpkg && printf '{}' > /var/lib/dpkg/status\n\
                 RUN echo unrelated > /x\n\
                 RUN printf '\\n{}' >> /var/lib/dpkg/status\n",
                status("base-files", "12.4"),
                status("curl", "7.88.1")
            ),
        )],
    );
    let image = format!("{}/sbom/app:1", registry.addr);
    env.rbuild(&[
        "build",
        "--sbom=true",
        "-t",
        &image,
        "--push",
        ctx.to_str().unwrap(),
    ])
    .ok();
    let index = registry_raw(&image);
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    let attestation = &entries[1];
    assert_eq!(attestation["platform"]["os"], "unknown");
    assert_eq!(attestation["platform"]["architecture"], "unknown");
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.digest"],
        entries[0]["digest"]
    );
    let repo = image.rsplit_once(':').unwrap().0;
    let manifest = registry_raw(&format!(
        "{repo}@{}",
        attestation["digest"].as_str().unwrap()
    ));
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
    assert_eq!(
        layer["annotations"]["in-toto.io/predicate-type"],
        "https://spdx.dev/Document"
    );
    // Everything, attestation included, to a directory; the statement's SPDX document (the
    // push's default provenance follows it).
    let statements = pushed_statements(&image, &env.path("copied"));
    let kinds: Vec<&str> = statements.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["https://spdx.dev/Document", SLSA]);
    let statement = &statements[0].1;
    assert_eq!(statement["predicateType"], "https://spdx.dev/Document");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        entries[0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    let packages = statement["predicate"]["packages"].as_array().unwrap();
    let curl = packages.iter().find(|p| p["name"] == "curl").unwrap();
    assert!(
        curl["comment"].as_str().unwrap().contains("Dockerfile:4)"),
        "{curl}"
    );
    let base = packages.iter().find(|p| p["name"] == "base-files").unwrap();
    assert!(
        base["comment"].as_str().unwrap().contains("Dockerfile:2)"),
        "{base}"
    );
    // skopeo copy --all keeps the attestation; a platform copy leaves it behind.
    let all = format!("{}/sbom/copy-all:1", registry.addr);
    let one = format!("{}/sbom/copy-one:1", registry.addr);
    for (flags, dest) in [(&["--all"][..], &all), (&[][..], &one)] {
        let mut args = vec!["copy", "--src-tls-verify=false", "--dest-tls-verify=false"];
        args.extend(flags);
        let (from, to) = (format!("docker://{image}"), format!("docker://{dest}"));
        args.extend([from.as_str(), to.as_str()]);
        tool("skopeo", &args);
    }
    assert_eq!(registry_raw(&all)["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(
        registry_raw(&one)["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    // The local store has it under the name too, and rbuild runs the image, not the SBOM.
    let r = env.rbuild(&["run", "--rm", &image, "cat", "/x"]).ok();
    assert_eq!(r.stdout, "unrelated\n");
}

/// `rbuild attestations`: an image's attestations in the local store, as a table and, with
/// `--type`, each one's in-toto statement; a multi-platform image asks which platform.
#[test]
fn attestations_are_read_back_from_the_local_store() {
    require_root!();
    let env = Env::new();
    let ctx = small_context(&env);
    let dir = ctx.to_str().unwrap();
    env.rbuild(&[
        "build",
        "--sbom=true",
        "--provenance=true",
        "-t",
        "att:1",
        dir,
    ])
    .ok();
    let table = env.rbuild(&["attestations", "att:1"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("PLATFORM"), "{table}");
    assert!(lines[1].contains("https://spdx.dev/Document"), "{table}");
    assert!(lines[2].contains(SLSA), "{table}");
    let provenance = json(
        &env.rbuild(&["attestations", "att:1", "--type", "provenance"])
            .ok()
            .stdout,
    );
    assert_valid_provenance(&provenance);
    let sbom = json(
        &env.rbuild(&["attestations", "att:1", "--type", "sbom"])
            .ok()
            .stdout,
    );
    assert_eq!(sbom["predicate"]["spdxVersion"], "SPDX-2.3");
    let none = env.rbuild(&["attestations", "att:1", "--type", "https://example.com/vex"]);
    assert_eq!(none.code, 1);
    assert!(
        none.stderr
            .contains("att:1 has no https://example.com/vex attestation"),
        "{}",
        none.stderr
    );
    env.rbuild(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "--provenance=true",
        "-t",
        "att:multi",
        dir,
    ])
    .ok();
    let which = env.rbuild(&["attestations", "att:multi", "--type", "provenance"]);
    assert_eq!(which.code, 1);
    assert!(
        which.stderr.contains("choose one with --platform"),
        "{}",
        which.stderr
    );
    let arm = env
        .rbuild(&[
            "attestations",
            "att:multi",
            "--type",
            "provenance",
            "--platform",
            "linux/arm64",
        ])
        .ok();
    let arm = json(&arm.stdout);
    assert!(
        arm["subject"][0]["name"]
            .as_str()
            .unwrap()
            .ends_with("platform=linux%2Farm64")
    );
}
