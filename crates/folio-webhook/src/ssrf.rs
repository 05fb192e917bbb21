//! Server-side request forgery protection: a webhook URL must not reach into Folio's own
//! network. Addresses that are private, loopback, link-local, shared (CGNAT), reserved,
//! documentation, benchmarking or multicast — IPv4 and IPv6, including IPv4 embedded in IPv6
//! — are refused unless an operator allow-listed their subnet (development and tests).
//!
//! The check runs twice: on literal IPs when the URL is parsed, and on every address a host
//! name resolves to, inside the HTTP client's resolver ([`PolicyResolver`]). The client
//! connects only to the addresses that resolver returned, so a DNS answer that changes between
//! a check and the connection (rebinding) cannot get around it. Redirects are not followed.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, LazyLock},
};

use ipnet::IpNet;
use reqwest::Url;

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {ip} is {class}, which webhooks may not reach")]
pub struct Refused {
    pub ip: IpAddr,
    pub class: &'static str,
}

/// Every refused range with its class name.
static FORBIDDEN: LazyLock<Vec<(IpNet, &'static str)>> = LazyLock::new(|| {
    [
        ("0.0.0.0/8", "the unspecified network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "reserved (documentation)"),
        ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("198.51.100.0/24", "reserved (documentation)"),
        ("203.0.113.0/24", "reserved (documentation)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "reserved (IPv4-compatible)"),
        ("64:ff9b:1::/48", "reserved (local-use NAT64)"),
        ("100::/64", "reserved (discard-only)"),
        ("2001::/23", "reserved (IETF protocol assignments, Teredo)"),
        ("2001:db8::/32", "reserved (documentation)"),
        ("3fff::/20", "reserved (documentation)"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "reserved (site-local)"),
        ("ff00::/8", "multicast"),
    ]
    .into_iter()
    .map(|(net, class)| (net.parse().expect("a valid CIDR"), class))
    .collect()
});

/// The class of a forbidden address, or `None` for a public one.
pub fn forbidden_class(ip: IpAddr) -> Option<&'static str> {
    // An IPv4 address dressed as IPv6 is judged as the IPv4 address it reaches.
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = embedded_ipv4(v6)
    {
        return forbidden_class(IpAddr::V4(v4));
    }
    FORBIDDEN.iter().find(|(net, _)| net.contains(&ip)).map(|(_, class)| *class)
}

/// IPv4-mapped (`::ffff:a.b.c.d`), NAT64 well-known prefix (`64:ff9b::a.b.c.d`) and 6to4
/// (`2002:aabb:ccdd::`) addresses carry an IPv4 destination.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// The refused ranges minus an explicit allow-list.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let canonical = ip.to_canonical();
        if self.allowed.iter().any(|net| net.contains(&ip) || net.contains(&canonical)) {
            return Ok(());
        }
        match forbidden_class(ip) {
            Some(class) => Err(Refused { ip, class }),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    Syntax(String),
    #[error("webhook URLs must be http or https, not {0}")]
    Scheme(String),
    #[error("webhook URL has no host")]
    NoHost,
    #[error("webhook URLs may not carry credentials")]
    Credentials,
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// A webhook URL that passed the checks possible before resolution.
#[derive(Debug, Clone)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    pub fn parse(s: &str, policy: &AddressPolicy) -> Result<Self, UrlError> {
        let url = Url::parse(s).map_err(|e| UrlError::Syntax(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        match url.host() {
            None => return Err(UrlError::NoHost),
            Some(url::Host::Ipv4(ip)) => policy.check(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => policy.check(IpAddr::V6(ip))?,
            Some(url::Host::Domain(_)) => {}
        }
        Ok(Self(url))
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }
}

/// The HTTP client's resolver: the system resolver, then only permitted addresses survive.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<AddressPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }
}

/// A name whose every address was refused.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to refused addresses: {refused}")]
pub struct RefusedName {
    pub host: String,
    pub refused: String,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut permitted = Vec::new();
            let mut refused = Vec::new();
            for addr in addrs {
                match policy.check(addr.ip()) {
                    Ok(()) => permitted.push(addr),
                    Err(e) => refused.push(e.to_string()),
                }
            }
            if permitted.is_empty() {
                let refused = if refused.is_empty() { "no addresses".to_owned() } else { refused.join("; ") };
                return Err(Box::new(RefusedName { host, refused }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_non_public_class() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
            "2001::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(AddressPolicy::default().check(ip).is_err(), "{ip} must be refused");
        }
    }

    #[test]
    fn accepts_public_addresses() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(AddressPolicy::default().check(ip), Ok(()), "{ip}");
        }
    }

    #[test]
    fn the_allow_list_opens_only_its_subnets() {
        let policy = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("::1".parse().unwrap()).is_err());
        assert!(policy.check("10.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn literal_urls_are_checked_at_parse() {
        let p = AddressPolicy::default();
        for bad in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/",
            "https://[::ffff:169.254.169.254]/",
            "http://10.0.0.1/",
            "http://0x7f000001/",
            "http://2130706433/",
        ] {
            assert!(matches!(WebhookUrl::parse(bad, &p), Err(UrlError::Refused(_))), "{bad}");
        }
        assert!(matches!(WebhookUrl::parse("ftp://example.com/", &p), Err(UrlError::Scheme(_))));
        assert!(matches!(WebhookUrl::parse("http://u:p@example.com/", &p), Err(UrlError::Credentials)));
        assert!(WebhookUrl::parse("https://hooks.example.com/folio", &p).is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_by_the_resolver() {
        use reqwest::dns::Resolve;
        let resolver = PolicyResolver::new(Arc::new(AddressPolicy::default()));
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("loopback"), "{err}");
        let allowed = PolicyResolver::new(Arc::new(AddressPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])));
        assert!(allowed.resolve("localhost".parse().unwrap()).await.is_ok());
    }
}
