#!/usr/bin/env python3
"""The layering rules of the workspace, checked from `cargo metadata` and the sources.

  - hookbridge-core depends on no other crate of the workspace (its external
    dependencies are checked by check-core-deps.sh);
  - the backends (hookbridge-aws, hookbridge-embedded) never reach each other;
  - hookbridge-outbound reaches no backend;
  - a stage (subscription-api, ingest, delivery-worker, verifier) reaches a backend only
    from its Lambda main.rs: as an optional dependency behind a feature, or a
    dev-dependency, and never from its library's sources.

Usage: check-layering.py [WORKSPACE_DIR]   (exit status 1 and a line per breach)
"""

import json
import pathlib
import subprocess
import sys

BACKENDS = {"hookbridge-aws", "hookbridge-embedded"}
STAGES = {"subscription-api", "ingest", "delivery-worker", "verifier"}
CORE = "hookbridge-core"
OUTBOUND = "hookbridge-outbound"


def metadata(root: pathlib.Path) -> dict:
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline",
         "--manifest-path", str(root / "Cargo.toml")],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def breaches(root: pathlib.Path) -> list[str]:
    meta = metadata(root)
    members = {p["name"]: p for p in meta["packages"]}
    found = []
    for name, pkg in members.items():
        deps = [d for d in pkg["dependencies"] if d["name"] in members]
        crate_dir = pathlib.Path(pkg["manifest_path"]).parent
        if name == CORE:
            found += [f"{CORE} depends on {d['name']}; the core depends on no other crate"
                      for d in deps if d["kind"] is None]
        if name in BACKENDS:
            found += [f"{name} depends on {d['name']}; the backends never reach each other"
                      for d in deps if d["name"] in BACKENDS]
        if name == OUTBOUND:
            found += [f"{OUTBOUND} depends on {d['name']}; the outbound client reaches no backend"
                      for d in deps if d["name"] in BACKENDS]
        if name in STAGES:
            found += [f"{name} depends on {d['name']} for its library; a stage reaches a backend only from main.rs"
                      for d in deps
                      if d["name"] in BACKENDS and d["kind"] is None and not d["optional"]]
            for src in sorted((crate_dir / "src").rglob("*.rs")):
                if src.name == "main.rs" and src.parent == crate_dir / "src":
                    continue
                text = src.read_text()
                for backend in BACKENDS:
                    if backend.replace("-", "_") + "::" in text or f"use {backend.replace('-', '_')}" in text:
                        found.append(f"{src.relative_to(root)} uses {backend}; a stage reaches a backend only from main.rs")
    return found


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    found = breaches(root)
    for line in found:
        print(line, file=sys.stderr)
    if found:
        return 1
    print(f"layering: {root.name} keeps every rule (core alone, backends apart, stages reach a backend only from main.rs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
