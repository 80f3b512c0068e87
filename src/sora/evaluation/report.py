"""``write_report()``: one self-contained HTML page (PNGs embedded) for a run."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from sora.evaluation import plots
from sora.io.files import atomic_write_text
from sora.tasks.train import read_metrics_csv

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #ddd;border-radius:8px;padding:.7rem 1rem;min-width:130px}
.card b{display:block;font-size:1.5rem} .card span{color:#666;font-size:.85rem}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem} img{max-width:100%}
table{border-collapse:collapse;font-size:.9rem} td,th{border-bottom:1px solid #eee;padding:.25rem .6rem;
text-align:right} th:first-child,td:first-child{text-align:left}
pre{background:#f6f6f6;padding:.8rem;border-radius:6px;font-size:.8rem;overflow:auto}
"""


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p><i>{html.escape(alt)}: not available</i></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def write_report(run: str | Path, extra_sections: list[tuple[str, str]] | None = None) -> Path:
    """Render ``RUN/report.html`` from ``metrics.csv``, ``eval/metrics.json`` and the PNGs.

    Also writes ``RUN/plots/loss.png`` and ``RUN/plots/accuracy.png``. ``extra_sections`` are
    ``(title, html)`` pairs appended at the end (e.g. the demo's timeline).
    """
    run = Path(run)
    plot_dir = run / "plots"
    rows = read_metrics_csv(run / "metrics.csv") if (run / "metrics.csv").is_file() else []
    if rows:
        plots.curves(rows, "loss", plot_dir / "loss.png", "Loss")
        plots.curves(rows, "acc", plot_dir / "accuracy.png", "Accuracy")
    ev_path = run / "eval" / "metrics.json"
    ev = json.loads(ev_path.read_text()) if ev_path.is_file() else None
    summary_path = run / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    config = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""

    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Sora report: {html.escape(run.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Sora run report</h1><p class='sub'>{html.escape(str(run))}</p>",
    ]
    cards = []
    if ev:
        cards += [
            ("test accuracy", f"{ev['accuracy']:.3f}"),
            ("top-5", f"{ev['top5']:.3f}"),
            ("macro recall", f"{ev['macro_recall']:.3f}"),
            ("macro F1", f"{ev['macro_f1']:.3f}"),
            ("test videos", str(ev["num_videos"])),
        ]
    if summary:
        if summary.get("best_val_acc") is not None:
            cards.append(("best val accuracy", f"{summary['best_val_acc']:.3f}"))
        cards += [
            ("epochs", str(summary.get("epochs_run"))),
            ("train time", f"{summary.get('train_seconds', 0):.0f} s"),
        ]
    parts.append(
        "<div class='cards'>"
        + "".join(
            f"<div class='card'><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>"
            for k, v in cards
        )
        + "</div>"
    )
    parts.append(
        "<h2>Training curves</h2><div class='grid'>"
        + _img(plot_dir / "loss.png", "loss curves")
        + _img(plot_dir / "accuracy.png", "accuracy curves")
        + "</div>"
    )
    if ev:
        parts.append(
            f"<h2>Evaluation ({html.escape(ev.get('split', 'test'))} split, "
            f"{ev.get('views', 1)} views per video)</h2><div class='grid'>"
            + _img(run / "eval" / "confusion_matrix.png", "confusion matrix")
            + _img(run / "eval" / "per_class_recall.png", "per-class recall")
            + "</div>"
        )
        parts.append(
            "<h3>Per class</h3><table><tr><th>class</th><th>precision</th><th>recall</th>"
            "<th>F1</th><th>videos</th></tr>"
        )
        for name, m in ev["per_class"].items():
            parts.append(
                f"<tr><td>{html.escape(name)}</td><td>{m['precision']:.3f}</td>"
                f"<td>{m['recall']:.3f}</td><td>{m['f1']:.3f}</td><td>{m['support']}</td></tr>"
            )
        parts.append(
            "</table><h3>Most confident mistakes</h3>"
            + _img(run / "eval" / "mistakes.png", "mistakes")
        )
        bad = ev.get("skipped", []) + ev.get("failed", [])
        if bad:
            parts.append(
                "<h3>Unreadable videos (skipped)</h3><ul>"
                + "".join(f"<li>{html.escape(p)}: {html.escape(r)}</li>" for p, r in bad)
                + "</ul>"
            )
    if rows:
        parts.append(
            "<h2>Per epoch</h2><table><tr>"
            + "".join(f"<th>{k}</th>" for k in rows[0])
            + "</tr>"
            + "".join(
                "<tr>" + "".join(f"<td>{v:.4g}</td>" for v in r.values()) + "</tr>" for r in rows
            )
            + "</table>"
        )
    for title, body in extra_sections or []:
        parts.append(f"<h2>{html.escape(title)}</h2>{body}")
    parts.append(f"<h2>Config</h2><pre>{html.escape(config)}</pre></body></html>")
    path = run / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path


def embed_png(path: Path, alt: str) -> str:
    """An ``<img>`` with the PNG inlined, for ``extra_sections``."""
    return _img(path, alt)
