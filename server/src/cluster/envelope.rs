//! What crosses Redis between nodes: one JSON header line, then, for a
//! message being delivered, its payload bytes as they are (no base64, no
//! copy into JSON). Every node of a cluster runs the same server version, so
//! the format needs no negotiation; a node that cannot read an envelope logs
//! it and drops it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_plugin_api::ConnId;

/// Who a delivered message is for, among one app's connections on the
/// receiving node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum To {
    /// One connection (sent on its holder's own channel).
    One(String),
    /// Every member of a group.
    Group(String),
    /// Every connection of the app.
    All,
}

/// One change of who is connected or in which group, on the sending node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub(super) enum Change {
    /// A connection opened.
    Open {
        /// Its id.
        id: String,
    },
    /// A connection closed (and left every group).
    Close {
        /// Its id.
        id: String,
    },
    /// A connection joined a group.
    Join {
        /// Its id.
        id: String,
        /// The group.
        group: String,
    },
    /// A connection left a group.
    Leave {
        /// Its id.
        id: String,
        /// The group.
        group: String,
    },
}

/// One app's connections on a node, each with its groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSnapshot {
    /// The app's name.
    pub app: String,
    /// Its connections with their groups.
    pub connections: Vec<(String, Vec<String>)>,
}

/// The header of an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(super) enum Header {
    /// A node is alive (every `heartbeat`, on the shared channel).
    Heartbeat {
        /// Its id.
        node: String,
        /// A number its process drew at start, to tell two processes that
        /// were given the same `node_id` apart.
        instance: u64,
        /// Its connections, all apps together.
        connections: u64,
    },
    /// A node (re)joined: every node answers with a snapshot.
    Hello {
        /// Its id.
        node: String,
    },
    /// A node stops: its connections are gone.
    Bye {
        /// Its id.
        node: String,
    },
    /// Everything a node holds, replacing what others knew of it.
    Snapshot {
        /// Its id.
        node: String,
        /// Its apps.
        apps: Vec<AppSnapshot>,
    },
    /// A change of membership on a node.
    Membership {
        /// Its id.
        node: String,
        /// The app.
        app: String,
        /// What changed.
        #[serde(flatten)]
        change: Change,
    },
    /// A message to deliver; the payload follows the header.
    Deliver {
        /// The sending node.
        node: String,
        /// The app.
        app: String,
        /// Who in it.
        to: To,
        /// A connection to skip.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<String>,
        /// A binary message (else text).
        binary: bool,
        /// When it was published, in microseconds since the Unix epoch.
        sent_us: u64,
    },
    /// Close one connection the receiving node holds.
    Close {
        /// The sending node.
        node: String,
        /// The app.
        app: String,
        /// The connection.
        id: String,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// A push API request for a client the receiving node holds.
    Push {
        /// The asking node (the answer goes to its channel).
        node: String,
        /// The request's number on the asking node.
        request: u64,
        /// The push as the backend wrote it.
        item: Value,
    },
    /// The answer to a `Push`.
    PushReply {
        /// The request's number.
        request: u64,
        /// The HTTP status the holder answered.
        status: u16,
        /// The JSON body it answered.
        body: Value,
    },
}

impl Header {
    /// The node that sent it, when the kind names one.
    pub(super) fn node(&self) -> Option<&str> {
        match self {
            Header::Heartbeat { node, .. }
            | Header::Hello { node }
            | Header::Bye { node }
            | Header::Snapshot { node, .. }
            | Header::Membership { node, .. }
            | Header::Deliver { node, .. }
            | Header::Close { node, .. }
            | Header::Push { node, .. } => Some(node),
            Header::PushReply { .. } => None,
        }
    }

    /// Its kind, for metrics.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Header::Heartbeat { .. } => "heartbeat",
            Header::Hello { .. } | Header::Bye { .. } | Header::Snapshot { .. } => "sync",
            Header::Membership { .. } => "membership",
            Header::Deliver { .. } | Header::Close { .. } => "deliver",
            Header::Push { .. } | Header::PushReply { .. } => "push",
        }
    }
}

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum EnvelopeError {
    /// No newline after the header.
    #[error("no header line")]
    NoHeader,
    /// The header is not one this server knows.
    #[error("unreadable header: {0}")]
    Header(#[from] serde_json::Error),
}

/// The bytes of an envelope.
pub(super) fn encode(header: &Header, payload: &[u8]) -> Vec<u8> {
    // Serializing these types cannot fail: every map key is a string.
    let mut bytes = serde_json::to_vec(header).unwrap_or_default();
    bytes.reserve(1 + payload.len());
    bytes.push(b'\n');
    bytes.extend_from_slice(payload);
    bytes
}

/// An envelope's header and payload.
///
/// # Errors
/// No header line, or a header this server does not know.
pub(super) fn decode(bytes: &[u8]) -> Result<(Header, &[u8]), EnvelopeError> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(EnvelopeError::NoHeader)?;
    let header = serde_json::from_slice(&bytes[..end])?;
    Ok((header, &bytes[end + 1..]))
}

/// A connection id as envelopes write it.
pub(super) fn id_text(id: ConnId) -> String {
    id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_round_trips_with_its_raw_payload() {
        let header = Header::Deliver {
            node: "a".into(),
            app: "/chat".into(),
            to: To::Group("room".into()),
            except: None,
            binary: true,
            sent_us: 7,
        };
        let bytes = encode(&header, b"\n\0raw");
        let (back, payload) = decode(&bytes).unwrap();
        assert_eq!(back, header);
        assert_eq!(payload, b"\n\0raw");
        assert!(decode(b"no newline").is_err());
        assert!(decode(b"{\"t\":\"nope\"}\n").is_err());
    }

    #[test]
    fn membership_changes_are_flat_json() {
        let header = Header::Membership {
            node: "a".into(),
            app: "/chat".into(),
            change: Change::Join {
                id: "x".into(),
                group: "g".into(),
            },
        };
        let bytes = encode(&header, b"");
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "{\"t\":\"membership\",\"node\":\"a\",\"app\":\"/chat\",\"change\":\"join\",\"id\":\"x\",\"group\":\"g\"}\n"
        );
        assert_eq!(decode(&bytes).unwrap().0, header);
    }
}
