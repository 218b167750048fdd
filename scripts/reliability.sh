#!/usr/bin/env bash
# The tests RELIABILITY.md names, and only those: every test named in backticks, every
# test in a file it names, and every test under a module it names by path. `--check` only verifies that each named test still exists (part
# of `make test`, so a renamed or deleted test cannot leave a row that cites nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

doc=RELIABILITY.md
# Test names are snake_case with three words or more; shorter backticked words in the
# document are fields, statuses and commands.
mapfile -t named < <(grep -o '`[a-z0-9_]*`' "$doc" | tr -d '`' | grep -E '^[a-z0-9]+(_[a-z0-9]+){2,}$' | sort -u)
mapfile -t files < <(grep -oE '`(crates|tests)/[A-Za-z0-9_/-]+\.rs`' "$doc" | tr -d '`' | sort -u)
# Modules named by path (`core::hook::network`): every test under them.
mapfile -t modules < <(grep -oE '`[a-z_]+(::[a-z_]+)+`' "$doc" | tr -d '`' | sort -u)

# The source file of a module path, or nothing when the crate is not known.
module_file() {
    local crate="${1%%::*}" rest="${1#*::}" dir
    case "$crate" in
        core | hookbridge_core) dir=crates/core/src ;;
        subscription_api) dir=crates/subscription-api/src ;;
        *) return ;;
    esac
    local path="$dir/${rest//:://}"
    if [ -f "$path.rs" ]; then echo "$path.rs"; elif [ -f "$path/mod.rs" ]; then echo "$path/mod.rs"; fi
}

missing=0
for name in "${named[@]}"; do
    if ! grep -rqE "fn ${name}\b" crates tests; then
        echo "$doc names \`$name\`, which is no test" >&2
        missing=1
    fi
done
for file in "${files[@]}"; do
    if [ ! -f "$file" ]; then
        echo "$doc names \`$file\`, which does not exist" >&2
        missing=1
    fi
done
for module in "${modules[@]}"; do
    if [ -z "$(module_file "$module")" ]; then
        echo "$doc names \`$module\`, which is no module" >&2
        missing=1
    fi
done
[ "$missing" = 0 ] || exit 1

if [ "${1:-}" = "--check" ]; then
    echo "$doc: ${#named[@]} tests, ${#files[@]} files and ${#modules[@]} modules named, all present"
    exit 0
fi

filters=("${named[@]}")
for file in "${files[@]}"; do
    # Every test function of a named file: the attribute, then its `fn` within a few lines;
    # or a test `on_both_backends!` makes of a function taking the backend's flavor.
    mapfile -t -O "${#filters[@]}" filters < <(
        grep -A4 -E '^\s*#\[(tokio::)?test' "$file" | grep -oE '\bfn [a-z0-9_]+' | cut -d' ' -f2
        grep -oE '\bfn [a-z0-9_]+\(flavor' "$file" | cut -d' ' -f2 | cut -d'(' -f1
    )
done
for module in "${modules[@]}"; do
    # libtest matches a filter anywhere in a test's path, which starts at the crate's root.
    filters+=("${module#*::}::")
done
mapfile -t filters < <(printf '%s\n' "${filters[@]}" | sort -u)

echo "running ${#filters[@]} tests named by $doc"
# A filter matches every test whose path contains it; libtest takes any number of them.
exec "${CARGO:-cargo}" test --workspace --no-fail-fast -- "${filters[@]}"
