//! End to end, the daily commands on the local store: images, tag, rmi, history, inspect,
//! save and load (Docker's and OCI archives). Needs root.

mod common;

use common::*;
use std::process::Stdio;

/// Why it is one piece: One scenario on one store: each command works on the images and archives the ones before
/// made.
#[allow(clippy::too_many_lines)]
#[test]
fn daily_image_commands_and_archives() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo daily > /daily\nCMD [\"cat\", \"/daily\"]\n",
        )],
    );
    let built = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "-t",
            "daily:1",
            ctx.to_str().unwrap(),
        ])
        .ok();
    let id = digest_after(&built.stderr, "writing image ");
    let short = &id["sha256:".len().."sha256:".len() + 12];
    // images: a row per name, Docker's columns; JSON with Docker's keys; digests.
    let images = env.rbuild(&["images"]).ok().stdout;
    assert!(images.starts_with("REPOSITORY "), "{images}");
    let row = images
        .lines()
        .find(|l| l.starts_with("daily "))
        .unwrap_or_else(|| panic!("{images}"));
    assert!(row.contains(short) && row.contains("ago"), "{row}");
    let listed: Vec<serde_json::Value> = env
        .rbuild(&["images", "--format", "json"])
        .ok()
        .stdout
        .lines()
        .map(json)
        .collect();
    let daily = listed.iter().find(|i| i["Repository"] == "daily").unwrap();
    assert_eq!(daily["Tag"], "1");
    assert_eq!(daily["ID"], short);
    let digests = env.rbuild(&["images", "--digests"]).ok().stdout;
    assert!(
        digests.contains(&manifest_digest(&built.stderr)),
        "{digests}"
    );
    // history: newest first, the image id on top, the RUN with the size of what it wrote.
    let history = env.rbuild(&["history", "daily:1"]).ok().stdout;
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines[0].starts_with("IMAGE "), "{history}");
    assert!(lines[1].starts_with(short) && lines[1].contains("CMD [\"cat\" \"/daily\"]"));
    assert!(
        lines[2].starts_with("<missing>")
            && lines[2].contains("RUN /bin/sh -c echo daily > /daily # buildkit")
            && lines[2].contains(" 6B "),
        "{history}"
    );
    let full = env
        .rbuild(&["history", "--no-trunc", "daily:1"])
        .ok()
        .stdout;
    assert!(full.lines().nth(1).unwrap().starts_with(&id), "{full}");
    // inspect: Docker's keys.
    let inspect = json(&env.rbuild(&["inspect", "daily:1"]).ok().stdout);
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(inspect[0]["RepoTags"], serde_json::json!(["daily:1"]));
    assert_eq!(
        inspect[0]["Config"]["Cmd"],
        serde_json::json!(["cat", "/daily"])
    );
    // tag and rmi: an id with two names needs a name or --force.
    env.rbuild(&["tag", short, "daily:2"]).ok();
    assert!(
        env.rbuild(&["images"])
            .ok()
            .stdout
            .contains("daily                 2")
    );
    let ambiguous = env.rbuild(&["rmi", short]);
    assert!(
        ambiguous.code != 0 && ambiguous.stderr.contains("several names"),
        "{}",
        ambiguous.stderr
    );
    let removed = env.rbuild(&["rmi", "daily:2"]).ok().stdout;
    assert_eq!(removed, "Untagged: daily:2\n");
    assert!(env.rbuild(&["inspect", "daily:2"]).code != 0);
    // save (Docker's format by default, and OCI), read by skopeo; load into a fresh root.
    let docker_archive = env.path("daily.tar");
    let oci_archive = env.path("daily-oci.tar");
    env.rbuild(&["save", "daily:1", "-o", docker_archive.to_str().unwrap()])
        .ok();
    env.rbuild(&[
        "save",
        "--format",
        "oci",
        "-o",
        oci_archive.to_str().unwrap(),
        "daily:1",
    ])
    .ok();
    let config = skopeo_inspect(
        "--config",
        &format!("docker-archive:{}", docker_archive.display()),
    );
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["cat", "/daily"])
    );
    let layers = layer_media_types(&oci_archive);
    assert!(
        layers
            .iter()
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar"),
        "save writes layers uncompressed, as docker save: {layers:?}"
    );
    let fresh = Env::new();
    let loaded = fresh
        .rbuild(&["load", "-i", docker_archive.to_str().unwrap()])
        .ok()
        .stdout;
    assert_eq!(loaded, "Loaded image: daily:1\n");
    assert_eq!(
        fresh.rbuild(&["run", "--rm", "daily:1"]).ok().stdout,
        "daily\n"
    );
    let again = json(&fresh.rbuild(&["inspect", "daily:1"]).ok().stdout);
    assert_eq!(again[0]["Id"], id.as_str(), "the same image");
    // From stdin, an OCI layout written by another tool (skopeo, to a directory: its archive
    // transport cannot write when the tests run rootless), tarred, into another root.
    let skopeo_layout = env.path("daily-skopeo");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}", oci_archive.display()),
            &format!("oci:{}:daily:1", skopeo_layout.display()),
        ],
    );
    let skopeo_archive = env.path("daily-skopeo.tar");
    let mut tarball = tar::Builder::new(std::fs::File::create(&skopeo_archive).unwrap());
    tarball.append_dir_all(".", &skopeo_layout).unwrap();
    tarball.into_inner().unwrap();
    let other = Env::new();
    let mut load = other
        .command()
        .args(["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::copy(
        &mut std::fs::File::open(&skopeo_archive).unwrap(),
        load.stdin.as_mut().unwrap(),
    )
    .unwrap();
    drop(load.stdin.take());
    let out = load.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Loaded image: daily:1\n"
    );
    // A legacy `docker save` archive (testdata/docker-save): loaded, then used as a base.
    let legacy = testdata().join("docker-save/legacy.tar");
    let loaded = other
        .rbuild(&["load", "-i", legacy.to_str().unwrap()])
        .ok()
        .stdout;
    assert_eq!(loaded, "Loaded image: rbuild-fixture/saved:1\n");
    let from = other.context("from", &[("Dockerfile", "FROM rbuild-fixture/saved:1\n")]);
    let rootfs = other.path("rootfs");
    other
        .rbuild(&[
            "build",
            "-q",
            "-o",
            rootfs.to_str().unwrap(),
            from.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("again/greeting.txt")).unwrap(),
        "hello from a docker save archive\n"
    );
    let garbage = other.path("garbage.tar");
    std::fs::write(&garbage, "not a tar at all").unwrap();
    let bad = other.rbuild(&["load", "-i", garbage.to_str().unwrap()]);
    assert!(
        bad.code != 0 && bad.stderr.contains("is it a `docker save` or OCI archive?"),
        "{}",
        bad.stderr
    );
}

