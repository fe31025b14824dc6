//! The architecture ARCHITECTURE.md promises, checked on the source tree:
//! - the crate graph: which crate may depend on which (the "Architecture Invariant:"
//!   lines), from `cargo metadata`;
//! - no circle between the modules (files) of any crate in the workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    integration_tests::root()
}

/// Each workspace package's direct normal (non-dev, non-build) dependencies.
fn normal_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("name").to_string();
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().expect("dependency name").to_string())
                .collect();
            (name, deps)
        })
        .collect()
}

fn deps_of<'a>(all: &'a BTreeMap<String, BTreeSet<String>>, name: &str) -> &'a BTreeSet<String> {
    all.get(name)
        .unwrap_or_else(|| panic!("no workspace package {name}"))
}

const WORKSPACE_LAYERS: [&str; 4] = ["sensor-model", "sensor-core", "sensor-aws", "sensor-lambda"];
/// Crates that mean AWS, Lambda, HTTP or an async runtime.
const OUTSIDE_WORLD: [&str; 10] = [
    "aws-config",
    "aws-sdk-iotdataplane",
    "aws-smithy-runtime-api",
    "aws-smithy-types",
    "lambda_http",
    "lambda_runtime",
    "opensearch",
    "reqwest",
    "http",
    "tokio",
];

#[test]
fn the_crate_graph_is_the_architecture() {
    let all = normal_dependencies();
    let layers_in = |name: &str| -> BTreeSet<&str> {
        deps_of(&all, name)
            .iter()
            .map(String::as_str)
            .filter(|d| WORKSPACE_LAYERS.contains(d) || *d == "local-aws")
            .collect()
    };
    let outside_in = |name: &str| -> BTreeSet<&str> {
        deps_of(&all, name)
            .iter()
            .map(String::as_str)
            .filter(|d| OUTSIDE_WORLD.contains(d))
            .collect()
    };
    // The model: pure, no other layer, no AWS, Lambda, HTTP or async runtime.
    assert_eq!(layers_in("sensor-model"), BTreeSet::new());
    assert_eq!(outside_in("sensor-model"), BTreeSet::new());
    // The core: the model and its own ports; tokio for time only, nothing of AWS or HTTP.
    assert_eq!(layers_in("sensor-core"), ["sensor-model"].into());
    assert_eq!(outside_in("sensor-core"), ["tokio"].into());
    // The adapters: the ports they implement, never the Lambda boundary.
    assert_eq!(
        layers_in("sensor-aws"),
        ["sensor-core", "sensor-model"].into()
    );
    // The Lambda boundary wires everything; nothing local leaks in.
    assert_eq!(
        layers_in("sensor-lambda"),
        ["sensor-aws", "sensor-core", "sensor-model"].into()
    );
    // The box depends on the domain model only.
    assert_eq!(layers_in("sensorbox"), ["sensor-model"].into());
    for forbidden in [
        "aws-config",
        "aws-sdk-iotdataplane",
        "lambda_http",
        "opensearch",
    ] {
        assert!(
            !deps_of(&all, "sensorbox").contains(forbidden),
            "the box pulls in {forbidden}"
        );
    }
    // The functions are wiring: the Lambda boundary (and the model for the sensor name).
    for function in ["gasdetector", "dust", "temp", "nodata", "query"] {
        let layers = layers_in(function);
        assert!(
            layers.contains("sensor-lambda")
                && layers
                    .iter()
                    .all(|l| ["sensor-lambda", "sensor-model"].contains(l)),
            "{function}: {layers:?}"
        );
    }
    // The local stand-ins know nothing of the code they stand in for.
    assert_eq!(layers_in("local-aws"), BTreeSet::new());
    // The operator's CLI: the model's names and groupids, the registry through the SDK;
    // nothing of the functions.
    assert_eq!(layers_in("fleet"), ["sensor-model"].into());
}

