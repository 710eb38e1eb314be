"""The benchmark's results as a readable table."""

from __future__ import annotations

from typing import Any

from bench.stages import STAGES


def render(result: dict[str, Any]) -> str:
    m, res = result["meta"], result["backends"]
    corpus = m["corpus"]
    kinds = ", ".join(f"{n} {k}" for k, n in corpus["by_kind"].items())
    lines = [
        f"Hearth ingest benchmark: {corpus['files']} files ({kinds}), {m['runs']} run(s) per"
        f" backend, interleaved; batch {m['batch_size']}, {m['cpus']} CPUs; medians",
        f"corpus: {corpus['text']}",
        f"parsing: {m['parser']}",
        f"pipeline: {m.get('pipeline', 'ingest_path per file')}",
        "",
        f"{'backend':<10} {'files/s':>8} {'chunks/s':>9} {'floor/s':>8} {'embed/s':>8}"
        f" {'pipe/floor':>10} {'vs torch':>9} {'export s':>9} {'load s':>7}",
    ]
    for b, r in res.items():
        p, f = r["pipeline"], r["floor"]
        vs = f"{r['vs_torch']['pipeline']:.2f}x" if "vs_torch" in r else "-"
        export = f"{r['export_s']:.1f}" if r.get("export_s") is not None else "-"
        lines.append(
            f"{b:<10} {p['files_per_s']:>8.2f} {p['chunks_per_s']:>9.1f} {f['chunks_per_s']:>8.1f}"
            f" {f['per_document_chunks_per_s']:>8.1f} {r['pipeline_over_floor']:>10.2f}"
            f" {vs:>9} {export:>9} {r['load_s']:>7.1f}"
        )
    lines += [
        "floor/s: bare embed() of all the chunk texts in one call; embed/s: the pipeline's own"
        " embed() calls (a batch's, or one per document --one-by-one); pipe/floor: pipeline"
        " chunks/s over floor/s",
        "",
        "time per stage, seconds per run (share of pipeline time):",
    ]
    lines.append(f"{'backend':<10} " + " ".join(f"{s:>14}" for s in STAGES))
    for b, r in res.items():
        cells = [f"{r['stages_seconds'][s]:.2f} ({r['stages_share'][s]:.0%})" for s in STAGES]
        lines.append(f"{b:<10} " + " ".join(f"{c:>14}" for c in cells))
    chunks = {b: r["pipeline"]["chunks"] for b, r in res.items()}
    lines.append(f"chunks per run: {chunks}")
    if any("rss" in r for r in res.values()):
        lines += [
            "",
            "worker-like memory, MB (fresh process per backend; a full-length batch embedded,"
            " a file of each kind parsed, chunked, embedded):",
            f"{'backend':<10} {'model load':>10} {'RSS':>7} {'peak':>7} {'torch?':>7}"
            f" {'parser child':>13} {'RSS if inline':>14}",
        ]
        for b, r in res.items():
            m = r.get("rss")
            if m:
                inline = m["inline_parsing"]  # None: not measured (--quick)
                lines.append(
                    f"{b:<10} {m['model_load_mb']:>10.0f} {m['rss_mb']:>7.0f}"
                    f" {m['peak_rss_mb']:>7.0f} {'yes' if m['torch_imported'] else 'no':>7}"
                    f" {m['parse_child']['peak_rss_mb']:>13.0f}"
                    + (f" {inline['rss_mb']:>14.0f}" if inline else f" {'-':>14}")
                )
        lines.append(
            "(RSS, peak: the worker's own process, parsing in a ParserProcess child (its peak is"
            " 'parser child'); 'RSS if inline': after parsing in-process too, where unstructured"
            " -> spaCy -> thinc imports torch whatever the backend)"
        )
    rs = result.get("rescan")
    if rs:
        lines += [
            "",
            f"rescan of {rs['files']:,} unchanged files (reconcile): {rs['seconds']:.3f} s median"
            f" ({rs['us_per_file']:.0f} µs/file); planned {rs['planned_ingest']} to ingest,"
            f" {rs['planned_delete']} to delete, {rs['unchanged']:,} unchanged"
            f" [index rows seeded by {rs['seeded_with']}]",
        ]
    return "\n".join(lines)
