//! A Switchboard plugin template: greets each client with its connection id and
//! answers every text message reversed, after a prefix taken from the app's
//! `[app.config]` table.

use serde::Deserialize;
use switchboard_plugin_api::{export_app, App, ConnId, Context, Error, Host, Message};

/// The app's `[app.config]` table; unknown keys are refused at start-up.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Config { prefix: "reversed: ".to_owned() }
    }
}

/// One instance serves every connection of its mount: keep shared state in a
/// `switchboard_plugin_api::Shared` (a lock that a panic does not poison) or atomics.
struct Template {
    host: Host,
    config: Config,
}

/// The app's logic, kept apart from the callbacks so it can be unit-tested.
fn answer(prefix: &str, text: &str) -> String {
    format!("{prefix}{}", text.chars().rev().collect::<String>())
}

impl App for Template {
    fn new(context: Context) -> Result<Self, Error> {
        // An error here stops the server from starting, with this message.
        let config: Config = context.config()?;
        Ok(Template { host: context.host, config })
    }

    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        self.host.send(conn, format!("welcome {conn}").as_str())?;
        Ok(())
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        match message {
            Message::Text(text) => self.host.send(conn, answer(&self.config.prefix, text).as_str())?,
            Message::Binary(_) => self.host.close(conn, 1003, "text only")?,
        }
        Ok(())
    }
}

export_app!(Template);

#[cfg(test)]
mod tests {
    #[test]
    fn answers_reversed_with_the_prefix() {
        assert_eq!(super::answer("> ", "abc"), "> cba");
    }
}
