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
        if any("val_map50" in r for r in rows):
            plots.curves(rows, "map50", plot_dir / "accuracy.png", "Validation mAP50")
        elif any("val_psnr" in r for r in rows):
            plots.curves(rows, "psnr", plot_dir / "accuracy.png", "Validation prediction PSNR (dB)")
        else:
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
    if summary.get("task") == "anomaly":
        parts += _anomaly_sections(run, summary)
    elif ev and ev.get("task") == "detect":
        parts += _detection_sections(run, ev, summary, rows)
    else:
        parts += _classification_sections(run, ev, summary, rows)
    for title, body in extra_sections or []:
        parts.append(f"<h2>{html.escape(title)}</h2>{body}")
    parts.append(f"<h2>Config</h2><pre>{html.escape(config)}</pre></body></html>")
    path = run / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path


def _curves(run: Path, metric: str) -> str:
    """The training-curves section: ``plots/loss.png`` beside ``plots/accuracy.png``
    (``metric`` names what the latter shows)."""
    return (
        "<h2>Training curves</h2><div class='grid'>"
        + _img(run / "plots" / "loss.png", "loss curves")
        + _img(run / "plots" / "accuracy.png", metric)
        + "</div>"
    )


def embed_png(path: Path, alt: str) -> str:
    """An ``<img>`` with the PNG inlined, for ``extra_sections``."""
    return _img(path, alt)


def cards(items: list[tuple[str, str]]) -> str:
    """A row of ``(label, value)`` cards, the value large."""
    return (
        "<div class='cards'>"
        + "".join(
            f"<div class='card'><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>"
            for k, v in items
        )
        + "</div>"
    )


def table(header: list[str], rows: list[list]) -> str:
    """An HTML table; floats with 3 decimals, everything escaped."""

    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

    return (
        "<table><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in header)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
        + "</table>"
    )


def _found_table(vis: dict, threshold: float | None) -> str:
    """The share of visible and occluded boxes found at the best-F1 threshold (evaluations
    written before it existed have none: nothing is shown)."""
    if "found_at_threshold" not in vis.get("occluded", {}):
        return ""
    found = ("found_at_threshold", "found_any_class_at_threshold")
    parts = list(vis.items())
    if "hidden" in vis["occluded"]:  # evaluations written before it have none
        parts.append(("hidden (visibility 0, of the occluded)", vis["occluded"]["hidden"]))
    return (
        f"<h3>Found at the best-F1 threshold ({threshold:.2f}, IoU 0.5)</h3>"
        + table(
            ["boxes", "count (not ignored)", "found with their class", "found, any class"],
            [
                [k, v["found_of_boxes"], *(("-" if v[f] is None else v[f]) for f in found)]
                for k, v in parts
            ],
        )
        + "<p>An occluded subset's AP counts every false positive of the frame against its "
        "few boxes, so it stays near 0; this share shows how many hidden objects the model "
        "keeps at the threshold <code>sora predict</code> uses.</p>"
    )


