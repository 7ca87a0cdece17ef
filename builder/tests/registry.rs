//! End to end, registries: push and pull through Debian's docker-registry (plain, htpasswd,
//! TLS, token auth), login and credential helpers. Needs root.

mod common;

use common::*;

/// Why it is one piece: One scenario: the pushed image is copied into other forms (Docker schema 2, a manifest
/// list), and fresh state directories pull each; setting it up again per part would double
/// the test's time.
#[allow(clippy::too_many_lines)]
#[test]
fn push_and_pull_through_a_real_registry() {
    require_root!();
    let registry = Registry::start();
    let env = Env::new();
    env.base_image();
    let ctx = env.path("hello");
    copy_dir(&testdata().join("hello"), &ctx);
    let built = env
        .rbuild(&["build", "-t", "hello:1.0", ctx.to_str().unwrap()])
        .ok();
    let config_digest = digest_after(&built.stderr, "writing image ");
    let remote = format!("{}/demo/hello:1.0", registry.addr);
    let pushed = env
        .rbuild(&["push", "--oci-mediatypes", "hello:1.0", &remote])
        .ok();
    let digest = pushed
        .stdout
        .trim()
        .strip_prefix(&format!("{remote}@"))
        .unwrap_or_else(|| panic!("{}", pushed.stdout))
        .to_string();
    // The layers the steps made were compressed for the push (the local store keeps them
    // uncompressed); each blob is reported with its size and rate.
    assert!(
        pushed.stderr.contains("compressed layers: "),
        "{}",
        pushed.stderr
    );
    assert!(
        pushed
            .stderr
            .lines()
            .any(|l| l.ends_with(" pushed") && l.contains("/s")),
        "{}",
        pushed.stderr
    );
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ],
    ));
    assert_eq!(raw["config"]["digest"], config_digest.as_str());
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    for layer in raw["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
            "{raw}"
        );
    }
    // build --push, and type=registry with OCI media types (a plain manifest each: the default
    // provenance would make an index; tests/attestations.rs has those).
    let pushed_by_build = format!("{}/demo/built:1", registry.addr);
    let out = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "--provenance=false",
            "--push",
            "-t",
            &pushed_by_build,
            ctx.to_str().unwrap(),
        ])
        .ok();
    assert!(
        out.stderr.contains(&format!("pushing {pushed_by_build}@")),
        "{}",
        out.stderr
    );
    let oci = format!("{}/demo/oci:1", registry.addr);
    env.rbuild(&[
        "build",
        "--provenance=false",
        "-o",
        &format!("type=registry,name={oci},oci-mediatypes=true"),
        ctx.to_str().unwrap(),
    ])
    .ok();
    for (name, media_type) in [
        (
            &pushed_by_build,
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
        (&oci, "application/vnd.oci.image.manifest.v1+json"),
    ] {
        let raw = json(&tool(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{name}"),
            ],
        ));
        assert_eq!(raw["mediaType"], media_type, "{name}");
        assert_eq!(raw["config"]["digest"], config_digest.as_str(), "{name}");
    }
    // A second push (another repository) compresses nothing again; by default it sends
    // Docker media types, as BuildKit's image exporter does (oci-mediatypes=false).
    let again_name = format!("{}/demo/again:1.0", registry.addr);
    let again = env.rbuild(&["push", "hello:1.0", &again_name]).ok();
    assert!(
        !again.stderr.contains("compressed layers"),
        "{}",
        again.stderr
    );
    assert!(!again.stdout.trim().ends_with(&digest), "{}", again.stdout);
    // Its blobs are in demo/hello of the same registry: mounted from there, none uploaded.
    assert!(
        again.stderr.contains(": mounted from demo/hello") && !again.stderr.contains(" pushed"),
        "{}",
        again.stderr
    );
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{again_name}"),
        ],
    ));
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );

    // skopeo sees the same manifest in the registry and copies it out unchanged.
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ],
    ));
    assert_eq!(inspect["Digest"], digest.as_str());
    let layout = env.path("pulled");
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{remote}"),
            &format!("oci:{}:x", layout.display()),
        ],
    );
    let local = json(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:x", layout.display())],
    ));
    assert_eq!(local["Digest"], digest.as_str());

    // The same image as a Docker schema 2 manifest, and behind a manifest list.
    let docker = format!("{}/demo/hello:docker", registry.addr);
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
            &format!("docker://{remote}"),
            &format!("docker://{docker}"),
        ],
    );
    let size = std::fs::metadata(
        env.root()
            .join("content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
    .len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
             "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    });
    let index_file = env.path("index.json");
    std::fs::write(&index_file, index.to_string()).unwrap();
    tool(
        "curl",
        &[
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
            "--data-binary",
            &format!("@{}", index_file.display()),
            &format!("http://{}/v2/demo/hello/manifests/multi", registry.addr),
        ],
    );

    let docker_digest = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{docker}"),
        ],
    ))["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        docker_digest, digest,
        "the Docker form is a different manifest"
    );

    // Fresh state directories pull each form with oci-client and build on it; the manifest list
    // resolves to its linux/amd64 image.
    for (tag, expected) in [
        ("1.0", &digest),
        ("docker", &docker_digest),
        ("multi", &digest),
    ] {
        let fresh = Env::new();
        let from = format!("{}/demo/hello:{tag}", registry.addr);
        let ctx = fresh.context(
            "ctx",
            &[(
                "Dockerfile",
                &format!("FROM {from}\nUSER root\nRUN cp /app/greeting.txt /copied\n"),
            )],
        );
        let out = fresh
            .rbuild(&["build", "-t", "pulled:1", ctx.to_str().unwrap()])
            .ok();
        assert!(
            out.stderr.contains(&format!("FROM {from}@{expected}")),
            "{tag}: {}",
            out.stderr
        );
        // Each downloaded layer is reported with its size and rate.
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains(" / ") && l.contains("/s") && l.ends_with(" done")),
            "{tag}: {}",
            out.stderr
        );
        if tag == "1.0" {
            // The pulled layers are gzip blobs: a zstd export keeps them as they are, unless
            // force-compression asks; the layer the step made is zstd either way.
            let types = |options: &str| -> Vec<String> {
                let archive = fresh.path("z.tar");
                fresh
                    .rbuild(&[
                        "build",
                        "-q",
                        "-o",
                        &format!(
                            "type=oci,dest={},compression=zstd{options}",
                            archive.display()
                        ),
                        ctx.to_str().unwrap(),
                    ])
                    .ok();
                layer_media_types(&archive)
                    .iter()
                    .map(|t| t.replace("application/vnd.oci.image.layer.v1.", ""))
                    .collect()
            };
            let kept = types("");
            assert!(
                kept[..kept.len() - 1].iter().all(|t| t == "tar+gzip"),
                "{kept:?}"
            );
            assert_eq!(kept.last().unwrap(), "tar+zstd");
            let forced = types(",force-compression=true");
            assert!(forced.iter().all(|t| t == "tar+zstd"), "{forced:?}");
        }
        let run = fresh
            .rbuild(&["run", "--rm", "pulled:1", "cat", "/copied"])
            .ok();
        assert!(
            run.stdout.starts_with("Hello from rbuild!"),
            "{tag}: {}",
            run.stdout
        );
    }
}

