"""The `vfm` command: embed folders, whole slides, SAFE detection, PCA pictures.

Exit status: 0 every item succeeded; 2 some items failed (their rows say why); 1 the run itself
could not proceed (bad arguments, unreachable server, rejected key, slide without mpp, ...).
Every output is resumable: rerun the same command to skip finished rows and retry failures.
"""

import argparse
import csv
import hashlib
import io
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
from PIL import Image

from vfm_client import __version__
from vfm_client.base import BaseClient
from vfm_client.derm import DermClient
from vfm_client.errors import RunError
from vfm_client.images import GCS_PREFIX, URL_PREFIXES, ImageItem
from vfm_client.midnight import TASKS, MidnightClient
from vfm_client.results import Outcome
from vfm_client.safe import SafeClient
from vfm_client.tables import ResumableTable
from vfm_client.transport import RetryPolicy

log = logging.getLogger("vfm_client.cli")

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
LIST_EXTENSIONS = {".csv", ".tsv", ".txt", ".lst"}
LIST_HEADERS = ("source", "path", "url", "image", "file", "filename", "uri")

EMBED_SCHEMA = pa.schema([("source", pa.string()), ("embedding", pa.list_(pa.float32())),
                          ("shape", pa.list_(pa.int64())), ("model_id", pa.string()),
                          ("error", pa.string())])
SLIDE_SCHEMA = pa.schema([("x", pa.int64()), ("y", pa.int64()), ("level", pa.int32()),
                          ("size", pa.int64()), ("mpp", pa.float64()),
                          ("embedding", pa.list_(pa.float32())), ("error", pa.string())])
DETECT_SCHEMA = pa.schema([("source", pa.string()), ("label", pa.string()),
                           ("logprobs", pa.list_(pa.float64())), ("mask_path", pa.string()),
                           ("error", pa.string())])


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; here 2 means "some items failed", so usage -> 1."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


# -- inputs ---------------------------------------------------------------------------------
def expand_inputs(inputs: Sequence[str]) -> List[Tuple[str, str]]:
    """INPUT arguments -> [(source as given, what to read)], duplicates dropped.

    A folder -> its image files (recursive, sorted); a .csv/.tsv/.txt/.lst file -> its entries
    (CSV: the column named source/path/url/image/file/filename/uri, else the first; relative
    paths are relative to the list's folder); anything else (file, URL, gs:// URI) -> itself.
    A missing file stays an input: its row gets `file_not_found`.
    """
    pairs: List[Tuple[str, str]] = []
    for arg in inputs:
        path = Path(arg)
        if arg.lower().startswith(URL_PREFIXES + (GCS_PREFIX,)):
            pairs.append((arg, arg))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            pairs.extend((str(p), str(p)) for p in files)
        elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
            pairs.extend(read_list(path))
        else:
            pairs.append((arg, arg))
    seen: Dict[str, str] = {}
    for source, target in pairs:
        if source in seen:
            log.warning("%s is listed more than once: embedded once", source)
            continue
        seen[source] = target
    return list(seen.items())


