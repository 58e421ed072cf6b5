"""The monitor's HTML dashboard: the report (`reports.summary`) drawn for clinical leads and SREs.

One page, no JavaScript library and nothing fetched from elsewhere: every plot is an inline SVG
drawn by matplotlib, inside a ``<figure data-plot=…>``. A few lines of script mark the page
once the browser has laid every plot out (``#rendered`` lists each plot with its size), which
is what the headless-browser test reads.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure

SIZE = (6.4, 3.2)

SCRIPT = """
window.addEventListener("load", () => {
  const sizes = [...document.querySelectorAll("figure[data-plot]")].map((figure) => {
    const box = figure.querySelector("svg").getBoundingClientRect();
    return `${figure.dataset.plot} ${Math.round(box.width)}x${Math.round(box.height)}`;
  });
  document.getElementById("rendered").textContent = sizes.join("\\n");
});
"""
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
section { margin-bottom: 2rem; } figure { display: inline-block; margin: 0 1rem 1rem 0; }
table { border-collapse: collapse; }
td, th { padding: 0.2rem 0.6rem; border-bottom: 1px solid #ddd; }
.alarm { color: #b00020; font-weight: bold; } #rendered { display: none; }
"""


def page(summary: dict[str, Any]) -> str:
    """The whole dashboard for one summary."""
    sections = [
        _section("Drift", [_drift_plot(stream) for stream in summary["drift"]], _alarms(summary)),
        _section(
            "Performance from feedback",
            [plot for found in summary["performance"] for plot in _performance_plots(found)],
            _performance_table(summary["performance"]),
        ),
        _section(
            "Estimated against realised accuracy",
            [_estimate_plot(stream) for stream in summary["drift"]],
            "",
        ),
        _section("Carbon", [_carbon_plot(summary["carbon"])], _carbon_text(summary["carbon"])),
    ]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>FetalMLOps monitor</title><style>{STYLE}</style></head><body>"
        "<h1>FetalMLOps monitor</h1>" + "".join(sections) + "<pre id='rendered'></pre>"
        f"<script>{SCRIPT}</script></body></html>"
    )


def plot_names(summary: dict[str, Any]) -> list[str]:
    """The plots `page` draws for this summary, by their ``data-plot`` name."""
    streams = [_stream_name(stream) for stream in summary["drift"]]
    versions = [f"{p['model']}-v{p['model_version']}" for p in summary["performance"]]
    return [
        *[f"drift {name}" for name in streams],
        *[f"{kind} {name}" for name in versions for kind in ("confusion", "calibration")],
        *[f"estimate {name}" for name in streams],
        "carbon",
    ]


def _section(title: str, figures: list[str], text: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{text}{''.join(figures)}</section>"


def _figure(name: str, draw: Callable[[Figure], None]) -> str:
    figure = Figure(figsize=SIZE)  # not pyplot's: no global state, safe in any thread
    draw(figure)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return f"<figure data-plot='{html.escape(name)}'>{svg[svg.index('<svg') :]}</figure>"


def _stream_name(stream: dict[str, Any]) -> str:
    return f"{stream['model']}-v{stream['model_version']} {stream['segment']}"


def _drift_plot(stream: dict[str, Any]) -> str:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        windows = stream["windows"]
        numbers = [w["number"] for w in windows]
        axes.plot(numbers, [w["cusum"] for w in windows], marker=".", label="CUSUM")
        if stream["threshold"] is not None:
            axes.axhline(stream["threshold"], color="#b00020", linestyle="--", label="threshold")
        fired = [w for w in windows if w["fired"]]
        axes.scatter([w["number"] for w in fired], [w["cusum"] for w in fired], color="#b00020",
                     zorder=3, label="alarm")  # fmt: skip
        axes.set(xlabel="window", ylabel="evidence of drift", title=_stream_name(stream))
        axes.legend(loc="upper left")

    return _figure(f"drift {_stream_name(stream)}", draw)


def _performance_plots(found: dict[str, Any]) -> list[str]:
    name = f"{found['model']}-v{found['model_version']}"
    measured = found["measured"]

    def confusion(figure: Figure) -> None:
        axes = figure.add_subplot()
        image = axes.imshow(measured["confusion"], cmap="Blues")
        classes = found["estimated"]["classes"]
        axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
        axes.set_yticks(range(len(classes)), classes, fontsize=7)
        axes.set(xlabel="predicted", ylabel="true", title=f"{name}: confusion from feedback")
        figure.colorbar(image)

    def calibration(figure: Figure) -> None:
        axes = figure.add_subplot()
        bins = found["reliability"]
        axes.plot([0, 1], [0, 1], color="#999", linestyle=":", label="calibrated")
        axes.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                  label="served")  # fmt: skip
        axes.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
                 title=f"{name}: calibration")  # fmt: skip
        axes.legend(loc="upper left")

    return [_figure(f"confusion {name}", confusion), _figure(f"calibration {name}", calibration)]


