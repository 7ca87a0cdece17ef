//! Helpers for end-to-end tests: a private state directory per test, the busybox base image,
//! a real registry (Debian's docker-registry) on a free loopback port, and third-party tools
//! (skopeo, umoci) to check what rbuild produced.
#![allow(dead_code)]

mod checks;
#[allow(unused_imports)]
pub use checks::*;

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why end-to-end tests cannot run here, if they cannot. They need root, or user namespaces
/// for a rootless rbuild (CI runs them both ways), and Debian's busybox-static.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() && !user_namespaces_work() {
        return Some(
            "needs root, or unprivileged user namespaces for rootless builds (CI runs both)".into(),
        );
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox (apt-get install busybox-static)".into());
    }
    None
}

/// Whether an unprivileged process can create a user namespace here (what rootless rbuild
/// does first).
pub fn user_namespaces_work() -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Returns early from a test that cannot run here, saying why; under CI (`CI` set), where
/// everything must run, fails instead, so a CI that lost root cannot pass without the tests.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(why) = common::skip_reason() {
            common::skip_or_fail(&why);
            return;
        }
    };
}

/// Says why a test skips, or panics under CI.
pub fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("this test cannot run here ({why}), and under CI every test must run");
    }
    eprintln!("skipped: {why}");
}

/// Whether this is the rootless pass of the suite (`scripts/test.sh` runs the end-to-end tests
/// once more as an unprivileged user): the few checks that need the real root to set up (a
/// test host in a network namespace) are left to the rootful pass.
pub fn rootless_pass() -> bool {
    std::env::var_os("RBUILD_TEST_ROOTLESS").is_some() && !nix::unistd::geteuid().is_root()
}

/// The repository's testdata directory.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// A test's own state directory and scratch space.
pub struct Env {
    pub dir: tempfile::TempDir,
}

