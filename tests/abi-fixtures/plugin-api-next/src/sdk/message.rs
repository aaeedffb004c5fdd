//! Messages as an app sees them: borrowed text or bytes, never copied on the
//! way in, with helpers for JSON protocols.

use abi_stable::std_types::{RSlice, RStr};
use serde::de::DeserializeOwned;

use crate::abi;

/// A message, borrowed: what an app receives and what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&'a str> {
        match *self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }

    /// The payload bytes, whatever the kind.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// Parses a text message as JSON (a command of a JSON protocol); the error
    /// says why not, in words fit for an error reply to the client.
    ///
    /// # Errors
    /// A binary message, or text that is not valid JSON for `T`.
    pub fn parse_json<T: DeserializeOwned>(&self) -> Result<T, String> {
        match self {
            Message::Text(text) => {
                serde_json::from_str(text).map_err(|e| format!("invalid command: {e}"))
            }
            Message::Binary(_) => Err("binary messages are not part of this protocol".to_owned()),
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn to_abi(self) -> abi::MessageRef<'a> {
        match self {
            Message::Text(text) => abi::MessageRef::Text(RStr::from_str(text)),
            Message::Binary(bytes) => abi::MessageRef::Binary(RSlice::from_slice(bytes)),
        }
    }

    pub(super) fn from_abi(message: abi::MessageRef<'a>) -> Self {
        match message {
            abi::MessageRef::Text(text) => Message::Text(text.as_str()),
            abi::MessageRef::Binary(bytes) => Message::Binary(bytes.as_slice()),
        }
    }
}

impl<'a> From<&'a str> for Message<'a> {
    fn from(text: &'a str) -> Self {
        Message::Text(text)
    }
}

impl<'a> From<&'a String> for Message<'a> {
    fn from(text: &'a String) -> Self {
        Message::Text(text)
    }
}

impl<'a> From<&'a [u8]> for Message<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Message::Binary(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for Message<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Message::Binary(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_reports_its_payload() {
        let text = Message::from("héllo");
        assert_eq!(text.as_text(), Some("héllo"));
        assert_eq!(text.len(), 6);
        assert!(Message::Binary(&[]).is_empty());
    }
}