def _estimate_plot(stream: dict[str, Any]) -> str:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        windows = [w for w in stream["windows"] if w["estimated_accuracy"] is not None]
        numbers = [w["number"] for w in windows]
        estimate = [w["estimated_accuracy"] for w in windows]
        axes.plot(numbers, [e["value"] for e in estimate], label="estimated (CBPE)")
        axes.fill_between(numbers, [e["low"] for e in estimate], [e["high"] for e in estimate],
                          alpha=0.2)  # fmt: skip
        realised = [w for w in windows if w["realised_accuracy"] is not None]
        axes.plot([w["number"] for w in realised], [w["realised_accuracy"] for w in realised],
                  marker="o", linestyle="", label="realised (feedback)")  # fmt: skip
        axes.set(xlabel="window", ylabel="accuracy", ylim=(0, 1), title=_stream_name(stream))
        axes.legend(loc="lower left")

    return _figure(f"estimate {_stream_name(stream)}", draw)


def _carbon_plot(carbon: dict[str, Any]) -> str:
    def draw(figure: Figure) -> None:
        training, serving = figure.subplots(1, 2)
        runs = carbon["training_runs"]
        training.bar(
            [f"v{r['model_version']}" for r in runs], [r["emissions_g_co2e"] for r in runs]
        )
        training.set(ylabel="g CO2e", title="per training run (CodeCarbon)")
        accounts = carbon["per_1000_inferences"]
        serving.bar(
            [f"v{a['model_version']} {a['compute_device'].split(' ')[0]}" for a in accounts],
            [a["g_co2e_per_1000"] or 0.0 for a in accounts],
        )
        serving.set(ylabel="g CO2e", title="per 1,000 inferences")

    return _figure("carbon", draw)


def _alarms(summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td class='alarm'>{html.escape(a['model'])} v{a['model_version']}</td>"
        f"<td>{html.escape(a['segment'])}</td><td>episode {a['episode']}</td>"
        f"<td>{html.escape(str(a['reason'].get('test', '')))}</td>"
        f"<td>{'retraining requested' if a['automatic'] else 'retraining recommended'}</td></tr>"
        for a in summary["alarms"]
    )
    return (
        f"<table><tr><th>alarm</th><th>segment</th><th></th><th>test</th><th></th></tr>{rows}</table>"
        if rows
        else "<p>No alarm.</p>"
    )


def _performance_table(found: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(p['model'])} v{p['model_version']}</td><td>{p['feedback']}</td>"
        f"<td>{_interval(p['measured']['macro_f1'])}</td>"
        f"<td>{_interval(p['estimated']['macro_f1'])}</td></tr>"
        for p in found
    )
    header = "<tr><th>version</th><th>feedback</th><th>macro-F1</th><th>estimated</th></tr>"
    return f"<table>{header}{rows}</table>" if rows else "<p>No feedback yet.</p>"


def _interval(value: dict[str, float]) -> str:
    return f"{value['value']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


def _carbon_text(carbon: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(a['model_name'])} v{a['model_version']}</td>"
        f"<td>{html.escape(a['compute_device'])}</td><td>{a['kwh_per_1000']:.3g} kWh</td>"
        f"<td>{a['g_co2e_per_1000']:.3g} g CO2e</td>"
        f"<td>{html.escape(', '.join(a['methods']))}</td></tr>"
        for a in carbon["per_1000_inferences"]
        if a["kwh_per_1000"] is not None
    )
    if not rows:
        return f"<p>Per 1,000 inferences: {html.escape(carbon['per_1000_inferences_status'])}.</p>"
    header = "<tr><th>version</th><th>device</th><th colspan=2>per 1,000 inferences</th>"
    return f"<table>{header}<th>method</th></tr>{rows}</table>"
