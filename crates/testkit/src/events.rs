//! The sample Lambda events in `events/`, shared by handler tests and `cargo lambda invoke`.

use std::path::PathBuf;

/// The `events/` directory.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

/// The text of `events/<name>.json`.
pub fn load(name: &str) -> String {
    let path = dir().join(format!("{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every sample file's name (without `.json`), sorted.
pub fn all() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .expect("events/")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_owned))
        .collect();
    names.sort();
    names
}
