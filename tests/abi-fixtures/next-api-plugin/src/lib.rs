//! A plugin built against a made-up future switchboard-plugin-api 0.2.99
//! (`../plugin-api-next`: today's, with one method appended to `Host` and one
//! to `App`). It uses every callback and every host call, including the one
//! the server does not have, so the test loading it into today's server shows
//! call by call what a plugin built against a newer plugin-api gets.
//!
//! Each text message is a JSON command answered with `{"result": ...}`:
//! `send`, `broadcast` (`except_me`), `close` (`code`, `reason`),
//! `connections`, `info`, `join`/`leave`/`members` (`group`), `publish`
//! (`group`, `text`, `except_me`), `log`, `fail`, `panic`, `stats`.
//! Handshake: `?reject=1` is refused with 403; a client offering `legacy.v1`
//! gets it; every accepted connection carries the data `"from 0.2.99"`.
//! Pushes: `"veto"` is vetoed, `"replace"` becomes `"replaced by 0.2.99"`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use switchboard_plugin_api::{
    export_app, Accept, App, ConnId, Context, Error, FramePacing, Handshake, Host, LogLevel,
    Message, Push, PushDecision, Reject,
};

struct Next {
    host: Host,
    opens: AtomicU64,
    closes: AtomicU64,
    errors: AtomicU64,
}

fn text_of(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

impl Next {
    fn command(&self, conn: ConnId, command: &Value) -> Result<Value, Error> {
        let host = &self.host;
        let except = |v: &Value| v["except_me"].as_bool().unwrap_or(false).then_some(conn);
        Ok(match command["op"].as_str().unwrap_or_default() {
            "send" => {
                host.send(conn, "sent to you by 0.2.99")?;
                json!(true)
            }
            "broadcast" => json!(host.broadcast_except(except(command), text_of(command, "text").as_str())?),
            "close" => {
                let code = command["code"].as_u64().unwrap_or(1000) as u16;
                match host.close(conn, code, &text_of(command, "reason")) {
                    Ok(()) => json!(true),
                    Err(error) => json!({ "error": error.to_string() }),
                }
            }
            "connections" => json!(host.connections()?.len()),
            "info" => {
                let info = host.info(conn)?;
                json!({
                    "id": info.id.to_string(),
                    "path": info.path,
                    "query": info.query,
                    "subprotocol": info.subprotocol,
                    "data": info.data,
                    "user_agent": info.header("user-agent"),
                })
            }
            "join" => {
                host.join(conn, &text_of(command, "group"))?;
                json!(true)
            }
            "leave" => {
                host.leave(conn, &text_of(command, "group"))?;
                json!(true)
            }
            "members" => json!(host.members(&text_of(command, "group"))?.len()),
            "publish" => json!(host.publish_except(
                &text_of(command, "group"),
                except(command),
                text_of(command, "text").as_str(),
            )?),
            "log" => {
                host.log(LogLevel::INFO, &format!("log line from 0.2.99: {}", text_of(command, "text")));
                json!(true)
            }
            "fail" => return Err("failed on request".into()),
            "panic" => panic!("panicked on request"),
            "server_info" => json!(host.server_info().local_push_url()),
            "frame_pacing" => {
                host.set_frame_pacing(conn, FramePacing::Batched)?;
                json!(true)
            }
            "next_only" => json!(host.next_only()),
            "stats" => json!({
                "opens": self.opens.load(Ordering::SeqCst),
                "closes": self.closes.load(Ordering::SeqCst),
                "errors": self.errors.load(Ordering::SeqCst),
            }),
            other => json!({ "error": format!("unknown op {other:?}") }),
        })
    }
}

impl App for Next {
    fn new(context: Context) -> Result<Self, Error> {
        Ok(Next {
            host: context.host,
            opens: AtomicU64::new(0),
            closes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    fn on_handshake(&self, request: &Handshake<'_>) -> Result<Accept, Reject> {
        if request.query_param("reject").is_some() {
            return Err(Reject::new(403, "refused by 0.2.99"));
        }
        let accept = Accept::new().data("from 0.2.99");
        Ok(if request.offers("legacy.v1") {
            accept.subprotocol("legacy.v1")
        } else {
            accept
        })
    }

    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        self.host
            .send_json(conn, &json!({ "type": "welcome", "id": conn.to_string(), "api": "0.2.99" }))?;
        Ok(())
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        let Some(text) = message.as_text() else {
            // Binary messages are echoed unchanged.
            self.host.send(conn, message)?;
            return Ok(());
        };
        let command: Value = serde_json::from_str(text)?;
        let result = self.command(conn, &command)?;
        self.host.send_json(conn, &json!({ "result": result }))?;
        Ok(())
    }

    fn on_close(&self, _conn: ConnId, _code: u16, _reason: &str) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }

    fn on_error(&self, _conn: ConnId, _error: &str) {
        self.errors.fetch_add(1, Ordering::SeqCst);
    }

    fn on_shutdown(&self) {
        self.host.log(LogLevel::INFO, "0.2.99 plugin shut down");
    }

    fn on_push(&self, push: &Push<'_>) -> Result<PushDecision, Error> {
        Ok(match push.message.as_text() {
            Some("veto") => PushDecision::Veto("vetoed by 0.2.99".to_owned()),
            Some("replace") => PushDecision::ReplaceText("replaced by 0.2.99".to_owned()),
            _ => PushDecision::Deliver,
        })
    }
}

export_app!(Next);
