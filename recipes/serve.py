"""An OpenAI-compatible server over a stepspec engine (llama.cpp on CPUs), on FastAPI + uvicorn.

The program: a generator built from a config, served by :class:`reasoning.serve.Server` (the
API, its batching and its errors are described there)::

    python -m recipes.serve model/qwen2.5-coder-1.5b-llamacpp --port 8001
    python -m recipes.serve model/llamacpp model=/path/to/model.gguf --port 0 --port-file port.txt

PRESET is a config group option (``model/qwen2.5-coder-1.5b-llamacpp``) or a YAML file; its
``key=value`` overrides follow it. ``scripts/serve.sh`` starts it in the background and stops it
by process id. The console script is ``stepspec-serve``.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from reasoning.files import write_atomic
from reasoning.serve import Server

log = logging.getLogger(__name__)


def build_generator(preset: str, overrides: list[str]) -> Any:
    """A generator from a config group option (``model/qwen2.5-coder-1.5b-llamacpp``) or a YAML
    file, with ``key=value`` overrides."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from conf import CONF_DIR

    path = Path(preset)
    role, _, name = preset.partition("/")
    if not path.is_file() and role in ("draft", "target") and name:  # the old draft/ and target/ groups
        new = f"model/{'scripted-' + role if name == 'scripted' else name}"
        log.warning("%s is %s now (one model/ group for both roles)", preset, new)
        preset = new
    if not path.is_file():
        path = CONF_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no generator config {preset!r}: give a YAML file or a group option such as "
                                f"model/qwen2.5-coder-1.5b-llamacpp (looked for {path})")
    cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(overrides))
    gen = instantiate(cfg, _convert_="all")
    if not hasattr(gen, "generate_ids"):
        raise TypeError(f"{type(gen).__name__} cannot be served (it has no generate_ids); serve vLLM "
                        f"models with `vllm serve` instead (scripts/serve.sh does)")
    return gen


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``python -m recipes.serve``, ``stepspec-serve``): serve until stopped;
    2 and one line on stderr when the config cannot be built or the port bound."""
    prog = Path(sys.argv[0]).name
    if prog in ("__main__.py", "serve.py", "-c", ""):
        prog = "python -m recipes.serve"
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("preset", help="generator config: conf group option (model/qwen2.5-coder-1.5b-llamacpp) "
                                   "or a YAML file")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the generator config")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the port here once the server is listening")
    ap.add_argument("--served-model-name", default=None)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gen = None
    try:
        gen = build_generator(args.preset, args.overrides)
        server = Server(gen, args.host, args.port, args.served_model_name, wait_s=args.batch_wait_ms / 1000,
                        log_level="info")
    except Exception as e:  # noqa: BLE001 - one line for a user's mistake
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        if gen is not None:
            gen.close()
        return 2
    if args.port_file:
        write_atomic(args.port_file, str(server.port))
    log.info("serving %s on %s", gen, server.url)
    try:
        server.serve_forever()
    finally:
        server.batcher.close()
        server.sock.close()
        gen.close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
