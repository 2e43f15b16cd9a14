//! Task templates (tera): every string field of a task is a template, parsed when the DAG is
//! validated and rendered just before a try runs.

/// Whether `text` contains template syntax at all (most strings do not: they skip the parser).
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// A template that does not parse: the message, and its line and column inside the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Tera's message.
    pub message: String,
    /// Line inside the template, from 1.
    pub line: usize,
    /// Column inside the template, from 1.
    pub col: usize,
}

/// Parses templates to find syntax errors; one checker serves a whole DAG file and parses
/// each distinct template once (tasks of a file often share them).
#[derive(Default)]
pub struct TemplateChecker {
    tera: tera::Tera,
    passed: std::collections::HashSet<String>,
}

impl TemplateChecker {
    /// Checks one template.
    ///
    /// # Errors
    /// The first syntax error, with its place inside the template.
    pub fn check(&mut self, text: &str) -> Result<(), TemplateError> {
        if !is_template(text) || self.passed.contains(text) {
            return Ok(());
        }
        match self.tera.add_raw_template("check", text) {
            Ok(()) => {
                self.passed.insert(text.to_owned());
                Ok(())
            }
            Err(e) => Err(match e.kind() {
                tera::ErrorKind::SyntaxError(report) => TemplateError {
                    message: report.message().to_owned(),
                    line: report.span().start_line,
                    col: report.span().start_col + 1,
                },
                _ => TemplateError {
                    message: e.to_string(),
                    line: 1,
                    col: 1,
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TemplateChecker;

    #[test]
    fn an_unclosed_expression_is_reported_with_its_place() {
        let err = TemplateChecker::default()
            .check("echo {{ ds")
            .expect_err("unclosed");
        assert_eq!(err.line, 1);
        assert!(!err.message.is_empty());
    }

    #[test]
    fn plain_text_and_good_templates_pass() {
        let mut checker = TemplateChecker::default();
        assert_eq!(checker.check("echo hello"), Ok(()));
        assert_eq!(
            checker.check("echo {{ ds }} {{ params.x | default(value=1) }}"),
            Ok(())
        );
        assert_eq!(
            checker.check("{% if params.full %}full{% else %}delta{% endif %}"),
            Ok(())
        );
    }
}
