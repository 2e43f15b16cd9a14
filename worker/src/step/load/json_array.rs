//! A JSON array of objects (`format: json`), read one element at a time so memory does not
//! grow with the document, each element with the line it starts on.

use std::io::{BufRead, Read};

use serde::Deserialize;

/// A reader that counts the line breaks it hands out.
struct Counting<R> {
    inner: R,
    newlines: u64,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.newlines += bytecount(&buf[..n]);
        Ok(n)
    }
}

fn bytecount(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.iter().filter(|b| **b == b'\n').count()).unwrap_or(u64::MAX)
}

impl<R: BufRead> Counting<R> {
    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        Ok(self.inner.fill_buf()?.first().copied())
    }

    fn bump(&mut self) {
        let mut one = [0_u8; 1];
        let _ = self.read(&mut one);
    }

    /// Skips whitespace; returns the next byte without taking it.
    fn skip_whitespace(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            match self.peek()? {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.bump(),
                other => return Ok(other),
            }
        }
    }
}

#[derive(PartialEq, Eq)]
enum State {
    Start,
    First,
    Next,
    Done,
}

/// The elements of one JSON array document.
pub(super) struct JsonArray<R> {
    input: Counting<R>,
    state: State,
}

impl<R: BufRead> JsonArray<R> {
    pub(super) fn new(reader: R) -> JsonArray<R> {
        JsonArray {
            input: Counting {
                inner: reader,
                newlines: 0,
            },
            state: State::Start,
        }
    }

    fn line(&self) -> u64 {
        self.input.newlines + 1
    }

    fn syntax(&self, what: &str) -> String {
        format!("line {}: {what}", self.line())
    }

    /// The next element and the line it starts on; `None` after the closing `]`. An error is
    /// a document that is not a JSON array (the rest of it cannot be read).
    pub(super) fn next_element(&mut self) -> Result<Option<(u64, serde_json::Value)>, String> {
        let io = |e: std::io::Error| format!("reading: {e}");
        if self.state == State::Start {
            match self.input.skip_whitespace().map_err(io)? {
                Some(b'[') => self.input.bump(),
                _ => return Err(self.syntax("expected a JSON array (`[`)")),
            }
            self.state = State::First;
        }
        if self.state == State::Done {
            return Ok(None);
        }
        let mut next = self.input.skip_whitespace().map_err(io)?;
        let mut after_comma = false;
        if self.state == State::Next {
            match next {
                Some(b',') => {
                    self.input.bump();
                    next = self.input.skip_whitespace().map_err(io)?;
                    after_comma = true;
                }
                Some(b']') | None => {}
                _ => return Err(self.syntax("expected `,` or `]` after an element")),
            }
        }
        match next {
            Some(b']') if after_comma => {
                return Err(self.syntax("an element is missing after `,`"));
            }
            Some(b']') => {
                self.input.bump();
                self.state = State::Done;
                return match self.input.skip_whitespace().map_err(io)? {
                    None => Ok(None),
                    Some(_) => Err(self.syntax("content after the array's closing `]`")),
                };
            }
            None => return Err(self.syntax("the array is not closed (`]` missing)")),
            _ => {}
        }
        let line = self.line();
        let value = match next {
            // Objects, arrays and strings end on a byte of their own: the parser reads no
            // further than the element.
            Some(b'{' | b'[' | b'"') => {
                let mut de = serde_json::Deserializer::from_reader(&mut self.input);
                serde_json::Value::deserialize(&mut de)
                    .map_err(|e| format!("line {line}: element is not valid JSON: {e}"))?
            }
            // A scalar: read up to the next separator (a number's parser would look past it).
            _ => {
                let mut token = Vec::new();
                while let Some(b) = self.input.peek().map_err(io)? {
                    if matches!(b, b',' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                        break;
                    }
                    token.push(b);
                    self.input.bump();
                }
                serde_json::from_slice(&token).map_err(|e| {
                    format!(
                        "line {line}: element `{}` is not valid JSON: {e}",
                        String::from_utf8_lossy(&token)
                    )
                })?
            }
        };
        self.state = State::Next;
        Ok(Some((line, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Result<Vec<(u64, serde_json::Value)>, String> {
        let mut a = JsonArray::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some(e) = a.next_element()? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn elements_come_with_the_line_they_start_on() {
        let text = "[\n  {\"a\": 1,\n   \"b\": \"x,]\"},\n  {\"a\": 2}, 7, null,\n  [1]\n]\n";
        let got = all(text).expect("array");
        let lines: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [2, 4, 4, 4, 5]);
        assert_eq!(got[0].1, serde_json::json!({"a": 1, "b": "x,]"}));
        assert_eq!(got[2].1, serde_json::json!(7));
        assert_eq!(got[3].1, serde_json::Value::Null);
        assert_eq!(all("[]").expect("empty"), []);
        assert_eq!(all(" [ ] \n").expect("empty"), []);
    }

    #[test]
    fn a_broken_document_is_an_error_with_its_line() {
        for (text, expected) in [
            ("{\"a\": 1}", "line 1: expected a JSON array"),
            ("[{\"a\": 1}\n{\"a\": 2}]", "line 2: expected `,` or `]`"),
            (
                "[{\"a\": 1},\n{\"a\": ",
                "line 2: element is not valid JSON",
            ),
            ("[{\"a\": 1}", "line 1: the array is not closed"),
            ("[{\"a\": 1}] x", "line 1: content after"),
            ("[1,\n tru]", "line 2: element `tru` is not valid JSON"),
            ("[1,\n]", "line 2: an element is missing after `,`"),
        ] {
            let err = all(text).expect_err(text);
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
    }
}
