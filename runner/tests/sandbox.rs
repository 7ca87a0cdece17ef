//! The sandbox against the real kernel: namespaces, overlayfs, pivot_root. These tests need root
//! (CI runs as root) and Debian's busybox-static for a tiny root filesystem; elsewhere they say
//! why they skip and pass.

use rbuild_runner::diff::write_layer;
use rbuild_runner::sandbox::{
    self, Exit, Mount, MountSource, Network, Process, Rootfs, Stdio, Stream,
};
use rbuild_runner::snapshot::Snapshotter;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The snapshot store under `dir`, with the snapshotter `RBUILD_SNAPSHOTTER` names (CI runs
/// these tests once with overlayfs and once with `native`).
fn open_snapshots(dir: &Path) -> Snapshotter {
    let native = std::env::var("RBUILD_SNAPSHOTTER").as_deref() == Ok("native");
    Snapshotter::open(dir).unwrap().with_native(native)
}

/// Why these tests cannot run here; under CI (`CI` set), where they must run, a panic.
fn skip_reason() -> Option<&'static str> {
    let why = if !nix::unistd::geteuid().is_root() {
        "needs root for namespaces and overlayfs"
    } else if !Path::new("/bin/busybox").exists() {
        "needs /bin/busybox (Debian package busybox-static)"
    } else {
        return None;
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "this test cannot run here ({why}), and under CI every test must run"
    );
    Some(why)
}

