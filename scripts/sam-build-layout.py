#!/usr/bin/env python3
"""Lay `make build`'s bootstraps out as `sam build` would: .aws-sam/build/<LogicalId>/bootstrap
and .aws-sam/build/template.yaml with each function's CodeUri pointing there, so
`sam deploy` takes either build the same way."""
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FUNCTIONS = {
    "SubscriptionApiFunction": "subscription-api",
    "IngestFunction": "ingest",
    "DeliveryWorkerFunction": "delivery-worker",
    "VerifierFunction": "verifier",
}


def main() -> int:
    out = ROOT / ".aws-sam" / "build"
    template = (ROOT / "template.yaml").read_text()
    for logical, binary in FUNCTIONS.items():
        bootstrap = ROOT / "target" / "lambda" / binary / "bootstrap"
        if not bootstrap.exists():
            print(f"{bootstrap} is missing: run make build", file=sys.stderr)
            return 1
        (out / logical).mkdir(parents=True, exist_ok=True)
        shutil.copy2(bootstrap, out / logical / "bootstrap")
        # The function's block runs from its logical id to the next top-level resource.
        block = re.compile(rf"(^  {logical}:\n(?:(?!^  \S).*\n)*?      CodeUri: )\.$", re.M)
        template, n = block.subn(rf"\g<1>{logical}", template)
        if n != 1:
            print(f"template.yaml: no CodeUri for {logical}", file=sys.stderr)
            return 1
    (out / "template.yaml").write_text(template)
    print(f"hookbridge: {out / 'template.yaml'} and the four bootstraps are ready for sam deploy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
