"""Run any generator in a process of its own and talk to it over a local socket.

This is the default way to put two vLLM engines on one machine (vLLM promises one engine per
process): each :class:`WorkerGenerator` starts a fresh Python process
(``python -m reasoning.backends.worker``) with its environment (``CUDA_VISIBLE_DEVICES`` and
anything else) set before anything is imported there, builds the generator from a Hydra-style
spec and then serves ``generate`` calls until it is closed. The child is started as a new
program, not with ``multiprocessing``'s spawn, so it never re-imports the caller's main module:
a plain script needs no ``if __name__ == "__main__":`` guard.

The spec is a plain dict: ``{"_target_": "reasoning.backends.vllm.VLLMGenerator",
"model": "smollm2-135m", ...}``; nested dicts with a ``_target_`` are built first, as Hydra
would. Hydra itself is not needed.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from reasoning.backends._lock import serialized
from reasoning.types import Completion, GenerationRequest, Segment

log = logging.getLogger(__name__)

_HYDRA_KEYS = ("_recursive_", "_convert_", "_args_")


def locate(path: str) -> Any:
    """Import ``"package.module.Name"`` (or a nested attribute) and return the object.

    >>> locate("reasoning.backends.scripted.ScriptedGenerator").__name__
    'ScriptedGenerator'
    """
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                module = ".".join(parts[:i])
                raise ImportError(f"_target_ {path!r}: {module} has no attribute {attr!r}") from None
        return obj
    raise ImportError(f"_target_ {path!r}: no module of it can be imported")


def instantiate(spec: Any) -> Any:
    """Build the object a Hydra-style spec describes (dicts with ``_target_``, recursively).

    >>> instantiate({"_target_": "reasoning.judges.ConstantJudge", "value": 0.5})
    ConstantJudge(value=0.5)
    """
    if isinstance(spec, Mapping):
        kwargs = {k: instantiate(v) for k, v in spec.items() if k != "_target_" and k not in _HYDRA_KEYS}
        if spec.get("_partial_"):
            raise ValueError("instantiate: _partial_ specs are not supported for generators")
        kwargs.pop("_partial_", None)
        if "_target_" not in spec:
            return kwargs
        return locate(str(spec["_target_"]))(*spec.get("_args_", ()), **kwargs)
    if isinstance(spec, list | tuple):
        return type(spec)(instantiate(v) for v in spec)
    return spec


def _plain(spec: Any) -> dict[str, Any]:
    """A spec as a plain, picklable dict (an OmegaConf ``DictConfig`` is resolved)."""
    if isinstance(spec, dict):
        return spec
    if isinstance(spec, Mapping):
        return dict(spec)
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(spec, resolve=True)  # type: ignore[return-value]
    except Exception as e:  # noqa: BLE001
        raise TypeError("WorkerGenerator spec must be a dict with a '_target_', "
                        f"got {type(spec).__name__}") from e


def _child(conn: Any, spec: dict[str, Any], env: dict[str, str]) -> None:
    """The worker process: set env, build the generator, serve requests until told to stop."""
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the worker ends
    try:
        gen = instantiate(spec)
    except BaseException:  # noqa: BLE001 - report any failure to the parent
        conn.send(("error", traceback.format_exc()))
        conn.close()
        return
    conn.send(("ready", getattr(gen, "name", None)))
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the parent went away
                break
            op = msg[0]
            if op == "close":
                break
            if op == "generate":
                try:
                    reply: tuple[str, Any] = ("ok", list(gen.generate(msg[1])))
                except BaseException as e:  # noqa: BLE001
                    reply = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
                try:
                    conn.send(reply)
                except (OSError, EOFError):
                    break
                except Exception as e:  # noqa: BLE001 - e.g. a completion that does not pickle
                    conn.send(("error", f"cannot send the completions back: {type(e).__name__}: {e}"))
            elif op == "reset_cache":
                from reasoning.protocols import reset_cache

                try:
                    conn.send(("ok", reset_cache(gen)))
                except BaseException as e:  # noqa: BLE001
                    conn.send(("error", f"{type(e).__name__}: {e}"))
            else:
                conn.send(("error", f"unknown worker operation {op!r}"))
    finally:
        try:
            gen.close()
        except Exception:  # noqa: BLE001
            traceback.print_exc()
        try:
            conn.send(("closed", None))
        except (OSError, EOFError, BrokenPipeError):
            pass
        conn.close()


class _Child:
    """A ``subprocess.Popen`` with the parts of ``multiprocessing.Process``'s API we use."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self._p = popen

    @property
    def pid(self) -> int:
        return self._p.pid

    @property
    def exitcode(self) -> int | None:
        return self._p.poll()

    def is_alive(self) -> bool:
        return self._p.poll() is None

    def join(self, timeout: float | None = None) -> None:
        try:
            self._p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def terminate(self) -> None:
        if self.is_alive():
            self._p.terminate()

    def kill(self) -> None:
        if self.is_alive():
            self._p.kill()


