//! Files a DAG reads besides its own: a `sql` step's `file`, a `migrate` step's folder, a
//! `python` step's `file` and requirements file, a `dbt` step's project folder.
//!
//! The scheduler reads them when it reads the DAG and stores their text with the DAG's
//! version (`path as written → text`), so a run pins them like the rest of the DAG and workers
//! on any host need no copy of the dags folder. This module only names them (no I/O).

use std::collections::BTreeMap;

use crate::spec::{DagSpec, Step};

/// A file or folder a task reads, as written in the DAG (relative to the DAG file, or
/// absolute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRef<'a> {
    /// A `sql` step's `file`.
    SqlFile {
        /// The task.
        task: &'a str,
        /// The path.
        path: &'a str,
    },
    /// A `migrate` step's `dir` of `NNNN_name.sql` files.
    Migrations {
        /// The task.
        task: &'a str,
        /// The folder.
        dir: &'a str,
    },
    /// A `python` step's `file`, or a `python` or `dbt` step's requirements file: one text
    /// file, stored under its path.
    Text {
        /// The task.
        task: &'a str,
        /// The path.
        path: &'a str,
    },
    /// A `dbt` step's project: every file below the folder but `target/`, `logs/` and hidden
    /// ones, each stored under `project/relative/path` ([`project_files`] reads them back).
    DbtProject {
        /// The task.
        task: &'a str,
        /// The folder.
        dir: &'a str,
    },
}

/// Folders of a dbt project that are dbt's output, not its source: never stored.
pub const DBT_OUTPUT_DIRS: [&str; 2] = ["target", "logs"];

/// Every file reference of a DAG, in task order.
pub fn file_refs(spec: &DagSpec) -> Vec<FileRef<'_>> {
    use crate::spec::Requirements;
    fn requirements<'a>(task: &'a str, r: &'a Option<Requirements>) -> Option<FileRef<'a>> {
        match r {
            Some(Requirements::File(path)) => Some(FileRef::Text { task, path }),
            _ => None,
        }
    }
    let mut out = Vec::new();
    for (id, t) in &spec.tasks {
        let task = id.as_str();
        match &t.step {
            Step::Sql(s) => out.extend(
                s.file
                    .as_deref()
                    .map(|path| FileRef::SqlFile { task, path }),
            ),
            Step::Migrate(m) => out.push(FileRef::Migrations { task, dir: &m.dir }),
            Step::Python(p) => {
                out.extend(p.file.as_deref().map(|path| FileRef::Text { task, path }));
                out.extend(requirements(task, &p.requirements));
            }
            Step::Dbt(d) => {
                out.push(FileRef::DbtProject {
                    task,
                    dir: &d.project,
                });
                out.extend(requirements(task, &d.requirements));
            }
            _ => {}
        }
    }
    out
}

/// The key a project's file is stored under: `project/relative/path`.
pub fn project_key(dir: &str, relative: &str) -> String {
    format!("{}/{relative}", dir.trim_end_matches('/'))
}

/// The files of the project stored at `dir`, by their path inside it.
pub fn project_files<'a>(
    files: &'a BTreeMap<String, String>,
    dir: &str,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    files
        .iter()
        .filter_map(move |(key, text)| Some((key.strip_prefix(&prefix)?, text.as_str())))
}

/// `0001_create_tables.sql` → `(1, "create_tables")`: digits, `_`, a name, `.sql`.
pub fn migration_name(file_name: &str) -> Option<(u64, &str)> {
    let stem = file_name.strip_suffix(".sql")?;
    let (digits, name) = stem.split_once('_')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    Some((digits.parse().ok()?, name))
}

/// The key a migration file of `dir` is stored under in a version's files.
pub fn migration_key(dir: &str, file_name: &str) -> String {
    format!("{}/{file_name}", dir.trim_end_matches('/'))
}

/// One versioned migration of a stored DAG version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration<'a> {
    /// Its number.
    pub version: u64,
    /// The part of the file name after the number.
    pub name: &'a str,
    /// The file name.
    pub file_name: &'a str,
    /// Its SQL.
    pub sql: &'a str,
}

/// The migrations of `dir` among a version's files, by version.
pub fn migrations<'a>(files: &'a BTreeMap<String, String>, dir: &str) -> Vec<Migration<'a>> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    let mut out: Vec<Migration<'a>> = files
        .iter()
        .filter_map(|(key, sql)| {
            let file_name = key.strip_prefix(&prefix)?;
            let (version, name) = migration_name(file_name)?;
            Some(Migration {
                version,
                name,
                file_name,
                sql,
            })
        })
        .collect();
    out.sort_by_key(|m| m.version);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_names_need_a_number_a_name_and_sql() {
        assert_eq!(
            migration_name("0001_create_tables.sql"),
            Some((1, "create_tables"))
        );
        assert_eq!(migration_name("12_x.sql"), Some((12, "x")));
        assert_eq!(migration_name("0001.sql"), None);
        assert_eq!(migration_name("0001_.sql"), None);
        assert_eq!(migration_name("abc_x.sql"), None);
        assert_eq!(migration_name("0001_x.txt"), None);
    }

    #[test]
    fn migrations_of_a_folder_come_in_version_order() {
        let files: BTreeMap<String, String> = [
            ("sql/hr/0010_b.sql", "b"),
            ("sql/hr/0002_a.sql", "a"),
            ("sql/other/0001_c.sql", "c"),
            ("sql/q.sql", "q"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let found: Vec<(u64, &str)> = migrations(&files, "sql/hr/")
            .iter()
            .map(|m| (m.version, m.sql))
            .collect();
        assert_eq!(found, [(2, "a"), (10, "b")]);
    }
}
