//! End to end, `rbuild sbom`: the packages of an image, each with the layer and instruction
//! that introduced it, as an SPDX 2.3 document pyspdxtools accepts: dpkg and apk databases,
//! language ecosystems (Cargo, npm, Python, and the build info of a real Go binary, Debian's
//! own `docker-registry`), and a real Debian root filesystem (debootstrap) whose package list
//! must equal what `dpkg-query` says inside the image. Needs root.

mod common;

use common::*;

/// `document` passes SPDX's own validator (PyPI spdx-tools, in the test venv).
fn assert_valid_spdx(env: &Env, document: &str) {
    let Some(validator) = venv_tool("pyspdxtools") else {
        return;
    };
    let file = env.path("sbom.json");
    std::fs::write(&file, document).unwrap();
    let out = std::process::Command::new(&validator)
        .arg("-i")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The packages of an SPDX document: (PURL, comment).
fn packages(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["externalRefs"][0]["referenceLocator"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                p["comment"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `rbuild sbom`: the packages of an image's dpkg database, each attributed to the layer and
/// instruction that introduced it, as an SPDX 2.3 document that pyspdxtools accepts.
#[test]
fn sbom_lists_packages_with_the_instruction_that_added_them() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let status = dpkg_entry;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!(
                "FROM rbuild-demo/busybox\n\
                 RUN mkdir -p /var/lib/dpkg && echo ID=debian > /etc/os-release && \
                 printf '{}' > /var/lib/dpkg/status\n\
                 RUN echo unrelated > /x\n\
                 RUN printf '\\n{}' >> /var/lib/dpkg/status\n",
                status("base-files", "12.4"),
                status("curl", "7.88.1-10+deb12u5")
            ),
        )],
    );
    env.rbuild(&["build", "-q", "-t", "sbom:1", ctx.to_str().unwrap()])
        .ok();
    let r = env.rbuild(&["sbom", "sbom:1"]).ok();
    let doc = json(&r.stdout);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let packages = doc["packages"].as_array().unwrap();
    let found: Vec<(&str, &str)> = packages
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["versionInfo"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [("base-files", "12.4"), ("curl", "7.88.1-10+deb12u5")]
    );
    assert_eq!(
        packages[1]["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/curl@7.88.1-10%2Bdeb12u5?arch=amd64"
    );
    // Each comes from the layer of the RUN that wrote it, not from the one in between.
    assert!(
        packages[0]["comment"]
            .as_str()
            .unwrap()
            .contains("layer 1 ("),
        "{}",
        packages[0]
    );
    assert!(
        packages[1]["comment"]
            .as_str()
            .unwrap()
            .contains("layer 3 ("),
        "{}",
        packages[1]
    );
    assert!(
        packages[1]["comment"]
            .as_str()
            .unwrap()
            .contains(">> /var/lib/dpkg/status")
    );
    assert_valid_spdx(&env, &r.stdout);
}

/// Language packages: a `Cargo.lock`, an npm tree (`package-lock.json` and `node_modules`),
/// a Python distribution's metadata and a real Go binary's build info, each attributed to the
/// instruction that wrote it; a `node_modules` removed by a later step is gone from the SBOM.
#[test]
fn sbom_lists_language_packages_where_they_were_installed() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let lock = "version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\n\
        [[package]]\nname = \"serde\"\nversion = \"1.0.200\"\n\
        source = \"registry+https://github.com/rust-lang/crates.io-index\"\n";
    let npm_lock = r#"{"name": "web", "lockfileVersion": 3, "packages": {"": {"name": "web"},
        "node_modules/left-pad": {"version": "1.3.0", "license": "WTFPL"}}}"#;
    let metadata = "Metadata-Version: 2.1\nName: Requests\nVersion: 2.31.0\nLicense: Apache-2.0\n";
    let registry_binary = std::fs::read("/usr/bin/docker-registry")
        .expect("docker-registry (a Go binary, Debian package docker-registry)");
    let ctx = env.context(
        "ctx",
        &[
            ("Cargo.lock", lock),
            ("package-lock.json", npm_lock),
            (
                "left-pad.json",
                r#"{"name": "left-pad", "version": "1.3.0"}"#,
            ),
            ("tmp.json", r#"{"name": "scratch-pkg", "version": "9.9.9"}"#),
            ("METADATA", metadata),
            (
                "Dockerfile",
                "FROM rbuild-demo/busybox\n\
                 COPY Cargo.lock /src/app/\n\
                 COPY package-lock.json /web/\n\
                 COPY left-pad.json /web/node_modules/left-pad/package.json\n\
                 COPY tmp.json /tmp/build/node_modules/scratch-pkg/package.json\n\
                 COPY METADATA /usr/lib/python3/dist-packages/requests-2.31.0.dist-info/\n\
                 COPY registry /usr/bin/registry\n\
                 RUN rm -r /tmp/build\n",
            ),
        ],
    );
    std::fs::write(ctx.join("registry"), &registry_binary).unwrap();
    std::fs::set_permissions(
        ctx.join("registry"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    env.rbuild(&["build", "-q", "-t", "langs:1", ctx.to_str().unwrap()])
        .ok();
    let r = env.rbuild(&["sbom", "langs:1"]).ok();
    let doc = json(&r.stdout);
    let found = packages(&doc);
    let comment_of = |purl: &str| {
        found
            .iter()
            .find(|(p, _)| p == purl)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("no {purl} in {found:#?}"))
    };
    assert!(comment_of("pkg:cargo/serde@1.0.200").contains("Dockerfile:2)"));
    assert!(comment_of("pkg:cargo/serde@1.0.200").contains("listed in /src/app/Cargo.lock"));
    // In the lockfile (line 3) and in node_modules (line 4): one package, the first layer.
    let left_pad: Vec<_> = found
        .iter()
        .filter(|(p, _)| p == "pkg:npm/left-pad@1.3.0")
        .collect();
    assert_eq!(left_pad.len(), 1, "{found:#?}");
    assert!(left_pad[0].1.contains("Dockerfile:3)"), "{}", left_pad[0].1);
    assert!(comment_of("pkg:pypi/requests@2.31.0").contains("Dockerfile:6)"));
    assert!(
        !found.iter().any(|(p, _)| p.contains("scratch-pkg")),
        "a removed directory's packages are gone: {found:#?}"
    );
    // Debian's docker-registry, built outside module mode: its main package and the Go
    // toolchain (module-mode build info is checked by the unit tests).
    let main = "pkg:golang/github.com/docker/distribution/cmd/registry@(devel)";
    assert!(comment_of(main).contains("Dockerfile:7)"));
    let stdlib = found
        .iter()
        .find(|(p, _)| p.starts_with("pkg:golang/stdlib@1."));
    assert!(
        stdlib.is_some_and(|(_, c)| c.contains("listed in /usr/bin/registry")),
        "{found:#?}"
    );
    assert_valid_spdx(&env, &r.stdout);
}

/// A real Debian root filesystem (debootstrap minbase, which scripts/install-deps.sh makes):
/// rbuild's package list equals what `dpkg-query` says inside the image, a package installed
/// by a later RUN (`dpkg -i` of a package made here) is attributed to that RUN and the base's
/// to the ADD, and the document passes SPDX's validator.
#[test]
fn sbom_of_a_debian_root_filesystem_matches_dpkg_query() {
    require_root!();
    let rootfs =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debian-minbase.tar");
    if !rootfs.exists() {
        skip_or_fail("target/debian-minbase.tar is missing (scripts/install-deps.sh makes it)");
        return;
    }
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM scratch\nADD debian.tar /\nCOPY hello.deb /tmp/\n\
             RUN dpkg -i /tmp/hello.deb && rm /tmp/hello.deb\n",
        )],
    );
    // A symlink would point out of the context, which a build does not follow.
    if std::fs::hard_link(&rootfs, ctx.join("debian.tar")).is_err() {
        std::fs::copy(&rootfs, ctx.join("debian.tar")).unwrap();
    }
    // A package of our own, made with dpkg-deb.
    let pkg = env.path("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/rbuild-hello")).unwrap();
    std::fs::write(pkg.join("usr/share/rbuild-hello/hello"), "hello\n").unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: rbuild-hello\nVersion: 1.0-1\nArchitecture: all\nMaintainer: rbuild <rbuild@invalid>\n\
         Description: a package the SBOM test installs\n",
    )
    .unwrap();
    tool(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "--build",
            pkg.to_str().unwrap(),
            ctx.join("hello.deb").to_str().unwrap(),
        ],
    );
    env.rbuild(&["build", "-q", "-t", "deb:1", ctx.to_str().unwrap()])
        .ok();
    let started = std::time::Instant::now();
    let r = env.rbuild(&["sbom", "deb:1"]).ok();
    eprintln!("rbuild sbom of the Debian image: {:?}", started.elapsed());
    let doc = json(&r.stdout);
    let mut listed: Vec<String> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["versionInfo"].as_str().unwrap()
            )
        })
        .collect();
    listed.sort();
    let query = env
        .rbuild(&[
            "run",
            "--rm",
            "deb:1",
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Abbrev}|${Package} ${Version}\\n",
        ])
        .ok();
    let mut installed: Vec<String> = query
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ii |"))
        .map(str::to_string)
        .collect();
    installed.sort();
    assert!(installed.len() > 50, "{}", query.stdout);
    assert_eq!(listed, installed);
    let found = packages(&doc);
    let comment = |purl: &str| {
        found
            .iter()
            .find(|(p, _)| p.starts_with(purl))
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("no {purl}"))
    };
    assert!(comment("pkg:deb/debian/rbuild-hello@1.0-1").contains("Dockerfile:4)"));
    assert!(comment("pkg:deb/debian/base-files@").contains("Dockerfile:2)"));
    assert_valid_spdx(&env, &r.stdout);
}

