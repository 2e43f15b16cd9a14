//! Any statement text and any values, in every dialect: placing values never panics; and a
//! value placed inside a string, or standing alone as a string literal, reads back as exactly
//! itself (the dialect's unescaping, written here apart from weir's escaping, gives the value
//! back), so no value can end its string early.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_model::sql::{Dialect, Value, marker, place_values};

/// The text of a string literal's inside, unescaped as `dialect` reads it (`''` is one quote;
/// with backslash escapes, `\x` is x). `None` when the text is not a whole inside: a lone
/// quote would have ended the string.
fn unescape(inside: &str, backslash: bool) -> Option<String> {
    let mut out = String::new();
    let mut chars = inside.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if backslash => out.push(chars.next()?),
            '\'' => {
                if chars.next()? != '\'' {
                    return None;
                }
                out.push('\'');
            }
            c => out.push(c),
        }
    }
    Some(out)
}

fuzz_target!(|input: (u8, String, Vec<String>)| {
    let (which, template, values) = input;
    let dialect = [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite][usize::from(which) % 3];
    let mut text = template.clone();
    for n in 1..=values.len().min(8) {
        text = text.replacen("{}", &marker(n), 1);
    }
    let placed: Vec<Value> = values.iter().cloned().map(Value::Text).collect();
    let _ = place_values(dialect, &text, &placed);

    let Some(value) = values.first() else {
        return;
    };
    let one = [Value::Text(value.clone())];
    let backslash = dialect == Dialect::MySql;
    if let Ok(out) = place_values(dialect, &format!("select '{}'", marker(1)), &one) {
        let inside = out
            .strip_prefix("select '")
            .and_then(|s| s.strip_suffix('\''))
            .expect("a string stays a string");
        assert_eq!(unescape(inside, backslash).as_deref(), Some(value.as_str()), "{out}");
    }
    if let Ok(out) = place_values(dialect, &format!("select {}", marker(1)), &one) {
        let bare = out.strip_prefix("select ").expect("prefix");
        if bare != value {
            let (inside, backslash) = match bare.strip_prefix("E'") {
                Some(rest) => (rest, true),
                None => (bare.strip_prefix('\'').expect("a literal"), backslash),
            };
            let inside = inside.strip_suffix('\'').expect("a literal ends with a quote");
            assert_eq!(unescape(inside, backslash).as_deref(), Some(value.as_str()), "{out}");
        }
    }
});