/// The module (file) a `crate::` or `super::` path in `module` lands in: the longest
/// prefix that is a module of the crate.
fn target(
    modules: &BTreeSet<Vec<String>>,
    module: &[String],
    kind: &str,
    path: &[String],
) -> Option<Vec<String>> {
    let mut full: Vec<String> = if kind == "crate" {
        Vec::new()
    } else {
        module[..module.len().saturating_sub(1)].to_vec()
    };
    let mut path = path;
    while let Some(("super", rest)) = path
        .split_first()
        .map(|(first, rest)| (first.as_str(), rest))
    {
        full.pop();
        path = rest;
    }
    full.extend(path.iter().cloned());
    (0..=full.len())
        .rev()
        .map(|k| full[..k].to_vec())
        .find(|prefix| modules.contains(prefix))
}

fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` module (tests may
/// reach anywhere in their crate).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::a::b` and `super::a` paths in `code`: (kind, segments).
fn paths(code: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    for kind in ["crate", "super"] {
        let needle = format!("{kind}::");
        let mut rest = code;
        while let Some(i) = rest.find(&needle) {
            let before = rest[..i].chars().last();
            rest = &rest[i + needle.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let segments: Vec<String> = rest
                .split("::")
                .map_while(|segment| {
                    let name: String = segment
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    (!name.is_empty() && name.len() == segment.len()).then_some(name)
                })
                .collect();
            // The last segment may be followed by `{`, `;`, `(`: take it too.
            let last: String = rest
                .split("::")
                .nth(segments.len())
                .unwrap_or_default()
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let mut segments = segments;
            if !last.is_empty() {
                segments.push(last);
            }
            found.push((kind.to_string(), segments));
        }
    }
    found
}

/// A circle among `edges`, if any, as the modules along it.
fn circle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        marks: &mut BTreeMap<Vec<String>, Mark>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut names: Vec<String> = stack[start..].iter().map(|m| m.join("::")).collect();
                names.push(node.join("::"));
                return Some(names);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, marks, stack) {
                return Some(found);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    let mut stack = Vec::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut marks, &mut stack))
}

fn module_edges(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    files
        .iter()
        .map(|file| {
            let module = module_of(src, file);
            let text = std::fs::read_to_string(file).expect("readable source");
            let targets = paths(&code(&text))
                .into_iter()
                .filter_map(|(kind, path)| target(&modules, &module, &kind, &path))
                .filter(|t| *t != module)
                .collect();
            (module, targets)
        })
        .collect()
}

#[test]
fn no_module_circles_in_any_crate() {
    let root = root();
    let mut sources: Vec<PathBuf> = Vec::new();
    for parent in ["crates", "bench", "functions"] {
        for entry in std::fs::read_dir(root.join(parent)).expect("dir").flatten() {
            let src = entry.path().join("src");
            if src.is_dir() {
                sources.push(src);
            }
        }
    }
    for single in ["device", "fleet", "local-aws", "xtask", "tests"] {
        sources.push(root.join(single).join("src"));
    }
    assert!(sources.len() >= 15, "{sources:?}");
    let mut checked = 0;
    for src in &sources {
        let edges = module_edges(src);
        checked += edges.len();
        assert_eq!(circle(&edges), None, "a module circle in {}", src.display());
    }
    assert!(checked > 100, "only {checked} modules found");
}

/// The checker sees a circle when there is one (a test that can fail).
#[test]
fn the_circle_check_finds_a_planted_circle() {
    let dir = std::env::temp_dir().join(format!("module-circle-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("b")).expect("dirs");
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::b::c::Thing;\n").expect("write");
    std::fs::write(src.join("b/mod.rs"), "pub mod c;\n").expect("write");
    std::fs::write(
        src.join("b/c.rs"),
        "// crate::a in a comment is no edge\npub struct Thing(super::super::a::X);\n",
    )
    .expect("write");
    let edges = module_edges(&src);
    let found = circle(&edges);
    let _ = std::fs::remove_dir_all(&dir);
    let found = found.expect("the planted circle a -> b::c -> a");
    assert!(
        found.contains(&"a".to_string()) && found.contains(&"b::c".to_string()),
        "{found:?}"
    );
}
