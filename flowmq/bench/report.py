"""The results as plain-text tables (for stdout and READMEs) and as JSON.

One row per figure. With ``--compare`` there is one table per reference
server, of the scenarios of its protocol: the columns are the scenario, the
payload size, the figure, FlowMQ, the reference (nats-server, mosquitto)
and the ratio FlowMQ/reference; a scenario the reference cannot run
(nats-to-mqtt on mosquitto) shows "n/a" there. Every scenario ends with its
check row: whether every message published was received (or every request
answered, every connection opened). The rates of a generator-bound run (a
load generator busy most of it, ``scenarios.GENERATOR_BOUND``) end in " *",
and so does their ratio; a footnote under the table says what that means.
"""

from __future__ import annotations

import json
import platform
import time

from flowmq.bench import scenarios

_FORMATS = {
    "rate": "{:,.0f}",
    "count": "{:,}",
    "mb": "{:,.2f}",
    "mbps": "{:,.2f}",
    "us": "{:,.0f}",
    "ms": "{:,.1f}",
    "kib": "{:,.1f}",
    "ratio": "{:.3f}",
    "pct": "{:.2f}%",
    "sec": "{:.2f}",
}
#: The figures a busy load generator may have held down: msgs/s, MB/s, requests/s.
RATE_KINDS = ("rate", "mbps")
MARK = " *"
FOOTNOTE = ("* generator-bound: a load generator process was busy >= %d%% of the run, so the figure is (also) "
            "the generator's limit" % round(100 * scenarios.GENERATOR_BOUND))


