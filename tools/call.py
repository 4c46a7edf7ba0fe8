"""Send a request to a served Truss (local or Baseten) and print a short summary of the answer.

    python -m tools.call midnight                       # manifest example 0 -> local server
    python -m tools.call midnight --example 1
    python -m tools.call midnight --image slide.png --field image_base64 --set task=segmentation
    python -m tools.call midnight --body request.json --url https://model-<id>.api.baseten.co/environments/production/predict
                                                        # Api-Key from $BASETEN_API_KEY
"""

import argparse
import base64
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict

import requests

from tools.demo import summarize
from tools.manifest import load_manifest, resolve_example

log = logging.getLogger("call")


def build_body(args: argparse.Namespace, entry: Dict[str, Any]) -> Any:
    """The request body from --body, --image or the manifest's example."""
    if args.body:
        body = json.loads(Path(args.body).read_text())
    elif args.image:
        body = {args.field: base64.b64encode(Path(args.image).read_bytes()).decode()}
    else:
        body = resolve_example(entry["examples"][args.example]["request"])
    for assignment in args.set or []:
        key, value = assignment.split("=", 1)
        try:
            body[key] = json.loads(value)
        except json.JSONDecodeError:
            body[key] = value
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("truss")
    parser.add_argument("--url", help="predict URL (default: the local server's port)")
    parser.add_argument("--example", type=int, default=0)
    parser.add_argument("--body", help="JSON file with the request body")
    parser.add_argument("--image", help="image file to send base64-encoded in --field")
    parser.add_argument("--field", default="image_base64")
    parser.add_argument("--set", action="append", help="extra top-level field, KEY=JSON")
    parser.add_argument("--full", action="store_true", help="print the whole response")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    entry = load_manifest()["trusses"][args.truss]
    url = args.url or f"http://127.0.0.1:{entry['port']}/v1/models/model:predict"
    headers = {}
    if os.environ.get("BASETEN_API_KEY"):
        headers["Authorization"] = f"Api-Key {os.environ['BASETEN_API_KEY']}"
    started = time.perf_counter()
    response = requests.post(url, json=build_body(args, entry), headers=headers, timeout=600)
    print(f"HTTP {response.status_code} in {time.perf_counter() - started:.2f}s from {url}")
    try:
        payload = response.json()
    except ValueError:
        print(response.text[:2000])
        sys.exit(1)
    print(json.dumps(payload if args.full else summarize(payload), indent=2)[:20000])
    sys.exit(0 if response.ok else 1)


if __name__ == "__main__":
    main()
