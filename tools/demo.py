"""The main job: serve each Truss locally with the real Truss server and call it.

For every truss in the root config.yaml: make its stand-in checkpoint (random weights, labelled
as such), start the real Truss server on 127.0.0.1, send the manifest's example requests, print a
summary of each response, stop the server.

    python -m tools.demo [midnight ...]
"""

import argparse
import json
import logging
import time
from typing import Any, Dict

from tools.local_server import ROOT, serve
from tools.manifest import load_manifest, prepare_standin, resolve_example

log = logging.getLogger("demo")


def summarize(body: Any) -> Dict[str, Any]:
    """Shorten long number lists so a response fits on a screen."""
    def short(v: Any) -> Any:
        if isinstance(v, list):
            return f"[{len(v)} items]" if len(v) > 4 else [short(x) for x in v]
        if isinstance(v, dict):
            return {k: short(x) for k, x in v.items()}
        if isinstance(v, str) and len(v) > 60:
            return v[:40] + f"... ({len(v)} chars)"
        return v
    return short(body)


def run(name: str, entry: Dict[str, Any]) -> bool:
    """Serve one truss, call its examples; True when every example answered 200."""
    env = prepare_standin(name)
    ok = True
    with serve(ROOT / entry["folder"], entry["port"], env) as server:
        print(f"\n=== {name}: real Truss server at {server.predict_url} "
              f"(stand-in weights: outputs are NOT the real model's) ===")
        for example in entry.get("examples", []):
            started = time.perf_counter()
            response = server.predict(resolve_example(example["request"]))
            elapsed = time.perf_counter() - started
            print(f"- {example['name']}: HTTP {response.status_code} in {elapsed:.2f}s")
            print("  " + json.dumps(summarize(response.json()))[:600])
            ok &= response.status_code == 200
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trusses", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    trusses = load_manifest()["trusses"]
    names = args.trusses or list(trusses)
    results = {name: run(name, trusses[name]) for name in names}
    print("\nsummary: " + ", ".join(f"{n}={'ok' if r else 'FAILED'}" for n, r in results.items()))
    raise SystemExit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
