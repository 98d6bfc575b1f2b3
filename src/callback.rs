//! Callback URLs and the address rule that keeps the hub from being turned against its own network (SSRF).
//!
//! A callback (or a thin-ping topic URL) must be an absolute `http`/`https` URL without credentials or fragment.
//! Unless `TIDINGS_CALLBACK_ALLOW_PRIVATE=true`, every address it resolves to must be public: loopback, private,
//! link-local, CGNAT, multicast, reserved and cloud metadata addresses are refused — including IPv4 written in
//! decimal/octal/hex (the URL parser normalises those) and IPv4 embedded in IPv6. The rule is checked when a
//! request is accepted and again by the HTTP client's resolver at connection time, so DNS rebinding between the
//! two cannot reach a forbidden address.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use url::{Host, Url};

pub const MAX_CALLBACK_BYTES: usize = 2048;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CallbackUrl(Url);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallbackError {
    #[error("the URL is empty")]
    Empty,
    #[error("the URL is longer than {MAX_CALLBACK_BYTES} bytes")]
    TooLong,
    #[error("the URL is not a valid absolute URL")]
    Invalid,
    #[error("the URL must use http or https")]
    Scheme,
    #[error("the URL must not contain credentials")]
    Credentials,
    #[error("the URL must not contain a fragment")]
    Fragment,
    #[error("the URL contains whitespace or a control character")]
    BadCharacter,
    #[error("the URL contains a `%` that does not start a percent-encoded byte")]
    BadPercentEncoding,
}

impl CallbackUrl {
    pub fn parse(raw: &str) -> Result<Self, CallbackError> {
        if raw.is_empty() {
            return Err(CallbackError::Empty);
        }
        if raw.len() > MAX_CALLBACK_BYTES {
            return Err(CallbackError::TooLong);
        }
        // The URL parser silently drops tabs and newlines and trims spaces; refuse them instead, so what is stored
        // is what was sent and nothing resembling a header can ride along.
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CallbackError::BadCharacter);
        }
        if !percent_encoding_is_valid(raw) {
            return Err(CallbackError::BadPercentEncoding);
        }
        // `http:///x` would be read as `http://x/`: the authority must be there, as sent.
        let authority = raw.split_once("://").map(|(_, rest)| rest);
        if authority.is_none_or(|rest| rest.is_empty() || rest.starts_with(['/', '\\'])) {
            return Err(CallbackError::Invalid);
        }
        let url = Url::parse(raw).map_err(|_| CallbackError::Invalid)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CallbackError::Scheme);
        }
        if url.host().is_none() {
            return Err(CallbackError::Invalid);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CallbackError::Credentials);
        }
        if url.fragment().is_some() {
            return Err(CallbackError::Fragment);
        }
        Ok(Self(url))
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The host and port requests are grouped by for per-host concurrency.
    pub fn host_key(&self) -> String {
        host_key(&self.0)
    }
}

/// Whether every `%` starts a `%HH` escape.
pub fn percent_encoding_is_valid(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'%')
        .all(|(i, _)| bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)))
}

pub fn host_key(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
}

impl fmt::Display for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallbackUrl({})", self.0)
    }
}

/// Why a destination was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    #[error("the callback address {0} is not public (loopback, private, link-local or reserved)")]
    Private(IpAddr),
    #[error("the callback host {0} could not be resolved")]
    Unresolvable(String),
    #[error("the callback host {0} is not public: localhost names this machine")]
    LocalName(String),
}

/// `localhost` and every name under it are this machine (RFC 6761), whatever a resolver says.
fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Checks a URL's destination: literal addresses directly, names by resolving them.
pub async fn check_destination(url: &Url, allow_private: bool) -> Result<(), DestinationError> {
    if allow_private {
        return Ok(());
    }
    match url.host() {
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip)),
        Some(Host::Domain(name)) if is_localhost_name(name) => Err(DestinationError::LocalName(name.to_owned())),
        Some(Host::Domain(name)) => {
            let port = url.port_or_known_default().unwrap_or(80);
            let addrs = tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| DestinationError::Unresolvable(name.to_owned()))?;
            let mut any = false;
            for addr in addrs {
                any = true;
                check_ip(addr.ip())?;
            }
            if any {
                Ok(())
            } else {
                Err(DestinationError::Unresolvable(name.to_owned()))
            }
        }
        None => Err(DestinationError::Unresolvable(String::new())),
    }
}

pub fn check_ip(ip: IpAddr) -> Result<(), DestinationError> {
    if is_public(ip) {
        Ok(())
    } else {
        Err(DestinationError::Private(ip))
    }
}

