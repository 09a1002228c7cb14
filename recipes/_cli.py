"""What every recipe shares: one-line errors, checking overrides before Hydra runs, lazy parts."""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasoning.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def group_options(group: str) -> list[str]:
    """The option names of a config group (the YAML files in ``conf/<group>/``)."""
    d = CONF_DIR / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))


def unknown_option_message(group: str, value: str) -> str:
    opts = group_options(group)
    near = difflib.get_close_matches(value, opts, n=1, cutoff=0.5)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return f"unknown {group} '{value}': choose one of {', '.join(opts)}{hint}"


def check_group_overrides(args: Sequence[str]) -> None:
    """Refuse ``group=option`` overrides naming options that do not exist (before Hydra runs).

    Raises:
        UserError: naming the group, the option and the options that exist.
    """
    known = set(groups())
    for a in args:
        if a.startswith("-") or "=" not in a:
            continue
        key, value = a.split("=", 1)
        key = key.lstrip("+~").removeprefix("override ").strip().split("@", 1)[0]
        if key in known:
            for v in value.split(","):
                v = v.strip()
                if v and v != "null" and v not in group_options(key):
                    raise UserError(unknown_option_message(key, v))


def compose_check(config_name: str, args: Sequence[str]) -> None:
    """Compose the config as Hydra will (without running anything) to report mistakes in one line.

    Sweeps (``-m``, comma lists) are checked with their first value.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = []
    for a in args:
        if a.startswith("-") or a.startswith("hydra.") or a.startswith("hydra/"):
            continue
        if "=" in a:
            k, v = a.split("=", 1)
            if "," in v and not v.startswith(("[", "{", "'", '"')):
                v = v.split(",")[0]
            a = f"{k}={v}"
        overrides.append(a)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_override(o)
        except HydraException as e:
            raise UserError(f"cannot parse the override {o!r}: {one_line(e)}") from None
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        msg = one_line(e)
        if e.__cause__ is not None:
            msg += f" ({one_line(e.__cause__)})"
        raise UserError(msg) from None


def one_line(e: BaseException) -> str:
    """An exception's message folded to one line (Hydra's messages span several)."""
    cause = e
    # Hydra wraps errors raised by constructors: report the constructor's own message.
    while getattr(cause, "__cause__", None) is not None and type(cause).__name__ == "InstantiationException":
        cause = cause.__cause__
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("full_key:", "object_type=", "Set the environment",
                                                      "To append to your config"))]
    return ": ".join(lines) or type(cause).__name__


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
    """Problems finished in a run folder (whole trace lines)."""
    from reasoning.traces import TRACES, read_traces

    try:
        return len(read_traces(out / TRACES))
    except (OSError, ValueError):
        return 0


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


def hydra_main(config_name: str, run: Any, saved: Any, argv: Sequence[str] | None = None) -> None:
    """The shared entry point of the Hydra recipes.

    Checks the command line before Hydra runs (one-line errors, exit 2), then runs
    ``run(cfg) -> exit code`` under Hydra. Ctrl-C and SIGTERM end it with one line saying what
    ``saved(cfg)`` reports is kept and how to resume (exit 130 / 143).
    """
    import logging

    import hydra

    args = sys.argv[1:] if argv is None else list(argv)
    quiet_third_party_logs()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        check_group_overrides(args)
        compose_check(config_name, args)
    except UserError as e:
        fail(str(e))

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
    def _task(cfg) -> None:
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

    sys.argv = [sys.argv[0], *args]
    _task()
