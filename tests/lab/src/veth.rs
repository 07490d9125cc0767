//! Links and routes: [`Iface`] (an interface in some netns), [`Veth`] and [`Bridge`] guards that
//! delete their link on drop, and [`Route`].

use std::net::IpAddr;

use crate::addr::Cidr;
use crate::cmd::CommandError;
use crate::netns::Ns;

/// Longest Linux interface name (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Failure to create or configure a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "interface name {0:?} must be 1 to {MAX_IFNAME_LEN} characters without '/', ':' or spaces"
    )]
    BadName(String),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("configuring {iface}: {source}")]
    Sysctl {
        iface: String,
        #[source]
        source: Box<crate::netns::NetnsError>,
    },
}

fn check_ifname(name: &str) -> Result<(), LinkError> {
    let ok = (1..=MAX_IFNAME_LEN).contains(&name.len())
        && !name.contains(['/', ':', ' ', '\t', '\n'])
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(LinkError::BadName(name.to_owned()))
    }
}

/// An interface `name` in namespace `ns`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Iface {
    pub ns: Ns,
    pub name: String,
}

impl Iface {
    #[must_use]
    pub fn new(ns: &Ns, name: &str) -> Self {
        Self {
            ns: ns.clone(),
            name: name.to_owned(),
        }
    }

    /// `ip link set NAME up`.
    pub fn up(&self) -> Result<(), CommandError> {
        self.ns.ip_run(["link", "set", &self.name, "up"]).map(drop)
    }

    /// Adds an address; IPv6 ones get `nodad` so they are usable at once.
    pub fn add_addr(&self, addr: Cidr) -> Result<(), CommandError> {
        let text = addr.to_string();
        let mut args = vec!["addr", "add", &text, "dev", &self.name];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.ns.ip_run(args).map(drop)
    }

    /// Enslaves this interface to `bridge` (same namespace).
    pub fn set_master(&self, bridge: &str) -> Result<(), CommandError> {
        self.ns
            .ip_run(["link", "set", &self.name, "master", bridge])
            .map(drop)
    }

    /// Sets a sysctl under `net.ipv4.conf.NAME` / `net.ipv6.conf.NAME` (`family` is 4 or 6).
    pub fn conf(&self, family: u8, key: &str, value: &str) -> Result<(), crate::netns::NetnsError> {
        let family = if family == 6 { "ipv6" } else { "ipv4" };
        // Interface names may contain dots, which sysctl paths spell as '/'.
        let path = format!("net.{family}.conf.{}.{key}", self.name.replace('.', "/"));
        self.ns.sysctl(&path, value)
    }

    /// Turns off duplicate address detection before the link goes up. Until its link-local
    /// address leaves DAD (1–2 s) a router cannot send neighbour solicitations for forwarded
    /// packets, so the first IPv6 connections through a fresh lab would stall.
    pub fn prepare_ipv6(&self) -> Result<(), LinkError> {
        self.conf(6, "accept_dad", "0")
            .map_err(|e| LinkError::Sysctl {
                iface: self.name.clone(),
                source: Box::new(e),
            })
    }

    /// Whether the link exists.
    #[must_use]
    pub fn exists(&self) -> bool {
        self.ns.ip_run(["link", "show", "dev", &self.name]).is_ok()
    }

