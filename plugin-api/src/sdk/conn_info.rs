//! What the server knows of one open connection ([`ConnInfo`]), and the
//! cookie and query-string helpers it shares with [`super::Handshake`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi_stable::std_types::RString;

use crate::abi::{self, ConnId};

/// What the server knows of one open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The connection's id.
    pub id: ConnId,
    /// The client's address, `ip:port`.
    pub peer: String,
    /// The mount path the client connected to.
    pub path: String,
    /// The raw query string of the handshake, without `?`.
    pub query: String,
    /// The handshake headers kept by the app's `info_headers` setting (lowercase names).
    pub headers: Vec<(String, String)>,
    /// The chosen subprotocol, if any.
    pub subprotocol: Option<String>,
    /// When the connection was opened.
    pub connected_at: SystemTime,
    /// The data the app attached when it accepted the handshake.
    pub data: String,
    /// What the mount's path pattern captured (`/rooms/{room}`), percent-decoded.
    pub params: Vec<(String, String)>,
    /// The negotiated `Sec-WebSocket-Extensions` (empty when none).
    pub extensions: String,
}

impl ConnInfo {
    pub(super) fn from_abi(info: abi::ConnInfo) -> Self {
        ConnInfo {
            id: info.id,
            peer: info.peer.into_string(),
            path: info.path.into_string(),
            query: info.query.into_string(),
            headers: info
                .headers
                .into_iter()
                .map(|h| (h.name.into_string(), h.value.into_string()))
                .collect(),
            subprotocol: info.subprotocol.into_option().map(RString::into_string),
            connected_at: UNIX_EPOCH + Duration::from_millis(info.connected_at_ms),
            data: info.data.into_string(),
            params: info
                .params
                .into_iter()
                .map(|h| (h.name.into_string(), h.value.into_string()))
                .collect(),
            extensions: info.extensions.into_string(),
        }
    }

    /// Whether the connection's messages may be compressed (permessage-deflate
    /// was negotiated). The server compresses and decompresses; the app sees
    /// the same messages either way.
    pub fn compressed(&self) -> bool {
        self.extensions.contains("permessage-deflate")
    }

    /// A value the mount's path pattern captured (`param("room")` for `/rooms/{room}`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a kept header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of a cookie, if the `cookie` header was kept.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .find_map(|(_, v)| find_cookie(v, name))
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        find_query_param(&self.query, name)
    }
}

pub(super) fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

pub(super) fn find_query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_query_parameters_are_found() {
        assert_eq!(find_cookie("a=1; token=abc; b=2", "token"), Some("abc"));
        assert_eq!(find_cookie("a=1", "token"), None);
        assert_eq!(
            find_query_param("x=1&token=a%20b+c", "token").as_deref(),
            Some("a b c")
        );
        assert_eq!(find_query_param("", "token"), None);
    }
}
