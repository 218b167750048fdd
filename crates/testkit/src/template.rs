//! `template.yaml`, read as CloudFormation reads it, for tests that hold the code to it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The template as JSON, decoded by cfn-lint's own loader (it knows CloudFormation's tags),
/// from the project's `.venv` (`make test` installs it).
///
/// # Panics
/// When the loader cannot run or the template does not decode: the test has nothing to check.
#[allow(clippy::expect_used, clippy::unwrap_used)] // Test support: fails loudly on purpose.
pub fn load() -> Value {
    let out = std::process::Command::new(root().join(".venv/bin/python"))
        .arg("-c")
        .arg("import json,sys\nfrom cfnlint.decode import decode\nt,m=decode(sys.argv[1])\nassert not m, m\nprint(json.dumps(t, default=str))")
        .arg(root().join("template.yaml"))
        .output()
        .expect("run the template decoder from .venv (make test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every IAM action the template's policy grants the function `logical_id`.
pub fn policy_actions(t: &Value, logical_id: &str) -> BTreeSet<String> {
    let statements = t["Resources"][logical_id]["Properties"]["Policies"].as_array().into_iter().flatten();
    statements
        .flat_map(|p| p["Statement"].as_array().cloned().unwrap_or_default())
        .flat_map(|st| match &st["Action"] {
            Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect::<Vec<_>>(),
            Value::String(one) => vec![one.clone()],
            _ => Vec::new(),
        })
        .collect()
}