def read_list(path: Path) -> List[Tuple[str, str]]:
    """Entries of a list file as (source as written, path or URL to read)."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".csv", ".tsv"):
        rows = [r for r in csv.reader(io.StringIO(text),
                                      delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
                if r and any(c.strip() for c in r)]
        column = 0
        if rows:
            header = [c.strip().lower() for c in rows[0]]
            named = [i for i, c in enumerate(header) if c in LIST_HEADERS]
            if named:
                column, rows = named[0], rows[1:]
        entries = [r[column].strip() for r in rows if len(r) > column and r[column].strip()]
    else:
        entries = [line.strip() for line in text.splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    out = []
    for entry in entries:
        if entry.lower().startswith(URL_PREFIXES + (GCS_PREFIX,)) or os.path.isabs(entry):
            out.append((entry, entry))
        else:
            out.append((entry, str(path.parent / entry)))
    return out


# -- shared pieces ---------------------------------------------------------------------------
def _retry(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(max_attempts=args.retries, read_timeout_s=args.timeout,
                       backoff_base_s=args.backoff)


def _client_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    if not args.url:
        raise RunError("--url is required")
    return {"api_key": args.api_key, "max_items": args.max_items, "max_bytes": args.max_bytes,
            "concurrency": args.concurrency, "retry": _retry(args)}


def _progress(total: int, args: argparse.Namespace, unit: str, desc: str) -> Any:
    from tqdm import tqdm
    return tqdm(total=total, unit=unit, desc=desc, disable=args.no_progress, file=sys.stderr,
                dynamic_ncols=True)


def _run_into_table(client: BaseClient, prepared: Sequence[Any], options: Dict[str, Any],
                    table: ResumableTable, make_row: Callable[[int, Outcome], Dict[str, Any]],
                    bar: Any) -> int:
    """Send everything, add rows as chunks finish; flush on any exit; merge on success.
    Returns the exit status from the merged table (0 all rows ok, 2 some failed)."""
    finished = False
    try:
        for chunk, outcomes in client.iter_outcomes(prepared, options, on_done=bar.update):
            table.add(make_row(i, outcomes[i]) for i in chunk)
        finished = True
    finally:
        bar.close()
        if not finished:
            table.flush()
    succeeded, failed = table.close()
    log.info("%d rows ok, %d failed -> %s", succeeded, failed, table.out)
    return 0 if failed == 0 else 2


def _error_text(outcome: Outcome) -> Optional[str]:
    return None if outcome.error is None else str(outcome.error)[:2000]


# -- vfm embed -------------------------------------------------------------------------------
def cmd_embed(args: argparse.Namespace) -> int:
    pairs = expand_inputs(args.inputs)
    if not pairs:
        raise RunError("no input images found")
    client: BaseClient
    options: Dict[str, Any]
    kwargs = {**_client_kwargs(args), "encoding": args.encoding,
              "embedding_dtype": args.dtype}
    if args.model == "midnight":
        task = args.task or "classification"
        client = MidnightClient(args.url, **kwargs)
        options = MidnightClient.options(task, args.batch_size)
    else:
        if args.task:
            raise RunError("--task is for --model midnight")
        task = None
        client = DermClient(args.url, **kwargs)
        options = DermClient.options(args.gcs_token or os.environ.get("VFM_GCS_TOKEN"))
    settings = {"command": "embed", "model": args.model, "task": task}
    table = ResumableTable(Path(args.out), EMBED_SCHEMA, ["source"], settings,
                           overwrite=args.overwrite, flush_rows=args.flush_rows)
    targets = dict(pairs)
    pending = table.pending([s for s, _ in pairs])
    log.info("%d inputs, %d already done, %d to embed", len(pairs), len(pairs) - len(pending),
             len(pending))
    prepared = client.prepare([targets[s] for s in pending])

    def row(i: int, outcome: Outcome) -> Dict[str, Any]:
        value = outcome.value
        return {"source": pending[i], "embedding": value,
                "shape": None if value is None else list(value.shape),
                "model_id": outcome.model_id, "error": _error_text(outcome)}

    return _run_into_table(client, prepared, options, table, row,
                           _progress(len(pending), args, "img", "embed"))


# -- vfm slide -------------------------------------------------------------------------------
def thumbnail_paths(out: Path) -> Tuple[Path, Path]:
    """(annotated thumbnail, plain thumbnail) beside OUT.parquet."""
    stem = out.name[:-len(".parquet")] if out.name.endswith(".parquet") else out.name
    return out.with_name(f"{stem}.thumbnail.png"), out.with_name(f"{stem}.thumbnail.plain.png")


def cmd_slide(args: argparse.Namespace) -> int:
    from vfm_client import slide as wsi
    from vfm_client.images import png_bytes
    from vfm_client.pictures import slide_thumbnail

    task = args.task or "classification"
    client = MidnightClient(args.url, **_client_kwargs(args), encoding=args.encoding,
                            embedding_dtype=args.dtype)
    sl = wsi.Slide(Path(args.slide), backend=args.backend)
    try:
        slide_mpp = args.slide_mpp or sl.mpp()
        if slide_mpp is None:
            raise RunError(f"{args.slide} has no microns-per-pixel in its metadata "
                           "(openslide.mpp-x / tiffslide.mpp-x); pass --slide-mpp X")
        geometry = wsi.tile_geometry(sl.level_downsamples, slide_mpp, args.mpp, args.tile_size)
        level_w, level_h = sl.level_dimensions[geometry.level]
        grid = wsi.tile_grid(level_w, level_h, geometry)
        thumb_size = wsi.thumbnail_size(*sl.dimensions, geometry.size)
        thumbnail = wsi.read_thumbnail(sl, thumb_size)
        tissue, threshold = wsi.tissue_mask(thumbnail, args.min_saturation)
        kept = [(x, y) for x, y in grid
                if wsi.tissue_fraction(tissue, x, y, geometry.size, sl.dimensions)
                >= args.min_tissue]
        log.info("%s (%s): %dx%d at %.4g mpp; tiles of %d px at %.4g mpp = %d level-0 px, read "
                 "at level %d (downsample %.4g, %d px); %d tiles, %d with tissue (saturation > "
                 "%d)", args.slide, sl.backend, *sl.dimensions, slide_mpp, args.tile_size,
                 geometry.mpp, geometry.size, geometry.level, geometry.downsample,
                 geometry.read_px, len(grid), len(kept), threshold)
        out = Path(args.out)
        annotated, plain = thumbnail_paths(out)
        thumbnail.save(plain)
        slide_thumbnail(thumbnail, tissue, kept, geometry.size, sl.dimensions).save(annotated)
        settings = {"command": "slide", "slide": Path(args.slide).name,
                    "slide_bytes": Path(args.slide).stat().st_size,
                    "slide_dimensions": list(sl.dimensions), "slide_mpp": slide_mpp,
                    "target_mpp": args.mpp, "tile_px": args.tile_size, "level": geometry.level,
                    "read_px": geometry.read_px, "size": geometry.size, "task": task,
                    "thumbnail": plain.name, "thumbnail_size": list(thumb_size)}
        table = ResumableTable(out, SLIDE_SCHEMA, ["x", "y"], settings,
                               overwrite=args.overwrite, flush_rows=args.flush_rows)
        pending = table.pending(kept)
        if len(pending) < len(kept):
            log.info("%d tiles already done, %d to embed", len(kept) - len(pending), len(pending))
        estimate = 3 * args.tile_size * args.tile_size

        def loader(x: int, y: int) -> Callable[[], bytes]:
            return lambda: png_bytes(wsi.read_tile(sl, geometry, x, y))

        prepared = [ImageItem(f"tile({x},{y})", "lazy", f"tile({x},{y})", estimate,
                              loader(x, y)) for x, y in pending]

        def row(i: int, outcome: Outcome) -> Dict[str, Any]:
            x, y = pending[i]
            return {"x": x, "y": y, "level": geometry.level, "size": geometry.size,
                    "mpp": geometry.mpp, "embedding": outcome.value,
                    "error": _error_text(outcome)}

        return _run_into_table(client, prepared, MidnightClient.options(task, args.batch_size),
                               table, row, _progress(len(pending), args, "tile", "slide"))
    finally:
        sl.close()


# -- vfm detect ------------------------------------------------------------------------------
def picture_name(source: str) -> str:
    """A stable, unique file name for a source's mask / overlay."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source.split("?")[0]).stem)[:80] or "image"
    return f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:10]}.png"