def _accept(listener: Listener, child: _Child, timeout_s: float) -> Connection | None:
    """Wait for the child to connect; None if it died or the time ran out."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["conn"] = listener.accept()
        except (OSError, EOFError) as e:  # closed below, or a bad handshake
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout_s
    while t.is_alive() and child.is_alive() and time.monotonic() < deadline:
        t.join(0.2)
    if t.is_alive():
        listener.close()
        t.join(5)
    return box.get("conn")


def _package_root() -> str:
    """The folder holding the ``reasoning`` package, so the child imports the same code."""
    return str(Path(__file__).resolve().parents[2])


class WorkerGenerator:
    """A :class:`reasoning.protocols.Generator` whose model lives in a child process.

    Args:
        spec: Hydra-style spec of the generator to run, e.g. ``{"_target_":
            "reasoning.backends.vllm.VLLMGenerator", "model": "smollm2-135m"}``.
        name: Name recorded in segments and traces (default: the inner generator's name).
            Segments written under this name are handed to the inner generator under its own
            name, so it reuses their token ids.
        devices: ``CUDA_VISIBLE_DEVICES`` for the child (None: inherited). A worker given
            devices of its own sets ``concurrent_calls``: the async schedule then calls it from
            a thread of its own, at the same time as the other models; without, it shares the
            in-process engines' one thread (same cores, or the same GPUs).
        env: Extra environment variables for the child, set before it imports anything.
        start_timeout_s: Most seconds to wait for the generator to be built.
        request_timeout_s: Most seconds one ``generate`` call may take (None: no limit). A call
            that runs over stops the worker, whose state can no longer be trusted.
    """

    def __init__(
        self,
        spec: Mapping[str, Any],
        name: str | None = None,
        devices: str | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 600,
        request_timeout_s: float | None = None,
    ) -> None:
        spec = _plain(spec)
        if "_target_" not in spec:
            raise ValueError("WorkerGenerator spec needs a '_target_' (a dotted class path), "
                             f"got keys {sorted(spec)}")
        self.spec = spec
        self.request_timeout_s = request_timeout_s
        self.concurrent_calls = devices is not None
        child_env = {str(k): str(v) for k, v in (env or {}).items()}
        if devices is not None:
            child_env["CUDA_VISIBLE_DEVICES"] = str(devices)
        self._target = str(spec["_target_"])
        self._closed = False
        t0 = time.perf_counter()
        authkey = os.urandom(16)
        listener = Listener(family="AF_UNIX", authkey=authkey)
        env = dict(os.environ)
        env.update(child_env)
        env["STEPSPEC_WORKER_AUTHKEY"] = authkey.hex()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
        # Not a daemon: vLLM's engine core runs in a child of its own on GPUs. close() (also at
        # exit) ends it.
        popen = subprocess.Popen([sys.executable, "-m", "reasoning.backends.worker", str(listener.address)],
                                 env=env, stdin=subprocess.DEVNULL)
        self._proc = _Child(popen)
        conn = _accept(listener, self._proc, start_timeout_s)
        listener.close()
        if conn is None:
            self._proc.terminate()
            self._proc.join(10)
            self._proc.kill()
            raise RuntimeError(f"worker for {self._target} (pid {self.pid}) did not connect within "
                               f"{start_timeout_s} s (exit code {self._proc.exitcode}); see its output above")
        self._conn = conn
        # The child imports with the parent's sys.path, as multiprocessing's spawn would.
        self._conn.send((spec, child_env, list(sys.path)))
        atexit.register(self.close)
        try:
            kind, payload = self._recv(start_timeout_s, "start")
        except BaseException as e:
            self._kill()
            atexit.unregister(self.close)
            if isinstance(e, TimeoutError):
                raise RuntimeError(f"{e}; the worker was stopped") from None
            raise
        if kind != "ready":
            self._kill()
            atexit.unregister(self.close)
            raise RuntimeError(f"worker for {self._target} failed to start:\n{payload}")
        self.inner_name: str | None = payload
        self.name = name or payload or self._target.rsplit(".", 1)[-1]
        self.start_seconds = time.perf_counter() - t0
        """Seconds from spawning the process to the generator being ready."""
        log.info("worker %r (pid %s, %s) ready in %.1f s", self.name, self.pid, self._target,
                 self.start_seconds)

    @property
    def pid(self) -> int | None:
        """The worker process id."""
        return self._proc.pid

    def is_alive(self) -> bool:
        """True while the worker process runs."""
        return self._proc.is_alive()

    # -- talking to the child ----------------------------------------------------------------
    def _recv(self, timeout_s: float | None, what: str) -> tuple[str, Any]:
        """Wait for the child's next message, watching for its death and the timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            try:
                if self._conn.poll(wait):
                    return self._conn.recv()
            except (EOFError, OSError):
                self._proc.join(5)
                raise RuntimeError(self._death(what)) from None
            if not self._proc.is_alive():
                raise RuntimeError(self._death(what))
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"worker {self._target} (pid {self.pid}) gave no answer to {what} "
                                   f"within {timeout_s} s")

    def _death(self, what: str) -> str:
        self._closed = True
        return (f"worker process for {self._target} (pid {self.pid}) died during {what} "
                f"(exit code {self._proc.exitcode}); see its output above")

    def _rename(self, requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
        """Hand segments written under ``self.name`` to the inner generator under its own name."""
        inner = self.inner_name
        if inner is None or inner == self.name:
            return list(requests)
        from dataclasses import replace

        def seg(s: Segment) -> Segment:
            if s.source == self.name:
                return replace(s, source=inner)
            if s.source == inner:  # another generator of that name: not ours to reuse
                return replace(s, source=f"{inner}@other")
            return s

        return [replace(r, prefix=tuple(seg(s) for s in r.prefix)) for r in requests]

    @serialized
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Forward the batch to the worker and return its completions.

        Raises:
            RuntimeError: The inner generator raised (its message and traceback included), the
                worker died, was closed, or ran over ``request_timeout_s``.
        """
        if self._closed:
            raise RuntimeError(f"worker {self.name!r} is closed")
        if not requests:
            return []
        try:
            self._conn.send(("generate", self._rename(requests)))
        except (OSError, EOFError) as e:
            raise RuntimeError(self._death("generate")) from e
        try:
            kind, payload = self._recv(self.request_timeout_s, "generate")
        except TimeoutError as e:
            self._kill()
            raise RuntimeError(f"{e}; the worker was stopped") from None
        if kind == "error":
            raise RuntimeError(f"worker {self.name!r} ({self._target}) raised: {payload}")
        if kind != "ok":
            raise RuntimeError(f"worker {self.name!r} sent an unexpected {kind!r} message")
        return payload

    @serialized
    def reset_cache(self) -> bool:
        """Empty the worker's engine caches (see :func:`reasoning.protocols.reset_cache`); False
        where its generator has none to reset."""
        if self._closed:
            raise RuntimeError(f"worker {self.name!r} is closed")
        try:
            self._conn.send(("reset_cache",))
        except (OSError, EOFError) as e:
            raise RuntimeError(self._death("reset_cache")) from e
        kind, payload = self._recv(self.request_timeout_s, "reset_cache")
        if kind != "ok":
            raise RuntimeError(f"worker {self.name!r} ({self._target}) could not reset its cache: {payload}")
        return bool(payload)

    # -- lifetime ----------------------------------------------------------------------------
    def close(self, timeout_s: float = 60) -> None:
        """Ask the worker to close its generator and exit; terminate or kill it if it won't.

        Safe to call twice (it is also registered with :mod:`atexit`).
        """
        try:
            atexit.unregister(self.close)
        except Exception:  # noqa: BLE001
            pass
        if getattr(self, "_proc", None) is None or self._proc.pid is None:
            return
        if not self._closed and self._proc.is_alive():
            self._closed = True
            try:
                self._conn.send(("close",))
                deadline = time.monotonic() + timeout_s
                while self._proc.is_alive() and time.monotonic() < deadline:
                    if self._conn.poll(0.2):
                        if self._conn.recv()[0] == "closed":
                            break
            except (OSError, EOFError):
                pass
            self._proc.join(timeout_s if self._proc.is_alive() else 5)
        self._kill()

    def _kill(self) -> None:
        """Terminate, then kill, the worker process if it still runs; release the pipe."""
        self._closed = True
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(10)
        if self._proc.is_alive():
            log.warning("worker %s (pid %s) ignored SIGTERM; killing it", self._target, self.pid)
            self._proc.kill()
            self._proc.join(10)
        try:
            self._conn.close()
        except OSError:
            pass

    def __enter__(self) -> WorkerGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        name = getattr(self, "name", None)
        return f"WorkerGenerator(name={name!r}, target={self._target!r}, pid={self.pid})"


def _main(argv: Sequence[str]) -> None:
    """Entry point of the worker process: connect back, receive the spec, serve."""
    key = bytes.fromhex(os.environ.pop("STEPSPEC_WORKER_AUTHKEY"))
    conn = Client(argv[1], family="AF_UNIX", authkey=key)
    spec, env, path = conn.recv()
    sys.path[:] = list(path) + [p for p in sys.path if p not in path]
    _child(conn, spec, env)


if __name__ == "__main__":
    _main(sys.argv)
