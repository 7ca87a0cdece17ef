//! What a step can reach of the machine that builds: its kernel settings and its network.
//! rbuild runs untrusted Dockerfiles on CI machines that hold credentials and services, so a
//! step (and `rbuild run`) must not change the host's sysctls nor reach its loopback.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn swappiness() -> String {
    std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap()
}

#[test]
fn steps_cannot_change_the_hosts_kernel_settings() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let host = swappiness();
    let other = if host.trim() == "61" { "62" } else { "61" };
    let ctx = env.context(
        "sysctl",
        &[(
            "Dockerfile",
            &format!("FROM rbuild-demo/busybox\nRUN echo {other} > /proc/sys/vm/swappiness\n"),
        )],
    );
    let build = env.rbuild(&["build", "--progress=plain", ctx.to_str().unwrap()]);
    let run = env.rbuild(&[
        "run",
        "--rm",
        "rbuild-demo/busybox",
        "sh",
        "-c",
        &format!("echo 3 > /proc/sys/vm/drop_caches; echo {other} > /proc/sys/vm/swappiness"),
    ]);
    let after = swappiness();
    if after != host {
        std::fs::write("/proc/sys/vm/swappiness", &host).unwrap();
    }
    assert_eq!(after, host, "a step changed the host's vm.swappiness");
    assert_ne!(build.code, 0);
    assert!(
        build.stderr.contains("Read-only file system")
            && build.stderr.contains("did not complete successfully"),
        "{}",
        build.stderr
    );
    assert_ne!(run.code, 0);
    assert_eq!(
        run.stderr.matches("Read-only file system").count(),
        2,
        "{}",
        run.stderr
    );

    // What the kernel tells of the whole machine is hidden, as in a BuildKit step.
    let run = env
        .rbuild(&[
            "run",
            "--rm",
            "rbuild-demo/busybox",
            "sh",
            "-c",
            "wc -c < /proc/keys; wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l",
        ])
        .ok();
    assert_eq!(
        run.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0"]
    );
}

/// A service on the host's loopback that answers every connection with `body` and counts them.
fn loopback_service(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            seen.fetch_add(1, Ordering::SeqCst);
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = write!(stream, "HTTP/1.0 200 OK\r\n\r\n{body}\n");
        }
    });
    (port, count)
}

/// A shell loop that asks each address for `/` on `port` with busybox's nc (its wget is
/// not usable in the static busybox) and says which refused.
fn ask(addresses: &str, port: u16) -> String {
    format!(
        "for a in {addresses}; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $a {port} \
         || echo \"$a: unreachable\"; done"
    )
}

