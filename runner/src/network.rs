//! The default network of RUN steps: a network namespace of rbuild's own with outbound access
//! through user-mode networking (Debian's `slirp4netns`), which cannot reach the build
//! machine's loopback.
//!
//! A step in the host's network namespace reaches every service listening on the machine's
//! loopback (a registry, a cloud metadata proxy, a database), which a build of an untrusted
//! Dockerfile must not. BuildKit runs each step in a network namespace of its own behind a
//! bridge (CNI) or, rootless, behind slirp4netns; this is the latter, rootful and rootless alike:
//! a TAP device `tap0` (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3) whose packets slirp4netns
//! turns into ordinary sockets of the host. `--disable-host-loopback` refuses connections to the
//! gateway address, which slirp4netns would otherwise map to the host's 127.0.0.1.
//!
//! One namespace serves every step of an rbuild process: it is made the first time a step
//! needs it (a fully cached build never starts slirp4netns) and steps join it with `setns`:
//! starting slirp4netns adds ~4 ms to a build, joining ~0.5 ms to a step (RELIABILITY.md has
//! the measurements). Steps of one build that run at the same time can therefore reach each
//! other's listening sockets, as containers on one Docker bridge can; they cannot reach anything
//! of the host's but what an outside machine could.
//!
//! Nothing outlives rbuild: the namespace is held by a descriptor only (no mount, no process),
//! and slirp4netns exits when the write end of its `--exit-fd` pipe closes, which the kernel
//! does when rbuild ends, however it ends.

use nix::sched::{CloneFlags, unshare};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Why the default network could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What slirp4netns needs is missing here (the TUN device, the program); the message says
    /// what to install or how to build instead.
    #[error("{0}")]
    Unavailable(String),
    /// A system call failed.
    #[error("{what}")]
    System {
        /// What rbuild was doing.
        what: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// slirp4netns started but did not configure the namespace.
    #[error("slirp4netns did not set up the network: {0}")]
    NotReady(String),
}

/// Starting's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn system(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::System { what, source }
}

/// The address of the DNS forwarder slirp4netns provides in the namespace.
pub const DNS_ADDRESS: &str = "10.0.2.3";

/// What a build can do instead when the network cannot be set up.
const INSTEAD: &str = "or build with --network=none, or with --network=host to share the \
                       host's network";

/// How long slirp4netns may take to configure the namespace before rbuild gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A network namespace with user-mode networking; dropping it stops slirp4netns (the namespace
/// goes when the last step in it ends).
pub struct UserNet {
    netns: OwnedFd,
    helper: Child,
    exit_w: Option<OwnedFd>,
}

impl std::fmt::Debug for UserNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserNet")
            .field("netns", &self.netns.as_raw_fd())
            .field("slirp4netns", &self.helper.id())
            .finish()
    }
}

impl UserNet {
    /// Makes the namespace and starts slirp4netns for it; returns once its interface is up.
    pub fn start() -> Result<UserNet> {
        use nix::unistd::{AccessFlags, access};
        if let Err(e) = access("/dev/net/tun", AccessFlags::R_OK | AccessFlags::W_OK) {
            return Err(Error::Unavailable(format!(
                "RUN steps get their network from slirp4netns, which needs /dev/net/tun: {e} \
                 (rootless, the device must be open to every user, as Debian's udev makes it: \
                 chmod 0666 /dev/net/tun); {INSTEAD}"
            )));
        }
        let netns = new_netns().map_err(system("creating a network namespace"))?;
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| system("creating a pipe to slirp4netns")(e.into()))
        };
        let (exit_r, exit_w) = pipe()?;
        let (ready_r, ready_w) = pipe()?;
        let path = format!("/proc/{}/fd/{}", std::process::id(), netns.as_raw_fd());
        let mut command = Command::new("slirp4netns");
        command
            .args(["--configure", "--mtu=65520", "--disable-host-loopback"])
            .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
            .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
            .args(["--netns-type=path", &path, "tap0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = crate::sys::process::spawn_keeping_fds(
            &mut command,
            &[exit_r.as_raw_fd(), ready_w.as_raw_fd()],
        );
        let helper = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Unavailable(format!(
                    "RUN steps get their network from slirp4netns, which is not installed \
                     (Debian package slirp4netns); {INSTEAD}"
                )));
            }
            Err(e) => return Err(system("starting slirp4netns")(e)),
        };
        drop(exit_r);
        drop(ready_w);
        let mut net = UserNet {
            netns,
            helper,
            exit_w: Some(exit_w),
        };
        if let Err(e) = wait_ready(ready_r.as_fd()) {
            let detail = net.stop_and_read_stderr();
            return Err(Error::NotReady(format!("{e}{detail}")));
        }
        // From now on its messages are not needed, but must be read: a full pipe would stop
        // slirp4netns, and every step's network with it.
        if let Some(mut stderr) = net.helper.stderr.take() {
            let _ = std::thread::Builder::new()
                .name("slirp4netns-stderr".into())
                .spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        }
        Ok(net)
    }

    /// The namespace, for [`crate::sandbox::Network::Join`].
    pub fn netns(&self) -> BorrowedFd<'_> {
        self.netns.as_fd()
    }

    fn stop_and_read_stderr(&mut self) -> String {
        self.exit_w = None;
        let _ = self.helper.kill();
        let _ = self.helper.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.helper.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let stderr = stderr.trim();
        if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        }
    }
}

