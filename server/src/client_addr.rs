//! One idea of "the client's address", used by every check that looks at
//! one: the per-address connection limit, the allow-lists of the push API,
//! health, metrics and the app list, and the peer an app sees (the hub's
//! backend check).
//!
//! It is the TCP peer, unless the peer is one of `[server] trusted_proxies`:
//! then it is what the proxy reports, from `Forwarded` (RFC 7239) or else
//! `X-Forwarded-For`, read from the right (the entries the nearest proxies
//! appended) to the first address that is not a trusted proxy. Entries are
//! written as proxies write them: `203.0.113.9`, `203.0.113.9:4711`,
//! `[2001:db8::1]:4711`, `2001:db8::1`, and in `Forwarded` quoted. An entry
//! on that walk that does not parse (`unknown`, an obfuscated name, garbage)
//! fails closed: the request is refused, rather than judged by the proxy's
//! own address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The proxy reported an address that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot tell the client's address: the {header} entry {entry:?} is not an address")]
pub struct BadForwarded {
    /// `Forwarded` or `X-Forwarded-For`.
    pub header: &'static str,
    /// The entry.
    pub entry: String,
}

/// The client's address (port 0 when the proxy did not report one).
///
/// # Errors
/// The peer is a trusted proxy and an entry on the walk does not parse.
pub fn client_addr(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Result<SocketAddr, BadForwarded> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    if trusted.is_empty() || !is_trusted(peer.ip()) {
        return Ok(peer);
    }
    let (header, entries) = match forwarded_for(headers) {
        Some(entries) => ("Forwarded", entries),
        None => ("X-Forwarded-For", x_forwarded_for(headers)),
    };
    let mut client = peer;
    for entry in entries.iter().rev() {
        let addr = parse_entry(entry).ok_or_else(|| BadForwarded {
            header,
            entry: entry.clone(),
        })?;
        client = addr;
        if !is_trusted(addr.ip()) {
            break;
        }
    }
    Ok(client)
}

/// The `for=` values of every `Forwarded` header, in order, unquoted.
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<String>> {
    let values: Vec<&str> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(
        values
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| value.trim().trim_matches('"').to_owned())
                })
            })
            .collect(),
    )
}

/// The entries of every `X-Forwarded-For` header, in order.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|entry| entry.trim().to_owned())
        .filter(|entry| !entry.is_empty())
        .collect()
}

/// `ip`, `ip:port`, `[v6]` or `[v6]:port`.
fn parse_entry(entry: &str) -> Option<SocketAddr> {
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr);
    }
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    const PROXY: &str = "10.0.0.1:5555";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_its_own_address() {
        let peer: SocketAddr = PROXY.parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_addr(peer, &h, &[]).unwrap(), peer);
        assert_eq!(
            client_addr(peer, &h, &nets(&["192.168.0.0/16"])).unwrap(),
            peer
        );
    }

    #[test]
    fn entries_are_read_as_proxies_write_them() {
        let peer: SocketAddr = PROXY.parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        for (value, expected) in [
            ("203.0.113.9", "203.0.113.9"),
            ("203.0.113.9:4711", "203.0.113.9"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("198.51.100.7, 203.0.113.9, 10.0.0.2", "203.0.113.9"),
        ] {
            let h = headers(&[("x-forwarded-for", value)]);
            assert_eq!(
                client_addr(peer, &h, &trusted).unwrap().ip(),
                ip(expected),
                "{value}"
            );
        }
        let h = headers(&[(
            "forwarded",
            r#"for=198.51.100.7, for="[2001:db8:cafe::17]:4711";proto=https"#,
        )]);
        assert_eq!(
            client_addr(peer, &h, &trusted).unwrap().ip(),
            ip("2001:db8:cafe::17")
        );
        // Forwarded wins over X-Forwarded-For.
        let h = headers(&[
            ("forwarded", "for=192.0.2.60"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            client_addr(peer, &h, &trusted).unwrap().ip(),
            ip("192.0.2.60")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_addr(peer, &HeaderMap::new(), &trusted).unwrap(),
            peer
        );
    }

    #[test]
    fn an_entry_that_does_not_parse_fails_closed() {
        let peer: SocketAddr = PROXY.parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        for value in ["unknown", "203.0.113.9:x", "not an address"] {
            let h = headers(&[("x-forwarded-for", value)]);
            assert!(client_addr(peer, &h, &trusted).is_err(), "{value}");
        }
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(
            client_addr(peer, &h, &trusted).unwrap_err().to_string(),
            "cannot tell the client's address: the Forwarded entry \"_hidden\" is not an address"
        );
        // Garbage left of the client (client-supplied) is never reached.
        let h = headers(&[("x-forwarded-for", "garbage, 203.0.113.9")]);
        assert_eq!(
            client_addr(peer, &h, &trusted).unwrap().ip(),
            ip("203.0.113.9")
        );
    }
}