/// A layer with busybox and its applets, committed as snapshot `sha256:b…b`.
fn busybox_layer(s: &Snapshotter) -> String {
    let id = format!("sha256:{}", "b".repeat(64));
    if s.has(&id) {
        return id;
    }
    let u = s.new_upper().unwrap();
    std::fs::create_dir_all(u.fs.join("bin")).unwrap();
    std::fs::create_dir_all(u.fs.join("etc")).unwrap();
    std::fs::create_dir_all(u.fs.join("tmp")).unwrap();
    std::fs::copy("/bin/busybox", u.fs.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", u.fs.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        u.fs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(u.fs.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    std::fs::write(u.fs.join("etc/motd"), "hello\n").unwrap();
    // The base has /sys but not /proc or /dev.
    std::fs::create_dir_all(u.fs.join("sys")).unwrap();
    std::fs::create_dir_all(u.fs.join("opt/old")).unwrap();
    std::fs::write(u.fs.join("opt/old/file"), "old").unwrap();
    s.commit(u, &id).unwrap();
    id
}

struct Run {
    exit: Exit,
    stdout: String,
    stderr: String,
    upper_entries: Vec<String>,
    layer_names: Vec<String>,
}

fn run(
    dir: &Path,
    script: &str,
    user: &str,
    network: Network,
    cancel: Arc<AtomicBool>,
) -> Result<Run, sandbox::SandboxError> {
    run_with_mounts(dir, script, user, network, cancel, vec![])
}

fn run_with_mounts(
    dir: &Path,
    script: &str,
    user: &str,
    network: Network,
    cancel: Arc<AtomicBool>,
    mounts: Vec<Mount>,
) -> Result<Run, sandbox::SandboxError> {
    let limits = rbuild_solver::ExecLimits::default();
    run_with(dir, script, user, network, cancel, mounts, &limits)
}

fn run_with(
    dir: &Path,
    script: &str,
    user: &str,
    network: Network,
    cancel: Arc<AtomicBool>,
    mounts: Vec<Mount>,
    limits: &rbuild_solver::ExecLimits,
) -> Result<Run, sandbox::SandboxError> {
    let s = open_snapshots(&dir.join("snapshots"));
    let layers = vec![busybox_layer(&s)];
    let upper = s.new_upper().unwrap();
    let run_dir = dir.join("run").join(rbuild_runner::snapshot::unique_name());
    std::fs::create_dir_all(&run_dir).unwrap();
    let process = Process {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/work".into(),
        user: user.into(),
        hostname: sandbox::BUILD_HOSTNAME.into(),
        network,
        stdio: Stdio::Capture,
        dev_files: vec![(
            "pipes/script".into(),
            b"#!/bin/sh\necho from-pipe\n".to_vec(),
            0o755,
        )],
        mounts,
        limits: limits.clone(),
        privileged: false,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = sandbox::run(
        &Rootfs {
            snapshots: &s,
            layers: &layers,
            upper: &upper,
            volatile: true,
        },
        &process,
        &run_dir,
        &mut |stream, data| match stream {
            Stream::Stdout => out.extend_from_slice(data),
            Stream::Stderr => err.extend_from_slice(data),
        },
        &cancel,
    )?;
    let mut upper_entries: Vec<String> = walkdir(&upper.fs);
    upper_entries.sort();
    let mut tar = Vec::new();
    write_layer(&upper.fs, &mut tar).unwrap();
    let layer_names = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    Ok(Run {
        exit,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        upper_entries,
        layer_names,
    })
}

fn walkdir(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out
}

fn no_cancel() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// Runs `script` as root with no network over `layers` of `s`, changes going to `upper`
/// (mounted volatile if `volatile`); its exit and its output, both streams together.
fn run_script(
    s: &Snapshotter,
    layers: &[String],
    (upper, volatile): (&rbuild_runner::snapshot::Upper, bool),
    run_dir: &Path,
    script: &str,
) -> (Exit, String) {
    let process = Process {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: "root".into(),
        hostname: sandbox::BUILD_HOSTNAME.into(),
        network: Network::None,
        stdio: Stdio::Capture,
        dev_files: vec![],
        mounts: vec![],
        limits: rbuild_solver::ExecLimits::default(),
        privileged: false,
    };
    let mut out = Vec::new();
    let rootfs = Rootfs {
        snapshots: s,
        layers,
        upper,
        volatile,
    };
    let exit = sandbox::run(
        &rootfs,
        &process,
        run_dir,
        &mut |_, data| out.extend_from_slice(data),
        &no_cancel(),
    )
    .unwrap();
    (exit, String::from_utf8_lossy(&out).into_owned())
}

fn host_mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(String::from)
        .collect()
}

#[test]
fn runs_in_namespaces_with_a_clean_upper() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = "echo pid=$$; hostname; pwd; cat /etc/motd; test -c /dev/null && echo devnull; \
                  test -e /proc/self/stat && echo proc; test -f /etc/resolv.conf && echo resolv; \
                  grep -q buildkitsandbox /etc/hosts && echo hosts; cat /etc/hostname; ls /dev/pts >/dev/null && echo pts; /dev/pipes/script; \
                  echo to-stderr >&2; echo new > /created; rm /etc/motd; rm -rf /opt/old; mkdir /opt/old; exit 3";
    let r = run(dir.path(), script, "", Network::Host, no_cancel()).unwrap();
    assert_eq!(r.exit, Exit::Code(3));
    assert_eq!(
        r.stdout,
        "pid=1\nbuildkitsandbox\n/work\nhello\ndevnull\nproc\nresolv\nhosts\nbuildkitsandbox\npts\nfrom-pipe\n"
    );
    assert_eq!(r.stderr, "to-stderr\n");
    // Only the script's changes are in the upper: nothing mounted (hosts, resolv.conf, the
    // contents of /dev) leaks into it. The empty /dev and /proc the base lacked are there (not
    // /sys, which it has), as runc leaves them in BuildKit's layers.
    assert_eq!(
        r.upper_entries,
        [
            "created", "dev", "etc", "etc/motd", "opt", "opt/old", "proc", "work"
        ],
    );
    assert_eq!(
        r.layer_names,
        [
            "created",
            "dev/",
            "etc/",
            "etc/.wh.motd",
            "opt/",
            "opt/old/",
            "opt/old/.wh..wh..opq",
            "proc/",
            "work/"
        ]
    );
    assert!(
        host_mounts_under(dir.path()).is_empty(),
        "mounts leaked into the host"
    );
}

#[test]
fn user_and_network_none() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = run(
        dir.path(),
        "id -u; id -g; echo $HOME; ls /sys/class/net",
        "app",
        Network::None,
        no_cancel(),
    )
    .unwrap();
    assert_eq!(r.exit, Exit::Code(0), "{}", r.stderr);
    assert_eq!(r.stdout, "1000\n1000\n/home/app\nlo\n");
    let err = run(dir.path(), "true", "nosuchuser", Network::Host, no_cancel())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("unable to find user nosuchuser"),
        "{err}"
    );
}

