//! Where each key of each `[app.config]` table is written, so that a plugin's
//! refusal of its config ("invalid app config at `rooms[0].name`: ...") can be
//! reported at the key's line in the TOML file rather than at a position in
//! the JSON document the plugin was handed.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Byte range of a key in the config file.
pub(super) type KeySpan = std::ops::Range<usize>;

/// For each `[[app]]`, in file order: every key path of its `[app.config]`
/// table (`history`, `rooms[0].name`, as the SDK names them) and its span.
/// Empty when the file does not parse (its parse error is reported instead).
pub(super) fn key_positions(source: &super::SourceFile) -> Vec<Vec<(String, KeySpan)>> {
    let Ok(document) = DeTable::parse(source.text()) else {
        return Vec::new();
    };
    let Some(apps) = document.get_ref().get("app") else {
        return Vec::new();
    };
    let DeValue::Array(apps) = apps.get_ref() else {
        return Vec::new();
    };
    apps.iter()
        .map(|app| {
            let mut keys = Vec::new();
            if let DeValue::Table(app) = app.get_ref() {
                if let Some(config) = app.get("config") {
                    walk(config, "", &mut keys);
                }
            }
            keys
        })
        .collect()
}

fn walk(value: &Spanned<DeValue<'_>>, prefix: &str, keys: &mut Vec<(String, KeySpan)>) {
    match value.get_ref() {
        DeValue::Table(table) => {
            for (key, value) in table.iter() {
                let path = if prefix.is_empty() {
                    key.get_ref().to_string()
                } else {
                    format!("{prefix}.{}", key.get_ref())
                };
                keys.push((path.clone(), key.span()));
                walk(value, &path, keys);
            }
        }
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let path = format!("{prefix}[{index}]");
                keys.push((path.clone(), item.span()));
                walk(item, &path, keys);
            }
        }
        _ => {}
    }
}
