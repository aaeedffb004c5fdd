//! `progress`: a backend job reports its progress to the browser tab that
//! started it, through the push API, and the user can cancel it.
//!
//! The browser gets its connection id on connect and hands it to the backend
//! with the job. The backend pushes `{"job": "...", "progress": 0..100, "text":
//! "..."}` to `{"to": {"client": id}}`. When the user cancels, the app vetoes
//! every later push for that job, so the backend's next push gets 409 and it
//! stops; when the tab closes, the push API answers 404 and the backend stops
//! too. The backend needs nothing but the push API.
//!
//! For the demo page, `demo_push_url` enables `{"type":"start_demo"}`: a
//! thread of the plugin then plays the backend, through the push API over
//! HTTP exactly as an outside script would (so cancel and close work the same).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_plugin_api::{
    export_app, App, ConnId, Context, Error, Host, LogLevel, Message, Push, PushDecision,
    PushTarget, Shared,
};

/// Longest job id, in bytes.
const MAX_JOB_ID: usize = 128;

/// Most jobs one connection may have cancelled at once: a page has a few jobs,
/// and each id kept costs memory for the connection's lifetime.
const MAX_CANCELLED: usize = 1000;

/// Most demo jobs running at once.
const MAX_DEMO_JOBS: usize = 64;

/// The `[app.config]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProgressConfig {
    /// Allow `start_demo`: a plugin thread plays a backend job through the push API.
    demo_jobs: bool,
    /// The push API's URL for demo jobs (default: the server's own, from `Host::server_info`).
    demo_push_url: Option<String>,
    /// The environment variable holding the push token, if the push API needs one.
    demo_push_token_env: Option<String>,
    /// Steps of a demo job.
    demo_steps: u32,
    /// Pause between steps, in milliseconds.
    demo_step_ms: u64,
}

impl Default for ProgressConfig {
    fn default() -> Self {
        ProgressConfig {
            demo_jobs: false,
            demo_push_url: None,
            demo_push_token_env: None,
            demo_steps: 10,
            demo_step_ms: 500,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Cancel { job: String },
    StartDemo { job: String },
}

/// How a demo job reaches the push API.
struct DemoBackend {
    /// The push API's URL, when configured; otherwise the server's own.
    url: Option<String>,
    token: Option<String>,
    steps: u32,
    step: Duration,
    running: AtomicUsize,
}

const DEMO_STEPS: [&str; 5] = [
    "reading the input",
    "checking records",
    "computing totals",
    "writing the report",
    "cleaning up",
];

impl DemoBackend {
    /// Plays a backend job for `conn`: pushes progress until done, cancelled (409)
    /// or the browser is gone (404).
    fn run(&self, conn: ConnId, job: &str, host: &Host) {
        let Some(url) = self
            .url
            .clone()
            .or_else(|| host.server_info().local_push_url())
        else {
            host.log(
                LogLevel::WARN,
                "demo job: the server's address is not known yet",
            );
            return;
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        for i in 0..=self.steps {
            let progress = i * 100 / self.steps;
            let text = if i == self.steps {
                "done"
            } else {
                DEMO_STEPS[(i as usize) % DEMO_STEPS.len()]
            };
            let body = json!({ "to": { "client": conn.to_string() }, "message": { "job": job, "progress": progress, "text": text } });
            let mut request = agent.post(&url).header("content-type", "application/json");
            if let Some(token) = &self.token {
                request = request.header("authorization", &format!("Bearer {token}"));
            }
            match request.send(body.to_string()).map(|r| r.status().as_u16()) {
                Ok(200) => {}
                Ok(404) | Ok(409) => return,
                Ok(status) => {
                    host.log(
                        LogLevel::WARN,
                        &format!("demo job {job}: the push API answered {status}"),
                    );
                    return;
                }
                Err(error) => {
                    host.log(
                        LogLevel::WARN,
                        &format!("demo job {job}: cannot reach {url}: {error}"),
                    );
                    return;
                }
            }
            if i < self.steps {
                std::thread::sleep(self.step);
            }
        }
    }
}

struct Progress {
    host: Host,
    demo: Option<Arc<DemoBackend>>,
    /// Jobs each connection has cancelled.
    cancelled: Shared<HashMap<ConnId, HashSet<String>>>,
}

impl Progress {
    fn is_cancelled(&self, conn: ConnId, job: &str) -> bool {
        self.cancelled
            .lock()
            .get(&conn)
            .is_some_and(|jobs| jobs.contains(job))
    }
}

impl Progress {
    fn start_demo(&self, conn: ConnId, job: String) -> Value {
        let Some(demo) = self.demo.clone() else {
            return json!({ "type": "error", "message": "demo jobs are off (set demo_jobs = true in the app's config)" });
        };
        if demo.running.fetch_add(1, Ordering::SeqCst) >= MAX_DEMO_JOBS {
            demo.running.fetch_sub(1, Ordering::SeqCst);
            return json!({ "type": "error", "message": "too many demo jobs at once; try again shortly" });
        }
        let host = self.host.clone();
        let started = json!({ "type": "started", "job": job });
        let spawned = std::thread::Builder::new()
            .name("progress-demo".into())
            .spawn(move || {
                demo.run(conn, &job, &host);
                demo.running.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(_) => started,
            Err(error) => {
                if let Some(demo) = &self.demo {
                    demo.running.fetch_sub(1, Ordering::SeqCst);
                }
                json!({ "type": "error", "message": format!("cannot start the demo job: {error}") })
            }
        }
    }
}

impl App for Progress {
    fn new(context: Context) -> Result<Self, Error> {
        let config: ProgressConfig = context.config()?;
        if config.demo_steps == 0 {
            return Err("demo_steps must be at least 1".into());
        }
        let token = match &config.demo_push_token_env {
            Some(name) => Some(
                std::env::var(name)
                    .map_err(|_| format!("demo_push_token_env names {name}, which is not set"))?,
            ),
            None => None,
        };
        let demo = config.demo_jobs.then(|| {
            Arc::new(DemoBackend {
                url: config.demo_push_url,
                token,
                steps: config.demo_steps,
                step: Duration::from_millis(config.demo_step_ms),
                running: AtomicUsize::new(0),
            })
        });
        Ok(Progress {
            host: context.host,
            demo,
            cancelled: Shared::default(),
        })
    }

    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        self.host
            .send_json(conn, &json!({ "type": "welcome", "id": conn.to_string() }))?;
        Ok(())
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        let reply = match message.parse_json::<Command>() {
            Ok(Command::Cancel { job }) if !job.is_empty() && job.len() <= MAX_JOB_ID => {
                let mut cancelled = self.cancelled.lock();
                let jobs = cancelled.entry(conn).or_default();
                if jobs.len() >= MAX_CANCELLED && !jobs.contains(&job) {
                    json!({ "type": "error", "message": format!("at most {MAX_CANCELLED} cancelled jobs per connection") })
                } else {
                    jobs.insert(job.clone());
                    json!({ "type": "cancelled", "job": job })
                }
            }
            Ok(Command::StartDemo { job }) if !job.is_empty() && job.len() <= MAX_JOB_ID => {
                self.start_demo(conn, job)
            }
            Ok(Command::Cancel { .. } | Command::StartDemo { .. }) => {
                json!({ "type": "error", "message": format!("a job id has 1 to {MAX_JOB_ID} bytes") })
            }
            Err(why) => json!({ "type": "error", "message": why }),
        };
        self.host.send_json(conn, &reply)?;
        Ok(())
    }

    fn on_close(&self, conn: ConnId, _code: u16, _reason: &str) {
        self.cancelled.lock().remove(&conn);
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
