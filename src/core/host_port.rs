//! The shape of a `host:port` upstream address, checked without resolving it. A plain
//! value rule with no dependency on the rest of the crate, so that network code can use
//! it without importing the configuration.

use std::net::Ipv6Addr;

/// Checks the shape of an upstream `host:port` without resolving it.
pub fn check_host_port(addr: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or("IPv6 address without \"]:port\"")?;
        v6.parse::<Ipv6Addr>().map_err(|_| "invalid IPv6 address")?;
        (v6, port)
    } else {
        let (host, port) = addr.rsplit_once(':').ok_or("missing \":port\"")?;
        if host.contains(':') {
            return Err("write IPv6 addresses in brackets: [2001:db8::1]:22");
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("empty host");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err("invalid character in host");
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0"),
        Ok(_) => Ok(()),
        Err(_) => Err("port is not a number from 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_shapes() {
        for bad in [
            "nohost",
            "host:",
            "host:0",
            "host:70000",
            ":22",
            "2001:db8::1:22",
            "[2001:db8::1]",
            "[nope]:22",
            "a b:22",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
        for good in [
            "host:22",
            "10.0.0.1:2201",
            "[2001:db8::1]:22",
            "web-1.example.com:65535",
        ] {
            assert_eq!(check_host_port(good), Ok(()), "{good}");
        }
    }
}
