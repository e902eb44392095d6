"""The human-readable ``report.md`` of an evaluation report."""

from __future__ import annotations

_METHODS = (
    ("zeroshot", "zero-shot"),
    ("zeroshot_calibrated", "zero-shot, temperature-scaled"),
    ("probe", "linear probe"),
)
_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy", "auroc", "ece")


def _num(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _with_ci(scores: dict, metric: str) -> str:
    if metric not in scores:
        return "-"
    ci = scores.get("ci95", {}).get(metric)
    text = _num(scores[metric])
    return f"{text} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def render_markdown(report: dict) -> str:
    """Render a report dict from :func:`skinclip.eval.report.build_report`."""
    test = report["test"]
    lines = [
        f"# {report['label_set']} - {report['model_id']}",
        "",
        f"Test input: {test.get('name')}: {test.get('evaluated')} of {test.get('rows')} "
        f"row(s) evaluated (coverage {test.get('coverage', 0):.1%}).",
    ]
    for reason, count in (test.get("left_out") or {}).items():
        if count:
            examples = ", ".join(test.get("examples", {}).get(reason, []))
            lines.append(
                f"- left out, {reason}: {count}" + (f" (e.g. {examples})" if examples else "")
            )
    if test.get("multi_label_rows"):
        lines.append(
            f"- {test['multi_label_rows']} multi-label row(s), resolved by: "
            f"{test['multi_label_rule']}."
        )
    for note in report.get("notes", []):
        lines.append(f"- **Note:** {note}")
    lines += ["", "## Metrics (95% bootstrap intervals)", ""]
    methods = [(key, name) for key, name in _METHODS if key in report]
    metrics = [m for m in _METRICS if m in report["zeroshot"]]
    lines += _table(
        ["method", *metrics],
        [[name, *(_with_ci(report[key], m) for m in metrics)] for key, name in methods],
    )
    if "probe" in report:
        probe = report["probe"]
        lines.append(
            f"Linear probe: C = {probe['C']:g}, chosen by {probe['folds']}-fold grouped "
            f"cross-validation on the training split (cv balanced accuracy "
            f"{_num(probe['cv_balanced_accuracy'])}).\n"
        )
    if "calibration" in report:
        cal = report["calibration"]
        lines += [
            "## Calibration",
            "",
            f"Temperature {cal['temperature']:.3f}, fitted on split {cal['split']!r} "
            f"({cal['n']} images). Test NLL {_num(cal['test_nll_before'])} -> "
            f"{_num(cal['test_nll_after'])}; ECE {_num(report['zeroshot']['ece'])} -> "
            f"{_num(report['zeroshot_calibrated']['ece'])}.",
            "",
        ]
    lines += ["## Abstention: coverage against accuracy", ""]
    rows = []
    for i, row in enumerate(report["zeroshot"]["selective"]):
        cells = [f"{row['threshold']:.1f}"]
        for key, _ in methods:
            sel = report[key]["selective"][i]
            cells.append(f"{sel['coverage']:.1%} / {_num(sel['accuracy'])}")
        rows.append(cells)
    lines += _table(["min probability", *(f"{n}: coverage / acc" for _, n in methods)], rows)
    lines += ["## Per class (zero-shot)", ""]
    matrix = report["zeroshot"]["confusion_matrix"]
    lines += _table(
        ["class", "images", "recall"],
        [
            [name, str(sum(row)), _num(row[i] / sum(row)) if sum(row) else "n/a"]
            for i, (name, row) in enumerate(zip(report["classes"], matrix, strict=True))
        ],
    )
    for column, groups in (report["zeroshot"].get("subgroups") or {}).items():
        lines += [f"## Subgroups by {column} (zero-shot)", ""]
        lines += _table(
            ["value", "n", "balanced acc", "accuracy", "ECE"],
            [
                [
                    value,
                    str(g["n"]),
                    _num(g["balanced_accuracy"]),
                    _num(g["accuracy"]),
                    _num(g["ece"]),
                ]
                for value, g in groups.items()
            ],
        )
    if "concepts" in report:
        lines += [
            "## Concepts (target-versus-reference prompts)",
            "",
            f"Mean AUROC over the seven-point criteria: "
            f"{_num(report.get('concepts_seven_point_mean_auroc'))}.",
            "",
        ]
        lines += _table(
            ["concept", "seven-point", "AUROC", "positives / negatives"],
            [
                [
                    name,
                    "yes" if c["seven_point"] else "",
                    _num(c["auroc"]) if c["auroc"] is not None else c.get("reason", "n/a"),
                    f"{c['positives']} / {c['negatives']}" if "positives" in c else "-",
                ]
                for name, c in report["concepts"].items()
            ],
        )
    lines += ["Figures: confusion_*.png, reliability.png.", ""]
    return "\n".join(lines)
