//! `progress`: a backend job reports its progress to the browser tab that
//! started it, through the push API, and the user can cancel it.
//!
//! The browser gets its connection id on connect and hands it to the backend
//! with the job. The backend pushes `{"job": "...", "progress": 0..100, "text":
//! "..."}` to `{"to": {"client": id}}`. When the user cancels, the app vetoes
//! every later push for that job, so the backend's next push gets 409 and it
//! stops; when the tab closes, the push API answers 404 and the backend stops
//! too. The backend needs nothing but the push API.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_plugin_api::{
    export_app, App, ConnId, Context, Error, Host, Message, Push, PushDecision, PushTarget,
};

/// Longest job id, in bytes.
const MAX_JOB_ID: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Cancel { job: String },
}

struct Progress {
    host: Host,
    /// Jobs each connection has cancelled.
    cancelled: Mutex<HashMap<ConnId, HashSet<String>>>,
}

impl Progress {
    fn is_cancelled(&self, conn: ConnId, job: &str) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&conn)
            .is_some_and(|jobs| jobs.contains(job))
    }
}

impl App for Progress {
    fn new(context: Context) -> Result<Self, Error> {
        Ok(Progress {
            host: context.host,
            cancelled: Mutex::default(),
        })
    }

    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        self.host
            .send_json(conn, &json!({ "type": "welcome", "id": conn.to_string() }))?;
        Ok(())
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        let reply = match message.as_text().map(serde_json::from_str::<Command>) {
            Some(Ok(Command::Cancel { job })) if !job.is_empty() && job.len() <= MAX_JOB_ID => {
                self.cancelled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(conn)
                    .or_default()
                    .insert(job.clone());
                json!({ "type": "cancelled", "job": job })
            }
            Some(Ok(Command::Cancel { .. })) => {
                json!({ "type": "error", "message": format!("a job id has 1 to {MAX_JOB_ID} bytes") })
            }
            Some(Err(e)) => json!({ "type": "error", "message": format!("invalid command: {e}") }),
            None => {
                json!({ "type": "error", "message": "binary messages are not part of the progress protocol" })
            }
        };
        self.host.send_json(conn, &reply)?;
        Ok(())
    }

    fn on_close(&self, conn: ConnId, _code: u16, _reason: &str) {
        self.cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
    }

    fn on_push(&self, push: &Push<'_>) -> Result<PushDecision, Error> {
        let PushTarget::Client(conn) = push.target else {
            return Ok(PushDecision::Deliver);
        };
        let Some(Ok(Value::Object(mut update))) =
            push.message.as_text().map(serde_json::from_str::<Value>)
        else {
            return Ok(PushDecision::Deliver);
        };
        let Some(job) = update.get("job").and_then(Value::as_str).map(str::to_owned) else {
            return Ok(PushDecision::Deliver);
        };
        if self.is_cancelled(conn, &job) {
            return Ok(PushDecision::Veto(format!(
                "job {job} was cancelled by the user"
            )));
        }
        // Tag it so the page can tell progress from its own messages.
        update.entry("type").or_insert_with(|| json!("progress"));
        Ok(PushDecision::ReplaceText(Value::Object(update).to_string()))
    }
}

export_app!(Progress);
