//! Addresses and who is trusted: `ip_in_cidr`, `ip_in_any`, `is_private_ip`, and the
//! cluster's networks and trusted principals of `[scripts.settings]`
//! (`in_cluster_networks`, `event.from_cluster_networks()`, `is_trusted_principal`), with
//! the settings' own validation for the config's load ([`settings_problems`]).
//!
//! Owns CIDR parsing and matching (std::net; an IPv4-mapped IPv6 address or network is
//! its IPv4 one); calls `runtime` (the settings), `glob` and `event`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::LazyLock;

use rhai::plugin::*;
use rhai::{Array, EvalAltResult, ImmutableString};

use super::event::ScriptEvent;
use super::runtime::setting_strings;
use crate::rules::glob::glob_match;

/// The setting naming the cluster's networks: an array of CIDRs.
pub const CLUSTER_NETWORKS: &str = "cluster_networks";

/// The setting naming the trusted principals: an array of user names or globs.
pub const TRUSTED_PRINCIPALS: &str = "trusted_principals";

/// The ranges `is_private_ip` accepts, and the cluster's networks while
/// `cluster_networks` is not set: RFC 1918, RFC 6598 (shared address space), loopback,
/// link-local, IPv6 unique-local.
pub const PRIVATE_NETWORKS: [&str; 9] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
];

static PRIVATE: LazyLock<Vec<Cidr>> = LazyLock::new(|| {
    PRIVATE_NETWORKS
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
});

/// An IP network: an address and a prefix length. Host bits are ignored (`10.1.2.3/8` is
/// `10.0.0.0/8`); a bare address is the network of that address alone (/32, /128); an
/// IPv4-mapped IPv6 network of prefix 96 or more (`::ffff:10.0.0.0/104`) is its IPv4 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Text that is not a CIDR, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a network like 10.0.0.0/8, fd00::/8 or one address: {reason}")]
pub struct CidrError {
    text: String,
    reason: &'static str,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let fail = |reason| CidrError {
            text: text.to_owned(),
            reason,
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| fail("the address is neither IPv4 nor IPv6"))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => u32::from(max),
            // Digits only (no sign, no spaces); a number too large for u32 is too long too.
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u32>().unwrap_or(u32::MAX)
            }
            Some(_) => return Err(fail("the prefix length is not a number")),
        };
        if prefix > u32::from(max) {
            return Err(fail(if max == 32 {
                "an IPv4 prefix length is at most 32"
            } else {
                "an IPv6 prefix length is at most 128"
            }));
        }
        let prefix = u8::try_from(prefix).unwrap_or(max);
        Ok(Cidr::new(addr, prefix))
    }
}

impl Cidr {
    /// The network of `prefix` bits around `addr`, an IPv4-mapped one as IPv4.
    fn new(addr: IpAddr, prefix: u8) -> Self {
        match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => Cidr { addr, prefix },
            },
            _ => Cidr { addr, prefix },
        }
    }

    /// Whether `ip` is inside the network; an IPv4 address and an IPv6 network (or the
    /// reverse) never match, once mapped addresses and networks are read as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether the first `prefix` of the `width` low bits of `a` and `b` are equal.
fn same_prefix(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let host_bits = width - u32::from(prefix);
    (a ^ b).checked_shr(host_bits).unwrap_or(0) == 0
}

/// An address as scripts give it (`"10.0.0.1"`, `"::ffff:10.0.0.1"`), or `None`.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok()
}

/// Whether `ip` is in a private range ([`PRIVATE_NETWORKS`]); false for what is not an
/// address.
pub fn is_private_ip(ip: &str) -> bool {
    parse_ip(ip).is_some_and(|ip| PRIVATE.iter().any(|n| n.contains(ip)))
}

/// One problem of a `[scripts.settings]` value this module reads: the setting's name and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    /// The setting, e.g. `cluster_networks`.
    pub name: &'static str,
    /// What is wrong with its value.
    pub message: String,
}

