//! README.md and docs/: every relative link leads to a file that exists, and
//! every subcommand the binary has is documented.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
}

/// The targets of `[text](target)` links that are not URLs.
fn relative_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|target| !target.contains("://"))
        .map(|target| target.split('#').next().unwrap().to_owned())
        .filter(|target| !target.is_empty())
        .collect()
}

#[test]
fn relative_links_lead_to_files_that_exist() {
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let folder = file.parent().unwrap_or(Path::new("."));
        for link in relative_links(&text) {
            assert!(
                folder.join(&link).exists(),
                "{}: link to {link} leads nowhere",
                file.display()
            );
        }
    }
}

#[test]
fn every_subcommand_is_documented() {
    let help = std::process::Command::new(crate::binary::BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    assert!(commands.contains(&"doctor"), "{help}");
    let docs: String = markdown_files()
        .iter()
        .map(|file| std::fs::read_to_string(file).unwrap())
        .collect();
    for command in commands {
        assert!(
            docs.contains(&format!("session-worker {command}")),
            "`session-worker {command}` is documented nowhere"
        );
    }
}