/// BuildKit's scan options: a stage that declares `ARG BUILDKIT_SBOM_SCAN_STAGE=true` gets an
/// SBOM of its own (`sbom-STAGE.spdx.json`), `scan-stage=true` gives every stage one, and
/// `scan-context=true` (or the build arg `BUILDKIT_SBOM_SCAN_CONTEXT`) one of the context.
#[test]
fn sbom_scans_stages_and_the_context_when_asked() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let dockerfile = format!(
        "FROM rbuild-demo/busybox AS build\n\
         RUN mkdir -p /var/lib/dpkg && printf '{}' > /var/lib/dpkg/status && echo built > /out\n\
         FROM rbuild-demo/busybox AS tools\n\
         ARG BUILDKIT_SBOM_SCAN_STAGE=true\n\
         RUN mkdir -p /opt/node_modules/left-pad && \
         echo '{{\"name\": \"left-pad\", \"version\": \"1.3.0\"}}' > /opt/node_modules/left-pad/package.json\n\
         FROM rbuild-demo/busybox\n\
         COPY --from=build /out /out\n\
         COPY --from=tools /opt /opt\n",
        dpkg_entry("gcc-12", "12.2.0-14")
    );
    let lock =
        r#"{"lockfileVersion": 3, "packages": {"node_modules/is-odd": {"version": "3.0.1"}}}"#;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", &dockerfile), ("package-lock.json", lock)],
    );
    let build = |flags: &[&str], out: &str| -> std::path::PathBuf {
        let dest = env.path(out);
        let output = format!("type=local,dest={}", dest.display());
        let mut args = vec!["build"];
        args.extend(flags);
        args.extend(["-o", &output, ctx.to_str().unwrap()]);
        env.rbuild(&args).ok();
        dest
    };
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("sbom"))
            .collect();
        n.sort();
        n
    };
    let purls = |file: &std::path::Path| -> Vec<String> {
        let statement = json(&std::fs::read_to_string(file).unwrap());
        packages(&statement["predicate"])
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    };
    let plain = build(&["--sbom=true"], "plain");
    assert_eq!(names(&plain), ["sbom-tools.spdx.json", "sbom.spdx.json"]);
    assert_eq!(
        purls(&plain.join("sbom-tools.spdx.json")),
        ["pkg:npm/left-pad@1.3.0"]
    );
    let all = build(
        &["--attest", "type=sbom,scan-stage=true,scan-context=true"],
        "all",
    );
    let expected = [
        "sbom-build.spdx.json",
        "sbom-context.spdx.json",
        "sbom-tools.spdx.json",
        "sbom.spdx.json",
    ];
    assert_eq!(names(&all), expected);
    let build_sbom = json(&std::fs::read_to_string(all.join("sbom-build.spdx.json")).unwrap());
    let gcc = packages(&build_sbom["predicate"]);
    assert_eq!(gcc.len(), 1, "{gcc:?}");
    assert!(gcc[0].0.starts_with("pkg:deb/"), "{gcc:?}");
    assert!(gcc[0].1.contains("Dockerfile:2)"), "{gcc:?}");
    assert_eq!(
        purls(&all.join("sbom-context.spdx.json")),
        ["pkg:npm/is-odd@3.0.1"]
    );
    let by_arg = build(
        &["--sbom=true", "--build-arg", "BUILDKIT_SBOM_SCAN_CONTEXT=1"],
        "by-arg",
    );
    assert!(names(&by_arg).contains(&"sbom-context.spdx.json".to_string()));
}

