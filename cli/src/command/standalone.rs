//! `weir standalone`: for now, checks and lists the DAGs it would run and says what is missing.

use anyhow::Result;

use super::{EXIT_USAGE, dags};
use crate::config::Config;

/// Validates the dags folder and lists it; the engine itself is not built yet (exit 2).
pub(crate) fn run(config: &Config) -> Result<u8> {
    println!(
        "weir standalone: checking the DAGs in {}\n",
        config.dags_folder.display()
    );
    let valid = dags::validate(config, &[])?;
    println!();
    dags::list(config, false)?;
    eprintln!(
        "\nThe scheduler, workers and web UI are not built yet (next milestone), so no runs start.{}",
        if valid == 0 {
            ""
        } else {
            " Some DAG files are invalid (see above)."
        }
    );
    Ok(EXIT_USAGE)
}
