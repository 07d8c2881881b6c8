"""The ``tokenbench`` command line: the click group, its error handling, and the commands registered from one module
each (:mod:`.compare` (compare, run), :mod:`.calibrate`, :mod:`.flops`, :mod:`.bench`, :mod:`.leaderboard`,
:mod:`.results`, :mod:`.listing`; shared options in :mod:`.options`). The commands parse options and print: the
work is the harness's and every table is :mod:`tokenbench.results.tables`'s. Heavy imports live inside the commands,
so ``--help`` is instant."""

from __future__ import annotations

import sys

import click

from tokenbench.errors import TokenbenchError


class UserError(click.ClickException):
    """A user's mistake: printed as one line on stderr, exit status 2, no traceback."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _guard(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TokenbenchError as exc:
            raise UserError(str(exc)) from None

    return wrapper


class Terminated(BaseException):
    """SIGTERM (a plain ``kill``, a scheduler's time limit) raised where the command is, so that it unwinds as Ctrl-C
    does: a store's run is marked interrupted, finished rows are printed and kept, workers are stopped. A
    ``BaseException``, so that no ``except Exception`` on the way swallows it."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


class _Group(click.Group):
    """Every user error, click's own usage errors included, is one ``error:`` line on stderr and exit status 2.
    Ctrl-C ends with "interrupted" and 130, SIGTERM with "terminated" and 143 (128 + the signal, as a shell reports
    it), both after what finished was kept."""

    def main(self, *args, **kwargs):
        import signal

        from click.exceptions import Abort, NoArgsIsHelpError

        kwargs["standalone_mode"] = False
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            rv = super().main(*args, **kwargs)
        except Terminated:
            click.echo("terminated (SIGTERM): what finished is kept (rows written, samples stored); the same command "
                       "resumes from there", err=True)
            sys.exit(143)
        except NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.UsageError as exc:
            argv = kwargs.get("args") or (args[0] if args else None) or sys.argv[1:]
            command = exc.ctx.command_path if exc.ctx else " ".join(
                ["tokenbench", *[a for a in argv if a in self.commands][:1]])  # click leaves ctx unset for some errors
            where = f" (see `{command} --help`)"
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
                click.echo("interrupted", err=True)
                sys.exit(130)
            click.echo("aborted", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # the reader went away (`| head`): nothing left to say (Python's documented recipe)
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as exc:  # not a user's mistake: a bug, said to be one, with whose it is and where to report it
            import traceback

            traceback.print_exc()
            click.echo(self.bug_line(exc), err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    @staticmethod
    def bug_line(exc: BaseException) -> str:
        """The last line under an unexpected traceback: whose bug it is (the plugin whose module holds the innermost
        frame of tokenbench's or a plugin's, else tokenbench) and where to report it."""
        import traceback

        from tokenbench.contract.registry import one_line, plugin_of, project_url

        what = one_line(f"{type(exc).__name__}: {exc}")
        frames = [(f.f_globals.get("__name__", ""), getattr(f.f_code, "co_qualname", f.f_code.co_name))
                  for f, _ in traceback.walk_tb(exc.__traceback__)]
        plugin = plugin_of(frames[::-1])
        if plugin is not None:
            origin, entry_point = plugin
            url = project_url(origin.source)
            where = f" ({url})" if url else ""
            return (f"error: this is a bug in plugin {origin} ({entry_point}): {what}; report it to that "
                    f"package's authors{where}")
        from tokenbench import __version__

        url = project_url("tokenbench")
        where = f"at {url}" if url else "to the tokenbench maintainers"
        return (f"error: this is a bug in tokenbench {__version__}: {what}; please report it {where} with the "
                "traceback above")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tokenbench")
def main() -> None:
    """tokenbench: compare visual-token reduction methods on vision-language models, one harness for all.

    \b
    Examples:
      tokenbench compare alvts fastv                 # the embedded default: mini-llava, synthetic task, CPU
      tokenbench compare fastv random --keep 16,32,48 --json rows.json
      tokenbench calibrate alvts                     # fit ALVTS's selector for the default model
      tokenbench list methods
    """


# the commands: imported after _guard and main, which they use
from tokenbench.cli import bench, calibrate, compare, flops, leaderboard, listing, results  # noqa: E402

for _command in (compare.compare, compare.run, calibrate.calibrate, flops.flops, bench.bench, leaderboard.leaderboard,
                 results.results, listing.list_cmd):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