/// The problems of the settings klaxon gives a meaning to (`cluster_networks`: an array of
/// CIDRs; `trusted_principals`: an array of strings), so a typo fails the config's load
/// instead of every rule that reads them.
pub fn settings_problems(settings: &BTreeMap<String, serde_json::Value>) -> Vec<SettingProblem> {
    let mut problems = Vec::new();
    for name in [CLUSTER_NETWORKS, TRUSTED_PRINCIPALS] {
        let Some(value) = settings.get(name) else {
            continue;
        };
        let mut problem = |message: String| problems.push(SettingProblem { name, message });
        let Some(items) = value
            .as_array()
            .filter(|items| items.iter().all(serde_json::Value::is_string))
        else {
            problem(format!("must be an array of strings, not {value}"));
            continue;
        };
        if name == CLUSTER_NETWORKS {
            for err in items
                .iter()
                .filter_map(|item| item.as_str()?.parse::<Cidr>().err())
            {
                problem(err.to_string());
            }
        }
    }
    problems
}

/// The address, CIDR and trust helpers, with the doc comments the engine's metadata carries.
#[export_module]
pub(super) mod functions {
    use super::*;
    use crate::rules::api::event::functions::Event;

    /// Whether `ip` is inside `cidr` (`10.0.0.0/8`, `fd00::/8`, or one address); false
    /// when `ip` is not an address; a `cidr` that is not a network is an error.
    #[rhai_fn(return_raw)]
    pub fn ip_in_cidr(ip: &str, cidr: &str) -> Result<bool, Box<EvalAltResult>> {
        let net = parse_cidr("ip_in_cidr", cidr)?;
        Ok(parse_ip(ip).is_some_and(|ip| net.contains(ip)))
    }

    /// Whether `ip` is inside at least one CIDR of the array `cidrs`; false when `ip` is
    /// not an address; an item that is not a network is an error.
    #[rhai_fn(return_raw)]
    pub fn ip_in_any(ip: &str, cidrs: Array) -> Result<bool, Box<EvalAltResult>> {
        let nets = parse_cidrs("ip_in_any", &cidrs)?;
        Ok(in_any(ip, &nets))
    }

    /// Whether `ip` is private: RFC 1918, RFC 6598, loopback, link-local or IPv6
    /// unique-local (an IPv4-mapped address as its IPv4 one); false for what is not an
    /// address.
    #[rhai_fn(name = "is_private_ip")]
    pub fn private_ip(ip: &str) -> bool {
        is_private_ip(ip)
    }

    /// Whether `ip` is inside the setting `cluster_networks` (an array of CIDRs), or
    /// private (`is_private_ip`) while it is not set.
    #[rhai_fn(return_raw)]
    pub fn in_cluster_networks(ip: &str) -> Result<bool, Box<EvalAltResult>> {
        Ok(in_any(ip, &cluster_networks()?))
    }

    /// True when the event has source addresses and every one of them is inside the
    /// cluster's networks (`in_cluster_networks`); all but the last can be set by the
    /// client.
    #[rhai_fn(pure, return_raw)]
    pub fn from_cluster_networks(e: &mut Event) -> Result<bool, Box<EvalAltResult>> {
        super::from_cluster_networks(e)
    }

    /// Whether `name` matches a glob of the setting `trusted_principals` (an array of user
    /// names or globs such as `system:serviceaccount:ci:*`); false while it is not set.
    #[rhai_fn(return_raw)]
    pub fn is_trusted_principal(name: &str) -> Result<bool, Box<EvalAltResult>> {
        let patterns = setting_strings(TRUSTED_PRINCIPALS)?.unwrap_or_default();
        Ok(patterns
            .iter()
            .filter_map(|p| p.read_lock::<ImmutableString>())
            .any(|p| glob_match(&p, name)))
    }
}

/// Whether `ip` is an address inside one of `nets`.
fn in_any(ip: &str, nets: &[Cidr]) -> bool {
    parse_ip(ip).is_some_and(|ip| nets.iter().any(|n| n.contains(ip)))
}

