//! `echo`: sends every text and binary message back to its sender, unchanged.

use switchboard_plugin_api::{export_app, App, ConnId, Context, Error, Host, Message};

/// The echo app: it only needs the host handle.
struct Echo {
    host: Host,
}

impl App for Echo {
    fn new(context: Context) -> Result<Self, Error> {
        Ok(Echo { host: context.host })
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        self.host.send(conn, message)?;
        Ok(())
    }
}

export_app!(Echo);
