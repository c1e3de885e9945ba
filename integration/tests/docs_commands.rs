//! Every command shown in the documentation is valid: each `lclstream ...`
//! line of a ```sh block parses with the current command line interface, and
//! each script or Python file it runs exists. (What the commands do is
//! covered by the other tests; this keeps the docs from drifting.)

use std::path::{Path, PathBuf};

use clap::Parser;
use lclstream_cli::Cli;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Markdown files whose shell blocks are checked.
fn documents() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![root.join("README.md"), root.join("policies/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The command lines of ```sh blocks (comments and blank lines dropped,
/// backslash continuations joined).
fn shell_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_sh = !in_sh && (info == "sh" || info == "bash");
            continue;
        }
        if !in_sh || (pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#'))) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

/// Checks one command; `&&` chains are checked part by part.
fn check(command: &str, doc: &Path) -> Result<(), String> {
    for part in command.split("&&") {
        let words =
            shlex::split(part.trim()).ok_or_else(|| format!("unbalanced quotes in {part:?}"))?;
        let Some(first) = words.first() else { continue };
        let cli_args: Option<Vec<String>> = match first.as_str() {
            "lclstream" => Some(words.clone()),
            "cargo" => words
                .iter()
                .position(|w| w == "--")
                .filter(|_| words.iter().any(|w| w == "lclstream"))
                .map(|at| {
                    std::iter::once("lclstream".to_string())
                        .chain(words[at + 1..].iter().cloned())
                        .collect()
                }),
            _ => None,
        };
        if let Some(args) = cli_args {
            Cli::try_parse_from(&args).map_err(|e| format!("{part:?} does not parse:\n{e}"))?;
            continue;
        }
        // `pip install ./dir` installs a package of the repository.
        if first == "pip" {
            for dir in words.iter().filter(|w| w.starts_with("./")) {
                if !repo().join(dir).join("pyproject.toml").is_file() {
                    return Err(format!(
                        "{} installs {dir}, which has no pyproject.toml",
                        doc.display()
                    ));
                }
            }
            continue;
        }
        let runs_file = match first.as_str() {
            // `python3 -m module` and `python3 -c code` run no file of the repository.
            "python3" => words.get(1).filter(|w| !w.starts_with('-')),
            path if path.starts_with("scripts/") || path.starts_with(".ci/") => Some(first),
            _ => None,
        };
        if let Some(file) = runs_file {
            if !repo().join(file).is_file() {
                return Err(format!(
                    "{} runs {file}, which does not exist",
                    doc.display()
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn documented_commands_are_valid() {
    let mut checked = 0;
    let mut errors = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for command in shell_commands(&text) {
            checked += 1;
            if let Err(e) = check(&command, &doc) {
                errors.push(format!("{}: {e}", doc.display()));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
    assert!(checked >= 20, "only {checked} documented commands found");
}

#[test]
fn a_wrong_command_is_caught() {
    assert!(check("lclstream pull --no-such-flag", Path::new("x.md")).is_err());
    assert!(check("scripts/no-such-script", Path::new("x.md")).is_err());
    assert!(check(
        "cargo run --release -p lclstream -- demo",
        Path::new("x.md")
    )
    .is_ok());
}
