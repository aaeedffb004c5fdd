//! `commands`: the question-answer bot of the classic phpwebsockets tutorial
//! server. Each text message is one command; `bye` answers and then closes
//! the connection normally (1000).

use switchboard_plugin_api::{export_app, App, ConnId, Context, Error, Host, Message};

/// The bot: stateless apart from the host handle.
struct Commands {
    host: Host,
}

/// What the bot answers to one command, and whether it then hangs up.
fn answer(command: &str, now: chrono::DateTime<chrono::Local>) -> (String, bool) {
    let reply = match command {
        "hello" => "hello human".to_owned(),
        "hi" => "zup human".to_owned(),
        "name" => "my name is Multivac, silly I know".to_owned(),
        "age" => "I am older than time itself".to_owned(),
        "date" => format!("today is {}", now.format("%Y.%m.%d")),
        "time" => format!("server time is {}", now.format("%H:%M:%S")),
        "thanks" => "you're welcome".to_owned(),
        "bye" => return ("bye".to_owned(), true),
        other => format!("{other} not understood"),
    };
    (reply, false)
}

impl App for Commands {
    fn new(context: Context) -> Result<Self, Error> {
        Ok(Commands { host: context.host })
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        let Message::Text(text) = message else {
            self.host.send(conn, "binary messages not understood")?;
            return Ok(());
        };
        let (reply, hang_up) = answer(text.trim(), chrono::Local::now());
        self.host.send(conn, &reply)?;
        if hang_up {
            self.host.close(conn, 1000, "bye")?;
        }
        Ok(())
    }
}

export_app!(Commands);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn answers_every_command() {
        let now = chrono::Local.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        let cases = [
            ("hello", "hello human", false),
            ("hi", "zup human", false),
            ("name", "my name is Multivac, silly I know", false),
            ("age", "I am older than time itself", false),
            ("date", "today is 2026.03.04", false),
            ("time", "server time is 05:06:07", false),
            ("thanks", "you're welcome", false),
            ("bye", "bye", true),
            ("dance", "dance not understood", false),
        ];
        for (command, reply, hang_up) in cases {
            assert_eq!(
                answer(command, now),
                (reply.to_owned(), hang_up),
                "{command}"
            );
        }
    }
}
