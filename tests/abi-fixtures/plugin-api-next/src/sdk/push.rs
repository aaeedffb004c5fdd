//! A push from a backend as the app's `on_push` sees it, and its decision.

use super::Message;
use crate::abi::ConnId;

/// Who a push from a backend is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushTarget<'a> {
    /// One connection.
    Client(ConnId),
    /// Every member of a group.
    Group(&'a str),
    /// Every connection of the app.
    App,
}

/// A message a backend pushes through the push API, before delivery.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    /// Who it is for.
    pub target: PushTarget<'a>,
    /// The message.
    pub message: Message<'a>,
}

/// What the app does with a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushDecision {
    /// Deliver it as pushed.
    Deliver,
    /// Deliver this text instead.
    ReplaceText(String),
    /// Deliver these bytes instead.
    ReplaceBinary(Vec<u8>),
    /// Deliver nothing; the backend gets 409 with this reason.
    Veto(String),
}