/// Whether an address is a public unicast address a hub may call.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7 (includes fd00:ec2::254)
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || first == 0x0100) // discard-only
}

/// IPv4 carried inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::/96), 6to4 (2002::/16).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || (s[5] == 0 && !ip.is_loopback() && !ip.is_unspecified())) {
        return Some(tail);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// A resolver for the HTTP client that refuses names resolving to non-public addresses (unless allowed).
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if !allow_private && is_localhost_name(&host) {
                return Err(Box::new(DestinationError::LocalName(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private {
                for addr in &addrs {
                    check_ip(addr.ip()).map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The shared HTTP client for callbacks and topic fetches: keep-alive, no redirects, guarded resolver.
pub fn http_client(allow_private: bool, timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("Tidings/", env!("CARGO_PKG_VERSION"), " (WebSub hub)"))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .build()
        .expect("the HTTP client configuration is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_ip(raw: &str) -> IpAddr {
        match CallbackUrl::parse(raw).unwrap().as_url().host().unwrap() {
            Host::Ipv4(ip) => IpAddr::V4(ip),
            Host::Ipv6(ip) => IpAddr::V6(ip),
            Host::Domain(d) => panic!("{d} is a name"),
        }
    }

    #[test]
    fn loopback_private_and_metadata_addresses_are_not_public() {
        for raw in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:7f00:1::]/",
            "http://224.0.0.1/",
        ] {
            assert!(!is_public(host_ip(raw)), "{raw} should not be public");
        }
    }

    #[test]
    fn public_addresses_are_public() {
        for raw in ["http://93.184.216.34/", "http://[2606:4700::1111]/", "http://8.8.8.8:8080/x"] {
            assert!(is_public(host_ip(raw)), "{raw} should be public");
        }
    }

    #[test]
    fn malformed_callbacks_are_refused() {
        assert_eq!(CallbackUrl::parse(""), Err(CallbackError::Empty));
        assert_eq!(CallbackUrl::parse("not-a-url"), Err(CallbackError::Invalid));
        assert_eq!(CallbackUrl::parse("http:///path"), Err(CallbackError::Invalid));
        assert_eq!(CallbackUrl::parse("http:\\\\example.com/"), Err(CallbackError::Invalid));
        assert_eq!(CallbackUrl::parse("http://example.com/a\r\nX-Injected: 1"), Err(CallbackError::BadCharacter));
        assert_eq!(CallbackUrl::parse("http://example.com/\t"), Err(CallbackError::BadCharacter));
        assert_eq!(CallbackUrl::parse("http://example.com/\0"), Err(CallbackError::BadCharacter));
        assert_eq!(CallbackUrl::parse("ftp://example.com/"), Err(CallbackError::Scheme));
        assert_eq!(CallbackUrl::parse("http://u:p@example.com/"), Err(CallbackError::Credentials));
        assert_eq!(CallbackUrl::parse("http://example.com/#x"), Err(CallbackError::Fragment));
        assert_eq!(CallbackUrl::parse(&format!("http://e.com/{}", "a".repeat(2048))), Err(CallbackError::TooLong));
    }

    #[test]
    fn callbacks_with_whitespace_control_characters_or_bad_escapes_are_refused_not_silently_cleaned() {
        for raw in [
            "http://e.com/cb\r\nX-Injected: 1",
            "http://e.com/c\tb",
            " http://e.com/cb",
            "http://e.com/cb\0",
            "http://e.com/c b",
        ] {
            assert_eq!(CallbackUrl::parse(raw), Err(CallbackError::BadCharacter), "{raw:?}");
        }
        for raw in ["http://e.com/%ZZ", "http://e.com/cb?x=%", "http://e.com/%4"] {
            assert_eq!(CallbackUrl::parse(raw), Err(CallbackError::BadPercentEncoding), "{raw:?}");
        }
        assert!(CallbackUrl::parse("http://e.com/a%20b?x=%2F").is_ok());
    }

    #[test]
    fn the_callback_query_string_is_kept() {
        let url = CallbackUrl::parse("http://example.com/cb?token=abc&x=1").unwrap();
        assert_eq!(url.as_url().query(), Some("token=abc&x=1"));
    }

    #[tokio::test]
    async fn literal_loopback_is_refused_unless_allowed() {
        let url = Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(check_destination(&url, false).await.is_err());
        assert!(check_destination(&url, true).await.is_ok());
        for name in ["localhost", "LOCALHOST", "localhost.", "api.localhost", "a.b.localhost."] {
            let url = Url::parse(&format!("http://{name}:9/")).unwrap();
            assert!(matches!(check_destination(&url, false).await, Err(DestinationError::LocalName(_))), "{name}");
        }
    }
}