#[test]
fn missing_program_is_a_setup_error() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open_snapshots(&dir.path().join("snapshots"));
    let layers = vec![busybox_layer(&s)];
    let upper = s.new_upper().unwrap();
    let run_dir = dir.path().join("run1");
    let process = Process {
        args: vec!["no-such-program".into()],
        env: vec![],
        cwd: "/".into(),
        user: String::new(),
        hostname: "x".into(),
        network: Network::Host,
        stdio: Stdio::Capture,
        dev_files: vec![(
            "pipes/script".into(),
            b"#!/bin/sh\necho from-pipe\n".to_vec(),
            0o755,
        )],
        mounts: vec![],
        limits: Default::default(),
        privileged: false,
    };
    let err = sandbox::run(
        &Rootfs {
            snapshots: &s,
            layers: &layers,
            upper: &upper,
            volatile: true,
        },
        &process,
        &run_dir,
        &mut |_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "exec: \"no-such-program\": executable file not found in $PATH"
    );
}

#[test]
fn cancel_and_exit_kill_every_process() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A background process is killed when PID 1 exits.
    let marker = format!("sleep {}", 4000 + std::process::id() % 1000);
    let r = run(
        dir.path(),
        &format!("{marker} & echo started"),
        "",
        Network::Host,
        no_cancel(),
    )
    .unwrap();
    assert_eq!(r.exit, Exit::Code(0));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout)
            .lines()
            .any(|l| l == marker),
        "{marker} survived"
    );

    // Cancelling kills a running step.
    let cancel = no_cancel();
    let flag = cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        flag.store(true, Ordering::Relaxed);
    });
    let started = std::time::Instant::now();
    let err = run(dir.path(), "sleep 60", "", Network::Host, cancel)
        .err()
        .unwrap();
    t.join().unwrap();
    assert!(matches!(err, sandbox::SandboxError::Cancelled));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(host_mounts_under(dir.path()).is_empty());
}

/// A second layer for mount tests: `/data/x`, `/data/link -> /etc` (absolute, so it must
/// resolve inside the layer, never on the host) and `/etc/inlayer`.
fn data_layer(s: &Snapshotter) -> String {
    let id = format!("sha256:{}", "d".repeat(64));
    if s.has(&id) {
        return id;
    }
    let u = s.new_upper().unwrap();
    std::fs::create_dir_all(u.fs.join("data")).unwrap();
    std::fs::create_dir_all(u.fs.join("etc")).unwrap();
    std::fs::write(u.fs.join("data/x"), "fromlayer").unwrap();
    std::fs::write(u.fs.join("etc/inlayer"), "").unwrap();
    std::os::unix::fs::symlink("/etc", u.fs.join("data/link")).unwrap();
    s.commit(u, &id).unwrap();
    id
}

#[test]
fn mounts_reach_the_process_and_never_the_layer() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open_snapshots(&dir.path().join("snapshots"));
    let data = data_layer(&s);
    let host = dir.path().join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("a.txt"), "host").unwrap();
    let mounts = vec![
        Mount {
            target: "/mnt/host".into(),
            source: MountSource::Host(host.clone()),
            readonly: true,
        },
        Mount {
            target: "/in".into(),
            source: MountSource::Layers {
                layers: vec![data.clone()],
                path: "/data".into(),
            },
            readonly: false,
        },
        Mount {
            target: "/t".into(),
            source: MountSource::Tmpfs {
                size: Some(1 << 20),
            },
            readonly: false,
        },
        Mount {
            target: "/run/secrets/tok".into(),
            source: MountSource::File {
                data: b"s3cret".to_vec(),
                mode: 0o440,
                uid: 1000,
                gid: 1000,
            },
            readonly: true,
        },
        Mount {
            target: "/lnk".into(),
            source: MountSource::Layers {
                layers: vec![data.clone()],
                path: "/data/link".into(),
            },
            readonly: true,
        },
    ];
    let script = "set -e; cat /mnt/host/a.txt; echo; \
        if touch /mnt/host/b 2>/dev/null; then echo host-writable; fi; \
        cat /in/x; echo; echo new > /in/y; cat /in/y; \
        echo z > /t/z; grep ' /t ' /proc/mounts | cut -d' ' -f3; \
        cat /run/secrets/tok; echo; stat -c %a:%u:%g /run/secrets/tok; \
        ls /lnk";
    let r = run_with_mounts(dir.path(), script, "", Network::Host, no_cancel(), mounts).unwrap();
    assert_eq!(r.exit, Exit::Code(0), "stderr: {}", r.stderr);
    assert_eq!(
        r.stdout,
        "host\nfromlayer\nnew\ntmpfs\ns3cret\n440:1000:1000\ninlayer\n"
    );
    // Nothing of the mounts, nor their mount points, is in the step's changes.
    for name in ["mnt", "in", "t", "run", "lnk"] {
        assert!(
            !r.upper_entries.iter().any(|e| e == name),
            "{name} in the upper: {:?}",
            r.upper_entries
        );
    }
    // The read-only host directory is untouched; the writable layer mount wrote to a
    // throwaway upper, not to the snapshot.
    assert!(!host.join("b").exists());
    assert!(!s.layer_dir(&data).join("data/y").exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("snapshots/tmp"))
            .unwrap()
            .count(),
        1,
        "only the step's own upper is left"
    );
    assert!(host_mounts_under(dir.path()).is_empty());

    // A source that does not exist in the layers is a clear error.
    let err = run_with_mounts(
        dir.path(),
        "true",
        "",
        Network::Host,
        no_cancel(),
        vec![Mount {
            target: "/x".into(),
            source: MountSource::Layers {
                layers: vec![data],
                path: "/nope".into(),
            },
            readonly: true,
        }],
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("mount source /nope"), "{err}");
}