/// `cidr` as a network; else the script error of `function`.
fn parse_cidr(function: &str, cidr: &str) -> Result<Cidr, Box<EvalAltResult>> {
    cidr.parse()
        .map_err(|err: CidrError| format!("{function}: {err}").into())
}

/// Every item of `cidrs` as a network; a non-string or a bad network is the script error
/// of `function`.
fn parse_cidrs(function: &str, cidrs: &Array) -> Result<Vec<Cidr>, Box<EvalAltResult>> {
    cidrs
        .iter()
        .map(|item| match item.read_lock::<ImmutableString>() {
            Some(text) => parse_cidr(function, text.as_str()),
            None => Err(format!(
                "{function}: the networks must be strings, not {}",
                item.type_name()
            )
            .into()),
        })
        .collect()
}

/// The setting `cluster_networks`, else the private ranges.
fn cluster_networks() -> Result<Vec<Cidr>, Box<EvalAltResult>> {
    match setting_strings(CLUSTER_NETWORKS)? {
        Some(items) => parse_cidrs(&format!("setting {CLUSTER_NETWORKS}"), &items),
        None => Ok(PRIVATE.clone()),
    }
}

/// `event.from_cluster_networks()`: every source address inside the cluster's networks.
fn from_cluster_networks(e: &ScriptEvent) -> Result<bool, Box<EvalAltResult>> {
    let ips = &e.event().source_ips;
    let nets = cluster_networks()?;
    Ok(!ips.is_empty() && ips.iter().all(|ip| in_any(ip, &nets)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(ip: &str, cidr: &str) -> bool {
        let net: Cidr = cidr.parse().unwrap_or_else(|e| panic!("{cidr}: {e}"));
        in_any(ip, &[net])
    }

    #[test]
    fn ipv4_networks_match_by_prefix() {
        for (ip, cidr, expected) in [
            ("10.1.2.3", "10.0.0.0/8", true),
            ("11.0.0.1", "10.0.0.0/8", false),
            ("10.255.255.255", "10.0.0.0/8", true),
            ("172.31.0.1", "172.16.0.0/12", true),
            ("172.32.0.1", "172.16.0.0/12", false),
            ("203.0.113.9", "0.0.0.0/0", true),
            ("0.0.0.0", "0.0.0.0/0", true),
            ("192.0.2.1", "192.0.2.1/32", true),
            ("192.0.2.2", "192.0.2.1/32", false),
            ("192.0.2.1", "192.0.2.1", true),
            ("192.0.2.2", "192.0.2.1", false),
            // Host bits of the network are ignored.
            ("10.9.9.9", "10.1.2.3/8", true),
            ("255.255.255.255", "255.255.255.254/31", true),
        ] {
            assert_eq!(inside(ip, cidr), expected, "{ip} in {cidr}");
        }
    }

    #[test]
    fn ipv6_networks_match_by_prefix() {
        for (ip, cidr, expected) in [
            ("fd00::1", "fd00::/8", true),
            ("fe00::1", "fd00::/8", false),
            ("2001:db8::1", "::/0", true),
            ("2001:db8::1", "2001:db8::1/128", true),
            ("2001:db8::2", "2001:db8::1/128", false),
            ("2001:db8::1", "2001:db8::1", true),
            ("2001:db8:0:1::5", "2001:db8::/48", true),
            ("2001:db8:1::5", "2001:db8::/48", false),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff::/16", true),
        ] {
            assert_eq!(inside(ip, cidr), expected, "{ip} in {cidr}");
        }
    }

    #[test]
    fn mapped_ipv4_addresses_and_networks_are_ipv4() {
        for (ip, cidr, expected) in [
            ("::ffff:10.1.2.3", "10.0.0.0/8", true),
            ("::ffff:11.1.2.3", "10.0.0.0/8", false),
            ("10.1.2.3", "::ffff:10.0.0.0/104", true),
            ("::ffff:10.1.2.3", "::ffff:10.0.0.0/104", true),
            ("10.1.2.3", "::ffff:0:0/96", true),
            // The families do not mix otherwise.
            ("10.1.2.3", "::/0", false),
            ("::ffff:10.1.2.3", "::/0", false),
            ("2001:db8::1", "0.0.0.0/0", false),
            // IPv4-compatible (deprecated) addresses are IPv6.
            ("::10.1.2.3", "10.0.0.0/8", false),
        ] {
            assert_eq!(inside(ip, cidr), expected, "{ip} in {cidr}");
        }
        assert_eq!(
            "::ffff:10.0.0.0/104".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn what_is_not_an_address_is_in_no_network() {
        for ip in [
            "",
            "10.0.0",
            "10.0.0.256",
            "10.0.0.1:443",
            "10.0.0.1/32",
            " 10.0.0.1",
            "[::1]",
            "fe80::1%eth0",
            "example.com",
        ] {
            assert!(!inside(ip, "0.0.0.0/0"), "{ip:?}");
            assert!(!inside(ip, "::/0"), "{ip:?}");
            assert!(!is_private_ip(ip), "{ip:?}");
        }
    }

    #[test]
    fn bad_networks_are_errors_with_the_reason() {
        for (cidr, reason) in [
            ("", "neither IPv4 nor IPv6"),
            ("10.0.0/8", "neither IPv4 nor IPv6"),
            ("10.0.0.0/33", "at most 32"),
            ("fd00::/129", "at most 128"),
            ("10.0.0.0/", "not a number"),
            ("10.0.0.0/+8", "not a number"),
            ("10.0.0.0/8/8", "not a number"),
            ("10.0.0.0/ 8", "not a number"),
            ("10.0.0.0/1000", "at most 32"),
            ("10.0.0.0/99999999999999999999", "at most 32"),
            ("10.0.0.0/-1", "not a number"),
            ("10.0.0.0-10.0.0.9", "neither IPv4 nor IPv6"),
        ] {
            let err = cidr.parse::<Cidr>().expect_err(cidr).to_string();
            assert!(err.contains(reason), "{cidr:?}: {err}");
            assert!(err.contains(&format!("`{cidr}`")), "{cidr:?}: {err}");
        }
    }

    #[test]
    fn private_ranges_and_their_edges() {
        for ip in [
            "10.0.0.0",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:10.0.0.1",
            "::ffff:192.168.0.1",
        ] {
            assert!(is_private_ip(ip), "{ip} is private");
        }
        for ip in [
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "169.255.0.1",
            "8.8.8.8",
            "0.0.0.0",
            "::",
            "fec0::1",
            "fe00::1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "::2",
        ] {
            assert!(!is_private_ip(ip), "{ip} is public");
        }
        assert_eq!(PRIVATE.len(), PRIVATE_NETWORKS.len(), "every range parses");
    }

    #[test]
    fn the_known_settings_are_checked() {
        let settings = |pairs: serde_json::Value| -> BTreeMap<String, serde_json::Value> {
            serde_json::from_value(pairs).unwrap()
        };
        let good = settings(serde_json::json!({
            "cluster_networks": ["10.0.0.0/8", "fd00::/8", "192.0.2.7"],
            "trusted_principals": ["ci-deployer", "system:serviceaccount:argocd:*"],
            "anything_else": 1,
        }));
        assert_eq!(settings_problems(&good), []);
        let bad = settings(serde_json::json!({
            "cluster_networks": ["10.0.0.0/8", "10.0.0.0/33", "nope"],
            "trusted_principals": "ci-deployer",
        }));
        let problems = settings_problems(&bad);
        let names: Vec<&str> = problems.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["cluster_networks", "cluster_networks", "trusted_principals"]
        );
        assert!(
            problems[0].message.contains("`10.0.0.0/33`"),
            "{problems:?}"
        );
        assert!(problems[1].message.contains("`nope`"), "{problems:?}");
        assert!(
            problems[2].message.contains("array of strings"),
            "{problems:?}"
        );
        let mixed = settings(serde_json::json!({ "cluster_networks": ["10.0.0.0/8", 7] }));
        assert_eq!(settings_problems(&mixed).len(), 1);
    }
}
