//! SQL text in the three dialects weir's data steps speak: names and literals quoted, and the
//! values of a template placed into a statement by where each one lands, so that a value is
//! never code.
//!
//! A template's values reach this module as markers in the rendered text (see
//! [`crate::template::Renderer::render_sql`]). [`place_values`] reads the statement with a
//! small lexer that knows where strings, quoted names and comments begin and end in each
//! dialect, puts each value in as its place needs, then reads the result again and refuses it
//! unless every character of the template sits where it sat before and every value stays
//! inside its own place. An escape that a dialect reads differently than this module expected
//! therefore fails the try with a message instead of changing the statement.

use crate::error::SqlError;

/// The SQL dialect of a data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL / MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The dialect of a connection URL (`postgres://`, `postgresql://`, `mysql://`,
    /// `mariadb://`, `sqlite:`), or `None` for another kind.
    pub fn of_url(url: &str) -> Option<Dialect> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Dialect::Postgres)
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Some(Dialect::MySql)
        } else if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else {
            None
        }
    }

    /// `name` or `schema.name`, each part checked (letters, digits, `_`, `$`; not starting with
    /// a digit) and quoted for this dialect.
    ///
    /// # Errors
    /// A name that is not a plain identifier (it would need quoting the DAG author did not
    /// write, or it is an injection attempt).
    pub fn ident(self, name: &str) -> Result<String, SqlError> {
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 {
            return Err(SqlError(format!(
                "`{name}` is not a table or column name (at most schema.name)"
            )));
        }
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            let mut chars = part.chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
            if !ok {
                return Err(SqlError(format!(
                    "`{name}` is not a plain name (letters, digits, `_`; not starting with a digit)"
                )));
            }
            out.push(match self {
                Dialect::MySql => format!("`{part}`"),
                Dialect::Postgres | Dialect::Sqlite => format!("\"{part}\""),
            });
        }
        Ok(out.join("."))
    }

    /// A JSON value as a SQL literal: numbers as written, strings quoted (see
    /// [`Dialect::string`]), booleans as `TRUE`/`FALSE`.
    ///
    /// # Errors
    /// Arrays, objects and null, which are not comparable values.
    pub fn literal(self, value: &serde_json::Value) -> Result<String, SqlError> {
        match value {
            serde_json::Value::Number(n) => Ok(n.to_string()),
            serde_json::Value::String(s) => Ok(self.string(s)),
            serde_json::Value::Bool(b) => Ok(if *b { "TRUE" } else { "FALSE" }.to_owned()),
            other => Err(SqlError(format!(
                "{other} is not a number, a string or a boolean"
            ))),
        }
    }

    /// Text as a string literal: quotes doubled; on MySQL backslashes doubled too (it reads
    /// them as escapes); on Postgres text with a backslash is written `E'…'` with backslashes
    /// doubled, which reads the same whatever `standard_conforming_strings` is.
    pub fn string(self, text: &str) -> String {
        match self {
            Dialect::MySql => format!("'{}'", escape_quoted(text, '\'', true)),
            Dialect::Postgres if text.contains('\\') => {
                format!("E'{}'", escape_quoted(text, '\'', true))
            }
            Dialect::Postgres | Dialect::Sqlite => {
                format!("'{}'", escape_quoted(text, '\'', false))
            }
        }
    }
}

/// `text` for the inside of a string or name quoted with `quote`: the quote doubled, and
/// backslashes when the place reads them as escapes.
fn escape_quoted(text: &str, quote: char, backslash: bool) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if c == quote || backslash && c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out
}

/// Where a character of a statement is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// SQL itself.
    Code,
    /// A `'…'` string; `backslash`: `\` escapes the next character (MySQL, Postgres `E'…'`).
    Single { backslash: bool },
    /// A `"…"` name (a string on MySQL, where `\` escapes too).
    Double { backslash: bool },
    /// A `` `…` `` name (MySQL, SQLite).
    Backtick,
    /// From `--` (MySQL: `-- `, `#`) to the end of the line.
    LineComment,
    /// `/* … */` (nested on Postgres).
    BlockComment,
}

/// A place and how many Postgres dollar-quoted bodies (`$tag$ … $tag$`) surround it: the body
/// of a `DO` block or function is SQL again, and is read as such.
type At = (Place, usize);

