"""The ``report`` stage: the run as one self-contained HTML file (:mod:`simplesafe.report.html`)."""

from __future__ import annotations

from simplesafe.recipe.config import Context, ReportStageConfig, register, section


def report_config(ctx: Context):
    return section(ReportStageConfig, ctx.recipe.report, "report")


@register("report")
def _report(ctx: Context) -> dict:
    from simplesafe.report.html import render_report

    cfg = report_config(ctx)
    out = render_report(ctx.run_dir, ctx.path("report.html"), max_prompts=cfg.max_prompts, notes=cfg.notes)
    return {"path": str(out)}