#[test]
fn docker_capabilities_and_seccomp_filter() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t'; \
        unshare -U true 2>/dev/null && echo unshare-allowed || echo unshare-denied; \
        mkdir -p /mnt && (mount -t tmpfs none /mnt 2>/dev/null && echo mount-allowed || echo mount-denied); \
        chown 1000 /etc/motd && echo chown-allowed; \
        mknod /tmp/null c 1 3 && echo mknod-allowed";
    let r = run(dir.path(), script, "", Network::Host, no_cancel()).unwrap();
    assert_eq!(r.exit, Exit::Code(0), "{}", r.stderr);
    // What a BuildKit RUN shows: Docker's default capabilities, a filter, no no_new_privs.
    assert_eq!(
        r.stdout,
        "CapEff:00000000a80425fb\nCapBnd:00000000a80425fb\nNoNewPrivs:0\nSeccomp:2\n\
         unshare-denied\nmount-denied\nchown-allowed\nmknod-allowed\n"
    );
    // Another user has no capabilities at all.
    let r = run(
        dir.path(),
        "grep -E '^CapEff:' /proc/self/status | tr -d '\\t'",
        "app",
        Network::Host,
        no_cancel(),
    )
    .unwrap();
    assert_eq!(r.stdout, "CapEff:0000000000000000\n");
}

/// The kernel's interfaces look from a step as they do from a BuildKit RUN step: runc's masked
/// and read-only paths (`rbuild_runner::apifs`), compared line for line with what
/// `testdata/sandbox/probe.sh` printed under BuildKit (`testdata/sandbox/buildkit.txt`), and a
/// step as root cannot change the host's kernel settings.
/// `--add-host`, `--ulimit`, `--shm-size` and `--cgroup-parent` as the step sees them.
#[test]
fn build_limits_reach_the_sandbox() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cgroups = Path::new("/proc/self/cgroup").is_file() && nix::unistd::geteuid().is_root();
    let limits = rbuild_solver::ExecLimits {
        extra_hosts: vec![rbuild_solver::HostEntry {
            host: "db.internal".into(),
            ip: "10.9.8.7".into(),
        }],
        ulimits: vec![rbuild_solver::Ulimit {
            name: "nofile".into(),
            soft: 100,
            hard: 200,
        }],
        shm_size: Some(2 << 20),
        cgroup_parent: cgroups.then(|| "rbuild-test-parent".to_string()),
    };
    let script = "tail -n 1 /etc/hosts; ulimit -n; ulimit -Hn; \
                  df -k /dev/shm | tail -n 1 | awk '{print $2}'; cat /proc/self/cgroup";
    let r = run_with(
        dir.path(),
        script,
        "",
        Network::None,
        no_cancel(),
        vec![],
        &limits,
    )
    .unwrap();
    assert_eq!(r.exit, Exit::Code(0), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        ["10.9.8.7\tdb.internal", "100", "200", "2048"],
        "{}",
        r.stdout
    );
    if cgroups {
        // The step ran in a cgroup of its own under the parent (in every hierarchy), removed
        // afterwards.
        let joined = lines[4..]
            .iter()
            .filter(|l| l.contains("/rbuild-test-parent/rbuild-step-"))
            .count();
        assert!(joined >= 1, "{}", r.stdout);
        for line in std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
        {
            let point = line.split(' ').nth(4).unwrap();
            let parent = Path::new(point).join("rbuild-test-parent");
            if line.contains(" - cgroup") && parent.is_dir() {
                let left: Vec<_> = std::fs::read_dir(&parent)
                    .unwrap()
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rbuild-step-"))
                    .collect();
                assert!(left.is_empty(), "{left:?}");
                let _ = std::fs::remove_dir(&parent);
            }
        }
    } else if std::env::var_os("CI").is_some() {
        panic!("CI runs as root: --cgroup-parent was not tested");
    }
}