/// A lexer over one statement text, one unit at a time (a character, a doubled quote, an
/// escape, a comment's opening or closing, a dollar tag).
struct Lexer {
    dialect: Dialect,
    place: Place,
    /// Open `/*` comments (Postgres nests them; elsewhere at most 1).
    depth: usize,
    /// The tags of the dollar-quoted bodies open, outermost first.
    dollars: Vec<String>,
    /// The character before the next unit.
    previous: Option<char>,
    /// The one before that (`E'` must not be the end of a name).
    before_previous: Option<char>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

impl Lexer {
    fn new(dialect: Dialect) -> Lexer {
        Lexer {
            dialect,
            place: Place::Code,
            depth: 0,
            dollars: Vec::new(),
            previous: None,
            before_previous: None,
        }
    }

    fn at(&self) -> At {
        (self.place, self.dollars.len())
    }

    /// Reads the unit at the start of `rest` (not empty): its length in bytes. The place it
    /// was read in is [`Lexer::at`] before the call.
    fn step(&mut self, rest: &str) -> usize {
        let len = self.unit(rest);
        for c in rest[..len].chars() {
            self.before_previous = self.previous;
            self.previous = Some(c);
        }
        len
    }

    fn unit(&mut self, rest: &str) -> usize {
        // A dollar-quoted body ends at its tag wherever the body's own SQL stands (Postgres
        // reads the body as one string first).
        if let Some(k) = self
            .dollars
            .iter()
            .position(|tag| rest.starts_with(tag.as_str()))
        {
            let len = self.dollars[k].len();
            self.dollars.truncate(k);
            self.place = Place::Code;
            self.depth = 0;
            return len;
        }
        let mut chars = rest.chars();
        let c = chars.next().unwrap_or_default();
        let next = chars.next();
        let one = c.len_utf8();
        match self.place {
            Place::Code => self.code(rest, c, next),
            Place::Single { backslash } | Place::Double { backslash } => {
                let quote = if matches!(self.place, Place::Single { .. }) {
                    '\''
                } else {
                    '"'
                };
                if backslash && c == '\\' {
                    one + next.map_or(0, char::len_utf8)
                } else if c == quote && next == Some(quote) {
                    2
                } else {
                    if c == quote {
                        self.place = Place::Code;
                    }
                    one
                }
            }
            Place::Backtick => {
                if c == '`' && next == Some('`') {
                    2
                } else {
                    if c == '`' {
                        self.place = Place::Code;
                    }
                    one
                }
            }
            Place::LineComment => {
                if c == '\n' || c == '\r' {
                    self.place = Place::Code;
                }
                one
            }
            Place::BlockComment => {
                if rest.starts_with("*/") {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.place = Place::Code;
                    }
                    2
                } else if rest.starts_with("/*") && self.dialect == Dialect::Postgres {
                    self.depth += 1;
                    2
                } else {
                    one
                }
            }
        }
    }

    fn code(&mut self, rest: &str, c: char, next: Option<char>) -> usize {
        let after_name = self.previous.is_some_and(is_name_char);
        match c {
            '\'' => {
                let e_string = self.dialect == Dialect::Postgres
                    && matches!(self.previous, Some('e' | 'E'))
                    && !self.before_previous.is_some_and(is_name_char);
                self.place = Place::Single {
                    backslash: self.dialect == Dialect::MySql || e_string,
                };
                1
            }
            '"' => {
                self.place = Place::Double {
                    backslash: self.dialect == Dialect::MySql,
                };
                1
            }
            '`' if self.dialect != Dialect::Postgres => {
                self.place = Place::Backtick;
                1
            }
            // MySQL reads `--` as a comment only before a space or a control character.
            '-' if next == Some('-')
                && (self.dialect != Dialect::MySql
                    || rest[2..]
                        .chars()
                        .next()
                        // A value's marker: what follows is the value, which is never
                        // placed starting with a space.
                        .is_none_or(|c| c != '\0' && (c.is_whitespace() || c.is_control()))) =>
            {
                self.place = Place::LineComment;
                2
            }
            '#' if self.dialect == Dialect::MySql => {
                self.place = Place::LineComment;
                1
            }
            '/' if next == Some('*') => {
                self.place = Place::BlockComment;
                self.depth = 1;
                2
            }
            '$' if self.dialect == Dialect::Postgres && !after_name => match dollar_tag(rest) {
                Some(tag) => {
                    let len = tag.len();
                    self.dollars.push(tag.to_owned());
                    len
                }
                None => 1,
            },
            _ => c.len_utf8(),
        }
    }
}

