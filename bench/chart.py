"""The PNG chart of bench/results/throughput.json (matplotlib, headless)."""

from pathlib import Path
from typing import Any, Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RATIO_CASES = ("classify_32", "segment_8_float_float32", "segment_8_base64_float32",
               "segment_8_base64_float16", "large_8", "large_8_full_decode", "concurrent_32",
               "concurrent_32_no_batching")


def draw(results: Dict[str, Any], out: Path) -> Path:
    """Six panels: ratios with targets, images/s, concurrency, bytes on the wire, server RSS,
    JSON encoding. Returns `out`."""
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    cases = results["cases"]
    _ratios(axes[0][0], cases, results)
    _throughput(axes[0][1], cases)
    _concurrency(axes[0][2], results.get("concurrency"))
    _wire(axes[1][0], cases)
    _memory(axes[1][1], results.get("memory"))
    _encoding(axes[1][2], results["json_encoding"])
    m = results["machine"]
    fig.suptitle(f"Midnight Truss, ViT-S stand-in, CPU ({m['cpu_model']}, "
                 f"{m['logical_cpus']} CPUs, torch threads {m['torch_threads']}), "
                 f"{results['rounds']} interleaved rounds, {results['date']}", fontsize=12)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _names(cases: Dict[str, Any]) -> list:
    """The ratio cases in a fixed order, then any other case (e.g. CASE@variant)."""
    return [n for n in RATIO_CASES if n in cases] + sorted(
        n for n in cases if n not in RATIO_CASES and "@" in n)


def _ratios(ax: Any, cases: Dict[str, Any], results: Dict[str, Any]) -> None:
    names = _names(cases)
    med = [cases[n]["ratio_bare_over_e2e"]["median"] for n in names]
    low = [m - cases[n]["ratio_bare_over_e2e"]["min"] for m, n in zip(med, names, strict=True)]
    high = [cases[n]["ratio_bare_over_e2e"]["max"] - m for m, n in zip(med, names, strict=True)]
    ax.barh(names, med, xerr=[low, high], color="tab:blue", capsize=3)
    for target in results["targets"]:
        case = target["what"].split(":")[0]
        if case in names:
            y = names.index(case)
            ax.plot([target["target"]] * 2, [y - 0.4, y + 0.4], color="red", lw=2)
    for y, m in enumerate(med):
        ax.text(m + 0.02, y, f"{m:.2f}", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.2)
    ax.set_title("bare forward / end to end (median, min-max; red: target)")


def _label_bars(ax: Any, bars: Any, texts: List[str], fontsize: Optional[int] = 9) -> None:
    """Write each text centred above its bar."""
    for bar, text in zip(bars, texts, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), text, ha="center",
                va="bottom", fontsize=fontsize)


def _throughput(ax: Any, cases: Dict[str, Any]) -> None:
    names = _names(cases)
    ys = range(len(names))
    ax.barh([y - 0.2 for y in ys], [cases[n]["images_per_s"] for n in names], height=0.4,
            label="end to end")
    ax.barh([y + 0.2 for y in ys], [cases[n]["bare_images_per_s"] for n in names], height=0.4,
            label="bare forward")
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.legend()
    ax.set_title("images/s (median)")


def _concurrency(ax: Any, conc: Any) -> None:
    if not conc:
        ax.set_axis_off()
        return
    labels, values, notes = [], [], []
    for mode, row in conc.items():
        short = mode.replace("batching_", "batching ")
        labels += [f"1 request\nx 32 images\n{short}", f"32 clients\nx 1 image\n{short}"]
        values += [row["single_request_images_per_s"], row["concurrent_images_per_s"]]
        notes += [row["mean_forward_batch_single_request"], row["mean_forward_batch_concurrent"]]
    bars = ax.bar(labels, values, color=["tab:blue", "tab:orange"] * 2)
    _label_bars(ax, bars, [f"mean batch {note:.1f}" for note in notes])
    ax.set_ylabel("images/s")
    ax.set_title("concurrent single-image clients vs one request")


def _wire(ax: Any, cases: Dict[str, Any]) -> None:
    names = [n for n in cases if n.startswith("segment_8_") and "@" not in n]
    if not names:
        ax.set_axis_off()
        return
    sizes = [cases[n]["response_bytes"] / 2**20 for n in names]
    bars = ax.bar([n.replace("segment_8_", "") for n in names], sizes, color="tab:green")
    _label_bars(ax, bars, [f"{size:.1f} MiB" for size in sizes], fontsize=None)
    ax.set_ylabel("MiB per response")
    ax.set_title("bytes on the wire: 8 images, segmentation [8, 384, 16, 16]")


def _memory(ax: Any, memory: Any) -> None:
    if not memory:
        ax.set_axis_off()
        return
    labels, growth, colors = [], [], []
    for server, color in (("default", "tab:blue"), ("full_decode", "tab:red")):
        for name, row in memory.get(server, {}).items():
            labels.append(f"{server}: {name}")
            growth.append(row["peak_minus_before_mib"])
            colors.append(color)
    ax.barh(labels, growth, color=colors)
    for y, value in enumerate(growth):
        ax.text(value, y, f" {value:.0f}", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("peak RSS - RSS before the request, MiB (fresh server each)")
    ax.set_title("server memory of one request")


def _encoding(ax: Any, enc: Dict[str, Any]) -> None:
    names = list(enc["encoders"])
    ms = [enc["encoders"][n]["median_s"] * 1000 for n in names]
    labels = ["old: tolist +\njson.dumps", "float32 JSON\n(orjson numpy)", "base64\nfloat32",
              "base64\nfloat16"][:len(names)]
    bars = ax.bar(labels, ms, color="tab:purple")
    rows = [enc["encoders"][name] for name in names]
    _label_bars(ax, bars, [f"{row['median_s'] * 1000:.0f} ms\nx{row['speedup_vs_old']:.0f}"
                           for row in rows])
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title(f"JSON encoding of {enc['shape']} float32")