#[test]
fn kernel_interfaces_are_masked_and_read_only_as_in_buildkit() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/sandbox");
    let probe = std::fs::read_to_string(testdata.join("probe.sh")).unwrap();
    let recorded = std::fs::read_to_string(testdata.join("buildkit.txt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), &probe, "", Network::None, no_cancel()).unwrap();
    assert_eq!(r.exit, Exit::Code(0), "{}{}", r.stdout, r.stderr);
    let ours: Vec<&str> = r.stdout.lines().collect();
    let theirs: Vec<&str> = recorded.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(ours.len(), theirs.len(), "{}", r.stdout);
    for (ours, theirs) in ours.iter().zip(&theirs) {
        let path = theirs.split(':').next().unwrap();
        // A path the recording kernel lacked (or had) and this one has (or lacks) cannot be
        // compared; it must still not be reachable unprotected.
        let host_has = Path::new(path).exists();
        if host_has == theirs.ends_with(": absent") {
            assert!(!ours.contains("mount=none"), "{path} unprotected: {ours}");
            continue;
        }
        assert_eq!(ours, theirs, "{path} differs from BuildKit's RUN step");
    }
    // Every path of the runtime defaults is protected, not only those the recording covered.
    for path in rbuild_runner::apifs::MASKED_PATHS
        .iter()
        .chain(&rbuild_runner::apifs::READONLY_PATHS)
    {
        assert!(
            theirs.iter().any(|l| l.starts_with(&format!("{path}:"))),
            "{path} is not probed"
        );
    }

    // A different value than the host's: refused, and the host keeps its own.
    let host = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let other = if host.trim() == "61" { "62" } else { "61" };
    let script =
        format!("echo {other} > /proc/sys/vm/swappiness; echo 3 > /proc/sys/vm/drop_caches");
    let r = run(dir.path(), &script, "", Network::Host, no_cancel()).unwrap();
    let after = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    if after != host {
        std::fs::write("/proc/sys/vm/swappiness", &host).unwrap();
    }
    assert_eq!(after, host, "a step changed the host's vm.swappiness");
    assert_ne!(r.exit, Exit::Code(0));
    assert_eq!(
        r.stderr.matches("Read-only file system").count(),
        2,
        "{}",
        r.stderr
    );
}

/// Every entry under `root`: path, kind, mode, content or link target, sorted.
fn tree_listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<String> = walkdir(root)
        .into_iter()
        .map(|rel| {
            let p = root.join(&rel);
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let what = if meta.is_dir() {
                "dir".to_string()
            } else if meta.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                format!("{:?}", std::fs::read(&p).unwrap())
            };
            format!(
                "{rel} {:o} {}:{} {what}",
                meta.mode(),
                meta.uid(),
                meta.gid()
            )
        })
        .collect();
    out.sort();
    out
}