/// The dollar-quote tag at the start of `rest` (`$$`, `$body$`), if there is one (`$1` is a
/// parameter, not a tag).
fn dollar_tag(rest: &str) -> Option<&str> {
    let inner = &rest[1..];
    let end = inner.find('$')?;
    let tag = &inner[..end];
    let mut chars = tag.chars();
    let ok = match chars.next() {
        None => true,
        Some(first) => {
            (first.is_alphabetic() || first == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        }
    };
    ok.then(|| &rest[..end + 2])
}

/// What a template put in: a value (from `{{ … }}`) or a name (`{{ … | ident }}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Text to place as data.
    Text(String),
    /// A table or column name, checked and quoted.
    Name(String),
}

/// The marker a template's `n`-th value (from 1) is rendered as, for [`place_values`].
pub fn marker(n: usize) -> String {
    format!("\0{n}\0")
}

/// How one value was put in, for the second reading.
enum Placed {
    /// Read where the template put it: every byte in this place.
    Inside(At),
    /// A quoted string standing in SQL: its first `prefix` bytes (`'` or `E'`) are read as
    /// code, the rest inside a string, and code follows.
    Literal { prefix: usize, dollars: usize },
    /// A quoted name standing in SQL.
    Name { dollars: usize },
}

/// The statement `rendered` (with [`marker`]s) with each marker replaced by its value:
///
/// - inside a string, a quoted name or a comment: escaped for that place (a quote doubled, a
///   backslash where the dialect reads escapes, a line break in a `--` comment made a space);
/// - standing alone in SQL: a number or `true`/`false` as it is, any other text as a quoted
///   string literal (`WHERE id = {{ params.id }}` and `WHERE day = {{ ds }}` both work);
/// - part of a longer name (`staging_{{ ds_nodash }}`): only letters, digits and `_`;
/// - a [`Value::Name`] standing alone: checked and quoted as a name.
///
/// # Errors
/// A value that cannot be placed where it stands (a name part with other characters, a name
/// inside a string), or a result that reads differently than the template (which would mean
/// a value changed the statement): the message names the value by its order in the template.
pub fn place_values(
    dialect: Dialect,
    rendered: &str,
    values: &[Value],
) -> Result<String, SqlError> {
    let mut out = String::with_capacity(rendered.len() + 16);
    // Template units as (offset in `out`, length, place) and values as (offset, length, how).
    let mut template: Vec<(usize, usize, At)> = Vec::new();
    let mut placed: Vec<(usize, usize, Placed, usize)> = Vec::new();
    let mut lexer = Lexer::new(dialect);
    let mut i = 0;
    while i < rendered.len() {
        let rest = &rendered[i..];
        if let Some(body) = rest.strip_prefix('\0') {
            let n = body
                .find('\0')
                .and_then(|end| body[..end].parse::<usize>().ok().map(|n| (n, end)));
            let Some((n, end)) = n.filter(|(n, _)| (1..=values.len()).contains(n)) else {
                return Err(SqlError("the SQL holds a NUL character".to_owned()));
            };
            i += end + 2;
            let next = rendered[i..].chars().next();
            let start = out.len();
            let how = place_one(dialect, &lexer, &values[n - 1], next, &mut out)
                .map_err(|e| format!("value {n} of the SQL text: {e}"))?;
            placed.push((start, out.len() - start, how, n));
            for c in out[start..].chars() {
                lexer.before_previous = lexer.previous;
                lexer.previous = Some(c);
            }
            continue;
        }
        let at = lexer.at();
        let len = lexer.step(rest);
        template.push((out.len(), len, at));
        out.push_str(&rest[..len]);
        i += len;
    }
    check_reading(dialect, &out, &template, &placed).map_err(|n| {
        let text = match &values[n - 1] {
            Value::Text(t) | Value::Name(t) => t,
        };
        format!(
            "value {n} of the SQL text (`{}`) would change the statement around it, so the statement was not run",
            shorten(text)
        )
    })?;
    Ok(out)
}