def cmd_detect(args: argparse.Namespace) -> int:
    from vfm_client.pictures import mask_picture, overlay

    pairs = expand_inputs(args.inputs)
    if not pairs:
        raise RunError("no input images found")
    kwargs = _client_kwargs(args)
    kwargs.pop("max_items")
    client = SafeClient(args.url, **kwargs)
    out = Path(args.out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    table = ResumableTable(out / "results.parquet", DETECT_SCHEMA, ["source"],
                           {"command": "detect"}, overwrite=args.overwrite,
                           flush_rows=args.flush_rows)
    targets = dict(pairs)
    pending = table.pending([s for s, _ in pairs])
    prepared = client.prepare([targets[s] for s in pending])

    def row(i: int, outcome: Outcome) -> Dict[str, Any]:
        source = pending[i]
        if outcome.error is not None:
            return {"source": source, "error": _error_text(outcome)}
        detection = outcome.value
        mask_path = None
        if detection.mask is not None:
            name = picture_name(source)
            mask_path = f"masks/{name}"
            mask_picture(detection.mask).save(out / mask_path)
            item = prepared[i]
            data = (client.transport.get_bytes(str(item.value)) if item.kind == "url"
                    else item.read())
            with Image.open(io.BytesIO(data)) as image:  # stored layout, as the server's mask
                overlay(image, detection.mask).save(out / "overlays" / name)
        return {"source": source, "label": detection.label,
                "logprobs": [float(v) for v in detection.logprobs], "mask_path": mask_path,
                "error": None}

    return _run_into_table(client, prepared, {}, table, row,
                           _progress(len(pending), args, "img", "detect"))


# -- vfm render pca --------------------------------------------------------------------------
def cmd_render_pca(args: argparse.Namespace) -> int:
    from vfm_client.pictures import slide_pca_picture, tile_pca_picture
    from vfm_client.tables import read_settings

    source = Path(args.input)
    if source.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        settings = read_settings(source)
        if not settings or settings.get("command") != "slide":
            raise RunError(f"{source} is not a `vfm slide` output")
        table = pq.read_table(source, columns=["x", "y", "embedding", "error"])
        done = [r for r in table.to_pylist() if r["error"] is None]
        if len(done) < 2:
            raise RunError(f"{source} has fewer than 2 embedded tiles: nothing to map")
        plain = source.with_name(settings["thumbnail"])
        with Image.open(plain) as thumb:
            picture = slide_pca_picture(
                thumb, [(r["x"], r["y"]) for r in done], settings["size"],
                tuple(settings["slide_dimensions"]),
                np.asarray([r["embedding"] for r in done], dtype=np.float32))
        picture.save(args.out)
        log.info("PCA map of %d tiles over the thumbnail -> %s", len(done), args.out)
        return 0
    client = MidnightClient(args.url, **_client_kwargs(args))
    results = client.embed_results([str(source)], task="segmentation")
    if results.errors[0] is not None:
        log.error("%s: %s", source, results.errors[0])
        return 2
    grid = results.embeddings[0]
    assert grid is not None
    if grid.ndim != 3:
        raise RunError(f"segmentation embedding of shape {grid.shape}; expected [D, g, g]")
    input_size = int(client.info.get("input_size") or 224)
    with Image.open(source) as image:
        tile_pca_picture(image, grid, input_size, args.scale).save(args.out)
    log.info("PCA of %s's %dx%d patch grid -> %s", source, grid.shape[1], grid.shape[2],
             args.out)
    return 0


# -- parser ----------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser, url_required: bool = True) -> None:
    p.add_argument("--url", required=url_required,
                   help="predict URL (Baseten: https://model-<id>.api.baseten.co/environments/"
                        "production/predict; local: http://127.0.0.1:8101)")
    p.add_argument("--api-key", default=None,
                   help="Baseten API key (default: $BASETEN_API_KEY; none for a local server)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--max-items", type=int, default=32, help="images per request (default 32)")
    p.add_argument("--max-bytes", type=int, default=32 * 1024 * 1024,
                   help="JSON bytes per request (default 32 MiB; Baseten's cap is 100 MB)")
    p.add_argument("--retries", type=int, default=5,
                   help="attempts per request for 429/5xx/connection errors (default 5)")
    p.add_argument("--backoff", type=float, default=0.5,
                   help="backoff base in seconds (full jitter, doubled per retry)")
    p.add_argument("--timeout", type=float, default=1200,
                   help="read timeout per attempt in seconds (default 1200, Baseten's limit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def _resumable(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="start over instead of resuming an existing output")
    p.add_argument("--flush-rows", type=int, default=256,
                   help="rows per part file while running (resume granularity, default 256)")


def _encoding(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoding", choices=("auto", "base64", "float"), default="auto",
                   help="embedding transfer: auto = base64 if the server supports it")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="base64 embedding dtype (float16 halves the bytes; default float32)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vfm", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vfm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    embed = sub.add_parser("embed", help="images -> embeddings Parquet")
    _common(embed)
    _resumable(embed)
    _encoding(embed)
    embed.add_argument("--model", choices=("midnight", "derm"), default="midnight")
    embed.add_argument("--task", choices=TASKS, default=None,
                       help="Midnight task (default classification)")
    embed.add_argument("--batch-size", type=int, default=None,
                       help="Midnight micro-batch size on the server")
    embed.add_argument("--gcs-token", default=None,
                       help="OAuth token for gs:// inputs (Derm; default $VFM_GCS_TOKEN)")
    embed.add_argument("--out", required=True, help="output Parquet file")
    embed.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="image files, folders, URLs, or .csv/.txt lists of them")
    embed.set_defaults(func=cmd_embed)

    slide = sub.add_parser("slide", help="whole-slide image -> Midnight tile embeddings")
    _common(slide)
    _resumable(slide)
    _encoding(slide)
    slide.add_argument("--mpp", type=float, default=0.5,
                       help="target microns per pixel of the tiles (default 0.5)")
    slide.add_argument("--slide-mpp", type=float, default=None,
                       help="the slide's microns per level-0 pixel (default: its metadata)")
    slide.add_argument("--tile-size", type=int, default=224,
                       help="tile side in pixels as sent (default 224, the model input)")
    slide.add_argument("--min-tissue", type=float, default=0.25,
                       help="keep tiles whose thumbnail footprint is at least this tissue")
    slide.add_argument("--min-saturation", type=int, default=15,
                       help="floor of the Otsu saturation threshold (0..255, default 15)")
    slide.add_argument("--task", choices=TASKS, default=None)
    slide.add_argument("--batch-size", type=int, default=None)
    slide.add_argument("--backend", choices=("auto", "openslide", "tiffslide"), default="auto")
    slide.add_argument("--out", required=True,
                       help="output Parquet file (OUT.thumbnail.png is written beside it)")
    slide.add_argument("slide", metavar="SLIDE")
    slide.set_defaults(func=cmd_slide)

    detect = sub.add_parser("detect", help="SAFE detector over images -> table, masks, overlays")
    _common(detect)
    _resumable(detect)
    detect.add_argument("--out", required=True, help="output folder")
    detect.add_argument("inputs", nargs="+", metavar="INPUT")
    detect.set_defaults(func=cmd_detect)

    render = sub.add_parser("render", help="pictures of embeddings")
    kinds = render.add_subparsers(dest="kind", required=True)
    pca = kinds.add_parser("pca", help="PCA-to-RGB of Midnight segmentation embeddings (a tile),"
                                       " or of a `vfm slide` Parquet over its thumbnail")
    _common(pca, url_required=False)
    pca.add_argument("--scale", type=int, default=2, help="pixels per model-input pixel")
    pca.add_argument("--out", required=True, help="output PNG")
    pca.add_argument("input", metavar="IMAGE", help="a tile image, or OUT.parquet of vfm slide")
    pca.set_defaults(func=cmd_render_pca)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run `vfm`; returns the exit status (0 / 1 / 2, see the module docstring)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="vfm: %(levelname)s %(message)s", stream=sys.stderr)
    for name in ("urllib3", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except RunError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted: finished rows are kept; rerun the same command to resume")
        return 1


if __name__ == "__main__":
    sys.exit(main())