    /// The interface index inside its namespace.
    pub fn index(&self) -> Result<u32, CommandError> {
        let out = self.ns.ip_run(["-o", "link", "show", "dev", &self.name])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| CommandError::Failed {
                command: format!("ip -o link show dev {}", self.name),
                status: out.status,
                stderr: format!("unexpected output {text:?}"),
            })
    }

    /// The link's MAC address.
    pub fn mac(&self) -> Result<String, CommandError> {
        let out = self.ns.ip_run(["-o", "link", "show", "dev", &self.name])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        words
            .find(|w| *w == "link/ether")
            .and_then(|_| words.next())
            .map(str::to_owned)
            .ok_or(CommandError::Failed {
                command: format!("ip -o link show dev {}", self.name),
                status: out.status,
                stderr: format!("no link/ether in {text:?}"),
            })
    }

    /// `ip link del`; a link already gone is not an error.
    pub fn delete(&self) -> Result<(), CommandError> {
        match self.ns.ip_run(["link", "del", "dev", &self.name]) {
            Ok(_) => Ok(()),
            // Gone with its namespace or its peer: nothing left to clean.
            Err(e)
                if e.stderr().contains("Cannot find device")
                    || e.stderr().contains("does not exist")
                    || e.stderr().contains("No such file") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// A veth pair; both ends are created directly in their namespaces and brought up. Dropping it
/// deletes the pair (a no-op if a namespace deletion already took it).
#[derive(Debug)]
pub struct Veth {
    a: Iface,
    b: Iface,
}

impl Veth {
    /// Creates `a` <-> `b` (each end may be in any namespace, names unique there) and sets both up.
    pub fn create(a: Iface, b: Iface) -> Result<Self, LinkError> {
        check_ifname(&a.name)?;
        check_ifname(&b.name)?;
        let mut args = vec!["link", "add", "name", &a.name];
        if let Some(ns) = a.ns.name() {
            args.extend(["netns", ns]);
        }
        args.extend(["type", "veth", "peer", "name", &b.name]);
        if let Some(ns) = b.ns.name() {
            args.extend(["netns", ns]);
        }
        // Runs in the root namespace; `netns` places each end where it belongs.
        Ns::Root.ip_run(&args)?;
        let veth = Self { a, b };
        for end in [&veth.a, &veth.b] {
            end.prepare_ipv6()?;
            end.up()?;
        }
        Ok(veth)
    }

    #[must_use]
    pub fn a(&self) -> &Iface {
        &self.a
    }

    #[must_use]
    pub fn b(&self) -> &Iface {
        &self.b
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        if let Err(e) = self.a.delete() {
            crate::report_drop_failure(&format!("veth {}", self.a.name), &e);
        }
    }
}

/// A Linux bridge (up, STP off, no forwarding delay), deleted on drop.
#[derive(Debug)]
pub struct Bridge {
    iface: Iface,
}

impl Bridge {
    pub fn create(ns: &Ns, name: &str) -> Result<Self, LinkError> {
        check_ifname(name)?;
        ns.ip_run([
            "link",
            "add",
            "name",
            name,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        let bridge = Self {
            iface: Iface::new(ns, name),
        };
        bridge.iface.prepare_ipv6()?;
        bridge.iface.up()?;
        Ok(bridge)
    }

    #[must_use]
    pub fn iface(&self) -> &Iface {
        &self.iface
    }

    /// Enslaves `port` (in the bridge's namespace) and brings it up.
    pub fn attach(&self, port: &Iface) -> Result<(), CommandError> {
        port.set_master(&self.iface.name)?;
        port.up()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Err(e) = self.iface.delete() {
            crate::report_drop_failure(&format!("bridge {}", self.iface.name), &e);
        }
    }
}

/// A route: `dest` (use `0.0.0.0/0` or `::/0` for default) via a gateway and/or a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dest: Cidr,
    pub via: Option<IpAddr>,
    pub dev: Option<String>,
    /// Gateway is reachable on `dev` even without a covering prefix (`onlink`).
    pub onlink: bool,
}

impl Route {
    /// A route to `dest` straight out of `dev`.
    #[must_use]
    pub fn dev(dest: Cidr, dev: &str) -> Self {
        Self {
            dest,
            via: None,
            dev: Some(dev.to_owned()),
            onlink: false,
        }
    }

    /// A default route via `gateway` on `dev`, `onlink` (for /32 and /128 pod addresses).
    #[must_use]
    pub fn default_via(gateway: IpAddr, dev: &str) -> Self {
        let any = if gateway.is_ipv6() {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        };
        Self {
            dest: Cidr::new(any, 0).expect("/0 is valid"),
            via: Some(gateway),
            dev: Some(dev.to_owned()),
            onlink: true,
        }
    }

    /// A route to `dest` via `gateway` (resolved by the kernel's existing routes).
    #[must_use]
    pub fn via(dest: Cidr, gateway: IpAddr) -> Self {
        Self {
            dest,
            via: Some(gateway),
            dev: None,
            onlink: false,
        }
    }

    /// The `ip route replace ...` arguments.
    #[must_use]
    pub fn args(&self) -> Vec<String> {
        let family = if self.dest.is_ipv6() { "-6" } else { "-4" };
        let mut args: Vec<String> = vec![
            family.into(),
            "route".into(),
            "replace".into(),
            self.dest.network().to_string(),
        ];
        if let Some(via) = self.via {
            args.extend(["via".into(), via.to_string()]);
        }
        if let Some(dev) = &self.dev {
            args.extend(["dev".into(), dev.clone()]);
        }
        if self.onlink {
            args.push("onlink".into());
        }
        args
    }

    /// Installs (or replaces) the route in `ns`.
    pub fn add(&self, ns: &Ns) -> Result<(), CommandError> {
        ns.ip_run(self.args()).map(drop)
    }
}

/// Whether this kernel can make netkit devices (Linux ≥ 6.7 built with `CONFIG_NETKIT`; a
/// kernel version alone does not tell): one made in a throwaway netns says, once per process.
#[must_use]
pub fn kernel_has_netkit() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        crate::netns::Netns::new("nkpr").is_ok_and(|ns| {
            ns.ns()
                .ip_run(["link", "add", "nkprobe", "type", "netkit"])
                .is_ok()
        })
    })
}

/// The kind of link `dev` in `ns` (`veth`, `netkit`, ...; empty for a device without one).
pub fn link_kind(ns: &Ns, dev: &str) -> Result<String, CommandError> {
    let out = ns.ip_run(["-d", "-j", "link", "show", "dev", dev])?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(links[0]["linkinfo"]["info_kind"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_arguments() {
        let r = Route::default_via("10.244.0.1".parse().unwrap(), "eth0");
        assert_eq!(
            r.args().join(" "),
            "-4 route replace 0.0.0.0/0 via 10.244.0.1 dev eth0 onlink"
        );
        let r = Route::dev("fd00::5/128".parse().unwrap(), "vx");
        assert_eq!(r.args().join(" "), "-6 route replace fd00::5/128 dev vx");
        let r = Route::via(
            "10.244.1.9/24".parse().unwrap(),
            "192.168.50.2".parse().unwrap(),
        );
        assert_eq!(
            r.args().join(" "),
            "-4 route replace 10.244.1.0/24 via 192.168.50.2"
        );
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("v123456789abcde").is_ok());
        assert!(check_ifname("v123456789abcdef").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("").is_err());
    }
}