/// Puts one value into `out` where `lexer` stands; `next` is the template's character after
/// it.
fn place_one(
    dialect: Dialect,
    lexer: &Lexer,
    value: &Value,
    next: Option<char>,
    out: &mut String,
) -> Result<Placed, String> {
    let at = lexer.at();
    let text = match value {
        Value::Text(t) | Value::Name(t) => t.as_str(),
    };
    let shown = shorten(text);
    // Part of a longer name: a name character (or a dot, or another value) on either side.
    let glued = lexer.previous.is_some_and(|c| is_name_char(c) || c == '.')
        || next.is_some_and(|c| is_name_char(c) || c == '.' || c == '\0');
    if let (Value::Name(name), Place::Code) = (value, at.0) {
        if glued {
            return Err(format!(
                "`{shown}` is a name (`| ident`), which must stand alone, not be part of a longer name"
            ));
        }
        out.push_str(&dialect.ident(name)?);
        return Ok(Placed::Name { dollars: at.1 });
    }
    match at.0 {
        Place::Code => {}
        _ if matches!(value, Value::Name(_)) => {
            return Err(format!(
                "`{shown}` is a name (`| ident`), which cannot stand inside a string, a quoted name or a comment"
            ));
        }
        Place::Single { backslash } => out.push_str(&escape_quoted(text, '\'', backslash)),
        Place::Double { backslash } => out.push_str(&escape_quoted(text, '"', backslash)),
        Place::Backtick => out.push_str(&escape_quoted(text, '`', false)),
        Place::LineComment => out.push_str(&text.replace(['\n', '\r'], " ")),
        Place::BlockComment => out.push_str(&text.replace('/', " / ")),
    }
    if at.0 != Place::Code {
        return Ok(Placed::Inside(at));
    }
    if glued {
        if !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`{shown}` is part of a name here, so it may hold only letters, digits and `_` (for a value, leave space around it; for a whole name, `| ident`)"
            ));
        }
        out.push_str(text);
        return Ok(Placed::Inside(at));
    }
    if is_number(text) || text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") {
        // `a -{{ n }}` with n = -1 must not become the comment `--1`.
        if text.starts_with('-') && lexer.previous == Some('-') {
            out.push(' ');
        }
        out.push_str(text);
        return Ok(Placed::Inside(at));
    }
    let literal = dialect.string(text);
    let prefix = literal.find('\'').map_or(1, |q| q + 1);
    out.push_str(&literal);
    Ok(Placed::Literal {
        prefix,
        dollars: at.1,
    })
}