/// An untagged build result is Docker's `<none>` image, usable by id everywhere; the listing
/// takes Docker's `-q`, repository filter and `--format` templates, `inspect -f` too, and
/// `run` Docker's daily flags.
#[test]
fn untagged_images_templates_and_run_flags() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM rbuild-demo/busybox\nRUN echo untagged > /u\n",
        )],
    );
    let id = env
        .rbuild(&["build", "-q", ctx.to_str().unwrap()])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    let short = &id[7..19];
    let r = env.rbuild(&["run", "--rm", &id, "cat", "/u"]).ok();
    assert_eq!(r.stdout, "untagged\n");
    let listing = env.rbuild(&["images"]).ok().stdout;
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("<none>") && l.contains(short)),
        "{listing}"
    );
    let quiet = env.rbuild(&["images", "-q"]).ok().stdout;
    assert!(quiet.lines().any(|l| l == short), "{quiet}");
    let names = env
        .rbuild(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok()
        .stdout;
    assert!(
        names.lines().any(|l| l == "rbuild-demo/busybox:latest"),
        "{names}"
    );
    assert!(names.lines().any(|l| l == "<none>:<none>"), "{names}");
    let only = env
        .rbuild(&["images", "-q", "rbuild-demo/busybox"])
        .ok()
        .stdout;
    assert_eq!(only.lines().count(), 1, "{only}");
    let table = env
        .rbuild(&["images", "--format", "table {{.ID}}\\t{{.Repository}}"])
        .ok()
        .stdout;
    assert!(table.starts_with("IMAGE ID"), "{table}");
    let inspected = env
        .rbuild(&["inspect", "-f", "{{.Id}} {{json .Config.Env}}", &id])
        .ok()
        .stdout;
    assert!(
        inspected.starts_with(&format!("{id} [\"PATH=")),
        "{inspected}"
    );
    // run's flags, as Docker's.
    let shared = env.context("shared", &[("h", "from the host\n")]);
    let volume = format!("{}:/mnt:ro", shared.display());
    let r = env
        .rbuild(&[
            "run",
            "--rm",
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "-u",
            "1000",
            "-v",
            &volume,
            "--entrypoint",
            "/bin/sh",
            &id,
            "-c",
            "echo $A; pwd; id -u; cat /mnt/h; touch /mnt/x 2>/dev/null || echo read-only",
        ])
        .ok();
    assert_eq!(r.stdout, "1\n/tmp\n1000\nfrom the host\nread-only\n");
    let r = env.rbuild(&["run", "--rm", "-p", "8080:80", &id]);
    assert!(
        r.code != 0 && r.stderr.contains("--network host"),
        "{}",
        r.stderr
    );
    // Removing it by id removes the untagged image.
    let r = env.rbuild(&["rmi", &id]).ok();
    assert!(r.stdout.contains(&format!("Deleted: {id}")), "{}", r.stdout);
    assert!(!env.rbuild(&["images", "-q"]).ok().stdout.contains(short));
}