/// An image BuildKit built (testdata/docker-save, from Docker 20.10's BuildKit), in the
/// registry: `rbuild pull` fetches it, reporting each layer, and a build uses it as a base.
#[test]
fn pulls_and_builds_on_an_image_buildkit_built() {
    require_root!();
    let registry = Registry::start();
    let buildkit_image = format!("{}/fixture/buildkit:1", registry.addr);
    tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!(
                "docker-archive:{}",
                testdata().join("docker-save/legacy.tar").display()
            ),
            &format!("docker://{buildkit_image}"),
        ],
    );
    let fresh = Env::new();
    let pulled = fresh.rbuild(&["pull", &buildkit_image]).ok();
    assert!(
        pulled.stdout.contains("Status: Downloaded newer image"),
        "{}",
        pulled.stdout
    );
    assert!(
        pulled
            .stderr
            .lines()
            .filter(|l| l.contains(": Pull complete "))
            .count()
            == 2,
        "{}",
        pulled.stderr
    );
    // Each layer was unpacked while it downloaded: its snapshot is there without a build.
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--tls-verify=false",
            &format!("docker://{buildkit_image}"),
        ],
    ));
    for diff_id in config["rootfs"]["diff_ids"].as_array().unwrap() {
        let hex = diff_id.as_str().unwrap().trim_start_matches("sha256:");
        assert!(
            fresh.root().join("snapshots").join(hex).is_dir(),
            "no snapshot {hex}"
        );
    }
    let again = fresh.rbuild(&["pull", &buildkit_image]).ok();
    assert!(
        again.stdout.contains("Status: Image is up to date"),
        "{}",
        again.stdout
    );
    let ctx = fresh.context(
        "on-buildkit",
        &[(
            "Dockerfile",
            &format!(
                "FROM {buildkit_image}\nCOPY --from={buildkit_image} /greeting.txt /copy.txt\n"
            ),
        )],
    );
    let rootfs = fresh.path("on-buildkit-rootfs");
    fresh
        .rbuild(&[
            "build",
            "-q",
            "-o",
            rootfs.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("copy.txt")).unwrap(),
        "hello from a docker save archive\n"
    );
}

