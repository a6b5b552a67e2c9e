"""The ``segsync`` command line.

Exit codes: 0 ok, 1 the run finished with failed records, 2 bad usage or config.
User errors print one clear message, never a traceback (``--verbose`` shows it).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from connectors.kit.http import RedactingFilter, redact
from core.errors import ConfigError, InputError, SegsyncError
from sync.cli.check_cmd import check_cmd
from sync.cli.common import console, emit_json, err_console
from sync.cli.consent_cmds import consent
from sync.cli.run_cmds import demo_cmd, runs_cmd, sandbox_cmd, serve_cmd, sync_cmd, worker_cmd
from sync.cli.score_cmds import report_group, score_cmd
from sync.cli.state_cmds import state_group


def setup_logging(verbose: bool, log_format: str | None = None) -> None:
    """Log to stderr through the secret-redacting filter; ``--verbose`` shows segsync's INFO and everything's DEBUG.

    ``log_format`` "json" writes one JSON object per line (and tells the rest of the process, ``serve``
    included, through the environment).
    """
    from sync import logs

    if log_format:
        os.environ[logs.ENV] = log_format
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logs.formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("segsync").setLevel(logging.INFO if verbose else logging.WARNING)


class SegsyncGroup(click.Group):
    """Turns segsync's own errors into one readable line and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except ConfigError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            err_console.print(f"[bold red]error:[/] {redact(exc)}")
            for problem in exc.problems if len(exc.problems) > 1 or exc.problems[0] != str(exc) else []:
                err_console.print(f"  - {redact(problem)}", markup=False)
            ctx.exit(2)
        except (InputError, SegsyncError) as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            err_console.print(f"[bold red]error:[/] {redact(exc)}")
            ctx.exit(2 if isinstance(exc, InputError) else 1)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            ctx.exit(130)
        except Exception as exc:  # an unexpected failure: one readable line, the traceback with --verbose
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            logging.getLogger("segsync").debug("unexpected error", exc_info=True)
            err_console.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {redact(str(exc))}")
            err_console.print("  run again with --verbose for the traceback, and please report it")
            ctx.exit(1)


@click.group(cls=SegsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens and show tracebacks.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None, envvar="SEGSYNC_LOG_FORMAT",
              help="Log lines as text (default) or one JSON object per line (also server.log_format in the config).")
@click.version_option(package_name="segsync")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, log_format: str | None) -> None:
    """segsync: consent-first predictive segments for advisors.

    Pulls contacts and engagement from your CRM and email platform, checks each contact
    against the consent ledger, scores predictive segments locally, and pushes them back
    as CRM properties and email tags/segments. Start with `segsync demo`.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    setup_logging(verbose, log_format)


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate(config: Path, as_json: bool) -> None:
    """Check a config file; print every problem as file:line: tenant ID: ..., sorted by line (exit 2 if any).

    A `defaults:` block is inherited by every tenant; top-level `x-` blocks hold YAML anchors to reuse.
    """
    from sync.config.models import load_config
    from sync.config.validate import ConfigProblems

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        if as_json:
            details = [p.to_dict() for p in exc.details] if isinstance(exc, ConfigProblems) else [
                {"path": None, "line": None, "tenant": None, "message": m} for m in exc.problems]
            emit_json({"ok": False, "problems": details})
            sys.exit(2)
        raise
    summary: list[dict[str, Any]] = [
        {
            "tenant": t.id,
            "crm": t.crm.type,
            "esp": t.esp.type if t.esp else None,
            "scores": [s.name for s in t.scores],
            "segments": [s.name for s in t.segments],
            "schedule": t.schedule,
            "timezone": t.timezone,
        }
        for t in cfg.tenants
    ]
    if as_json:
        emit_json({"ok": True, "tenants": summary})
        return
    console.print(f"[green]ok[/] {config}: {len(cfg.tenants)} tenant(s)")
    for s in summary:
        console.print(
            f"  {s['tenant']}: {s['crm']} + {s['esp'] or 'no ESP'}, {len(s['scores'])} scores, "
            f"{len(s['segments'])} segments, schedule {s['schedule'] or 'manual'} ({s['timezone']})"
        )


# Every command, registered here and nowhere else (no registration as a side effect of an import).
# The command modules defer their heavy imports (pandas, scikit-learn, the store) into the commands.
COMMANDS: tuple[click.Command, ...] = (
    validate, sync_cmd, check_cmd, runs_cmd, score_cmd, report_group, serve_cmd, sandbox_cmd, demo_cmd, consent,
    state_group, worker_cmd,
)
for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(obj={})


if __name__ == "__main__":
    main()
