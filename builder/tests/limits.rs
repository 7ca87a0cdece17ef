//! Big and hostile inputs end to end: images of many layers, state directories with long
//! paths, file names that are not UTF-8, oversized Dockerfiles. Each either builds as BuildKit
//! builds it or fails with a clear error, and leaves a store that works.

mod common;

use common::*;

/// A Dockerfile whose stage `many` has `layers` layers above the base, read by a RUN, a COPY
/// and a RUN mount of the next stage.
fn many_layers(layers: usize) -> String {
    let mut text = String::from("FROM rbuild-demo/busybox AS many\n");
    for i in 0..layers {
        text.push_str(&format!("RUN echo {i} > /l{i}\n"));
    }
    text.push_str("RUN ls / | grep -c '^l[0-9]' > /count\nCOPY Dockerfile /copied\n");
    text.push_str(
        "FROM many\nRUN --mount=from=many,target=/m cat /m/count /count > /seen && wc -l < /copied >> /seen\n",
    );
    text
}

fn build_and_read(env: &Env, layers: usize) {
    build_and_read_with(env, layers, &[]);
}

/// [`build_and_read`], the build with `envs` set.
fn build_and_read_with(env: &Env, layers: usize, envs: &[(&str, &str)]) {
    let ctx = env.context("many", &[("Dockerfile", &many_layers(layers))]);
    let args = ["build", "-q", "-t", "many", ctx.to_str().unwrap()];
    env.rbuild_with(&args, "", envs).ok();
    let seen = env.rbuild(&["run", "--rm", "many", "cat", "/seen"]).ok();
    let lines = layers + 5;
    assert_eq!(seen.stdout, format!("{layers}\n{layers}\n{lines}\n"));
    let check = env.rbuild(&["check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
}

/// An environment whose state directory's path is ~200 bytes long (kept while the first value
/// lives), with the base image.
fn env_under_a_long_path() -> (tempfile::TempDir, Env) {
    let outer = tempfile::tempdir().unwrap();
    let long = outer.path().join("a-long-directory-name-".repeat(8));
    std::fs::create_dir_all(&long).unwrap();
    let env = Env::new_in(&long);
    env.base_image();
    (outer, env)
}

/// Overlay mount options are limited to a page; named by their 64-hex-digit paths, ~57 layers
/// filled it, fewer under a long state directory path. BuildKit builds 100+.
#[test]
fn images_of_many_layers_build_under_a_long_root_path() {
    require_root!();
    let (_outer, env) = env_under_a_long_path();
    build_and_read(&env, 130);
}

/// Kernels before 6.8 take an overlay's layers only in one option string: rbuild names them
/// there through short links, so a page still holds hundreds. The new mount API is turned off
/// for the build to take that path.
#[test]
fn images_of_many_layers_build_where_overlays_name_their_layers_in_one_string() {
    require_root!();
    let (_outer, env) = env_under_a_long_path();
    build_and_read_with(&env, 70, &[("RBUILD_OVERLAY_LINKS", "1")]);
}

/// Past the 500 lower directories one overlay takes: RUN steps run over flattened views of
/// most of their layers, the RUN mount and the COPY of the stage over copies of its layers.
#[test]
fn more_layers_than_one_overlay_takes_still_build() {
    require_root!();
    if std::env::var("RBUILD_SNAPSHOTTER").as_deref() == Ok("native") || rootless_pass() {
        // The native snapshotter copies every step's layers anyway (the test above covers
        // it); here that would take 500 copies of 500 layers. Rootless overlays take the same
        // path as rootful ones, which the rootful pass covers (this test takes minutes
        // rootless).
        eprintln!("skipped: the rootful overlayfs pass covers overlayfs's limit");
        return;
    }
    let env = Env::new();
    env.base_image();
    build_and_read(&env, 505);
}

/// The names of the entries of a tar file, as bytes.
fn tar_names(path: &std::path::Path) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).unwrap();
    tar::Archive::new(file)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect()
}

/// Linux file names are bytes; BuildKit copies a name that is not UTF-8 as it is. So must
/// every part that touches one: hashing the context, `.dockerignore` and wildcards, copying,
/// a step's layer, the exported tar.
#[test]
fn file_names_that_are_not_utf8_are_copied_byte_for_byte() {
    use std::os::unix::ffi::OsStrExt;
    require_root!();
    let env = Env::new();
    env.base_image();
    let ctx = env.context(
        "bytes",
        &[
            (
                "Dockerfile",
                "FROM rbuild-demo/busybox\nCOPY . /ctx/\nCOPY bad?name /one/\n\
                 RUN touch \"/made-$(printf '\\377')\"\n",
            ),
            (".dockerignore", "skip*\n"),
        ],
    );
    let name = |bytes: &[u8]| ctx.join(std::ffi::OsStr::from_bytes(bytes));
    std::fs::write(name(b"bad\xffname"), "ff\n").unwrap();
    std::fs::create_dir(name(b"dir\xfe")).unwrap();
    std::fs::write(name(b"dir\xfe/f\xe9"), "e9\n").unwrap();
    std::fs::write(name(b"skip\xff"), "ignored\n").unwrap();
    let out = env.path("rootfs.tar");
    let dest = format!("type=tar,dest={}", out.display());
    let ctx_arg = ctx.to_str().unwrap();
    env.rbuild(&["build", "-o", &dest, ctx_arg]).ok();
    let names = tar_names(&out);
    for expected in [
        &b"ctx/bad\xffname"[..],
        b"ctx/dir\xfe/f\xe9",
        b"one/bad\xffname",
        b"made-\xff",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{:?} missing",
            String::from_utf8_lossy(expected)
        );
    }
    assert!(!names.iter().any(|n| n.starts_with(b"ctx/skip")));

    // The context's hash is stable: a rebuild is cached; changing the file reruns the copy.
    let r = env
        .rbuild(&["build", "--progress=plain", "-o", &dest, ctx_arg])
        .ok();
    assert!(Progress::parse(&r.stderr).ran().is_empty(), "{}", r.stderr);
    std::fs::write(name(b"dir\xfe/f\xe9"), "changed\n").unwrap();
    let r = env
        .rbuild(&["build", "--progress=plain", "-o", &dest, ctx_arg])
        .ok();
    let ran = Progress::parse(&r.stderr).ran();
    assert!(ran.iter().any(|s| s.contains("COPY . /ctx/")), "{ran:?}");
}
