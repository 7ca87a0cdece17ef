//! Command-line behaviour that needs no sandbox (so these tests run as any user): `rbuild lint`,
//! `--check`, argument errors.

use std::process::Command;

fn rbuild(root: &std::path::Path, args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(assert_cmd::cargo::cargo_bin!("rbuild"))
        .arg("--root")
        .arg(root)
        .args(args)
        .current_dir(dir)
        .env_remove("RBUILD_ROOT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lint_reports_build_checks_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch AS Builder\nMAINTAINER me\nCOPY notes.txt /\nFROM scratch\nCMD run\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".dockerignore"), "notes.txt\n").unwrap();
    let (code, out, _) = rbuild(&root, &["lint"], dir.path());
    assert_eq!(code, 1);
    for expected in [
        "Dockerfile:1:17: warning: Stage name 'Builder' should be lowercase [StageNameCasing]",
        "Dockerfile:2:1: warning: Maintainer instruction is deprecated in favor of using label [MaintainerDeprecated]",
        "Dockerfile:3:6: warning: Attempting to Copy file \"notes.txt\" that is excluded by .dockerignore [CopyIgnoredFile]",
        "Dockerfile:5:5: warning: JSON arguments recommended for CMD",
        "4 warnings found",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    let (code, out, _) = rbuild(&root, &["lint", "--format", "json", "."], dir.path());
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let warnings = json["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 4);
    assert_eq!(warnings[0]["ruleName"], "StageNameCasing");
    assert_eq!(warnings[0]["location"]["line"], 1);

    std::fs::write(
        dir.path().join("Dockerfile"),
        "# check=skip=all\nFROM scratch AS Builder\n",
    )
    .unwrap();
    let (code, out, _) = rbuild(&root, &["lint"], dir.path());
    assert_eq!((code, out.trim()), (0, "0 warnings found"));
}

#[test]
fn build_checks_fail_a_build_with_check_or_the_directive() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch AS Builder\nCOPY Dockerfile /\n",
    )
    .unwrap();
    // --check (buildx's --call=check) checks and builds nothing.
    for flags in [&["--check"][..], &["--call=check"], &["--call", "lint"]] {
        let args: Vec<&str> = ["build"]
            .iter()
            .chain(flags)
            .chain(&["."])
            .copied()
            .collect();
        let (code, out, err) = rbuild(&root, &args, dir.path());
        assert_eq!(code, 1, "{flags:?}: {err}");
        assert!(
            out.starts_with("Check complete, 1 warning has been found!\n")
                && out.contains("[StageNameCasing]"),
            "{out}"
        );
        // A build would name its steps on stderr (`[2/2] COPY Dockerfile /`).
        assert!(!err.contains("COPY"), "it built: {err}");
    }
    let (code, out, _) = rbuild(
        &root,
        &["build", "--call=check,format=json", "."],
        dir.path(),
    );
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["warnings"][0]["ruleName"], "StageNameCasing");
    assert_eq!(
        json["warnings"][0]["location"]["ranges"][0]["start"]["line"],
        1
    );
    assert_eq!(json["sources"][0]["filename"], "Dockerfile");
    let (code, _, _) = rbuild(
        &root,
        &["build", "--call=check,ignorestatus=true", "."],
        dir.path(),
    );
    assert_eq!(code, 0);
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch AS builder\n").unwrap();
    let (code, out, _) = rbuild(&root, &["build", "--check", "."], dir.path());
    assert_eq!(
        (code, out.as_str()),
        (0, "Check complete, no warnings found.\n")
    );
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch AS Builder\n").unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "# check=error=true\nFROM scratch AS Builder\n",
    )
    .unwrap();
    let (code, _, err) = rbuild(&root, &["build", "."], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("1 build check failed (# check=error=true)"),
        "{err}"
    );
}

/// buildx's `--call=targets` and `--call=outline`: the stages with their doc comments, and what
/// a target takes, as buildx prints them (and BuildKit's JSON).
#[test]
fn call_targets_and_outline_answer_as_buildx() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "# VERSION is the release\nARG VERSION=1.0\n# build compiles it\nFROM scratch AS build\n\
         ARG MODE=release\nRUN --mount=type=secret,id=token,required=true make\n\
         # release ships it\nFROM scratch AS release\nCOPY --from=build /out /\n",
    )
    .unwrap();
    let (code, out, err) = rbuild(&root, &["build", "--call=targets", "."], dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "TARGET            DESCRIPTION\nbuild             compiles it\nrelease (default) ships it\n"
    );
    let (code, out, err) = rbuild(
        &root,
        &["build", "--call=outline", "--build-arg", "MODE=debug", "."],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "TARGET:      release\nDESCRIPTION: ships it\n\n\
         BUILD ARG   VALUE   DESCRIPTION\nMODE        debug   \n\n\
         SECRET   REQUIRED\ntoken    true\n\n"
    );
    let (_, out, _) = rbuild(
        &root,
        &[
            "build",
            "--call=outline,format=json",
            "--target",
            "build",
            ".",
        ],
        dir.path(),
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["name"], "build");
    assert_eq!(json["args"][0]["name"], "MODE");
    assert_eq!(json["secrets"][0]["required"], true);
}

