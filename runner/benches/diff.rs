//! The diff of a step that changed one file in a 1 GiB image: the step runs for real (overlay
//! root over a 1 GiB layer, in the sandbox) and the benchmark times turning its changes into a
//! layer tar with its diff id (sha256), which is what rbuild does after every step. Issue 4
//! asks for at most 5 ms; because the diff reads only the step's upper directory, the size of
//! the image below does not matter.
//!
//! Needs root and /bin/busybox for the real step; elsewhere it says so and times the same diff
//! of an upper directory holding the one file.

use criterion::{Criterion, criterion_group, criterion_main};
use rbuild_runner::diff::write_layer;
use rbuild_runner::sandbox::{self, Network, Process, Rootfs, Stdio};
use rbuild_runner::snapshot::Snapshotter;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// A writer that only hashes, as rbuild's diff id computation does.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Commits a layer of busybox plus 1 GiB in 1,024 files of 1 MiB.
fn big_layer(s: &Snapshotter) -> String {
    let id = format!("sha256:{}", "9".repeat(64));
    let u = s.new_upper().unwrap();
    std::fs::create_dir_all(u.fs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", u.fs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", u.fs.join("bin/sh")).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for d in 0..32 {
        let dir = u.fs.join(format!("data/{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..32 {
            std::fs::write(dir.join(format!("{f:02}")), &chunk).unwrap();
        }
    }
    s.commit(u, &id).unwrap();
    id
}

fn bench(c: &mut Criterion) {
    let dir =
        tempfile::tempdir_in(std::env::var_os("CARGO_TARGET_TMPDIR").unwrap_or_else(|| ".".into()))
            .unwrap();
    let s = Snapshotter::open(&dir.path().join("snapshots")).unwrap();
    let upper = s.new_upper().unwrap();
    let privileged = nix::unistd::geteuid().is_root() && Path::new("/bin/busybox").exists();
    if privileged {
        let layers = vec![big_layer(&s)];
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let process = Process {
            args: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo changed > /data/07/one".into(),
            ],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: String::new(),
            hostname: sandbox::BUILD_HOSTNAME.into(),
            network: Network::Host,
            stdio: Stdio::Capture,
            dev_files: vec![],
            mounts: vec![],
            limits: Default::default(),
            privileged: false,
        };
        let exit = sandbox::run(
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
        .unwrap();
        assert_eq!(exit.code(), 0);
    } else {
        eprintln!("not root or no /bin/busybox: timing the diff of an upper directory alone");
        std::fs::create_dir_all(upper.fs.join("data/07")).unwrap();
        std::fs::write(upper.fs.join("data/07/one"), "changed\n").unwrap();
    }
    c.bench_function("diff of a one-file step over a 1 GiB image", |b| {
        b.iter(|| {
            let mut hash = HashWriter(Sha256::new());
            write_layer(&upper.fs, &mut hash).unwrap();
            hash.0.finalize()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