def _detection_sections(run: Path, ev: dict, summary: dict, rows: list[dict]) -> list[str]:
    """Cards, curves, PR curves, AP per class, visibility and per-sequence tables, and the
    hardest frames of a detection run."""
    vis = ev["visibility"]
    items = [
        ("test mAP50", f"{ev['map_50']:.3f}"),
        ("test mAP@[.5:.95]", f"{ev['map']:.3f}"),
        ("mAP50, visible boxes", f"{vis['visible']['map_50']:.3f}"),
        ("mAP50, occluded boxes", f"{vis['occluded']['map_50']:.3f}"),
        ("streamed frames/s", f"{ev['frames_per_second']:.0f}"),
        ("best-F1 score threshold", f"{ev.get('operating_threshold', 0.3):.2f}"),
        ("test frames", str(ev["num_frames"])),
    ]
    accuracy = ev.get("confusion", {}).get("class_accuracy")
    if accuracy is not None:
        items.append(("found objects given their class", f"{accuracy:.3f}"))
    if summary.get("best_val_map50") is not None:
        items.append(("best val mAP50", f"{summary['best_val_map50']:.3f}"))
    if summary.get("best_val_map") is not None:
        items.append(("best val mAP@[.5:.95]", f"{summary['best_val_map']:.3f}"))
    items.append(("train time", f"{summary.get('train_seconds', 0):.0f} s"))
    e = run / "eval"
    parts = [
        cards(items),
        _curves(run, "validation mAP50"),
        f"<h2>Evaluation ({html.escape(ev['split'])} split, {ev['num_sequences']} sequences, "
        "each streamed whole)</h2><div class='grid'>"
        + _img(e / "pr_curves.png", "precision-recall curves")
        + _img(e / "ap_per_class.png", "AP per class")
        + _img(e / "confusion_matrix.png", "confusion matrix")
        + "</div>"
        + "<p>Confusion matrix at the best-F1 threshold, IoU 0.5: the background row counts "
        "boxes on nothing (or a second box of another class on an object), the background "
        "column the objects missed.</p>",
        "<h3>COCO metrics</h3>"
        + table(
            ["boxes", "mAP@[.5:.95]", "mAP50", "mAP75", "small", "medium", "large", "mAR@100"],
            [
                [
                    name,
                    *(
                        m[k]
                        for k in (
                            "map",
                            "map_50",
                            "map_75",
                            "map_small",
                            "map_medium",
                            "map_large",
                            "mar_100",
                        )
                    ),
                ]
                for name, m in [("all", ev), *((f"{k} ({v['boxes']})", v) for k, v in vis.items())]
            ],
        )
        + "<p>Visible: visibility &ge; 0.5; occluded: below (behind something, flickered out, "
        "off the edge). In each, the other boxes are ignored regions. -1: no such boxes.</p>"
        + _found_table(vis, ev.get("operating_threshold")),
        "<h3>Per class</h3>"
        + table(
            ["class", "AP@[.5:.95]", "AP50", "recall@0.5"],
            [[k, v["ap"], v["ap50"], v["recall50"]] for k, v in ev["per_class"].items()],
        ),
        "<h3>Per sequence</h3>"
        + table(
            ["sequence", "mAP50", "frames", "boxes", "occluded boxes"],
            [
                [k, v["map_50"], v["frames"], v["boxes"], v["occluded_boxes"]]
                for k, v in sorted(ev["per_sequence"].items(), key=lambda kv: kv[1]["map_50"])
            ],
        ),
        "<h3>Hardest frames</h3>" + _img(e / "hardest_frames.png", "hardest frames"),
    ]
    if (e / "tracking.json").is_file():
        parts.append(_tracking_section(e, json.loads((e / "tracking.json").read_text())))
    if ev.get("warnings"):
        parts.append(
            "<h3>Data warnings</h3><ul>"
            + "".join(f"<li>{html.escape(w)}</li>" for w in ev["warnings"])
            + "</ul>"
        )
    if rows:
        parts.append(
            "<h2>Per epoch</h2>"
            + table(list(rows[0]), [[float(v) for v in r.values()] for r in rows])
        )
    return parts


def _tracking_section(e: Path, tr: dict) -> str:
    """TrackEval's figures of ``sora eval --task track``: headline, per class, per sequence,
    and the ID switches over time."""
    keys = ["HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDSW", "Frag"]
    sw = tr["id_switches"]
    actions = ""
    if "actions" in tr:
        a = tr["actions"]
        actions = (
            "<h3>Per-track actions</h3>"
            + cards(
                [
                    ("per-track action accuracy", f"{a['track_accuracy']:.3f}"),
                    ("box + id + action, per frame", f"{a['frame_accuracy']:.3f}"),
                    ("objects tracked", f"{a['tracks_matched']} of {a['objects']}"),
                ]
            )
            + table(
                ["true \\ predicted", *a["classes"]],
                [[c, *row] for c, row in zip(a["classes"], a["confusion"], strict=True)],
            )
        )
    return (
        f"<h2>Tracking ({html.escape(tr['tracker'])}, {html.escape(tr['split'])} split, "
        f"{tr['num_sequences']} sequences; TrackEval)</h2>"
        + cards(
            [
                ("HOTA", f"{tr['HOTA']:.3f}"),
                ("MOTA", f"{tr['MOTA']:.3f}"),
                ("IDF1", f"{tr['IDF1']:.3f}"),
                ("ID switches", f"{sw['total']} ({sw['after_occlusion']} after occlusion)"),
                ("score thresholds", f"{tr['high_threshold']:.2f} / {tr['conf']:.2f}"),
                (
                    "re-identification",
                    "off"
                    if not tr.get("reid")  # runs scored before it existed have no entry
                    else f"{tr['reid']['embedding']}: {tr['reid']['relinked']} ids given back",
                ),
            ]
        )
        + table(
            ["classes", *keys],
            [["all", *(tr[k] for k in keys)]]
            + [[c, *(m[k] for k in keys)] for c, m in tr["per_class"].items()],
        )
        + "<h3>Per sequence</h3>"
        + table(
            ["sequence", *keys],
            [
                [name, *(m[k] for k in keys)]
                for name, m in sorted(tr["per_sequence"].items(), key=lambda kv: kv[1]["HOTA"])
            ],
        )
        + _img(e / "id_switches.png", "ID switches over time")
        + actions
    )