impl Drop for UserNet {
    fn drop(&mut self) {
        // Closing the exit pipe tells slirp4netns to quit. Its exit takes ~25 ms (the kernel
        // unregisters the TAP device), so it is reaped on a thread of its own rather than
        // waited for here, at the end of every build.
        self.exit_w = None;
        if let Ok(Some(_)) = self.helper.try_wait() {
            return;
        }
        let pid = self.helper.id();
        let _ = std::thread::Builder::new()
            .name("slirp4netns-reaper".into())
            .spawn(move || {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            });
    }
}

/// A [`UserNet`] started the first time a step needs it and shared by the steps after it.
#[derive(Debug, Default)]
pub struct SharedUserNet(std::sync::Mutex<Option<std::sync::Arc<UserNet>>>);

impl SharedUserNet {
    /// The network, started now if no step started it yet. A failure is not remembered: the
    /// next step tries again (and reports the error again).
    pub fn get(&self) -> Result<std::sync::Arc<UserNet>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(net) = &*slot {
            return Ok(net.clone());
        }
        let net = std::sync::Arc::new(UserNet::start()?);
        *slot = Some(net.clone());
        Ok(net)
    }
}

/// A new network namespace with `lo` up, held by a descriptor. Made on a thread of its own,
/// which enters the namespace (namespaces belong to threads), opens it and ends, so no other
/// thread of rbuild ever runs in it. (It cannot go back: rootless, rbuild has no right to
/// enter the host's network namespace again.)
fn new_netns() -> std::io::Result<OwnedFd> {
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET)?;
        let made = std::fs::File::open("/proc/thread-self/ns/net")?;
        crate::sys::net::loopback_up()?;
        Ok(OwnedFd::from(made))
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// Waits for slirp4netns to write its ready byte.
fn wait_ready(ready: BorrowedFd) -> std::result::Result<(), String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(ready, PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(READY_TIMEOUT).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(0) => return Err(format!("no answer in {} s", READY_TIMEOUT.as_secs())),
        Ok(_) => {}
        Err(e) => return Err(format!("waiting for it: {e}")),
    }
    let mut byte = [0u8; 1];
    match nix::unistd::read(ready, &mut byte) {
        Ok(1) => Ok(()),
        Ok(_) => Err("it exited".into()),
        Err(e) => Err(format!("reading its ready pipe: {e}")),
    }
}

/// The `/etc/resolv.conf` of a step in the namespace, from the host's: nameservers on the
/// host's loopback (systemd-resolved's 127.0.0.53, a local dnsmasq) cannot be reached from it
/// and are left out; if none remains, slirp4netns's forwarder, which asks the host's resolver,
/// takes their place.
pub fn resolv_conf(host: &str) -> String {
    let loopback = |line: &str| {
        let mut words = line.split_whitespace();
        words.next() == Some("nameserver")
            && words
                .next()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| a.is_loopback())
    };
    let mut out: String = host
        .lines()
        .filter(|l| !loopback(l))
        .map(|l| format!("{l}\n"))
        .collect();
    if !out
        .lines()
        .any(|l| l.split_whitespace().next() == Some("nameserver"))
    {
        out.push_str(&format!("nameserver {DNS_ADDRESS}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::resolv_conf;

    #[test]
    fn loopback_nameservers_give_way_to_the_forwarder() {
        assert_eq!(
            resolv_conf("nameserver 127.0.0.53\noptions edns0\n"),
            "options edns0\nnameserver 10.0.2.3\n"
        );
        assert_eq!(
            resolv_conf("nameserver 192.0.2.53\nnameserver ::1\nsearch example.org\n"),
            "nameserver 192.0.2.53\nsearch example.org\n"
        );
        assert_eq!(resolv_conf(""), "nameserver 10.0.2.3\n");
    }
}