def format_value(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "text" or isinstance(value, str):
        return str(value)
    return _FORMATS.get(kind, "{}").format(value)


def format_ratio(a, b, kind: str) -> str:
    if kind in ("text", "pct") or not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return ""
    ratio = float(a) / float(b)
    return "{:.3f}".format(ratio) if ratio < 0.0995 else "{:.2f}".format(ratio)  # 0.0999: "0.10"


def _order(result) -> tuple:
    name = result["scenario"]
    index = scenarios.NAMES.index(name) if name in scenarios.NAMES else len(scenarios.NAMES)
    return (index, result["size"] if result["size"] is not None else -1)


def table(runs) -> str:
    """``runs``: list of (server, results), one per server: the server under
    test first, then the reference servers (``--compare``)."""
    if len(runs) < 2:
        return _table(runs)
    subject, results = runs[0]
    tables = []
    for reference, ref_results in runs[1:]:
        mine = [r for r in results if scenarios.family(r["scenario"]) in reference.protocols]
        tables.append(_table([(subject, mine), (reference, ref_results)]))
    return "\n\n".join(tables)


def _table(runs) -> str:
    """One table of one or two servers (the second one's column then has the ratio)."""
    keys = []
    by_server = []
    for server, results in runs:
        mapping = {}
        for result in sorted(results, key=_order):
            key = (result["label"], result["size"])
            if key not in keys:
                keys.append(key)
            mapping[key] = result
        by_server.append(mapping)
    keys.sort(key=lambda k: min(_order(m[k]) for m in by_server if k in m))
    compare = len(runs) == 2
    headers = ["scenario", "size", "figure"] + [server.kind for server, _ in runs]
    if compare:
        headers.append("%s/%s" % (runs[0][0].kind, runs[1][0].kind))
    rows = []
    starred = False
    for key in keys:
        names = []
        kinds = {}
        scenario = None
        for mapping in by_server:
            result = mapping.get(key)
            if result is not None:
                scenario = result["scenario"]
            for fig in (result or {}).get("figures", []):
                if fig["name"] not in kinds:
                    names.append(fig["name"])
                    kinds[fig["name"]] = fig["kind"]
        bound = [_generator_bound(mapping.get(key)) for mapping in by_server]
        first = True
        for name in names + ["check"]:
            values = []
            raw = []
            rate = kinds.get(name) in RATE_KINDS
            for (server, _), mapping, star in zip(runs, by_server, bound):
                result = mapping.get(key)
                if result is None:
                    values.append("n/a" if scenarios.needs(scenario) - server.protocols else "not run")
                    raw.append(None)
                    continue
                if name == "check":
                    values.append(result["check"])
                    raw.append(None)
                    continue
                fig = next((f for f in result["figures"] if f["name"] == name), None)
                values.append(format_value(fig["value"], fig["kind"]) + (MARK if rate and star else "")
                              if fig else "-")
                raw.append(fig["value"] if fig else None)
            row = [key[0] if first else "", scenarios.size_text(key[1]) if first else "", name] + values
            if compare:
                ratio = format_ratio(raw[0], raw[1], kinds.get(name, "text"))
                row.append(ratio + MARK if ratio and rate and any(bound) else ratio)
            starred = starred or any(cell.endswith(MARK) for cell in row)
            rows.append(row)
            first = False
    text = render(headers, rows, right=set(range(3, len(headers))))
    return text + "\n" + FOOTNOTE if starred else text


def _generator_bound(result) -> bool:
    return bool(result and result.get("details", {}).get("generator_bound"))


def render(headers, rows, right=()) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells):
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def header(cfg, runs) -> str:
    chosen = getattr(cfg, "scenarios", scenarios.NAMES)
    cut = []  # the counts that --max-bytes cut

    def counts(count: int, sizes=cfg.sizes) -> str:
        """``count``, and its cut count at each size where --max-bytes cuts
        it: "1,000,000 (30,517 at 64 KB, 1,907 at 1024 KB)"."""
        fewer = ["%s at %s" % (format(scenarios.messages(cfg, count, size), ","), scenarios.size_text(size))
                 for size in sizes if scenarios.messages(cfg, count, size) != count]
        cut.extend(fewer)
        return format(count, ",") + (" (%s)" % ", ".join(fewer) if fewer else "")

    parts = []
    if any(name in chosen for name in ("1to1", "fanout", "fanin", "queue", "manysubs")):
        parts.append("%s messages per throughput run" % counts(cfg.msgs))
    if "reqrep" in chosen:
        parts.append("%s requests" % counts(cfg.requests, cfg.sizes[:1]))
    parts.append("payload %s; MB = 10^6 payload bytes" % ", ".join(scenarios.size_text(s) for s in cfg.sizes))
    lines = ["flowmq-bench: " + ", ".join(parts)]
    ran = set(r["scenario"] for _, results in runs for r in results)
    js = []
    if "js-pub-sync" in ran:
        js.append("js-pub-sync %s messages" % counts(cfg.js_sync_msgs))
    if "js-pub-async" in ran:
        js.append("js-pub-async %s (%s PubAcks outstanding)" % (counts(cfg.js_msgs), format(cfg.js_window, ",")))
    if "js-pull" in ran:
        js.append("js-pull %s (%s per pull request, ack policy explicit, every message acked)"
                  % (counts(cfg.js_msgs), format(cfg.js_batch, ",")))
    if js:
        lines.append("JetStream, file storage: " + ", ".join(js))
    mqtt = [name for name in scenarios.MQTT_NAMES if name in ran]
    if mqtt:
        per_run = ["%s %s" % (name, counts(cfg.mqtt_qos1_msgs if name == "mqtt-qos1" else cfg.mqtt_msgs))
                   for name in mqtt]
        lines.append("MQTT %s, messages per run: %s; QoS 1 with up to %s PUBLISHes unacknowledged (fewer if "
                     "the server's Receive Maximum is lower)" % (cfg.mqtt_version, ", ".join(per_run),
                                                                 format(cfg.mqtt_window, ",")))
    if "js-create" in ran:
        lines.append("js-create: STREAM.CREATE of a memory stream with %s subjects of %d tokens, per shape"
                     % (format(cfg.js_create_subjects, ","), scenarios.JS_CREATE_TOKENS))
    if cut:
        lines.append("counts in parentheses: fewer messages of a large payload, at most %s payload bytes per run "
                     "(--max-bytes)" % format(cfg.max_bytes, ","))
    if ran & set(scenarios.TRAFFIC):
        lines.append("each throughput run measured after an unreported warm-up run of the same scenario with %s"
                     % ("%g%% of its messages (--warmup)" % (100 * cfg.warmup) if cfg.warmup else
                        "no warm-up run: servers measured cold (--warmup 0)"))
    for server, _ in runs:
        pid = " pid %d" % server.pid if server.pid else ""
        lines.append("  %s at %s%s" % (server.description or server.kind, server.url, pid))
    return "\n".join(lines)


def summary(runs) -> tuple:
    """(text, ok): one line if everything arrived, else one line per problem."""
    problems = []
    count = 0
    for server, results in runs:
        for result in sorted(results, key=_order):
            count += 1
            if not result["complete"] or result["errors"]:
                where = "%s %s %s" % (server.kind, result["label"], scenarios.size_text(result["size"]))
                problems.append("  %s: %s" % (where, result["check"]))
                problems.extend("    %s" % e for e in result["errors"][:10])
                if len(result["errors"]) > 10:
                    problems.append("    ... %d more" % (len(result["errors"]) - 10))
    if not problems:
        return ("check: all %d runs complete (every message received, every request answered)" % count, True)
    return ("check: INCOMPLETE runs:\n" + "\n".join(problems), False)


def to_json(cfg, runs, started: float) -> dict:
    settings = {k: v for k, v in sorted(vars(cfg).items()) if not k.startswith("_")}
    return {
        "tool": "flowmq-bench",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started,
        "python": "%s %s" % (platform.python_implementation(), platform.python_version()),
        "platform": platform.platform(),
        "settings": settings,
        "servers": [dict(server.describe(), results=results) for server, results in runs],
    }


def write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
