//! The adapter between an SDK [`App`] and the ABI's `App` trait object. Every
//! callback runs under `catch_unwind`: a panic in a plugin becomes an error
//! value, and the server closes only the connection concerned (with 1011)
//! instead of the whole process aborting at the FFI boundary.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};

use super::handshake::abi_headers;
use super::{App, Context, Error, Handshake, Host, Message, Push, PushDecision, PushTarget};
use crate::abi::{self, AppBox, ConnId, HostBox};

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "panic with a non-text payload".to_owned(),
        },
    }
}

/// Runs a callback, turning an error or a panic into a `CallbackError`.
pub(super) fn guard<T>(f: impl FnOnce() -> Result<T, Error>) -> RResult<T, abi::CallbackError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(error)) => RResult::RErr(abi::CallbackError {
            panicked: false,
            message: error.to_string().into(),
        }),
        Err(payload) => RResult::RErr(abi::CallbackError {
            panicked: true,
            message: panic_message(payload).into(),
        }),
    }
}

/// Puts an SDK [`App`] behind the ABI's `App` trait object.
struct AppAdapter<T>(T);

impl<T: App> abi::App for AppAdapter<T> {
    fn on_handshake(
        &self,
        request: &abi::HandshakeRequest<'_>,
    ) -> RResult<abi::HandshakeResponse, abi::CallbackError> {
        guard(|| {
            let handshake = Handshake { request };
            Ok(match self.0.on_handshake(&handshake) {
                Ok(accept) => abi::HandshakeResponse::Accept(abi::Acceptance {
                    subprotocol: accept.subprotocol.map(RString::from).into(),
                    data: accept.data.into(),
                    headers: abi_headers(accept.headers),
                }),
                Err(reject) => abi::HandshakeResponse::Reject(abi::Rejection {
                    status: reject.status,
                    body: reject.body.into(),
                    headers: abi_headers(reject.headers),
                }),
            })
        })
    }

    fn on_open(&self, conn: ConnId) -> RResult<(), abi::CallbackError> {
        guard(|| self.0.on_open(conn))
    }

    fn on_message(
        &self,
        conn: ConnId,
        message: abi::MessageRef<'_>,
    ) -> RResult<(), abi::CallbackError> {
        guard(|| self.0.on_message(conn, Message::from_abi(message)))
    }

    fn on_close(
        &self,
        conn: ConnId,
        code: u16,
        reason: RStr<'_>,
    ) -> RResult<(), abi::CallbackError> {
        guard(|| {
            self.0.on_close(conn, code, reason.as_str());
            Ok(())
        })
    }

    fn on_error(&self, conn: ConnId, error: RStr<'_>) -> RResult<(), abi::CallbackError> {
        guard(|| {
            self.0.on_error(conn, error.as_str());
            Ok(())
        })
    }

    fn on_shutdown(&self) -> RResult<(), abi::CallbackError> {
        guard(|| {
            self.0.on_shutdown();
            Ok(())
        })
    }

    fn save_state(&self) -> RResult<ROption<RVec<u8>>, abi::CallbackError> {
        guard(|| Ok(self.0.save_state()?.map(RVec::from).into()))
    }

    fn on_resume(&self, conn: ConnId) -> RResult<(), abi::CallbackError> {
        guard(|| self.0.on_resume(conn))
    }

    fn on_lost(&self, conn: ConnId) -> RResult<(), abi::CallbackError> {
        guard(|| self.0.on_lost(conn))
    }

    fn on_push(
        &self,
        push: &abi::PushRequest<'_>,
    ) -> RResult<abi::PushVerdict, abi::CallbackError> {
        guard(|| {
            let target = match (push.kind, push.client.into_option()) {
                (abi::PushTargetKind::CLIENT, Some(conn)) => PushTarget::Client(conn),
                (abi::PushTargetKind::GROUP, _) => PushTarget::Group(push.group.as_str()),
                _ => PushTarget::App,
            };
            let decision = self.0.on_push(&Push {
                target,
                message: Message::from_abi(push.message),
            })?;
            let (action, replacement, reason) = match decision {
                PushDecision::Deliver => (abi::PushAction::DELIVER, None, String::new()),
                PushDecision::ReplaceText(text) => (
                    abi::PushAction::REPLACE,
                    Some(abi::OwnedMessage::Text(text.into())),
                    String::new(),
                ),
                PushDecision::ReplaceBinary(bytes) => (
                    abi::PushAction::REPLACE,
                    Some(abi::OwnedMessage::Binary(bytes.into())),
                    String::new(),
                ),
                PushDecision::Veto(reason) => (abi::PushAction::VETO, None, reason),
            };
            Ok(abi::PushVerdict {
                action,
                replacement: replacement.into(),
                reason: reason.into(),
            })
        })
    }
}

/// Builds an app instance behind the ABI: the body of every plugin's constructor.
#[doc(hidden)]
pub fn new_app<T: App>(
    host: HostBox,
    config_json: RStr<'_>,
    saved_state: ROption<RSlice<'_, u8>>,
) -> RResult<AppBox, RString> {
    let context = Context {
        host: Host::from_abi(host),
        config_json: config_json.as_str().to_owned(),
        saved_state: saved_state.into_option().map(|s| s.as_slice().to_vec()),
    };
    match catch_unwind(AssertUnwindSafe(|| T::new(context))) {
        Ok(Ok(app)) => RResult::ROk(abi::App_TO::from_value(AppAdapter(app), TD_Opaque)),
        Ok(Err(error)) => RResult::RErr(error.to_string().into()),
        Err(payload) => {
            RResult::RErr(format!("constructor panicked: {}", panic_message(payload)).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_errors_and_panics_into_values() {
        let err = guard::<()>(|| Err("nope".into()))
            .into_result()
            .unwrap_err();
        assert!(!err.panicked);
        assert_eq!(err.message.as_str(), "nope");
        let err = guard::<()>(|| panic!("boom {}", 1))
            .into_result()
            .unwrap_err();
        assert!(err.panicked);
        assert_eq!(err.message.as_str(), "boom 1");
    }
}
