//! The layering the workspace keeps (issue 30), checked on the sources and on Cargo's own graph:
//! - the store crate (`functions/store`) is the only one that opens a bucket or an object store;
//! - no function links another: the git trigger hands the builds a push asks for to the build
//!   functions over NATS (`<prefix>.triggered.<kind>`);
//! - the gateway and the `artifacts` command link no Docker or registry-client code.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo).args(args).current_dir(workspace()).output().expect("cargo runs");
    assert!(output.status.success(), "cargo {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("cargo writes UTF-8")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn only_the_store_opens_a_bucket_or_an_object_store() {
    let root = workspace();
    let mut files = Vec::new();
    for dir in ["gateway/src", "cli/src", "schemas/src", "provenance/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    for function in std::fs::read_dir(root.join("functions")).unwrap() {
        let function = function.unwrap().path();
        if function.file_name().is_some_and(|name| name != "store") {
            rust_files(&function.join("src"), &mut files);
        }
    }
    let opening = ["key_value(", "object_store(", "jetstream::kv", "jetstream::object_store"];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if opening.iter().any(|call| line.contains(call)) {
                found.push(format!("{}:{}: {}", file.strip_prefix(&root).unwrap().display(), number + 1, line.trim()));
            }
        }
    }
    assert!(files.len() > 100, "the sources were found ({} files)", files.len());
    assert!(found.is_empty(), "only artifacts-store opens buckets and object stores:\n{}", found.join("\n"));
}

#[test]
fn no_function_links_another() {
    let metadata: serde_json::Value =
        serde_json::from_str(&cargo(&["metadata", "--format-version", "1", "--no-deps", "--offline"])).unwrap();
    let functions = [
        "artifacts-lookup",
        "artifacts-build-image",
        "artifacts-build-component",
        "artifacts-git-trigger",
        "artifacts-gc",
    ];
    let packages = metadata["packages"].as_array().unwrap();
    for function in functions {
        let package =
            packages.iter().find(|p| p["name"] == function).unwrap_or_else(|| panic!("{function} is a member"));
        let linked: Vec<&str> = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|name| functions.contains(name))
            .collect();
        assert!(linked.is_empty(), "{function} links the functions {linked:?}");
    }
}

#[test]
fn the_gateway_and_the_command_link_no_docker_or_registry_client() {
    for package in ["artifacts-gateway", "artifacts"] {
        let tree = cargo(&["tree", "--offline", "-p", package, "-e", "normal", "--prefix", "none"]);
        let linked: Vec<&str> =
            tree.lines().filter(|line| line.starts_with("bollard") || line.starts_with("artifacts-engine")).collect();
        assert!(tree.lines().count() > 50, "cargo tree listed {package}'s dependencies");
        assert!(linked.is_empty(), "{package} links {linked:?}");
    }
}
