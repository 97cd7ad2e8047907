"""The report's PNG plots (matplotlib, no display needed): learning curves, misclassified digits, accuracy plots."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # a bare Figure renders with Agg and touches no global pyplot state

from .errors import UserError
from .norms import NORMS
from .report import COMPARED, Report, complete, norm_label
from .space import SearchSpec

DPI = 110
PATTERNS = ("learning_curves.png", "misclassified_*.png", "accuracy_vs_*.png")  # what a report run owns
CATEGORICAL_MAX = 6  # a numeric hyperparameter with this many values or fewer is drawn as categories
MISCLASSIFIED = 10


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "group"


def _colors(names: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _save(fig: Figure, path: Path) -> Path:
    """Write the PNG with its title and x scales in the PNG's text fields (Title, Description)."""
    title = fig.get_suptitle() or " | ".join(ax.get_title() for ax in fig.axes if ax.get_title())
    scales = "; ".join(dict.fromkeys(f"x axis {ax.get_xlabel()}: {ax.get_xscale()}" for ax in fig.axes
                                     if ax.get_xlabel()))
    fig.savefig(path, dpi=DPI, metadata={"Title": title, "Description": scales})
    return path


def about(report: Report) -> str:
    """What every plot's title says about its data: the metric that ranked the trials and the seeds behind it."""
    rows = report.summary[report.summary["epochs_run"] > 0] if len(report.summary) else report.summary
    seeds = int(rows["seed"].nunique()) if "seed" in rows else 0
    return f"trials ranked by {report.metric}; {seeds} seed{'' if seeds == 1 else 's'}"


def _value_label(value: str) -> str:
    """The compared column's axis label, as the tables name it: 'test acc @ val epoch (%)'."""
    return f"{COMPARED[value]} (%)"


# -- learning curves ---------------------------------------------------------------------------------
def learning_curves(epochs: pd.DataFrame, best: pd.DataFrame, path: Path, about: str = "") -> Path:
    """Val/test loss and accuracy per epoch of each group's best trial (``best``: group, trial_id), shared axes.
    A diverged epoch's stand-in values are not drawn; the legend says where a trial diverged."""
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True, sharey="row")
    colors = _colors(list(best["group"]))
    panels = [("val_loss", "validation loss"), ("test_loss", "test loss"),
              ("val_acc", "validation accuracy (%)"), ("test_acc", "test accuracy (%)")]
    drawn = dict.fromkeys(k for k, _ in panels)
    handles = []
    for group, trial in zip(best["group"], best["trial_id"]):
        e = epochs[epochs["trial_id"] == trial].sort_values("epoch")
        bad = e["diverged"].fillna(False).astype(bool) if "diverged" in e else pd.Series(False, index=e.index)
        label = f"{group} ({trial})"
        if bad.any():
            label += f", diverged at epoch {int(e.loc[bad, 'epoch'].min())}"
        handles.append(Line2D([], [], color=colors[group], marker="o", markersize=3, label=label))
        for ax, (key, _) in zip(axes.flat, panels):
            y = pd.to_numeric(e[key], errors="coerce").where(~bad) if key in e else pd.Series(dtype=float)
            if y.notna().any():
                ax.plot(e["epoch"], y, marker="o", markersize=3, color=colors[group])
                drawn[key] = True
    for ax, (key, title) in zip(axes.flat, panels):
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if key.endswith("loss") and drawn[key]:
            _log_if_wide(ax)
        if not drawn[key]:
            ax.text(0.5, 0.5, "no validation split" if key.startswith("val") else "no data",
                    ha="center", va="center", transform=ax.transAxes, color="gray")
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize="small",
                   title="best trial of each group")
    fig.suptitle("Learning curves of the best trial of each group" + (f" ({about})" if about else ""))
    return _save(fig, path)


def _log_if_wide(ax) -> None:
    """A log y axis with plain tick labels where the data span a decade or more (losses do, over 20 epochs)."""
    low, high = ax.dataLim.y0, ax.dataLim.y1
    if low > 0 and high / low >= 10:
        ax.set_yscale("log")
        _plain_log(ax.yaxis)