/// An RPM database made by rpm itself (Debian's rpm, whose backend is SQLite, as Fedora's and
/// RHEL 9's): a package built with rpmbuild and recorded with `rpm --root … -i --justdb` is
/// listed with its version-release, architecture and license, from the COPY that brought the
/// database.
#[test]
fn sbom_reads_a_database_rpm_made() {
    require_root!();
    if !std::path::Path::new("/usr/bin/rpmbuild").exists() {
        skip_or_fail(
            "rpmbuild is missing (Debian package rpm; scripts/install-deps.sh installs it)",
        );
        return;
    }
    let env = Env::new();
    let spec = "Name: rbuild-hello\nVersion: 2.1\nRelease: 3\nSummary: an SBOM test package\n\
        License: MIT\nBuildArch: noarch\n%description\ntest\n%install\n\
        mkdir -p %{buildroot}/usr/share/rbuild-hello\necho hi > %{buildroot}/usr/share/rbuild-hello/hi\n\
        %files\n/usr/share/rbuild-hello/hi\n";
    let work = env.path("rpm");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("hello.spec"), spec).unwrap();
    let topdir = format!("_topdir {}", work.join("top").display());
    tool(
        "rpmbuild",
        &[
            "--define",
            &topdir,
            "-bb",
            work.join("hello.spec").to_str().unwrap(),
        ],
    );
    let package = work.join("top/RPMS/noarch/rbuild-hello-2.1-3.noarch.rpm");
    let ctx = env.context("ctx", &[("Dockerfile", "FROM scratch\nCOPY root/ /\n")]);
    let root = ctx.join("root");
    let rpm = |args: &[&str]| {
        let mut all = vec!["--root", root.to_str().unwrap(), "--dbpath", "/var/lib/rpm"];
        all.extend(args);
        tool("rpm", &all)
    };
    rpm(&["--initdb"]);
    rpm(&["-i", "--nodeps", "--justdb", package.to_str().unwrap()]);
    env.rbuild(&["build", "-q", "-t", "rpm:1", ctx.to_str().unwrap()])
        .ok();
    let r = env.rbuild(&["sbom", "rpm:1"]).ok();
    let doc = json(&r.stdout);
    let found = packages(&doc);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "pkg:rpm/fedora/rbuild-hello@2.1-3?arch=noarch");
    assert!(found[0].1.contains("Dockerfile:2)"), "{found:?}");
    assert_eq!(doc["packages"][0]["licenseDeclared"], "MIT");
    assert_valid_spdx(&env, &r.stdout);
}
