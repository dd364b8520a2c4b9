"""Offline fixtures: a tiny Llama subject built from a config, SAEs with planted latents, a local
corpus.

Everything here is built at test time from fixed seeds; nothing is downloaded. The planted
SAEs read `blocks.0.hook_resid_pre`, which for a Llama in TransformerLens is the token
embedding itself (rotary positions add nothing to the residual stream), so a latent whose
encoder column is W_E[cat] / |W_E[cat]|^2 and whose bias sits between "cat" and every other
token fires on " cat" and nothing else, in any context.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

# before anything imports huggingface_hub / datasets / transformers (they read these at import)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

HOOK = "blocks.0.hook_resid_pre"
D_MODEL = 128
D_SAE = 24
CONTEXT_SIZE = 64
CAT, DOG = " cat", " dog"  # the planted latents' tokens (single tokens in the SmolLM2 vocabulary)
CAT_LATENT, DOG_LATENT = 0, 1


# --- the session cache ----------------------------------------------------------------------------
def shared_models_dir() -> Path:
    """Converted models outlive one session (the bundled model's conversion takes ~20 s)."""
    root = os.environ.get("SAE_INTERP_TEST_MODELS") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
        "sae_interp_tasks",
        "models",
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def sae_cache(tmp_path_factory) -> Path:
    """SAE_INTERP_CACHE for the whole session: a fresh folder whose `models/` is the shared one."""
    root = tmp_path_factory.mktemp("sae_interp_cache")
    (root / "models").symlink_to(shared_models_dir(), target_is_directory=True)
    previous = os.environ.get("SAE_INTERP_CACHE")
    os.environ["SAE_INTERP_CACHE"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("SAE_INTERP_CACHE", None)
    else:
        os.environ["SAE_INTERP_CACHE"] = previous


def subprocess_env(cache: Path) -> dict:
    """Environment for console scripts run by the tests: offline, our cache, quiet."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        SAE_INTERP_CACHE=str(cache),
        TOKENIZERS_PARALLELISM="false",
        PYTHONWARNINGS="ignore",
    )
    return env


# --- the tiny subject model -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def bundled_dir(sae_cache) -> Path:
    """The bundled SmolLM2 in HF format; only its tokenizer is used by the tiny model."""
    from sae_interp_tasks.bundled import bundled_hf_dir

    return bundled_hf_dir()


@pytest.fixture(scope="session")
def tokenizer(bundled_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(bundled_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer LlamaForCausalLM (d_model 128, 4 heads) with random weights (seed 0) and the
    bundled tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    # not "llama": see test_subject_folder_named_llama
    out = tmp_path_factory.mktemp("tiny-subject")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=D_MODEL,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    config.architectures = ["LlamaForCausalLM"]
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny model as a HookedTransformer (shared: tests add hooks only through context
    managers)."""
    from sae_interp_tasks.stages.subject import load_subject

    return load_subject(str(tiny_model_dir))


def token_id(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1, f"{text!r} is not one token: {ids}"
    return ids[0]


# --- planted SAEs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlantedSAE:
    path: Path
    latent_tokens: dict  # latent -> the single token id it fires on
    d_sae: int

    @property
    def cat_latent(self) -> int:
        return CAT_LATENT


def sae_metadata(model_dir: Path, hook: str) -> dict:
    return {
        "model_name": str(model_dir),
        "hook_name": hook,
        "prepend_bos": True,
        "context_size": CONTEXT_SIZE,
        "dataset_path": None,
    }


def build_planted_sae(
    W_E: torch.Tensor,
    planted: dict[int, int],
    d_sae: int,
    model_dir: Path,
    out: Path,
    hook: str = HOOK,
    seed: int = 0,
) -> Path:
    """A StandardSAE whose latent i (in `planted`) fires on token planted[i] only; the rest are
    random directions with a bias at their projection's 99.5th percentile over the vocabulary
    (sparse)."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    gen = torch.Generator().manual_seed(seed)
    d_in = W_E.shape[1]
    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=True)
    cfg.metadata = SAEMetadata(**sae_metadata(model_dir, hook))
    sae = StandardSAE(cfg)
    W_enc = torch.zeros(d_in, d_sae)
    b_enc = torch.zeros(d_sae)
    W_dec = torch.zeros(d_sae, d_in)
    for latent in range(d_sae):
        if latent in planted:
            e = W_E[planted[latent]]
            w = e / e.dot(e)  # w . e = 1 exactly on the planted token
            proj = W_E @ w
            others = torch.cat([proj[: planted[latent]], proj[planted[latent] + 1 :]])
            bias = -(1.0 + float(others.max())) / 2  # halfway between the best other token and 1
            act = 1.0 + bias
            # decodes its token exactly
            W_enc[:, latent], b_enc[latent], W_dec[latent] = (
                w,
                bias,
                e / act,
            )
        else:
            w = torch.randn(d_in, generator=gen)
            w = w / w.norm()
            proj = W_E @ w
            W_enc[:, latent], b_enc[latent] = w, -float(torch.quantile(proj, 0.995))
            W_dec[latent] = w * float(W_E.norm(dim=1).mean())
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.zero_()
        acts = sae.encode(W_E)  # every token of the vocabulary
    for latent, tok in planted.items():
        firing = (acts[:, latent] > 0).nonzero().flatten().tolist()
        assert firing == [tok], f"planted latent {latent} fires on {firing[:10]}, not only on {tok}"
    sae.save_model(out)
    return out


def build_exact_sae(d_in: int, model_dir: Path, out: Path, hook: str = HOOK) -> Path:
    """W_enc = [I, -I], W_dec = [I; -I]: decode(encode(x)) = relu(x) - relu(-x) = x exactly."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    cfg = StandardSAEConfig(d_in=d_in, d_sae=2 * d_in, apply_b_dec_to_input=True)
    cfg.metadata = SAEMetadata(**sae_metadata(model_dir, hook))
    sae = StandardSAE(cfg)
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae.save_model(out)
    return out


@pytest.fixture(scope="session")
def planted_sae(tmp_path_factory, tiny_model, tiny_model_dir, tokenizer) -> PlantedSAE:
    """Latent 0 fires exactly on " cat", latent 1 exactly on " dog", latents 2.. are random and
    sparse."""
    planted = {CAT_LATENT: token_id(tokenizer, CAT), DOG_LATENT: token_id(tokenizer, DOG)}
    out = tmp_path_factory.mktemp("planted_sae")
    build_planted_sae(tiny_model.W_E.detach().float(), planted, D_SAE, tiny_model_dir, out)
    return PlantedSAE(path=out, latent_tokens=planted, d_sae=D_SAE)


@pytest.fixture(scope="session")
def exact_sae_dir(tmp_path_factory, tiny_model_dir) -> Path:
    return build_exact_sae(D_MODEL, tiny_model_dir, tmp_path_factory.mktemp("exact_sae"))


@pytest.fixture(scope="session")
def loaded_planted(planted_sae):
    """(sae, SAEInfo) of the planted SAE, through the package's loader."""
    from sae_interp_tasks.stages.saes import SAESource, load_sae

    return load_sae(SAESource(path=str(planted_sae.path)))


# --- corpora --------------------------------------------------------------------------------------
ANIMALS = ["cat", "dog", "bird", "horse", "fox", "cow"]
THINGS = ["mat", "chair", "table", "roof", "fence", "rug", "box", "step"]
TEMPLATES = [
    "The {a} sat on the {t}.",
    "A small {a} slept under the {t} all day.",
    "My neighbour says the {a} likes the old {t}.",
    "We saw a {a} near the {t} this morning.",
    "Nobody knew why the {a} kept looking at the {t}.",
    "In the evening the {a} and the {b} walked past the {t}.",
]


def corpus_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        rng.choice(TEMPLATES).format(
            a=rng.choice(ANIMALS), b=rng.choice(ANIMALS), t=rng.choice(THINGS)
        )
        for _ in range(n)
    ]


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    """3000 one-line documents from templates; " cat" is in about a fifth of them."""
    path = tmp_path_factory.mktemp("corpus") / "animals.txt"
    path.write_text("\n".join(corpus_lines(3000)) + "\n")
    return path


@pytest.fixture(scope="session")
def small_corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small_corpus") / "small.txt"
    path.write_text("\n".join(corpus_lines(5, seed=1)) + "\n")
    return path


@pytest.fixture(scope="session")
def jsonl_corpus(tmp_path_factory) -> Path:
    """A jsonl corpus whose text lives in `content`, not `text`."""
    path = tmp_path_factory.mktemp("jsonl_corpus") / "docs.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": i, "content": line}) + "\n"
            for i, line in enumerate(corpus_lines(50, seed=2))
        )
    )
    return path


# --- the activation pass of the planted SAE over the corpus
# ------------------------------------------
def _pass_config():
    from sae_interp_tasks.stages.activations import PassConfig

    # pass_batch_size 1: the tests choose the batch size themselves
    return PassConfig(
        n_tokens=4096,
        context_size=CONTEXT_SIZE,
        window=16,
        n_top=10,
        n_sample=40,
        n_random=64,
        pass_batch_size=1,
    )


PASS_CFG = _pass_config()
PASS_SEED, PASS_BATCH = 0, 8


@pytest.fixture(scope="session")
def planted_pass(tiny_model, loaded_planted, corpus_file, tmp_path_factory):
    """The full pass (every latent) of the planted SAE over `corpus_file` with PASS_CFG."""
    from sae_interp_tasks.stages.activations import run_activation_pass
    from sae_interp_tasks.stages.corpus import CorpusSpec

    sae, info = loaded_planted
    return run_activation_pass(
        tiny_model,
        sae,
        info,
        CorpusSpec(source=str(corpus_file)),
        PASS_CFG,
        PASS_SEED,
        PASS_BATCH,
        cache_dir=tmp_path_factory.mktemp("planted_pass"),
        progress=False,
    )
