//! The rig's own network: a bridge with a private /24 address, no uplink and no forwarding (so
//! nothing leaves the machine), and the persistent tap devices QEMU guests attach to (as
//! Proxmox's `tap<vmid>i<N>`). Reads `/sys/class/net` and `ip -o -4 addr` to pick a bridge name
//! and subnet nobody uses; creates links with `ip`.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::command::run;
use crate::ledger::{Ledger, Undo};

/// The rig's bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    pub name: String,
    /// The /24 is `10.213.<subnet>.0/24`; the bridge is `.1`.
    pub subnet: u8,
}

impl Bridge {
    pub fn address(&self) -> Ipv4Addr {
        self.host(1)
    }
    /// The address `.<last>` in the bridge's /24.
    pub fn host(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, last)
    }
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The third octets of `10.213.x.0/24` already on some interface (`ip -o -4 addr` text).
pub fn used_subnets(ip_addr_text: &str) -> Vec<u8> {
    ip_addr_text
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|cidr| cidr.split('/').next()?.parse::<Ipv4Addr>().ok())
        .filter(|a| a.octets()[..2] == [10, 213])
        .map(|a| a.octets()[2])
        .collect()
}

/// Creates a bridge `rigbr<k>` with `10.213.<k>.1/24` for the first k whose name and subnet are
/// free, and brings it up. No port is an uplink; IP forwarding is not touched.
pub fn create_bridge(ledger: &mut Ledger) -> anyhow::Result<Bridge> {
    let used = used_subnets(&run("ip", &["-o", "-4", "addr"])?);
    for k in 0..=250u8 {
        let name = format!("rigbr{k}");
        if link_exists(&name) || used.contains(&k) {
            continue;
        }
        run("ip", &["link", "add", &name, "type", "bridge"])?;
        ledger.record(Undo::DeleteLink(name.clone()))?;
        let bridge = Bridge { name, subnet: k };
        run(
            "ip",
            &["addr", "add", &format!("{}/24", bridge.address()), "dev", &bridge.name],
        )?;
        run("ip", &["link", "set", &bridge.name, "up"])?;
        return Ok(bridge);
    }
    bail!("no free rigbr<k> name and 10.213.<k>.0/24 subnet")
}

/// Creates a persistent tap device on the bridge (QEMU opens it with `script=no`).
pub fn create_tap(name: &str, bridge: &Bridge, ledger: &mut Ledger) -> anyhow::Result<()> {
    if link_exists(name) {
        bail!("{name} exists already: not the rig's");
    }
    run("ip", &["tuntap", "add", "dev", name, "mode", "tap"])?;
    ledger.record(Undo::DeleteLink(name.to_owned()))?;
    run("ip", &["link", "set", name, "master", &bridge.name, "up"])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_in_use() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\n\
                    5: rigbr0    inet 10.213.0.1/24 scope global rigbr0\n\
                    6: x    inet 10.213.7.9/16 scope global x\n\
                    7: y    inet 10.214.1.1/24 scope global y\n";
        assert_eq!(used_subnets(text), vec![0, 7]);
        let b = Bridge {
            name: "rigbr3".into(),
            subnet: 3,
        };
        assert_eq!(b.address(), Ipv4Addr::new(10, 213, 3, 1));
        assert_eq!(b.host(11).to_string(), "10.213.3.11");
    }
}
