"""The ``simplesafe`` command line: one Typer app assembled from the command groups.

    simplesafe --help
    simplesafe data build recipes/demo.yaml seed=1
    simplesafe --debug train sft cfg.yaml       # full tracebacks

Each command parses its arguments, loads its config (YAML + ``key=value`` overrides)
and calls one library function; the logic lives in the package, not here. Errors the
user can fix exit with code 2 and a one-paragraph message.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import click
import typer

try:  # typer >= 0.17 vendors click and raises its own copies of click's exceptions
    from typer import Abort as _TyperAbort, Exit as _TyperExit
    from typer._click import exceptions as _tc
except ImportError:  # pragma: no cover - older typer re-raises click's own
    _TyperAbort, _TyperExit, _tc = click.exceptions.Abort, click.exceptions.Exit, click.exceptions

_EXIT = (click.exceptions.Exit, _TyperExit)
_NO_ARGS = (click.exceptions.NoArgsIsHelpError, _tc.NoArgsIsHelpError)
_USAGE = (click.ClickException, _tc.ClickException)
_ABORT = (click.exceptions.Abort, _TyperAbort)

from simplesafe.commands import data, eval as eval_cmds, models, plan, report, run, synth, train
from simplesafe.commands.common import STATE
from simplesafe.errors import SimplesafeError

app = typer.Typer(
    name="simplesafe",
    help="Train language models to answer simply and safely: curate data, synthesise "
    "instructions, train SFT/RM/DPO/PPO, evaluate and report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level."),
) -> None:
    STATE.debug = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("simplesafe").setLevel(logging.INFO)


app.add_typer(data.app, name="data")
app.add_typer(synth.app, name="synth")
app.add_typer(train.app, name="train")
app.add_typer(eval_cmds.app, name="eval")
app.add_typer(models.app, name="models")
app.add_typer(report.app, name="report")
app.command("run", help=run.run_recipe.__doc__)(run.run_recipe)
app.command("plan", help=plan.plan_recipe_command.__doc__)(plan.plan_recipe_command)
app.command("merge", help=train.merge.__doc__)(train.merge)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        app(args=argv, standalone_mode=False)
    except _EXIT as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except _NO_ARGS as exc:
        exc.show()
        sys.exit(0)
    except _USAGE as exc:
        exc.show()
        sys.exit(2)
    except _ABORT:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("\ninterrupted; finished stages are kept, run the same command again to resume", file=sys.stderr)
        sys.exit(130)
    except SimplesafeError as exc:
        if STATE.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
