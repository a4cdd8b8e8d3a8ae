//! `trusted_proxies`: the proxies whose `X-Forwarded-For` is believed, as addresses or networks
//! (`10.0.0.2`, `10.0.0.0/8`, `fd00::/8`). The walk that uses them is
//! [`crate::extract::client_ip`].

use std::net::IpAddr;

use ipnet::IpNet;

/// The trusted proxies: networks, a plain address being a network of one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses the configured entries (blank ones are skipped); the error names the bad entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in entries.iter().map(|e| e.as_ref().trim()).filter(|e| !e.is_empty()) {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match entry.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip.to_canonical()),
                    Err(_) => {
                        return Err(format!(
                            "`{entry}` is neither an IP address nor a network such as 10.0.0.0/8"
                        ));
                    }
                },
            };
            nets.push(net);
        }
        Ok(Self(nets))
    }

    /// Whether `ip` is a trusted proxy. An IPv4 address seen as IPv6 (`::ffff:10.0.0.2`, from a
    /// dual-stack socket) counts as the IPv4 one.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn trusted_proxies_accept_addresses_and_networks() {
        let t =
            TrustedProxies::parse(&["10.0.0.0/8", " 192.0.2.7 ", "", "fd00::/8", "::1"]).unwrap();
        for yes in ["10.1.2.3", "10.255.255.255", "192.0.2.7", "fd12::1", "::1", "::ffff:10.0.0.9"]
        {
            assert!(t.contains(ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "192.0.2.8", "fe80::1", "::2", "203.0.113.9"] {
            assert!(!t.contains(ip(no)), "{no}");
        }
        // Host bits past the prefix are dropped, not refused.
        assert!(TrustedProxies::parse(&["10.9.9.9/8"]).unwrap().contains(ip("10.0.0.1")));
        assert!(TrustedProxies::parse::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn trusted_proxies_refuse_what_is_not_an_address_or_network() {
        for bad in ["10.0.0.0/33", "fd00::/129", "localhost", "10.0.0.1:80", "10.0.0/8", "*"] {
            let e = TrustedProxies::parse(&[bad]).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
