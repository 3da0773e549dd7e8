"""`xenddd demo`: crash driver domains on a simulated host and watch xenddd bring them back."""

from __future__ import annotations

import json
import sys

import click

from xenddd.cli.context import CliContext, pass_cli
from xenddd.cli.output import Column, render_table


@click.command()
@pass_cli
def demo(cli: CliContext) -> None:
    """Run the real daemon against a simulated Xen host, crash each driver domain, show the recovery.

    The simulated host has one network and one block driver domain serving three guests (five
    frontends). Each driver domain is crashed in turn; the daemon's own event history is printed live
    with timestamps (detection, detach, restart, readiness, each frontend reattached), and a summary
    table gives, per driver domain, crashes, restarts, MTTR, frontends reattached and lost. Touches
    nothing on this machine outside a temporary directory. With --json (before `demo`) only the summary
    is printed, as JSON.

    \b
    Exit status: 0 every frontend came back, 1 a frontend was lost.
    """
    from xenddd.cli.demo import run_demo

    say = (lambda _line: None) if cli.as_json else (lambda line: click.echo(line))
    summaries = run_demo(say)
    rows = [s.as_json() for s in summaries]
    lost = sum(s.frontends_lost for s in summaries)
    if cli.as_json:
        click.echo(json.dumps({"version": 1, "kind": "demo-summary", "items": rows, "lost": lost}, indent=2))
    else:
        columns = (
            Column("Driver domain", "name"),
            Column("Crashes", "crashes", right_align=True),
            Column("Restarts", "restarts", right_align=True),
            Column("MTTR(s)", "mttr_seconds", right_align=True),
            Column("Reattached", "frontends_reattached", right_align=True),
            Column("Lost", "frontends_lost", right_align=True),
        )
        click.echo("\nSummary")
        click.echo(render_table(columns, [{**r, "mttr_seconds": _seconds(r["mttr_seconds"])} for r in rows]))
        click.echo("nothing lost" if lost == 0 else f"{lost} frontend(s) LOST")
    sys.exit(0 if lost == 0 else 1)


def _seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"
