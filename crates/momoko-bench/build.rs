//! Records which momoko the benchmark was built from (the workspace's git commit, `+dirty` when
//! the momoko crates differ from it) as `MOMOKO_BENCH_GIT`, for the report.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(root: &Path, args: &[&str]) -> Option<String> {
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.clone())
        .join("../..");
    let crates = [
        "crates/momoko-core",
        "crates/momoko-tokio",
        "crates/momoko-async-std",
        "crates/momoko-smol",
    ];
    let state = match git(&root, &["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let mut args = vec!["status", "--porcelain", "--"];
            args.extend(crates);
            let dirty = git(&root, &args).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit}+dirty")
            } else {
                commit
            }
        }
        None => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=MOMOKO_BENCH_GIT={state}");
    // HEAD lives in the git directory and the branches in the common one; they differ in a
    // linked worktree (where `.git` is a file), so ask git rather than assume `.git/`.
    let dir = |flag: &str| {
        git(&root, &["rev-parse", flag]).map(|d| {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                root.join(d)
            }
        })
    };
    let git_dir = dir("--git-dir").unwrap_or_else(|| root.join(".git"));
    let common = dir("--git-common-dir").unwrap_or_else(|| git_dir.clone());
    for p in [
        git_dir.join("HEAD"),
        common.join("refs"),
        common.join("packed-refs"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    for c in crates {
        println!(
            "cargo:rerun-if-changed={}",
            root.join(c).join("src").display()
        );
    }
    println!("cargo:rerun-if-changed=build.rs");
}