def _plain_log(axis) -> None:
    """Log-axis ticks at 1, 2 and 5 times powers of ten, labelled 0.02 rather than 2 x 10^-2."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


# -- misclassified digits ----------------------------------------------------------------------------
def predict(model, images, batch: int = 1000):
    """Predicted labels and confidences for uint8 [N, 28, 28] images."""
    import torch

    from .data import normalize

    model.eval()
    preds, confs = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            out = model(normalize(images[start:start + batch])).exp()
            conf, pred = out.max(1)
            preds.append(pred)
            confs.append(conf)
    return torch.cat(preds), torch.cat(confs)


def load_model(checkpoint: Path | str, row: pd.Series | dict):
    """The trial's Net with the weights of its checkpoint, a file or a URI (weights_only: no code runs from it)."""
    import io

    import torch

    from . import storage
    from .model import Net

    try:
        state = torch.load(io.BytesIO(storage.path(checkpoint).read_bytes()), map_location="cpu", weights_only=True)
        model = Net(str(row["norm"]), int(row["groups"]), float(row["dropout"]), int(row["width"]))
        model.load_state_dict(state["model"])
    except Exception as e:  # a torn or foreign file fails in many ways (unpickling, shapes, missing keys)
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot load checkpoint {checkpoint}: {why}") from None
    return model, int(state.get("epoch", 0))


def misclassified(images, labels, preds, confs, title: str, path: Path, limit: int = MISCLASSIFIED,
                  about: str = "") -> Path:
    """The first ``limit`` misclassified images, each titled with its true and predicted label."""
    wrong = (preds != labels).nonzero().flatten()[:limit].tolist()
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = fig.subplots(2, 5)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i].numpy(), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"true {int(labels[i])}, predicted {int(preds[i])}\n({100 * float(confs[i]):.0f}% sure)",
                     fontsize="small", color="firebrick")
    if not wrong:
        axes.flat[0].text(0, 0.5, "every test image is classified correctly", transform=axes.flat[0].transAxes)
    total = int((preds != labels).sum())
    fig.suptitle(f"{title}\n{total} of {len(labels)} test images misclassified; the first {len(wrong)} shown"
                 + (f"\n({about})" if about else ""))
    return _save(fig, path)


