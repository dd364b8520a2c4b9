"""Neuronpedia's explanation export of an SAE, fetched once and cached (`explanations_path:
neuronpedia`).

An sae_lens release names each SAE's Neuronpedia id (`neuronpedia: <model>/<source>` in its
pretrained directory; `sae.cfg.metadata.neuronpedia_id` once loaded). Neuronpedia publishes the
explanations of every source as gzipped JSON-lines batches in its public export bucket,
`v1/<model>/<source>/explanations/batch-<N>.jsonl.gz` (docs.neuronpedia.org, "Exports"; the older
`/api/explanation/export` endpoint now points there). They are listed through the bucket's
ListObjectsV2 API, downloaded into `$SAE_INTERP_CACHE/neuronpedia/<model>/<source>/explanations/`
all or nothing, and read from there ever after, with no network.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from sae_interp_tasks.caching import cache_root, write_files
from sae_interp_tasks.errors import SaeInterpError

EXPORTS_URL = "https://neuronpedia-datasets.s3.us-east-1.amazonaws.com"
# another mirror of the bucket (or a test server): SAE_INTERP_NEURONPEDIA_EXPORTS=URL
EXPORTS_ENV = "SAE_INTERP_NEURONPEDIA_EXPORTS"


def export_folder(neuronpedia_id: str) -> Path:
    model, _, source = neuronpedia_id.partition("/")
    return cache_root() / "neuronpedia" / model / source / "explanations"


def _fields(xml: bytes, name: str) -> list[str]:
    """The text of every element called `name` in an S3 listing, whatever its namespace."""
    return [el.text or "" for el in ET.fromstring(xml).iter() if el.tag.rsplit("}", 1)[-1] == name]


def _list_keys(base: str, prefix: str, timeout: float) -> list[str]:
    """The export's batch files under `prefix` (ListObjectsV2, page by page)."""
    import requests

    keys, token = [], None
    while True:
        params = {"list-type": "2", "prefix": prefix}
        if token:
            params["continuation-token"] = token
        reply = requests.get(base + "/", params=params, timeout=timeout)
        reply.raise_for_status()
        keys += _fields(reply.content, "Key")
        more = _fields(reply.content, "IsTruncated") == ["true"]
        token = (_fields(reply.content, "NextContinuationToken") or [None])[0]
        if not (more and token):
            return sorted(k for k in set(keys) if k.rsplit("/", 1)[-1].startswith("batch-"))


def fetch_export(neuronpedia_id: str, timeout: float = 30.0) -> Path:
    """The folder holding the SAE's explanation batches: the cache's, downloaded on first use."""
    if not neuronpedia_id or "/" not in neuronpedia_id:
        raise SaeInterpError(
            f"Neuronpedia id {neuronpedia_id!r} is not <model>/<source>; pass explanations_path=DIR"
        )
    folder = export_folder(neuronpedia_id)
    if folder.is_dir() and any(folder.glob("batch-*.jsonl.gz")):
        return folder
    import requests

    base = os.environ.get(EXPORTS_ENV, EXPORTS_URL).rstrip("/")
    prefix = f"v1/{neuronpedia_id}/explanations/"
    try:
        keys = _list_keys(base, prefix, timeout)
        if not keys:
            raise SaeInterpError(
                f"Neuronpedia's exports hold no explanations under {prefix}; pass "
                "explanations_path=FILE with explanations of this SAE"
            )
        files = {}
        for key in keys:
            reply = requests.get(f"{base}/{key}", timeout=timeout)
            reply.raise_for_status()
            files[folder / key.rsplit("/", 1)[-1]] = reply.content
    except (requests.RequestException, ET.ParseError) as err:
        raise SaeInterpError(
            f"cannot fetch Neuronpedia's explanations of {neuronpedia_id} from {base} "
            f"({type(err).__name__}); download s3://neuronpedia-datasets/{prefix} and pass "
            "explanations_path=THAT_FOLDER"
        ) from err
    write_files(files)  # all batches or none: a half-fetched export is never read
    return folder