def _alert_card(m: dict) -> list[tuple[str, str]]:
    """The run's own alert threshold on the test footage (evaluations written before it have
    none)."""
    a = m.get("at_alert_threshold")
    if a is None:
        return []
    return [
        (
            f"at the alert threshold {m['alert_threshold']:.2f} (frames over it, no hold)",
            f"{a['events_detected']} of {a['events']} events, "
            f"{a['false_alarms_per_minute']:.1f} false alarms / min",
        )
    ]


def _anomaly_sections(run: Path, summary: dict) -> list[str]:
    """Cards, the training curves and ``sora eval``'s anomaly figures: score against the truth
    over time, the ROC curve, heat maps, and the AUC per type and per video."""
    e = run / "eval"
    path = e / "anomaly.json"
    m = json.loads(path.read_text()) if path.is_file() else None
    items = [
        ("epochs", str(summary.get("epochs_run"))),
        ("train time", f"{summary.get('train_seconds', 0):.0f} s"),
    ]
    if m:
        rate = m["detection_rate_at_1_false_alarm_per_10_min"]
        items = [
            ("frame AUC (micro)", f"{m['auc_micro']:.3f}"),
            ("frame AUC (macro)", f"{m['auc_macro']:.3f}" if m["auc_macro"] is not None else "n/a"),
            ("EER", f"{m['eer']:.3f}"),
            ("events found at 1 false alarm / 10 min", "n/a" if rate is None else f"{rate:.2f}"),
            *_alert_card(m),
            ("test videos", str(m["num_videos"])),
            *items,
        ]
    parts = [
        cards(items),
        _curves(run, "prediction PSNR"),
    ]
    if not m:
        return [*parts, "<p>No evaluation yet: run <code>sora eval RUN --data DIR</code>.</p>"]
    parts += [
        "<h2>Score over time against the truth</h2>" + _img(e / "anomaly_timeline.png", "timeline"),
        "<h2>ROC curve</h2>" + _img(e / "anomaly_roc.png", "ROC curve"),
        "<h2>Heat maps: the highest-scoring frame of each type</h2>"
        + _img(e / "anomaly_heatmaps.png", "heat maps"),
    ]
    if m["per_type"]:
        parts.append(
            "<h2>Per anomaly type</h2>"
            + table(
                ["type", "AUC", "frames"],
                [[k, v["auc"], v["frames"]] for k, v in m["per_type"].items()],
            )
        )
    parts.append(
        "<h2>Per video</h2>"
        + table(
            ["video", "AUC", "frames", "anomalous"],
            [[k, v["auc"], v["frames"], v["anomalous"]] for k, v in m["per_video"].items()],
        )
    )
    return parts


def _classification_sections(run: Path, ev: dict | None, summary: dict, rows: list[dict]) -> list:
    """Cards, curves, confusion matrix, per-class table and mistakes of a classification run."""
    parts: list[str] = []
    items = []
    if ev:
        items += [
            ("test accuracy", f"{ev['accuracy']:.3f}"),
            ("top-5", f"{ev['top5']:.3f}"),
            ("macro recall", f"{ev['macro_recall']:.3f}"),
            ("macro F1", f"{ev['macro_f1']:.3f}"),
            ("test videos", str(ev["num_videos"])),
        ]
    if summary:
        if summary.get("best_val_acc") is not None:
            items.append(("best val accuracy", f"{summary['best_val_acc']:.3f}"))
        items += [
            ("epochs", str(summary.get("epochs_run"))),
            ("train time", f"{summary.get('train_seconds', 0):.0f} s"),
        ]
    parts.append(cards(items))
    parts.append(_curves(run, "accuracy curves"))
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
    return parts
