//! One push of a push API request body: any JSON gives a push or a 400
//! naming the field, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let items = match &value {
        serde_json::Value::Array(items) => items.iter().collect(),
        item => vec![item],
    };
    for item in items {
        if let Err(error) = switchboard::push::parse_item(item) {
            assert_eq!(error.status().as_u16(), 400);
            let _ = error.body();
        }
    }
});