#[test]
fn parse_errors_are_reported_all_at_once_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCMD [\"a\", 1]\nENV PATH\n",
    )
    .unwrap();
    let (code, _, err) = rbuild(&root, &["build", "."], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "Dockerfile:2:5: error: dockerfile: JSON arguments must be an array of strings"
        ),
        "{err}"
    );
    assert!(
        err.contains("Dockerfile:3:5: error: ENV must have two arguments"),
        "{err}"
    );
}

/// Hostile or broken input fails at once with an error that says what is wrong and where.
#[test]
fn bad_references_stage_names_and_oversized_dockerfiles_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let build = |dockerfile: &str| {
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        rbuild(&root, &["build", "."], dir.path())
    };
    let (code, _, err) = build("FROM 127.0.0.1:99999/x\n");
    assert_ne!(code, 0);
    assert!(
        err.contains("Dockerfile:1:6: error: invalid reference \"127.0.0.1:99999/x\"")
            && err.contains("invalid port 99999"),
        "{err}"
    );
    let (code, _, err) = build("FROM scratch AS 1bad!\nCOPY a /\n");
    assert_ne!(code, 0);
    assert!(
        err.contains(
            "Dockerfile:1:6: error: invalid name for build stage: \"1bad!\", name can't start \
             with a number or contain symbols"
        ),
        "{err}"
    );
    // Read with a bound, not until memory runs out.
    let (code, _, err) = rbuild(&root, &["build", "-f", "/dev/zero", "."], dir.path());
    assert_ne!(code, 0);
    assert!(
        err.contains("failed to read the Dockerfile /dev/zero: it is larger than 32 MiB"),
        "{err}"
    );
}

/// The commands around `build` as a Docker user expects them: a mistyped command is an error
/// with a suggestion (not a build of a context of that name), Docker's two-word forms work,
/// and `version`, `completion` and `man` print what they say.
#[test]
fn the_command_line_feels_like_dockers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (code, _, err) = rbuild(&root, &["imgaes"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `rbuild images`?"), "{err}");
    assert!(!root.join("content").exists(), "nothing was built");
    let (code, out, err) = rbuild(&root, &["image", "ls"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("REPOSITORY"), "{out}");
    let (code, out, _) = rbuild(&root, &["system", "df"], dir.path());
    assert_eq!(code, 0);
    assert!(!out.is_empty());
    let (code, out, _) = rbuild(&root, &["version"], dir.path());
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("rbuild {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("docker/dockerfile:1") && out.contains(root.to_str().unwrap()));
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, _) = rbuild(&root, &["completion", shell], dir.path());
        assert_eq!(code, 0);
        assert!(
            out.contains("build-context"),
            "{shell}: a build flag is completed"
        );
    }
    let (code, out, _) = rbuild(&root, &["man"], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains(".TH rbuild 1"), "{out}");
}

/// `scripts/package-deb.sh` makes a Debian package with the binary, completions, man page and
/// the runtime dependencies; what it installs runs.
#[test]
fn the_debian_package_holds_what_a_user_needs() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    let bin = assert_cmd::cargo::cargo_bin!("rbuild");
    let out = Command::new(scripts.join("package-deb.sh"))
        .arg(bin)
        .arg(dir.path())
        .env("DEB_FAST", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(deb.ends_with(".deb"), "{deb}");
    let info = Command::new("dpkg-deb")
        .args(["-f", &deb, "Depends"])
        .output()
        .unwrap();
    let depends = String::from_utf8_lossy(&info.stdout);
    for needed in ["uidmap", "slirp4netns", "git"] {
        assert!(depends.contains(needed), "{depends}");
    }
    let root = dir.path().join("root");
    let status = Command::new("dpkg-deb")
        .args(["-x", &deb])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    for file in [
        "usr/share/bash-completion/completions/rbuild",
        "usr/share/zsh/vendor-completions/_rbuild",
        "usr/share/fish/vendor_completions.d/rbuild.fish",
        "usr/share/man/man1/rbuild.1.gz",
    ] {
        let meta = std::fs::metadata(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.len() > 100, "{file} is empty");
    }
    let version = Command::new(root.join("usr/bin/rbuild"))
        .arg("version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("rbuild "));
}

/// buildx's attestation flags: turning them off (as CI lines do) is accepted; a mistyped
/// parameter or a provenance version rbuild does not write is refused before anything runs.
#[test]
fn attestation_flags_off_are_accepted_and_wrong_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\nLABEL a=b\n").unwrap();
    let off = [
        "build",
        "--provenance=false",
        "--sbom=false",
        "--attest",
        "type=provenance,disabled=true",
        "-o",
        "type=cacheonly",
        ".",
    ];
    let (code, _, err) = rbuild(&root, &off, dir.path());
    assert_eq!(code, 0, "{err}");
    for (wrong, says) in [
        (&["--provenance=mode=maximal"][..], "mode is min or max"),
        (&["--provenance=version=v0.2"], "SLSA provenance v1"),
        (
            &["--attest", "type=provenance,colour=red"],
            "unknown provenance parameter colour",
        ),
        (&["--attest", "type=vex"], "unknown type vex"),
    ] {
        let args: Vec<&str> = ["build"]
            .iter()
            .chain(wrong)
            .chain(&["."])
            .copied()
            .collect();
        let (code, _, err) = rbuild(&root, &args, dir.path());
        assert_eq!(code, 1, "{wrong:?}: {err}");
        assert!(err.contains(says), "{err}");
    }
}
