//! `--add-host`, `--ulimit`, `--shm-size` and `--cgroup-parent`: checked as Docker checks
//! them, with its messages, and given to every RUN step ([`rbuild_solver::ExecLimits`]).

use super::BuildArgs;
use anyhow::{Result, anyhow, bail};
use rbuild_solver::{ExecLimits, HostEntry, NetworkMode, Ulimit};

/// The limits the build's flags ask for; `network` (the build's) says what `host-gateway`
/// means.
pub fn parse(args: &BuildArgs, network: NetworkMode) -> Result<ExecLimits> {
    let extra_hosts = args
        .add_hosts
        .iter()
        .map(|h| extra_host(h, network))
        .collect::<Result<_>>()?;
    let ulimits = args
        .ulimits
        .iter()
        .map(|u| ulimit(u))
        .collect::<Result<_>>()?;
    let shm_size = match &args.shm_size {
        Some(size) => Some(
            rbuild_frontend::mounts::parse_ram_size(size)
                .map_err(|e| anyhow!("invalid --shm-size: {e}"))?,
        ),
        None => None,
    };
    if shm_size == Some(0) {
        bail!("invalid --shm-size: it must be greater than 0");
    }
    Ok(ExecLimits {
        extra_hosts,
        ulimits,
        shm_size,
        cgroup_parent: args.cgroup_parent.clone().filter(|c| !c.is_empty()),
    })
}

/// `NAME:IP` or `NAME=IP` (Docker's `ValidateExtraHost`: the first `=`, else the first `:`, so
/// `name:::1` is IPv6); `host-gateway` is the address a step reaches this machine at.
fn extra_host(spec: &str, network: NetworkMode) -> Result<HostEntry> {
    let (host, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .ok_or_else(|| anyhow!("bad format for add-host: {spec:?}"))?;
    if host.is_empty() {
        bail!("bad format for add-host: {spec:?}");
    }
    let ip = match ip.trim_start_matches('[').trim_end_matches(']') {
        "host-gateway" => host_gateway(network)?,
        ip => ip
            .parse::<std::net::IpAddr>()
            .map_err(|_| anyhow!("invalid IP address in add-host: {ip:?}"))?
            .to_string(),
    };
    Ok(HostEntry {
        host: host.to_string(),
        ip,
    })
}

/// What `host-gateway` is for a step: loopback on the host's network; on the default network
/// (whose gateway rbuild refuses, so that steps do not reach services bound to loopback), the
/// machine's own address on its default route, which steps reach as any other host.
fn host_gateway(network: NetworkMode) -> Result<String> {
    if network == NetworkMode::Host {
        return Ok("127.0.0.1".into());
    }
    // Connecting a UDP socket sends nothing; it only picks the route and source address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let own = socket
        .connect("192.0.2.1:9")
        .and_then(|()| socket.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback());
    own.map(|ip| ip.to_string()).ok_or_else(|| {
        anyhow!(
            "--add-host NAME:host-gateway: this machine has no address but loopback for steps \
             to reach it at (with --network=host it is 127.0.0.1)"
        )
    })
}

/// `NAME=SOFT[:HARD]` as Docker's `ParseUlimit`.
fn ulimit(spec: &str) -> Result<Ulimit> {
    let (name, values) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("invalid ulimit argument: {spec}"))?;
    if rbuild_runner::limits::resource(name).is_none() {
        bail!("invalid ulimit type: {name}");
    }
    let number = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| anyhow!("invalid ulimit value {v:?} in {spec}"))
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => {
            let v = number(values)?;
            (v, v)
        }
    };
    if hard >= 0 && (soft < 0 || soft > hard) {
        bail!("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}");
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_hosts_as_docker_takes_them() {
        let h = |s| extra_host(s, NetworkMode::Private);
        let e = h("db:10.0.0.5").unwrap();
        assert_eq!((e.host.as_str(), e.ip.as_str()), ("db", "10.0.0.5"));
        assert_eq!(h("v6:::1").unwrap().ip, "::1");
        assert_eq!(h("v6=[::2]").unwrap().ip, "::2");
        assert!(
            h("db:nonsense")
                .unwrap_err()
                .to_string()
                .contains("invalid IP address")
        );
        assert!(h("nocolon").is_err() && h(":1.2.3.4").is_err());
        let gw = extra_host("me:host-gateway", NetworkMode::Host).unwrap();
        assert_eq!(gw.ip, "127.0.0.1");
    }

    #[test]
    fn ulimits_as_docker_takes_them() {
        let u = ulimit("nofile=1024:2048").unwrap();
        assert_eq!((u.soft, u.hard), (1024, 2048));
        assert_eq!(ulimit("nproc=50").unwrap().hard, 50);
        assert_eq!(ulimit("core=-1").unwrap().soft, -1);
        assert!(
            ulimit("files=1")
                .unwrap_err()
                .to_string()
                .contains("invalid ulimit type")
        );
        assert!(
            ulimit("nofile=2048:1024")
                .unwrap_err()
                .to_string()
                .contains("soft limit")
        );
        assert!(ulimit("nofile").is_err() && ulimit("nofile=x").is_err());
    }
}