def misclassified_for_groups(report: Report, checkpoints: dict[str, str], data_root: Path,
                             out: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """One misclassified-digits plot per group's best trial; notes for groups that could not be drawn."""
    from . import data as data_mod

    images, notes = [], []
    summary = report.summary.set_index("trial_id")
    for group, trial in zip(report.table["group"], report.table["trial_id"]):
        checkpoint = checkpoints.get(trial)
        if not checkpoint:
            notes.append(f"no misclassified images for {group}: trial {trial} has no checkpoint")
            continue
        row = summary.loc[trial]
        try:
            model, epoch = load_model(checkpoint, row)
            test = data_mod.load(data_root, val_size=int(row["val_size"]), subset=int(row["subset"]),
                                 full_eval=bool(row["full_eval"])).test  # the summary fills absent keys with defaults
        except UserError as e:
            notes.append(f"no misclassified images for {group}: {e}")
            continue
        if not all(bool(t.isfinite().all()) for t in model.state_dict().values() if t.is_floating_point()):
            notes.append(f"no misclassified images for {group}: trial {trial}'s weights are not finite (it diverged)")
            continue
        preds, confs = predict(model, test.images)
        title = f"{group}: trial {trial}, weights after epoch {epoch} (its last checkpoint)"
        path = misclassified(test.images, test.labels, preds, confs, title, out / f"misclassified_{slug(group)}.png",
                             about=about(report))
        images.append((f"Misclassified test images: {group}", path))
    return images, notes


# -- accuracy against hyperparameters ----------------------------------------------------------------
def _is_categorical(values: pd.Series, spec_kind: str | None) -> bool:
    """Choices and words are categories; sampled ranges are numbers; without a spec, few values are categories."""
    if pd.to_numeric(values, errors="coerce").isna().any() or spec_kind == "choice":
        return True
    return spec_kind not in ("uniform", "loguniform", "randint") and values.nunique() <= CATEGORICAL_MAX


def plotted_trials(summary: pd.DataFrame, condition: tuple | None = None) -> pd.DataFrame:
    """Trials with results, only those the hyperparameter applies to (its 'when' condition)."""
    rows = summary[summary["epochs_run"] > 0]
    if condition:
        rows = rows[rows[condition[0]].astype(str) == str(condition[1])]
    return rows


def _is_log(values: pd.Series, spec_kind: str | None) -> bool:
    v = pd.to_numeric(values, errors="coerce")
    return spec_kind == "loguniform" or bool((v > 0).all() and v.max() / v.min() >= 20)


def accuracy_vs(summary: pd.DataFrame, name: str, value: str, path: Path, *, spec_kind: str | None = None,
                condition: tuple | None = None, about: str = "") -> Path:
    """Every trial's accuracy against hyperparameter ``name``, coloured by norm; hollow markers for trials
    stopped early (or errored, or still running), crosses at the bottom for diverged ones."""
    rows = plotted_trials(summary, condition)
    norms = list(dict.fromkeys(rows["norm"]))
    colors = _colors([norm_label(n) for n in dict.fromkeys([*NORMS, *norms])])  # one colour per norm in every plot
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    categorical = _is_categorical(rows[name], spec_kind)
    if categorical:
        cats = sorted(rows[name].unique(), key=lambda v: (pd.isna(pd.to_numeric(v, errors="coerce")), _sortable(v)))
        where = {c: i for i, c in enumerate(cats)}
        ax.set_xticks(range(len(cats)), [_tick(c, name) for c in cats])
        ax.set_xlim(-0.5, len(cats) - 0.5)
    ok = rows[~rows["diverged"]]
    low = ok[value].min() if ok[value].notna().any() else 0.0
    for k, n in enumerate(norms):
        sub = rows[rows["norm"] == n]
        if categorical:
            dodge = 0.0 if name == "norm" else (k - (len(norms) - 1) / 2) * 0.12  # norms side by side
            jitter = np.random.default_rng(k).uniform(-0.03, 0.03, len(sub))
            x = sub[name].map(where).astype(float) + dodge + jitter
        else:
            x = pd.to_numeric(sub[name], errors="coerce")
        color, done = colors[norm_label(n)], complete(sub)
        for kind, mask, style in (("", done & ~sub["diverged"], dict(color=color)),
                                  (" (stopped early or unfinished)", ~done, dict(facecolors="none", edgecolors=color)),
                                  (" (diverged; drawn at the bottom)", sub["diverged"], dict(color=color, marker="x"))):
            if mask.any():
                y = pd.Series(low, index=sub.index[mask]) if "diverged" in kind else sub.loc[mask, value]
                ax.scatter(x[mask], y, s=36, label=norm_label(n) + kind, **style)
    if not categorical and _is_log(rows[name], spec_kind):
        ax.set_xscale("log")
        _plain_log(ax.xaxis)
    ax.set_xlabel(name + (f" (only trials with {condition[0]} = {condition[1]})" if condition else ""))
    ax.set_ylabel(_value_label(value))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    ax.set_title(f"Accuracy vs {name}: every trial" + (f" ({about})" if about else ""))
    return _save(fig, path)


def _sortable(v: Any) -> Any:
    n = pd.to_numeric(v, errors="coerce")
    return str(v) if pd.isna(n) else float(n)


def _tick(v: Any, name: str) -> str:
    if name == "norm":
        return norm_label(v)
    n = pd.to_numeric(v, errors="coerce")
    return str(v) if pd.isna(n) else f"{float(n):g}"


ZOOM_SPREAD = 3.0  # points: when the means span more than this, a second panel zooms in on the best ones


def zoom_range(points: list[tuple[float, float]], spread: float = ZOOM_SPREAD) -> tuple[float, float] | None:
    """y-limits of a panel showing the (mean, std) points within ``spread`` / 1.5 of the best mean, or None when
    every mean is within ``spread`` of the best (one panel shows the differences well enough)."""
    means = [m for m, _ in points]
    top = max(means)
    if top - min(means) <= spread:
        return None
    near = [(m, s) for m, s in points if m >= top - spread / 1.5]
    low, high = min(m - s for m, s in near), max(m + s for m, s in near)
    pad = max(0.05, 0.1 * (high - low))
    return low - pad, high + pad


def accuracy_vs_batch_size(summary: pd.DataFrame, value: str, path: Path, about: str = "") -> Path:
    """Per norm (and regularization): mean ± std over the finished seeds of each batch size's best setup,
    with every trial as a faint dot; a zoomed second panel when one setup is far below the others."""
    from .report import best_setups, regularization_label

    rows = summary[summary["epochs_run"] > 0]
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for _group, seeds in best_setups(rows).items():
        first = seeds.iloc[0]
        name = norm_label(first["norm"]) + regularization_label(first["l1"], first["l2"])
        done = seeds.loc[complete(seeds), value]
        values = done if len(done) else seeds[value].iloc[:1]
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        lines.setdefault(name, []).append((float(first["batch_size"]), float(values.mean()), std))
    zoom = zoom_range([(m, s) for points in lines.values() for _, m, s in points])
    fig = Figure(figsize=(13 if zoom else 8, 5), layout="constrained")
    axes = fig.subplots(1, 2 if zoom else 1, squeeze=False)[0]
    colors = _colors(list(lines))
    sizes = sorted(rows["batch_size"].astype(int).unique())
    for ax in axes:
        for name, points in lines.items():
            points.sort()
            x, y, err = zip(*points)
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colors[name], label=name)
            members = rows[[norm_label(n) + regularization_label(a, b) == name
                            for n, a, b in zip(rows["norm"], rows["l1"], rows["l2"])]]
            ax.scatter(members["batch_size"].astype(float), members[value], s=12, alpha=0.3, color=colors[name])
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel(_value_label(value))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if zoom:
        axes[1].set_ylim(*zoom)
        axes[1].set_title(f"zoomed on the means within {ZOOM_SPREAD / 1.5:g} points of the best", fontsize="medium")
        axes[0].set_title("all", fontsize="medium")
    fig.suptitle("Accuracy vs batch size (line: best setup, mean ± std over seeds; dots: every trial)"
                 + (f"\n({about})" if about else ""))
    return _save(fig, path)


