"""The ``fercluster`` command: a thin layer over the library.

Each command group lives in its own module and registers itself on the app; library exceptions
(``FerclusterError``) become one-line errors with exit code 2 here, and nowhere else.
"""

from __future__ import annotations

import sys

import typer

from fercluster.errors import FerclusterError

app = typer.Typer(
    name="fercluster",
    help="Sweeps of Khorrami et al. (ICCVW 2015) on SLURM: train, monitor, aggregate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print rates and ratios measured in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _register() -> None:
    from fercluster.cli import aggregate, bench_orchestration, cancel, data, doctor, status, sweep, train

    for module in (data, train, sweep, status, cancel, bench_orchestration, doctor, aggregate):
        module.register(app, bench_app)


def main() -> None:
    _register()
    try:
        code = app(standalone_mode=False)  # a command's typer.Exit(n) comes back as n here
    except FerclusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a file system problem no check foresaw: still one line, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(
            f"error: {exc.strerror or exc}{where}; check the paths in the config, or run: fercluster doctor CONFIG",
            file=sys.stderr,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        # Usage errors (typer ships its own copy of click): they know how to show themselves.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if type(code) is int and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
