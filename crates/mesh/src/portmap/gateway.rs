//! The default gateway's IPv4 address, from the routing table: where PCP and NAT-PMP
//! requests go.
//!
//! Linux: `/proc/net/route`. macOS: `route -n get default` (the routing socket would need
//! unsafe code; the command ships with the system). Elsewhere: none, and the port is
//! mapped by UPnP alone.

use std::net::Ipv4Addr;

/// The default IPv4 gateway now, if the routing table has one. Blocking (reads a file or
/// runs a command).
pub fn default_ipv4() -> Option<Ipv4Addr> {
    #[cfg(target_os = "linux")]
    {
        let table = std::fs::read_to_string("/proc/net/route").ok()?;
        from_proc_net_route(&table)
    }
    #[cfg(target_os = "macos")]
    {
        let out = std::process::Command::new("/sbin/route")
            .args(["-n", "get", "default"])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        from_route_get(&String::from_utf8_lossy(&out.stdout))
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        None
    }
}

/// The default route with the lowest metric in Linux's `/proc/net/route`, whose fields
/// are hexadecimal in the kernel's byte order (the address's bytes in memory order).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn from_proc_net_route(table: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| u32::from_str_radix(fields.get(i)?, 16).ok();
            let (destination, gateway, flags) = (hex(1)?, hex(2)?, hex(3)?);
            let metric: u32 = fields.get(6)?.parse().ok()?;
            let mask = hex(7)?;
            let default = destination == 0 && mask == 0;
            let usable = flags & RTF_UP != 0 && flags & RTF_GATEWAY != 0 && gateway != 0;
            (default && usable).then_some((metric, Ipv4Addr::from(gateway.to_ne_bytes())))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gateway)| gateway)
}

/// The `gateway:` line of macOS's `route -n get default`.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub fn from_route_get(output: &str) -> Option<Ipv4Addr> {
    output.lines().find_map(|line| {
        let value = line.trim().strip_prefix("gateway:")?;
        value.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        let gw = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let table = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             wlan0\t00000000\t{}\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             eth0\t00000000\t{}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
             tun0\t00000000\t{}\t0001\t0\t0\t1\t00000000\t0\t0\t0\n",
            gw([10, 0, 0, 1]),
            gw([192, 168, 1, 1]),
            gw([172, 16, 0, 1]),
        );
        assert_eq!(
            from_proc_net_route(&table),
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
        assert_eq!(from_proc_net_route("Iface\tDestination\n"), None);
        assert_eq!(from_proc_net_route("header\ngarbage line\n\t\t\n"), None);
    }

    #[test]
    fn macos_route_output_names_the_gateway() {
        let out = "   route to: default\ndestination: default\n       mask: default\n    \
                   gateway: 192.168.1.1\n  interface: en0\n";
        assert_eq!(from_route_get(out), Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(from_route_get("gateway: fe80::1%en0\n"), None);
        assert_eq!(from_route_get(""), None);
    }
}