/// What one rbuild invocation did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "rbuild failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// An `Env` whose directory (and so state directory) is made under `parent`.
    pub fn new_in(parent: &Path) -> Env {
        Env {
            dir: tempfile::tempdir_in(parent).expect("temp dir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The rbuild binary with this test's `--root`.
    pub fn command(&self) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin!("rbuild"));
        c.arg("--root").arg(self.root());
        c.env_remove("RBUILD_ROOT");
        // Registry credentials of this test only, never the user's.
        c.env("DOCKER_CONFIG", self.docker_config());
        c
    }

    /// The directory of this test's Docker client configuration (`config.json`).
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// A new test root whose Docker client configuration is a copy of this one's (the same
    /// registry logins).
    pub fn with_same_logins(&self) -> Env {
        let fresh = Env::new();
        std::fs::create_dir_all(fresh.docker_config()).unwrap();
        std::fs::copy(
            self.docker_config().join("config.json"),
            fresh.docker_config().join("config.json"),
        )
        .unwrap();
        fresh
    }

    /// Runs rbuild with `stdin` as its input and `envs` set.
    pub fn rbuild_with(&self, args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Run {
        let mut c = self.command();
        c.args(args);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = assert_cmd::Command::from_std(c)
            .write_stdin(stdin)
            .output()
            .expect("running rbuild");
        run_of(out)
    }

    /// Runs rbuild with these bytes on stdin.
    pub fn rbuild_stdin(&self, args: &[&str], stdin: Vec<u8>) -> Run {
        let mut c = self.command();
        c.args(args);
        let out = assert_cmd::Command::from_std(c)
            .write_stdin(stdin)
            .output()
            .expect("running rbuild");
        run_of(out)
    }

    /// Runs rbuild to completion (stdin closed).
    pub fn rbuild(&self, args: &[&str]) -> Run {
        let mut c = assert_cmd::Command::from_std(self.command());
        let out = c
            .args(args)
            .write_stdin("")
            .output()
            .expect("running rbuild");
        run_of(out)
    }

    /// Builds rbuild-demo/busybox in this root, as testdata/setup.sh does.
    pub fn base_image(&self) {
        let ctx = self.path("busybox-ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::copy(
            testdata().join("busybox/Dockerfile"),
            ctx.join("Dockerfile"),
        )
        .unwrap();
        let status = Command::new(testdata().join("busybox/make-rootfs.sh"))
            .arg(ctx.join("rootfs.tar"))
            .status()
            .unwrap();
        assert!(status.success());
        self.rbuild(&[
            "build",
            "-q",
            "-t",
            "rbuild-demo/busybox",
            ctx.to_str().unwrap(),
        ])
        .ok();
    }

    /// A context directory with these files (`Dockerfile` among them, usually).
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.path(name);
        for (file, content) in files {
            let p = ctx.join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        ctx
    }

    /// Mount points under this test's directory in the host's mount table.
    pub fn leaked_mounts(&self) -> Vec<String> {
        let out = Command::new("findmnt")
            .args(["-rn", "-o", "TARGET"])
            .output()
            .unwrap();
        let prefix = self.dir.path().to_string_lossy().into_owned();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(String::from)
            .collect()
    }
}

pub fn run_of(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Makes a tool's argument usable by an unprivileged tool when the tests run rootless:
/// skopeo's `oci-archive:` transport untars with the archive's owners (root), which only root
/// can set, so the same archive is read through a layout extracted here instead (entries
/// unchanged, owners not applied).
fn unprivileged_arg(arg: &str) -> String {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Some(path) = arg.strip_prefix("oci-archive:") else {
        return arg.to_string();
    };
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(format!("{path}.layout{n}"));
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("the OCI archive"));
    archive.set_preserve_ownerships(false);
    archive.unpack(&dir).expect("unpacking the OCI archive");
    format!("oci:{}", dir.display())
}

/// Runs a third-party tool, asserting success; returns stdout. When the tests run unprivileged
/// (rootless), skopeo reads OCI archives through extracted layouts and umoci unpacks with
/// `--rootless`.
pub fn tool(program: &str, args: &[&str]) -> String {
    let mut command = Command::new(program);
    if nix::unistd::geteuid().is_root() {
        command.args(args);
    } else {
        if program == "umoci" && args.first() == Some(&"unpack") {
            command.arg("unpack").arg("--rootless").args(&args[1..]);
        } else {
            command.args(args.iter().map(|a| unprivileged_arg(a)));
        }
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            // skopeo keeps its auth file there (default /run/containers/UID, root's).
            command.env("XDG_RUNTIME_DIR", std::env::temp_dir());
        }
    }
    let out = command.output().unwrap_or_else(|e| {
        panic!("{program} is needed by this test (apt-get install {program}): {e}")
    });
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lines of the form `#N <name>` and the `#N` numbers of steps that were `CACHED` or `DONE`.
pub struct Progress {
    pub names: Vec<(String, String)>,
    pub cached: Vec<String>,
    pub done: Vec<String>,
}

impl Progress {
    pub fn parse(stderr: &str) -> Progress {
        let mut names = Vec::new();
        let mut cached = Vec::new();
        let mut done = Vec::new();
        for line in stderr.lines() {
            let Some(rest) = line.strip_prefix('#') else {
                continue;
            };
            let Some((n, text)) = rest.split_once(' ') else {
                continue;
            };
            if text.starts_with('[') {
                names.push((n.to_string(), text.to_string()));
            } else if text == "CACHED" {
                cached.push(n.to_string());
            } else if text.starts_with("DONE") {
                done.push(n.to_string());
            }
        }
        Progress {
            names,
            cached,
            done,
        }
    }

    /// Names of steps (not `[internal]` ones) that ran.
    pub fn ran(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|(n, name)| self.done.contains(n) && !name.starts_with("[internal]"))
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// Names of steps that came from the cache.
    pub fn cached_steps(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|(n, _)| self.cached.contains(n))
            .map(|(_, name)| name.clone())
            .collect()
    }
}

/// Debian's docker-registry on a free loopback port, stopped when dropped.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

/// What a test registry asks of its clients.
#[derive(Default)]
pub struct RegistrySetup<'a> {
    /// Basic authentication with this user and password (an htpasswd file, bcrypt).
    pub user: Option<(&'a str, &'a str)>,
    /// TLS with this certificate and key (PEM files).
    pub tls: Option<(&'a Path, &'a Path)>,
    /// Bearer tokens from this token service.
    pub token: Option<&'a TokenServer>,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(RegistrySetup::default())
    }

    pub fn start_with(setup: RegistrySetup) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = setup.tls {
            yaml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((user, password)) = setup.user {
            let htpasswd = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        if let Some(server) = setup.token {
            yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                server.realm,
                TokenServer::SERVICE,
                TokenServer::ISSUER,
                server.ca.display()
            ));
        }
        std::fs::write(&config, yaml).unwrap();
        let tls = setup.tls.is_some();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is needed by this test (apt-get install docker-registry)");
        let registry = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let up = if tls {
                std::net::TcpStream::connect(&registry.addr).is_ok()
            } else {
                registry.get("/v2/").is_some()
            };
            if up {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not start on {}", registry.addr);
    }

    /// A plain HTTP GET; the response (status line, headers and body) if it connected.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut s = std::net::TcpStream::connect(&self.addr).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a certificate it signed for 127.0.0.1, as PEM files in `dir`: (ca, cert, key).