/// A decimal number as SQL reads one: `-12`, `3.5`, `1e-3`.
fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match digits.find(['e', 'E']) {
        Some(at) => (&digits[..at], Some(&digits[at + 1..])),
        None => (digits, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(whole)
        && fraction.is_none_or(all_digits)
        && exponent.is_none_or(|e| all_digits(e.strip_prefix(['-', '+']).unwrap_or(e)))
}

/// A value for a message: its first 40 characters.
fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(40).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// Reads `out` again and checks that every template unit is read in the place it was read in
/// the template and every value stays in its own place; else the order of the value that
/// moved something (from 1).
fn check_reading(
    dialect: Dialect,
    out: &str,
    template: &[(usize, usize, At)],
    placed: &[(usize, usize, Placed, usize)],
) -> Result<(), usize> {
    // The place of each byte of `out` (every byte of a unit gets the unit's place).
    let mut places = Vec::with_capacity(out.len());
    let mut lexer = Lexer::new(dialect);
    let mut i = 0;
    while i < out.len() {
        let at = lexer.at();
        let len = lexer.step(&out[i..]);
        places.extend(std::iter::repeat_n(at, len));
        i += len;
    }
    places.push(lexer.at());
    for &(start, len, at) in template {
        if places[start..start + len].iter().any(|p| *p != at) {
            // The value just before this unit moved it (there is one: without values the
            // template reads as itself).
            let n = placed
                .iter()
                .rev()
                .find(|(s, ..)| *s < start)
                .map_or(1, |p| p.3);
            return Err(n);
        }
    }
    for (start, len, how, n) in placed {
        let (start, len) = (*start, *len);
        let bytes = &places[start..start + len];
        let ok = match how {
            Placed::Inside(at) => bytes.iter().all(|p| p == at),
            // Quoted parts and the dot between them.
            Placed::Name { dollars } => {
                bytes.iter().all(|p| {
                    p.1 == *dollars
                        && matches!(p.0, Place::Code | Place::Double { .. } | Place::Backtick)
                }) && places[start + len] == (Place::Code, *dollars)
            }
            Placed::Literal { prefix, dollars } => {
                bytes[..*prefix]
                    .iter()
                    .all(|p| *p == (Place::Code, *dollars))
                    && bytes[*prefix..]
                        .iter()
                        .all(|p| p.1 == *dollars && matches!(p.0, Place::Single { .. }))
                    && places[start + len] == (Place::Code, *dollars)
            }
        };
        if !ok {
            return Err(*n);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Dialect, Value, marker, place_values};

    fn place(d: Dialect, template: &str, values: &[&str]) -> Result<String, String> {
        let values: Vec<Value> = values
            .iter()
            .map(|v| Value::Text((*v).to_owned()))
            .collect();
        let mut text = template.to_owned();
        for n in 1..=values.len() {
            text = text.replacen("{}", &marker(n), 1);
        }
        Ok(place_values(d, &text, &values)?)
    }

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(
            Dialect::Postgres.ident("hr.hires").as_deref(),
            Ok("\"hr\".\"hires\"")
        );
        assert_eq!(Dialect::MySql.ident("hires").as_deref(), Ok("`hires`"));
        for bad in ["a b", "1abc", "x;drop table y", "a.b.c", "", "t\"", "a."] {
            assert!(Dialect::Sqlite.ident(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn literals_are_quoted_per_dialect() {
        let v = serde_json::json!("O'Brien \\ x");
        assert_eq!(
            Dialect::Postgres.literal(&v).as_deref(),
            Ok("E'O''Brien \\\\ x'")
        );
        assert_eq!(
            Dialect::Postgres
                .literal(&serde_json::json!("O'Brien"))
                .as_deref(),
            Ok("'O''Brien'")
        );
        assert_eq!(
            Dialect::MySql.literal(&v).as_deref(),
            Ok("'O''Brien \\\\ x'")
        );
        assert_eq!(
            Dialect::Sqlite.literal(&v).as_deref(),
            Ok("'O''Brien \\ x'")
        );
        assert_eq!(
            Dialect::Sqlite.literal(&serde_json::json!(2.5)).as_deref(),
            Ok("2.5")
        );
        assert!(Dialect::Sqlite.literal(&serde_json::json!(null)).is_err());
    }

    #[test]
    fn a_value_inside_a_string_is_escaped_for_it() {
        let evil = "x'); drop table t; --";
        assert_eq!(
            place(Dialect::Postgres, "select '{}'", &[evil]).as_deref(),
            Ok("select 'x''); drop table t; --'")
        );
        assert_eq!(
            place(Dialect::MySql, "select '{}'", &["a\\'); drop"]).as_deref(),
            Ok("select 'a\\\\''); drop'")
        );
        assert_eq!(
            place(Dialect::Postgres, "select E'{}'", &["a\\'b"]).as_deref(),
            Ok("select E'a\\\\''b'")
        );
        // A name ending in e is no E'' string.
        assert_eq!(
            place(Dialect::Postgres, "select name'{}'", &["a\\b"]).as_deref(),
            Ok("select name'a\\b'")
        );
        assert_eq!(
            place(Dialect::MySql, "select \"{}\"", &["a\"\\"]).as_deref(),
            Ok("select \"a\"\"\\\\\"")
        );
        assert_eq!(
            place(Dialect::Postgres, "select 1 as \"{}\"", &["a\"b"]).as_deref(),
            Ok("select 1 as \"a\"\"b\"")
        );
        assert_eq!(
            place(Dialect::Sqlite, "select `{}`", &["a`b"]).as_deref(),
            Ok("select `a``b`")
        );
    }

    #[test]
    fn a_value_standing_alone_is_a_number_or_a_string() {
        let d = Dialect::Postgres;
        assert_eq!(
            place(d, "where id = {} limit {}", &["12", "-3.5e2"]).as_deref(),
            Ok("where id = 12 limit -3.5e2")
        );
        assert_eq!(
            place(d, "where day = {}::date", &["2024-01-31"]).as_deref(),
            Ok("where day = '2024-01-31'::date")
        );
        assert_eq!(
            place(d, "where id = {}", &["1; drop table t"]).as_deref(),
            Ok("where id = '1; drop table t'")
        );
        assert_eq!(
            place(d, "where flag = {} and x = {}", &["true", ""]).as_deref(),
            Ok("where flag = true and x = ''")
        );
        assert_eq!(
            place(d, "select 5 -{}", &["-1"]).as_deref(),
            Ok("select 5 - -1")
        );
        for not_a_number in ["1e", ".5", "1.", "--1", "0x10", "1 ", "١"] {
            assert!(
                place(d, "select {}", &[not_a_number]).is_ok_and(|s| s.starts_with("select '")),
                "{not_a_number}"
            );
        }
    }

    #[test]
    fn a_value_inside_a_name_holds_only_name_characters() {
        let d = Dialect::MySql;
        assert_eq!(
            place(d, "insert into staging_{} values (1)", &["20240131"]).as_deref(),
            Ok("insert into staging_20240131 values (1)")
        );
        assert_eq!(
            place(d, "select * from {}.{}", &["hr", "hires"]).as_deref(),
            Ok("select * from hr.hires")
        );
        let refused = place(d, "insert into staging_{} values (1)", &["x; drop table y"]);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("value 1") && e.contains("part of a name")),
            "{refused:?}"
        );
    }

    #[test]
    fn comments_keep_their_values() {
        assert_eq!(
            place(
                Dialect::Postgres,
                "select 1 -- {}\n, 2",
                &["a\ndrop table t"]
            )
            .as_deref(),
            Ok("select 1 -- a drop table t\n, 2")
        );
        assert_eq!(
            place(
                Dialect::Sqlite,
                "select /* {} */ 1",
                &["*/ drop table t /*"]
            )
            .as_deref(),
            Ok("select /* * /  drop table t  / * */ 1")
        );
        // MySQL: `#` is a comment; `--` only before a space, so `5--{}` is code there.
        assert_eq!(
            place(Dialect::MySql, "select 1 # {}\n", &["x\ny"]).as_deref(),
            Ok("select 1 # x y\n")
        );
        assert_eq!(
            place(Dialect::MySql, "select 5--{}", &["1; drop table t"]).as_deref(),
            Ok("select 5--'1; drop table t'")
        );
    }

    #[test]
    fn dollar_quoted_bodies_are_read_as_sql() {
        let d = Dialect::Postgres;
        assert_eq!(
            place(
                d,
                "do $$ begin perform 1 where 'a' = '{}'; end $$",
                &["x'; drop table t; --"]
            )
            .as_deref(),
            Ok("do $$ begin perform 1 where 'a' = 'x''; drop table t; --'; end $$")
        );
        // A value that would end the body is refused rather than placed.
        let refused = place(
            d,
            "do $$ begin raise notice '{}'; end $$",
            &["$$; drop table t; $$"],
        );
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("value 1")),
            "{refused:?}"
        );
        // `$1` is a parameter and `a$b` a name, not dollar quotes.
        assert_eq!(
            place(d, "select a$b, '{}'", &["x'y"]).as_deref(),
            Ok("select a$b, 'x''y'")
        );
    }

    #[test]
    fn names_are_checked_and_stand_alone() {
        let name = |n: &str| Value::Name(n.to_owned());
        assert_eq!(
            place_values(
                Dialect::Postgres,
                &format!("select * from {}", marker(1)),
                &[name("hr.hires")]
            )
            .as_deref(),
            Ok("select * from \"hr\".\"hires\"")
        );
        for (template, value) in [
            (format!("select * from {}", marker(1)), "t; drop table x"),
            (format!("select '{}'", marker(1)), "t"),
            (format!("select * from x_{}", marker(1)), "t"),
        ] {
            assert!(
                place_values(Dialect::MySql, &template, &[name(value)]).is_err(),
                "{template} {value}"
            );
        }
    }

    #[test]
    fn a_stray_nul_is_refused() {
        assert!(place_values(Dialect::Sqlite, "select '\0'", &[]).is_err());
        assert!(
            place_values(
                Dialect::Sqlite,
                "select \u{0}2\u{0}",
                &[Value::Text("1".into())]
            )
            .is_err()
        );
    }
}