# -- all of them -------------------------------------------------------------------------------------
def write_all(report: Report, epochs: pd.DataFrame, checkpoints: dict[str, str], out: Path, *,
              data_root: Path | None, spec: SearchSpec | None = None) -> tuple[list[tuple[str, Path]], list[str]]:
    """Every plot the report has data for, as (title, path); plus notes on plots that could not be drawn."""
    out.mkdir(parents=True, exist_ok=True)
    for pattern in PATTERNS:  # plots of an earlier report whose groups may be gone
        for old in out.glob(pattern):
            old.unlink()
    if report.table.empty:
        return [], ["no plots: no trial has reported an epoch"]
    curves = learning_curves(epochs, report.table, out / "learning_curves.png", about=about(report))
    images = [("Learning curves of each group's best trial", curves)]
    notes: list[str] = []
    if data_root is None:
        notes.append("no misclassified images: the data folder is unknown; pass --data")
    else:
        found, why = misclassified_for_groups(report, checkpoints, data_root, out)
        images += found
        notes += why
    summary = report.summary
    if summary.loc[summary["epochs_run"] > 0, "batch_size"].nunique() > 1:
        images.append(("Accuracy vs batch size", accuracy_vs_batch_size(summary, report.compared_value,
                                                                        out / "accuracy_vs_batch_size.png",
                                                                        about=about(report))))
    kinds = {p.name: p.kind for p in spec.params} if spec else {}
    for name, condition in report.searched:
        if name == "batch_size" or plotted_trials(summary, condition)[name].nunique() < 2:
            continue  # batch size has its own plot; one value is no axis
        path = out / f"accuracy_vs_{slug(name)}.png"
        images.append((f"Accuracy vs {name}", accuracy_vs(summary, name, report.compared_value, path,
                                                           spec_kind=kinds.get(name), condition=condition,
                                                           about=about(report))))
    return images, notes