/// A chain of `FLATTEN_FROM` layers or more runs over a flattened view of most of them: the
/// process sees what an overlay of every layer shows (whiteouts, opaque directories, later
/// files over earlier ones), and writing a file of the view changes no snapshot.
#[test]
fn deep_chains_run_over_a_flattened_view_that_shows_every_layer() {
    use rbuild_runner::snapshot::{FLATTEN_FROM, FLATTEN_STEP};
    if skip_reason().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open_snapshots(&dir.path().join("snapshots"));
    let mut layers = vec![busybox_layer(&s)];
    let n = FLATTEN_FROM + FLATTEN_STEP + 3;
    for i in 1..n {
        let u = s.new_upper().unwrap();
        std::fs::create_dir_all(u.fs.join("n")).unwrap();
        std::fs::write(u.fs.join("n").join(i.to_string()), "").unwrap();
        let data = u.fs.join("data");
        match i {
            3 => {
                std::fs::create_dir_all(data.join("sub")).unwrap();
                std::fs::write(data.join("f"), "three").unwrap();
                std::fs::write(data.join("gone"), "").unwrap();
                std::fs::write(data.join("sub/x"), "").unwrap();
            }
            10 => {
                std::fs::create_dir_all(&data).unwrap();
                nix::sys::stat::mknod(
                    &data.join("gone"),
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .unwrap();
            }
            20 => {
                std::fs::create_dir_all(&data).unwrap();
                std::fs::write(data.join("f"), "twenty").unwrap();
            }
            25 => {
                std::fs::create_dir_all(data.join("sub")).unwrap();
                rbuild_runner::sys::xattr::set(
                    &data.join("sub"),
                    rbuild_runner::diff::overlay_opaque_xattr(),
                    b"y",
                )
                .unwrap();
                std::fs::write(data.join("sub/y"), "").unwrap();
            }
            i if i == n - 1 => std::fs::write(u.fs.join("top"), "top").unwrap(),
            _ => {}
        }
        let id = format!("sha256:{i:064x}");
        s.commit(u, &id).unwrap();
        layers.push(id);
    }
    // A view made from a shorter one is the view made from the layers, and what applying
    // every layer by copying them makes.
    let prefix = n - n % FLATTEN_STEP;
    let shorter = s.flattened(&layers[..prefix - FLATTEN_STEP]).unwrap();
    let view = s.flattened(&layers[..prefix]).unwrap();
    let copied = dir.path().join("copied");
    std::fs::create_dir(&copied).unwrap();
    rbuild_runner::native::materialize(&s, &layers[..prefix], &copied).unwrap();
    assert_eq!(tree_listing(&view), tree_listing(&copied));
    assert_ne!(tree_listing(&view), tree_listing(&shorter));
    // Its files are the snapshots' own inodes.
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let twenty = s.layer_dir(&layers[20]).join("data/f");
    assert_eq!(ino(&view.join("data/f")), ino(&twenty));

    let upper = s.new_upper().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let script = "cat /data/f; echo; ls /data; ls /data/sub; ls /n | wc -l; cat /top; echo; \
                  echo changed > /data/f";
    let (exit, out) = run_script(&s, &layers, (&upper, true), &run_dir, script);
    assert_eq!(exit, Exit::Code(0), "{out}");
    assert_eq!(out, format!("twenty\nf\nsub\ny\n{}\ntop\n", n - 1));
    assert_eq!(
        std::fs::read_to_string(upper.fs.join("data/f")).unwrap(),
        "changed\n"
    );
    assert_eq!(std::fs::read_to_string(&twenty).unwrap(), "twenty");
    assert_eq!(
        std::fs::read_to_string(view.join("data/f")).unwrap(),
        "twenty"
    );
}

/// A step's overlay is mounted volatile (its unmount does not sync the whole filesystem the
/// upper directory is on), a kept container's is not; the store's one sync afterwards works.
#[test]
fn step_overlays_skip_syncing_and_kept_containers_do_not() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open_snapshots(&dir.path().join("snapshots"));
    if s.is_native() {
        eprintln!("the native snapshotter mounts no overlay: nothing to check");
        return;
    }
    let layers = vec![busybox_layer(&s)];
    for volatile in [true, false] {
        let upper = s.new_upper().unwrap();
        let run_dir = dir.path().join(format!("run-{volatile}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        let script = "grep ' / / ' /proc/self/mountinfo; echo data > /f";
        let (exit, out) = run_script(&s, &layers, (&upper, volatile), &run_dir, script);
        assert_eq!(exit, Exit::Code(0), "{out}");
        assert!(out.contains(" - overlay "), "{out}");
        assert_eq!(out.contains("volatile"), volatile, "{out}");
        assert_eq!(
            std::fs::read_to_string(upper.fs.join("f")).unwrap(),
            "data\n"
        );
    }
    s.sync().unwrap();
}