pub fn test_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "rbuild test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = server
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    // skopeo's --cert-dir takes CAs from *.crt files.
    std::fs::create_dir_all(dir).unwrap();
    let paths = (
        dir.join("ca.crt"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// A request the token service granted: the user (empty if anonymous) and its scopes.
pub type TokenRequest = (String, Vec<String>);

/// A Docker token service (the realm of a registry's `Bearer` challenge) on a free loopback
/// port: it checks one user's password (HTTP basic) and grants every scope asked for, as JWTs
/// signed with ES256 by a certificate from a test CA (the registry trusts the CA).
pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`.
    pub realm: String,
    /// The CA the registry verifies tokens with (PEM).
    pub ca: PathBuf,
    /// Each request: the user it authenticated (empty if none) and its scopes.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<TokenRequest>>>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    pub const SERVICE: &'static str = "rbuild-test-registry";
    pub const ISSUER: &'static str = "rbuild-test-token-service";

    pub fn start(user: &str, password: &str) -> TokenServer {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = test_certificates(dir.path());
        let pem = std::fs::read_to_string(&cert).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let leaf_der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let seen = requests.clone();
        let user = user.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some((target, authorization)) = read_request(&mut stream) else {
                    continue;
                };
                let scopes: Vec<String> = query_values(&target, "scope");
                let who = match authorization.as_deref() {
                    None => Some(String::new()),
                    Some(a) if a == format!("Basic {basic}") => Some(user.clone()),
                    Some(_) => None,
                };
                let response = match who {
                    None => http_response(
                        "401 Unauthorized",
                        r#"{"details":"incorrect username or password"}"#,
                    ),
                    Some(who) => {
                        seen.lock().unwrap().push((who.clone(), scopes.clone()));
                        // Anonymous requests get a token that grants nothing.
                        let granted = if who.is_empty() { vec![] } else { scopes };
                        let jwt = signed_token(&key, &leaf_der, &who, &granted);
                        http_response(
                            "200 OK",
                            &format!(
                                r#"{{"token":"{jwt}","access_token":"{jwt}","expires_in":300}}"#
                            ),
                        )
                    }
                };
                let _ = stream.write_all(response.as_bytes());
            }
        });
        TokenServer {
            realm,
            ca,
            requests,
            _dir: dir,
        }
    }
}

/// Reads an HTTP request's head: its target and `Authorization` header.
fn read_request(stream: &mut std::net::TcpStream) -> Option<(String, Option<String>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let target = lines.next()?.split(' ').nth(1)?.to_string();
    let authorization = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_string())
    });
    Some((target, authorization))
}

/// The values of a query parameter, percent-decoded.
fn query_values(target: &str, name: &str) -> Vec<String> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| {
            let bytes = v.replace('+', " ").into_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' && i + 2 < bytes.len() {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        })
        .collect()
}

fn http_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A JWT as Docker's token specification describes it: ES256 over `header.claims`, the
/// signing certificate in `x5c`, one access entry per `repository:NAME:ACTIONS` scope.
fn signed_token(key: &rcgen::KeyPair, leaf_der: &[u8], subject: &str, scopes: &[String]) -> String {
    use base64::Engine as _;
    use rcgen::SigningKey as _;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let std = base64::engine::general_purpose::STANDARD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [std.encode(leaf_der)]});
    let claims = serde_json::json!({
        "iss": TokenServer::ISSUER,
        "sub": subject,
        "aud": TokenServer::SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", scopes.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        url.encode(header.to_string()),
        url.encode(claims.to_string())
    );
    let der = key.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", url.encode(ecdsa_der_to_raw(&der)))
}

/// An ECDSA P-256 signature from ASN.1 DER (`SEQUENCE { r INTEGER, s INTEGER }`) to the
/// 64-byte `r || s` that JWS wants.
fn ecdsa_der_to_raw(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // SEQUENCE, short length (a P-256 signature is under 128 bytes).
    let mut i = 2;
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "an INTEGER");
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

/// What a [`FaultProxy`] does to a request that matches a [`Rule`].
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answers with this status and no body, the registry never asked.
    Status(u16),
    /// Closes the connection without answering.
    Close,
    /// Takes the connection and never answers.
    Stall,
    /// Passes the registry's answer on, cut after this many bytes of its body.
    Truncate(usize),
    /// Passes the registry's answer on with one byte of its body changed.
    Corrupt,
}

/// Which requests get a fault: the first `times` whose method is `method` and whose path
/// contains `path_part`.
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path_part: &'static str,
    pub fault: Fault,
    pub times: usize,
}

/// A fault-injecting HTTP proxy on a free loopback port in front of a real registry. Each
/// connection carries one request (the proxy tells both sides to close after it), so every
/// request is seen; faults follow the rules, the rest passes through untouched. Counts the
/// faults it injected.
pub struct FaultProxy {
    pub addr: String,
    injected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let injected = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let rules = Arc::new(Mutex::new(rules));
        let (upstream, counter, stopping) = (upstream.to_string(), injected.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (upstream, rules, counter) = (upstream.clone(), rules.clone(), counter.clone());
                let stopping = stopping.clone();
                std::thread::spawn(move || {
                    proxy_one(client, &upstream, &rules, &counter, &stopping);
                });
            }
        });
        FaultProxy {
            addr,
            injected,
            stop,
        }
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop.
        let _ = std::net::TcpStream::connect(&self.addr);
    }
}

/// Reads an HTTP message head (through the blank line); returns it and what came after it.
fn read_head(stream: &mut std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end + 4]).into_owned();
            return Some((head, data[end + 4..].to_vec()));
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// `head` with its Connection header replaced by `Connection: close`.
fn closing(head: &str) -> String {
    let mut out: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    out.push("Connection: close");
    format!("{}\r\n\r\n", out.join("\r\n"))
}

fn content_length(head: &str) -> Option<usize> {
    head.split("\r\n").find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

fn proxy_one(
    mut client: std::net::TcpStream,
    upstream: &str,
    rules: &std::sync::Mutex<Vec<Rule>>,
    injected: &std::sync::atomic::AtomicUsize,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    // A TLS handshake (rbuild probes loopback registries for HTTPS first) goes to the
    // registry as it is, which answers it as plain HTTP registries do.
    let mut first = [0u8; 1];
    if client.peek(&mut first).is_ok_and(|n| n == 1) && first[0] == 0x16 {
        let Ok(mut server) = std::net::TcpStream::connect(upstream) else {
            return;
        };
        let (mut from_client, mut to_server) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_client, &mut to_server);
        });
        let _ = std::io::copy(&mut server, &mut client);
        return;
    }
    let Some((head, rest)) = read_head(&mut client) else {
        return;
    };
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let fault = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(r.path_part))
            .map(|r| {
                r.times -= 1;
                r.fault
            })
    };
    if fault.is_some() {
        injected.fetch_add(1, Ordering::SeqCst);
    }
    match fault {
        Some(Fault::Status(code)) => {
            // Take the body first, so that the client reads the answer, not a broken pipe.
            let mut left = content_length(&head)
                .unwrap_or(0)
                .saturating_sub(rest.len());
            let mut buf = [0u8; 65536];
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            while left > 0 {
                match client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
            let _ = write!(
                client,
                "HTTP/1.1 {code} Injected Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return;
        }
        Some(Fault::Close) => return,
        Some(Fault::Stall) => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
            return;
        }
        _ => {}
    }
    let Ok(mut server) = std::net::TcpStream::connect(upstream) else {
        return;
    };
    if server.write_all(closing(&head).as_bytes()).is_err() || server.write_all(&rest).is_err() {
        return;
    }
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });
    match fault {
        Some(Fault::Truncate(_) | Fault::Corrupt) => {
            let mut answer = Vec::new();
            let _ = server.read_to_end(&mut answer);
            let end = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(answer.len(), |p| p + 4);
            match fault {
                Some(Fault::Truncate(keep)) => answer.truncate((end + keep).min(answer.len())),
                _ => {
                    if let Some(byte) = answer.get_mut(end) {
                        *byte ^= 0xff;
                    }
                }
            }
            let _ = client.write_all(&answer);
        }
        _ => {
            let _ = std::io::copy(&mut server, &mut client);
        }
    }
    // The other direction's thread holds a clone of the socket: end it for both.
    let _ = client.shutdown(std::net::Shutdown::Both);
}

/// `python3 -m http.server` on loopback, serving `dir`; killed on drop.
pub struct HttpServer {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
}

impl HttpServer {
    /// Starts serving `dir`.
    pub fn start(dir: &Path) -> HttpServer {
        let mut child = std::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (Debian package python3) serves files for this test");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line
            .split("port ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
