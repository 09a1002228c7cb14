"""What every recipe shares: one-line errors, lazy models, the Hydra entry point (the overrides
it checks before Hydra runs are recipes._overrides's, re-exported here)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conf import CONF_DIR  # one definition, in conf/
from reasoning.errors import UserError
from recipes._overrides import (  # noqa: F401 - re-exported: the programs and tests use _cli.<name>
    ROLES,
    _check_sweeps,
    _parse_overrides,
    check_group_overrides,
    compose_check,
    group_options,
    groups,
    model_role_overrides,
    one_line,
    unknown_option_message,
)


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(code)


def instantiate(cfg: Any, what: str, **kw: Any) -> Any:
    """``hydra.utils.instantiate`` with user mistakes turned into :class:`UserError`."""
    from hydra.utils import instantiate as _inst
    from omegaconf.errors import MissingMandatoryValue

    try:
        return _inst(cfg, **kw)
    except UserError:
        raise
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or what
        raise UserError(f"{key} has no value: set {key}=... on the command line") from None
    except Exception as e:  # noqa: BLE001 - constructors signal bad values with ValueError & co
        root = e
        while root.__cause__ is not None:
            root = root.__cause__
        if isinstance(root, UserError | ValueError | FileNotFoundError | TypeError | KeyError):
            raise UserError(f"{what}: {one_line(root)}") from None
        raise


def bind_judge(judge: Any, target: Any, draft: Any) -> Any:
    """:func:`reasoning.judges.bind_judge`: a partial judge finished with the run's target and
    draft; what its constructor refuses becomes a :class:`UserError`."""
    from reasoning.judges import bind_judge as _bind

    try:
        return _bind(judge, target, draft)
    except (ValueError, TypeError) as e:
        raise UserError(f"judge: {one_line(e)}") from None


def check_model_paths(cfg: Any, what: str) -> None:
    """Refuse a generator config whose ``model`` is a local path that does not exist.

    Registry short names and hub ids pass: they are resolved (and prepared) when the model loads.
    """
    from reasoning.cpu_models import _HUB_ID, MODELS, _looks_like_path

    node = cfg.get("spec", cfg) if hasattr(cfg, "get") else cfg
    model = node.get("model") if hasattr(node, "get") else None
    if not isinstance(model, str) or model in MODELS or Path(model).expanduser().exists():
        return
    if _HUB_ID.match(model):
        return
    if not _looks_like_path(model):
        import difflib as _d

        near = _d.get_close_matches(model, list(MODELS), n=1, cutoff=0.5)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise UserError(f"{what}.model: unknown model {model!r}: give a local folder, a hub id (org/name) or "
                        f"one of {', '.join(sorted(MODELS))}{hint}")
    if _looks_like_path(model):
        raise UserError(f"{what}.model: no such file or folder {model!r}; give an existing model folder, "
                        f"a hub id (org/name) or one of {', '.join(sorted(MODELS))}")


def load_models(names: Sequence[str], gens: dict[str, LazyGenerator]) -> dict[str, float]:
    """Build the named lazy generators now; returns the seconds each took."""
    import time

    took = {}
    for n in names:
        t0 = time.perf_counter()
        try:
            gens[n].get()
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - one clear line instead of an engine's traceback
            raise UserError(f"{n}: the model could not be started: {one_line(e)}") from e
        took[n] = round(time.perf_counter() - t0, 2)
    return took


def count_done(out: Path) -> int:
    """Problems finished in a run folder: each problem once, by its latest trace line (a problem
    rerun after an error has two lines), an error not counted as finished."""
    from reasoning.pipeline import latest_traces
    from reasoning.traces import TRACES, read_traces
    from reasoning.types import StopReason

    try:
        latest = latest_traces(read_traces(out / TRACES))
        return sum(1 for t in latest if t.stop_reason is not StopReason.ERROR)
    except (OSError, ValueError):
        return 0


def declared_concurrent_calls(cfg: Any) -> bool | None:
    """What the ``_target_`` class of a generator config says of ``concurrent_calls`` without
    building it: its class attribute (a bool), False where neither the class nor its
    ``__init__`` sets one, None where only an instance knows (a property, or set in ``__init__``).

    >>> declared_concurrent_calls({"_target_": "reasoning.backends.server.ServerGenerator"})
    True
    >>> declared_concurrent_calls({"_target_": "reasoning.backends.scripted.ScriptedGenerator"})
    False
    >>> declared_concurrent_calls({"_target_": "reasoning.backends.worker.WorkerGenerator"}) is None
    True
    """
    import inspect

    from hydra.utils import get_class

    target = cfg.get("_target_") if hasattr(cfg, "get") else None
    if not isinstance(target, str):
        return None
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 - not a class (a factory function) or not importable: ask it
        return None
    attr = inspect.getattr_static(cls, "concurrent_calls", None)
    if isinstance(attr, bool):
        return attr
    if attr is not None:
        return None  # a property or a descriptor: decided per instance
    code = getattr(getattr(cls, "__init__", None), "__code__", None)
    if code is not None and "concurrent_calls" in code.co_names:
        return None  # set by its constructor (``self.concurrent_calls = devices is not None``)
    return False


class LazyGenerator:
    """A generator built from its config on first use, so a run that never calls the draft
    (target-only) never loads it."""

    def __init__(self, cfg: Any, what: str) -> None:
        self._cfg = cfg
        self._what = what
        self._gen = None
        self.name = str(cfg.get("name", what))

    @property
    def loaded(self) -> bool:
        return self._gen is not None

    @property
    def concurrent_calls(self) -> bool:
        """The built generator's ``concurrent_calls`` (see
        :func:`reasoning.schedule.takes_concurrent_calls`): whether the async schedule calls it from
        a thread of its own (a server, a worker on devices of its own) or queues it on the one
        in-process engine thread. Read without building it where the config's ``_target_`` class
        declares it (``ServerGenerator.concurrent_calls = True``) or, as the in-process engines,
        does not set it at all (False); a class that decides per instance from its arguments
        (``WorkerGenerator``'s ``devices``) is built now to be asked."""
        from reasoning.schedule import takes_concurrent_calls

        if self._gen is None:
            declared = declared_concurrent_calls(self._cfg)
            if declared is not None:
                return declared
        return takes_concurrent_calls(self.get())

    def get(self) -> Any:
        if self._gen is None:
            self._gen = instantiate(self._cfg, self._what)
            if self._gen.name != self.name:
                raise UserError(f"{self._what}: built generator is named {self._gen.name!r}, "
                                f"config says {self.name!r}")
        return self._gen

    def generate(self, requests):
        return self.get().generate(requests)

    def reset_cache(self) -> bool | None:
        """Empty the built generator's engine caches (see :func:`reasoning.protocols.reset_cache`);
        one not built yet has none (True)."""
        from reasoning.protocols import reset_cache

        return True if self._gen is None else reset_cache(self._gen)

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None


def quiet_third_party_logs() -> None:
    """Keep vLLM's and transformers' chatter off the terminal unless asked for."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that ``finally`` blocks run."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise Terminated()


def prog_name(module: str) -> str:
    """How the user called the program of ``module`` (``recipes.evaluate``): the console script's
    name (``stepspec-evaluate``) when run as one, else ``python -m recipes.evaluate``."""
    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return called if called.startswith("stepspec-") else f"python -m {module}"


def _hydra_args(args: Sequence[str]) -> Any:
    """``args`` read by Hydra's own parser (:func:`hydra._internal.utils.get_args_parser`), so that
    exactly the flags Hydra takes (``--cfg job``, ``-c job``, ``--info config``, ``-m``, ...) are
    flags and only the rest are overrides; the combinations Hydra refuses are refused here.

    Raises:
        UserError: a flag Hydra does not know, a bad value of one, or flags that do not go together.
    """
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str) -> None:
        if message.startswith("argument --info") and "=" in message:
            message += " (give --info after the overrides, or name what to show: --info config)"
        raise UserError(message)

    parser.error = error  # type: ignore[method-assign]  # one line instead of usage + exit
    # Intermixed: flags between overrides (recipe=smoke -m a=1,2) are read too, where Hydra's own
    # parse_args stops; hydra_main hands Hydra the flags first (see _hydra_argv).
    ns = parser.parse_intermixed_args(list(args))
    if ns.help or ns.shell_completion or ns.experimental_rerun:
        return ns
    if ns.resolve and ns.cfg is None:
        raise UserError("--resolve works only together with --cfg (or --help)")
    if ns.hydra_help:
        return ns
    modes = [f for f, on in (("--run", ns.run), ("--multirun", ns.multirun), ("--cfg", ns.cfg is not None),
                             ("--info", ns.info is not None)) if on]
    if len(modes) > 1:
        raise UserError(f"{' and '.join(modes)} do not go together: give one of --run, --multirun, --cfg "
                        "and --info")
    return ns


def _config_dirs(ns: Any) -> tuple[Path | None, list[Path]]:
    """``--config-path`` (the primary config folder, relative to ``recipes/``) and
    ``--config-dir`` (one more folder on the search path), checked to exist."""
    primary = extra = None
    if ns.config_path is not None:
        if ns.config_path.startswith("pkg://"):
            raise UserError(f"--config-path {ns.config_path}: give a folder, not a package")
        primary = Path(__file__).resolve().parent / ns.config_path
        if not primary.is_dir():
            raise UserError(f"--config-path {ns.config_path}: no such folder ({primary})")
    if ns.config_dir is not None:
        extra = Path(ns.config_dir).expanduser().resolve()
        if not extra.is_dir():
            raise UserError(f"--config-dir {ns.config_dir}: no such folder")
    return primary, [extra] if extra is not None else []


def _hydra_argv(ns: Any, overrides: Sequence[str]) -> list[str]:
    """Hydra's command line for its parsed arguments ``ns``: its flags, then ``overrides``."""
    from hydra._internal.utils import get_args_parser

    out: list[str] = []
    for a in get_args_parser()._actions:  # noqa: SLF001 - the flags Hydra's parser has
        if a.dest in ("overrides", "version") or not a.option_strings:
            continue
        v = getattr(ns, a.dest)
        if v is None or v is False or v == a.default:
            continue
        out += [a.option_strings[0]] if v is True else [a.option_strings[0], str(v)]
    return [*out, *overrides]




def check_command_line(config_name: str, args: Sequence[str]) -> Any:
    """Everything :func:`hydra_main` checks before Hydra runs; returns Hydra's parsed arguments.

    Raises:
        UserError: the first mistake, in one line.
    """
    ns = _hydra_args(args)
    if ns.shell_completion or ns.experimental_rerun:
        return ns  # their arguments are not overrides of this config
    primary, extra = _config_dirs(ns)
    overrides = list(ns.overrides)
    multirun = ns.multirun or any(a.replace(" ", "") in ("hydra.mode=MULTIRUN", "hydra.mode=multirun")
                                  for a in overrides)
    _check_sweeps(overrides, multirun)
    if primary is None:
        check_group_overrides(overrides, extra)
    compose_check(ns.config_name or config_name, overrides, extra, config_dir=primary)
    return ns


def hydra_main(config_name: str, run: Any, saved: Any, argv: Sequence[str] | None = None,
               module: str | None = None) -> None:
    """The shared entry point of the Hydra recipes.

    Checks the command line before Hydra runs (one-line errors, exit 2), then runs
    ``run(cfg) -> exit code`` under Hydra. Every Hydra flag works as in any Hydra app (``--cfg
    job``, ``--info``, ``-m``, ``--help``, ...). The job is named after the program (``module``,
    default ``recipes.<config_name>``: ``hydra.job.name=evaluate``, its log ``evaluate.log``) and
    ``--help`` names the command the user typed. Ctrl-C and SIGTERM end it with one line saying
    what ``saved(cfg)`` reports is kept and how to resume (exit 130 / 143).
    """
    import logging

    import hydra

    module = module or f"recipes.{config_name}"
    args, renamed = model_role_overrides(sys.argv[1:] if argv is None else argv)
    for note in renamed:  # the old group names keep working
        print(f"{prog_name(module)}: note: {note} (one model/ group for both roles)", file=sys.stderr)
    quiet_third_party_logs()
    try:
        ns = check_command_line(config_name, args)
    except UserError as e:
        fail(str(e))
    shows = ns.help or ns.hydra_help or ns.cfg is not None or ns.info is not None or ns.shell_completion
    if not shows:  # Hydra's own output (--info) has its handlers; a second one would print it twice
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    prog = prog_name(module)
    overrides = list(ns.overrides)
    if ns.help:  # Hydra's help text names ${hydra.help.app_name}: the command typed
        if not any(a.startswith("hydra.help.app_name=") for a in overrides):
            overrides.append(f"hydra.help.app_name='{prog}'")
    elif ns.hydra_help:
        # Hydra composes its own help without the primary config, so an override of it (recipe=...)
        # would fail there: it gets Hydra's overrides only (all of them were checked above).
        overrides = [a for a in overrides if a.lstrip("+~").startswith(("hydra.", "hydra/"))]
        print(f"{prog}: Hydra's own flags and config groups ({prog} --help shows the program's)")

    def task(cfg) -> None:
        import signal

        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            code = run(cfg)
        except UserError as e:
            fail(str(e))
        except KeyboardInterrupt as e:
            term = isinstance(e, Terminated)
            fail(f"{'terminated' if term else 'interrupted'}; {saved(cfg)}; "
                 "run the same command again to resume", code=143 if term else 130)
        finally:
            signal.signal(signal.SIGTERM, previous)
        if code:
            raise SystemExit(code)

    # Hydra names the job after the module of the task function (hydra.job.name, the default
    # hydra.help.app_name and the log file's name): the program's, not this helper module's.
    task.__module__ = module
    sys.argv = [sys.argv[0] if sys.argv else module, *_hydra_argv(ns, overrides)]
    hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)()