#[test]
fn steps_cannot_reach_the_hosts_loopback_unless_allowed() {
    require_root!();
    let env = Env::new();
    env.base_image();
    let (port, connections) = loopback_service("loopback-secret");
    // 10.0.2.2 is the gateway, which user-mode networking maps to the host's 127.0.0.1 unless
    // told not to.
    let script = ask("127.0.0.1 10.0.2.2", port);
    let ctx = env.context(
        "net",
        &[(
            "Dockerfile",
            &format!("FROM rbuild-demo/busybox\nRUN {script}\n"),
        )],
    );
    let ctx = ctx.to_str().unwrap();
    let r = env.rbuild(&["build", "--progress=plain", ctx]).ok();
    assert!(
        r.stderr.contains("127.0.0.1: unreachable") && r.stderr.contains("10.0.2.2: unreachable"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("loopback-secret"), "{}", r.stderr);
    assert_eq!(connections.load(Ordering::SeqCst), 0);

    // The person running the build may share the host's network...
    let r = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "--no-cache",
            "--network=host",
            ctx,
        ])
        .ok();
    assert!(r.stderr.contains("loopback-secret"), "{}", r.stderr);

    // ...a Dockerfile only with the network.host entitlement, refused as BuildKit refuses it.
    let host_step = env.context(
        "net-host",
        &[(
            "Dockerfile",
            &format!("FROM rbuild-demo/busybox\nRUN --network=host {script}\n"),
        )],
    );
    let host_step = host_step.to_str().unwrap();
    let r = env.rbuild(&["build", host_step]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(
            "Dockerfile:2:5: error: RUN --network=host needs the network.host entitlement"
        ) && r.stderr.contains("--allow network.host"),
        "{}",
        r.stderr
    );
    let r = env
        .rbuild(&[
            "build",
            "--progress=plain",
            "--no-cache",
            "--allow",
            "network.host",
            host_step,
        ])
        .ok();
    assert!(r.stderr.contains("loopback-secret"), "{}", r.stderr);
    // security.insecure does not grant network.host.
    let r = env.rbuild(&["build", "--allow", "security.insecure", host_step]);
    assert!(
        r.code != 0 && r.stderr.contains("needs the network.host entitlement"),
        "{}",
        r.stderr
    );

    // `rbuild run` the same way.
    let before = connections.load(Ordering::SeqCst);
    let r = env.rbuild(&["run", "--rm", "rbuild-demo/busybox", "sh", "-c", &script]);
    assert!(!r.stdout.contains("loopback-secret"), "{}", r.stdout);
    assert!(r.stdout.contains("10.0.2.2: unreachable"), "{}", r.stdout);
    assert_eq!(connections.load(Ordering::SeqCst), before);
    let r = env.rbuild(&[
        "run",
        "--rm",
        "--network=host",
        "rbuild-demo/busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert!(r.stdout.contains("loopback-secret"), "{}", r.stdout);
    assert_eq!(
        orphaned_helpers(),
        Vec::<String>::new(),
        "slirp4netns outlived rbuild"
    );
}

/// slirp4netns processes whose rbuild has ended (each names its rbuild's pid in its netns
/// path), after giving them a moment to notice.
fn orphaned_helpers() -> Vec<String> {
    let mut orphans = Vec::new();
    for _ in 0..40 {
        let out = Command::new("pgrep")
            .args(["-a", "slirp4netns"])
            .output()
            .unwrap();
        orphans = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                let pid = l.split("/proc/").nth(1).and_then(|r| r.split('/').next());
                pid.is_some_and(|p| !Path::new("/proc").join(p).exists())
            })
            .map(String::from)
            .collect();
        if orphans.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    orphans
}

/// A test host: a network namespace of the test's own behind a veth pair, at 198.18.0.2 (the
/// benchmarking range, RFC 2544), serving `dir` over HTTP. Removed on drop.
struct TestHost {
    name: String,
    server: std::process::Child,
}

const TEST_HOST: &str = "198.18.0.2";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestHost {
    fn start(dir: &Path) -> TestHost {
        let name = format!("rbt{}", std::process::id());
        let (outer, inner) = (format!("{name}o"), format!("{name}i"));
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &name]);
        ip(&["addr", "add", "198.18.0.1/30", "dev", &outer]);
        ip(&["link", "set", &outer, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{TEST_HOST}/30"), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["link", "set", "lo", "up"]);
        let server = Command::new("ip")
            .args(["netns", "exec", &name, "python3", "-m", "http.server"])
            .args(["--bind", TEST_HOST, "8080", "--directory"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let host = TestHost { name, server };
        for _ in 0..100 {
            if std::net::TcpStream::connect((TEST_HOST, 8080)).is_ok() {
                return host;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the test host's HTTP server did not start");
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn steps_reach_other_machines_through_user_mode_networking() {
    require_root!();
    if rootless_pass() {
        eprintln!("skipped: making the test host needs root; the rootful pass runs this");
        return;
    }
    let env = Env::new();
    env.base_image();
    let served = env.path("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::write(served.join("index.html"), "from-the-test-host\n").unwrap();
    let _host = TestHost::start(&served);
    let script = ask(TEST_HOST, 8080);
    let ctx = env.context(
        "outbound",
        &[(
            "Dockerfile",
            &format!("FROM rbuild-demo/busybox\nRUN {script} > /answer\n"),
        )],
    );
    env.rbuild(&["build", "-t", "outbound", ctx.to_str().unwrap()])
        .ok();
    let r = env
        .rbuild(&["run", "--rm", "outbound", "cat", "/answer"])
        .ok();
    assert!(r.stdout.contains("from-the-test-host"), "{}", r.stdout);
    let r = env
        .rbuild(&["run", "--rm", "rbuild-demo/busybox", "sh", "-c", &script])
        .ok();
    assert!(r.stdout.contains("from-the-test-host"), "{}", r.stdout);
    // --network=none has only loopback.
    let r = env.rbuild(&[
        "run",
        "--rm",
        "--network=none",
        "rbuild-demo/busybox",
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        r.stdout.contains(&format!("{TEST_HOST}: unreachable")),
        "{}",
        r.stdout
    );
}
