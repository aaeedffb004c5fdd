//! The handshake as `on_handshake` sees it ([`Handshake`]) and the app's two
//! answers: [`Accept`] (with a subprotocol, data, headers) or [`Reject`].

use abi_stable::std_types::RVec;

use super::conn_info::{find_cookie, find_query_param};
use crate::abi::{self, ConnId};

/// The WebSocket upgrade request, as `on_handshake` sees it.
pub struct Handshake<'a> {
    pub(super) request: &'a abi::HandshakeRequest<'a>,
}

impl<'a> Handshake<'a> {
    /// The id the connection will have if accepted.
    pub fn conn(&self) -> ConnId {
        self.request.conn
    }

    /// The client's address, `ip:port`.
    pub fn peer(&self) -> &'a str {
        self.request.peer.as_str()
    }

    /// The request path.
    pub fn path(&self) -> &'a str {
        self.request.path.as_str()
    }

    /// The raw query string, without `?`.
    pub fn query(&self) -> &'a str {
        self.request.query.as_str()
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        find_query_param(self.query(), name)
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every header with a UTF-8 value, names lowercase.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.request
            .headers
            .as_slice()
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
    }

    /// The value of a cookie.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers()
            .filter(|(n, _)| *n == "cookie")
            .find_map(|(_, v)| find_cookie(v, name))
    }

    /// The subprotocols offered, in the client's order of preference.
    pub fn subprotocols(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.request
            .subprotocols
            .as_slice()
            .iter()
            .map(|p| p.as_str())
    }

    /// A value the mount's path pattern captured (`param("room")` for
    /// `/rooms/{room}`), percent-decoded.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Everything the mount's path pattern captured, in path order.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.request
            .params
            .as_slice()
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
    }

    /// Whether the client offered `protocol`.
    pub fn offers(&self, protocol: &str) -> bool {
        self.subprotocols().any(|p| p == protocol)
    }
}

/// The app accepts a handshake. `Accept::default()` accepts with no
/// subprotocol and no data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accept {
    pub(super) subprotocol: Option<String>,
    pub(super) data: String,
    pub(super) headers: Vec<(String, String)>,
}

impl Accept {
    /// Accepts with no subprotocol (unless the app's config lists one the client offers).
    pub fn new() -> Self {
        Accept::default()
    }

    /// Chooses a subprotocol; it must be one the client offered.
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocol = Some(protocol.into());
        self
    }

    /// Attaches per-connection data, returned later by `Host::info`.
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = data.into();
        self
    }

    /// Adds a header to the 101 response.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The app refuses a handshake with an HTTP error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub(super) status: u16,
    pub(super) body: String,
    pub(super) headers: Vec<(String, String)>,
}

impl Reject {
    /// Refuses with an HTTP status (400..=599) and a plain-text body.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Reject {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the refusal (for example `www-authenticate`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

pub(super) fn abi_headers(headers: Vec<(String, String)>) -> RVec<abi::Header> {
    headers
        .into_iter()
        .map(|(name, value)| abi::Header {
            name: name.into(),
            value: value.into(),
        })
        .collect()
}
