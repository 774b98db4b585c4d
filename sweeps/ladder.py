"""The lambda ladder: the anchors (the highest lambda of each group of rate tiers) from scratch, then each
group's lambdas fine-tuned from their model's anchor."""

from __future__ import annotations

from codec.records.layout import SweepDir, anchors_dir, run_name


def ladder_steps(overrides: list[str], rows: list[dict]) -> list[list[str]]:
    """The multiruns of a lambda ladder, in order: first the anchors (the highest lambda of each group)
    from scratch for every model, then each group's lambdas fine-tuned from their model's anchor
    (init_from its last.pth; fresh optimizers and schedule; the experiment's `ladder.finetune`
    overrides). A group is a set of rate tiers in which every model has the same channels (one group
    per tier in the protocol; one for all lambdas when an experiment gives both tiers one size), so a
    fine-tune always starts from weights of its own shape. `rows`: sweeps.plan.plan(overrides).

    With ladder.refine_anchor (the default) the anchors train in a sweep folder of their own
    (<sweep dir>_anchors) and the anchor's lambda is fine-tuned too, so that every point of the curve has
    had the same training: the anchor's and one fine-tune. Without it the anchor is its lambda's point
    (right when the anchors are converged; an anchor short of convergence then sits below the fine-tunes,
    which trained longer)."""
    shapes: dict[str, set] = {}  # tier -> {(model, N, M)}
    lambdas: dict[str, dict[float, str]] = {}  # tier -> {value: text as given}
    for row in rows:
        text = next((o.split("=", 1)[1] for o in row["job"] if o.startswith("lmbda=")), str(row["lmbda"]))
        shapes.setdefault(row["rate"], set()).add((row["model"], row["N"], row["M"]))
        lambdas.setdefault(row["rate"], {})[row["lmbda"]] = text
    groups: dict[frozenset, dict[float, str]] = {}
    for tier, tier_lambdas in lambdas.items():
        groups.setdefault(frozenset(shapes[tier]), {}).update(tier_lambdas)
    anchors = [max(group) for group in groups.values()]  # the values; the text as given goes to the overrides
    sweep_dir = rows[0]["sweep_dir"] if rows else "${hydra:sweep.dir}"
    refine = bool(rows) and rows[0]["refine_anchor"]
    anchor_texts = ",".join(group[value] for value, group in zip(anchors, groups.values()))
    if refine:  # the anchors apart, in a sweep folder (and W&B group) of their own
        anchor_dir = anchors_dir(sweep_dir)
        name = f"{rows[0]['sweep_name']}_anchors"
        own = [o for o in overrides if not o.startswith(("sweep_name=", "hydra.sweep.dir="))]
        steps = [[*own, f"sweep_name={name}", f"hydra.sweep.dir={anchor_dir}", f"lmbda={anchor_texts}"]]
    else:
        anchor_dir = sweep_dir
        steps = [[*overrides, f"lmbda={anchor_texts}"]]
    for anchor, group in zip(anchors, groups.values()):
        tuned = [text for value, text in sorted(group.items()) if refine or value != anchor]
        if tuned:  # the anchor's folder as its run names it: lmbda=1e-3 and 0.001 are one folder
            checkpoint = SweepDir(anchor_dir).run(run_name("${model.name}", anchor)).last_checkpoint
            steps.append([*overrides, *rows[0]["finetune"], f"lmbda={','.join(tuned)}", f"init_from='{checkpoint}'"])
    return steps