/// Pushing `image` to `remote` without credentials is refused with an error that names the
/// registry and what to run; logging in as `user` with a wrong password fails naming it.
fn assert_refusals(env: &Env, image: &str, remote: &str, user: &str) {
    let addr = remote.split('/').next().unwrap();
    let refused = env.rbuild(&["push", image, remote]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains(&format!("rbuild login {addr}")),
        "{}",
        refused.stderr
    );
    let wrong = env.rbuild_with(
        &["login", addr, "-u", user, "--password-stdin"],
        "wrong\n",
        &[],
    );
    assert_ne!(wrong.code, 0);
    assert!(
        wrong.stderr.contains(&format!("login to {addr} failed")),
        "{}",
        wrong.stderr
    );
}

#[test]
fn registry_login_credential_helpers_and_tls() {
    require_root!();
    use base64::Engine as _;
    let env = Env::new();
    env.base_image();
    let registry = Registry::start_with(common::RegistrySetup {
        user: Some(("tester", "s3cret")),
        ..Default::default()
    });
    let addr = registry.addr.clone();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo auth > /auth\n",
        )],
    );
    env.rbuild(&["build", "-q", "-t", "auth:1", ctx.to_str().unwrap()])
        .ok();
    let remote = format!("{addr}/demo/auth:1");
    let config_json = env.docker_config().join("config.json");
    assert_refusals(&env, "auth:1", &remote, "tester");
    assert!(!config_json.exists(), "a failed login stores nothing");
    // The right one: stored as docker login stores it.
    let ok = env
        .rbuild_with(
            &["login", &addr, "-u", "tester", "--password-stdin"],
            "s3cret\n",
            &[],
        )
        .ok();
    assert_eq!(ok.stdout, "Login Succeeded\n");
    let config = json(&std::fs::read_to_string(&config_json).unwrap());
    assert_eq!(
        config["auths"][&addr]["auth"],
        base64::engine::general_purpose::STANDARD.encode("tester:s3cret")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&config_json)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Now pushes work, and skopeo (with the same credentials) reads the image.
    env.rbuild(&["push", "auth:1", &remote]).ok();
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "tester:s3cret",
            &format!("docker://{remote}"),
        ],
    ));
    assert!(inspect["Digest"].as_str().unwrap().starts_with("sha256:"));
    // Another root with the same credentials builds on the pushed image.
    let fresh = env.with_same_logins();
    let from = fresh.context(
        "from",
        &[(
            "Dockerfile",
            &format!("FROM {remote}\nRUN cat /auth > /seen\n"),
        )],
    );
    fresh
        .rbuild(&["build", "-q", "-t", "seen:1", from.to_str().unwrap()])
        .ok();
    assert_eq!(
        fresh
            .rbuild(&["run", "--rm", "seen:1", "cat", "/seen"])
            .ok()
            .stdout,
        "auth\n"
    );
    // logout forgets them.
    let out = env.rbuild(&["logout", &addr]).ok();
    assert_eq!(
        out.stdout,
        format!("Removing login credentials for {addr}\n")
    );
    assert_ne!(env.rbuild(&["push", "auth:1", &remote]).code, 0);
    // A credential helper named by credHelpers answers for the registry (the helper protocol:
    // `get` with the server on stdin, JSON on stdout; `store` with JSON on stdin).
    let helpers = env.path("helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-rbuildtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  get) read server; printf '{{\"ServerURL\":\"%s\",\"Username\":\"tester\",\"Secret\":\"s3cret\"}}' \"$server\" ;;\n  store) cat > {0}/stored.json ;;\n  erase) read server; echo \"$server\" > {0}/erased ;;\nesac\n",
            helpers.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        &config_json,
        serde_json::json!({"credHelpers": {addr.clone(): "rbuildtest"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    env.rbuild_with(&["push", "auth:1", &remote], "", &[("PATH", &path)])
        .ok();
    env.rbuild_with(
        &["login", &addr, "-u", "tester", "--password-stdin"],
        "s3cret",
        &[("PATH", &path)],
    )
    .ok();
    let stored = json(&std::fs::read_to_string(helpers.join("stored.json")).unwrap());
    assert_eq!(stored["Username"], "tester");
    assert_eq!(stored["ServerURL"], addr.as_str());
    // A registry with TLS from a CA of its own: trusted with --registry-ca, refused without.
    let certs = env.path("certs");
    let (ca, cert, key) = common::test_certificates(&certs);
    let secure = Registry::start_with(common::RegistrySetup {
        tls: Some((&cert, &key)),
        ..Default::default()
    });
    let secure_remote = format!("{}/demo/tls:1", secure.addr);
    let untrusted = env.rbuild(&["push", "auth:1", &secure_remote]);
    assert_ne!(untrusted.code, 0);
    assert!(
        untrusted.stderr.contains("TLS certificate is not trusted")
            && untrusted.stderr.contains("--registry-ca"),
        "{}",
        untrusted.stderr
    );
    env.rbuild(&[
        "--registry-ca",
        ca.to_str().unwrap(),
        "push",
        "auth:1",
        &secure_remote,
    ])
    .ok();
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--cert-dir",
            certs.to_str().unwrap(),
            &format!("docker://{secure_remote}"),
        ],
    ));
    assert!(inspect["Digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn bearer_token_login_push_and_pull() {
    require_root!();
    let tokens = common::TokenServer::start("alice", "t0ken-pw");
    let registry = Registry::start_with(common::RegistrySetup {
        token: Some(&tokens),
        ..Default::default()
    });
    let addr = registry.addr.clone();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo bearer > /b\n",
        )],
    );
    env.rbuild(&["build", "-q", "-t", "bearer:1", ctx.to_str().unwrap()])
        .ok();
    let remote = format!("{addr}/demo/bearer:1");
    // Anonymous, the token service grants nothing; a wrong password it refuses.
    assert_refusals(&env, "bearer:1", &remote, "alice");
    env.rbuild_with(
        &["login", &addr, "-u", "alice", "--password-stdin"],
        "t0ken-pw\n",
        &[],
    )
    .ok();
    // Push and pull through the bearer flow: tokens scoped to the repository.
    env.rbuild(&["push", "bearer:1", &remote]).ok();
    let asked = tokens.requests.lock().unwrap().clone();
    assert!(
        asked.iter().any(|(who, scopes)| who == "alice"
            && scopes
                .iter()
                .any(|s| s.starts_with("repository:demo/bearer:") && s.contains("push"))),
        "{asked:?}"
    );
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "alice:t0ken-pw",
            &format!("docker://{remote}"),
        ],
    ));
    assert!(inspect["Digest"].as_str().unwrap().starts_with("sha256:"));
    let fresh = env.with_same_logins();
    fresh.rbuild(&["pull", &remote]).ok();
    let from = fresh.context(
        "from",
        &[(
            "Dockerfile",
            &format!("FROM {remote}\nRUN cat /b > /seen\n"),
        )],
    );
    let out = fresh.path("out");
    fresh
        .rbuild(&[
            "build",
            "-o",
            &format!("type=local,dest={}", out.display()),
            from.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        std::fs::read_to_string(out.join("seen")).unwrap(),
        "bearer\n"
    );
}
