"""Teacher extraction, sparse teacher storage and the fusion functions (DESIGN.md section 2.3).

    store = extract_teachers(model_dir, conversations, out_dir, top_k=10)     # resumable
    rec = store.get(qid)            # rec.ids [R, K] int32, rec.logprobs [R, K] float16, rec.ce
    ids, probs, weights = min_ce([Candidate(...), ...])    # or avg_ce: the fusion functions

Convention: row r of a record is the model's distribution FOR the r-th response token of the
conversation as its own tokenizer splits it (predicted from the tokens before it), so the logits
read are those at position resp_pos[r] − 1. `tokens` holds those response token ids.

Storage: shards `shard-NNNNN.safetensors` (no pickle) with the concatenated rows of a block of
examples (ids int32 [N, K], logprobs float16 [N, K], tokens int32 [N], offsets int64 [n + 1],
ce float32 [n]) and `index.json` listing each shard's examples and sha256. A shard is written
atomically and then recorded in the index, so an interrupted extraction resumes at the first
missing example; a shard whose checksum no longer matches is dropped and re-extracted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fusion.chat import encode_chat, load_tokenizer
from fusion.common import faults
from fusion.common.errors import FusevalError
from fusion.common.files import atomic_write_text

log = logging.getLogger(__name__)

INDEX = "index.json"


@dataclass
class TeacherRecord:
    """One example's sparse teacher: top-K per response token, the gold tokens and the mean CE."""

    ids: np.ndarray  # [R, K] int32 (−1: padding)
    logprobs: np.ndarray  # [R, K] float (−inf: padding)
    tokens: np.ndarray  # [R] int32, the gold response tokens
    ce: float  # mean −log p(gold) over the R response tokens
    turns: list[int] = field(default_factory=list)  # response tokens per assistant turn


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TeacherStore:
    """Sparse teacher records of one model on one data set, in checksummed shards."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / INDEX
        try:
            self.index = json.loads(path.read_text()) if path.exists() else {"shards": []}
        except json.JSONDecodeError:
            raise FusevalError(f"{path}: corrupt teacher index (not JSON); delete the directory to "
                               "re-extract") from None
        self._where: dict[str, tuple[int, int]] = {}
        self._loaded: dict[int, dict[str, np.ndarray]] = {}
        self._reindex()

    def _reindex(self) -> None:
        self._where = {q: (s, i) for s, sh in enumerate(self.index["shards"]) for i, q in enumerate(sh["qids"])}

    def __contains__(self, qid: str) -> bool:
        return qid in self._where

    def __len__(self) -> int:
        return len(self._where)

    def verify(self) -> list[str]:
        """Drop shards that are missing or whose checksum fails; return the qids that need re-extraction."""
        good, lost = [], []
        for sh in self.index["shards"]:
            path = self.root / sh["file"]
            if path.exists() and _sha256(path) == sh["sha256"]:
                good.append(sh)
            else:
                log.warning("%s: teacher shard missing or corrupt (checksum); its %d examples will be re-extracted",
                            path, len(sh["qids"]))
                lost += sh["qids"]
        if lost:
            self.index["shards"] = good
            self.index["truncated"] = sum(sh.get("truncated", 0) for sh in good)
            self._write_index()
            self._reindex()
            self._loaded.clear()
        return lost

    def _write_index(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / INDEX, json.dumps(self.index, indent=1) + "\n")

    def add_shard(self, qids: list[str], records: list[TeacherRecord], meta: dict) -> None:
        """Write one shard of records atomically, then record it in the index."""
        from safetensors.numpy import save_file

        n = len(self.index["shards"])
        while (self.root / f"shard-{n:05d}.safetensors").exists() and any(
                sh["file"] == f"shard-{n:05d}.safetensors" for sh in self.index["shards"]):
            n += 1
        name = f"shard-{n:05d}.safetensors"
        offsets = np.zeros(len(records) + 1, np.int64)
        offsets[1:] = np.cumsum([len(r.tokens) for r in records])
        k = meta["top_k"]
        tensors = {
            "ids": np.concatenate([r.ids for r in records]).astype(np.int32).reshape(-1, k),
            "logprobs": np.concatenate([r.logprobs for r in records]).astype(np.float16).reshape(-1, k),
            "tokens": np.concatenate([r.tokens for r in records]).astype(np.int32),
            "offsets": offsets,
            "ce": np.asarray([r.ce for r in records], np.float32),
            "turn_counts": np.asarray([len(r.turns) for r in records], np.int64),
            "turns": np.asarray([t for r in records for t in r.turns], np.int64),
        }
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.partial"
        save_file(tensors, str(tmp))
        tmp.replace(self.root / name)
        self.index.update({k_: v for k_, v in meta.items() if k_ != "truncated"})
        self.index["shards"].append({"file": name, "sha256": _sha256(self.root / name), "qids": list(qids),
                                     "truncated": int(meta.get("truncated", 0))})
        self.index["truncated"] = sum(sh.get("truncated", 0) for sh in self.index["shards"])
        self._write_index()
        self._reindex()
        faults.point("teachers.shard")

    def get(self, qid: str) -> TeacherRecord:
        from safetensors.numpy import load_file

        if qid not in self._where:
            raise FusevalError(f"{self.root}: no teacher record for example {qid!r}")
        s, i = self._where[qid]
        if s not in self._loaded:
            self._loaded[s] = load_file(str(self.root / self.index["shards"][s]["file"]))
        t = self._loaded[s]
        lo, hi = int(t["offsets"][i]), int(t["offsets"][i + 1])
        first = int(t["turn_counts"][:i].sum())
        turns = t["turns"][first:first + int(t["turn_counts"][i])].tolist()
        return TeacherRecord(t["ids"][lo:hi], t["logprobs"][lo:hi].astype(np.float32), t["tokens"][lo:hi],
                             float(t["ce"][i]), turns)


def record_key(conv) -> str:
    """A record's key: the example id and a hash of its messages, so edited data never meets stale teachers."""
    digest = hashlib.sha256(json.dumps(conv.messages, sort_keys=True).encode()).hexdigest()[:12]
    return f"{conv.qid}:{digest}"


def _record_from_logits(logits: torch.Tensor, ids: np.ndarray, per_turn: list[np.ndarray], k: int) -> TeacherRecord:
    """Top-k of the log-softmax at the positions predicting each response token, and the mean CE."""
    resp = np.concatenate(per_turn) if per_turn else np.zeros(0, np.int64)
    resp = resp[resp >= 1]
    logp = torch.log_softmax(logits[torch.from_numpy(resp - 1)].float(), dim=-1)  # [R, V]
    gold = torch.from_numpy(ids[resp])
    ce = float(-logp.gather(1, gold[:, None]).mean()) if len(resp) else float("nan")
    top = logp.topk(min(k, logp.shape[-1]), dim=-1)
    out_ids = np.full((len(resp), k), -1, np.int32)
    out_lp = np.full((len(resp), k), -np.inf, np.float32)
    out_ids[:, :top.indices.shape[1]] = top.indices.numpy()
    out_lp[:, :top.values.shape[1]] = top.values.numpy()
    turns = [int((t >= 1).sum()) for t in per_turn]
    return TeacherRecord(out_ids, out_lp, ids[resp].astype(np.int32), ce, turns)


@torch.no_grad()
def _extract_transformers(model_dir: Path, tok, encoded: list[tuple], k: int, batch_size: int, device: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True).to(device).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for i in range(0, len(encoded), batch_size):
        block = encoded[i:i + batch_size]
        width = max(len(e[0]) for e in block)
        x = torch.full((len(block), width), pad, dtype=torch.long)
        mask = torch.zeros_like(x)
        for b, (ids, _) in enumerate(block):
            x[b, :len(ids)] = torch.from_numpy(ids)
            mask[b, :len(ids)] = 1
        logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits.cpu()
        for b, (ids, per_turn) in enumerate(block):
            yield _record_from_logits(logits[b, :len(ids)], ids, per_turn, k)


def _extract_vllm(model_dir: Path, tok, encoded: list[tuple], k: int, **_):
    """vLLM's prompt_logprobs: top-k per prompt position (plus the prompt token itself, dropped here)."""
    from vllm import LLM, SamplingParams  # noqa: PLC0415 (optional dependency)
    from vllm.inputs import TokensPrompt

    llm = LLM(model=str(model_dir), max_logprobs=max(k, 20), enforce_eager=True, dtype="float32")
    params = SamplingParams(max_tokens=1, prompt_logprobs=k, temperature=0.0)
    try:
        outs = llm.generate([TokensPrompt(prompt_token_ids=e[0].tolist()) for e in encoded], params, use_tqdm=False)
    finally:  # stop the engine now: a fusion extracts one teacher after another in this process
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        del llm
    for (ids, per_turn), out in zip(encoded, outs):
        resp = np.concatenate(per_turn)
        resp = resp[resp >= 1]
        r_ids = np.full((len(resp), k), -1, np.int32)
        r_lp = np.full((len(resp), k), -np.inf, np.float32)
        gold_lp = []
        for r, pos in enumerate(resp):
            entries = out.prompt_logprobs[pos]  # dict token_id -> Logprob(logprob, rank): distribution for token pos
            gold_lp.append(entries[int(ids[pos])].logprob)
            ranked = sorted(((v.rank, t, v.logprob) for t, v in entries.items() if v.rank is not None and v.rank <= k))
            for j, (_, t, lp) in enumerate(ranked[:k]):
                r_ids[r, j], r_lp[r, j] = t, lp
        turns = [int((t >= 1).sum()) for t in per_turn]
        yield TeacherRecord(r_ids, r_lp, ids[resp].astype(np.int32), float(-np.mean(gold_lp)), turns)


def extract_teachers(model_dir: str | Path, conversations: Iterable, out_dir: str | Path, *, top_k: int = 10,
                     backend: str = "transformers", batch_size: int = 16, shard_examples: int = 256,
                     device: str = "cpu", max_len: int | None = None) -> TeacherStore:
    """Extract top-K teacher records of a model for conversations (objects with .qid and .messages).

    Records are keyed by `record_key(conversation)`. Resumes: examples already in a valid shard are
    skipped; corrupt shards are re-extracted.
    Conversations longer than max_len tokens (default: the model's context) are truncated with a
    warning and counted in the index (`truncated`).
    """
    model_dir = Path(model_dir)
    store = TeacherStore(out_dir)
    store.verify()
    tok = load_tokenizer(model_dir)
    limit = max_len or _context_length(model_dir)
    todo = [c for c in conversations if record_key(c) not in store]
    if not todo:
        return store
    extract = {"transformers": _extract_transformers, "vllm": _extract_vllm}.get(backend)
    if extract is None:
        raise FusevalError(f"unknown teacher backend {backend!r}; choose transformers or vllm")
    meta = {"model": str(model_dir), "top_k": top_k, "backend": backend}
    if store.index["shards"]:
        differs = [k for k, v in meta.items() if store.index.get(k) != v]
        if differs:
            raise FusevalError(f"{store.root}: holds teachers extracted with other settings "
                               f"({', '.join(f'{k}={store.index.get(k)!r}' for k in differs)}); use another directory")
    for s in range(0, len(todo), shard_examples):
        block = todo[s:s + shard_examples]
        meta["truncated"] = 0
        encoded = []
        for c in block:
            ids, _, per_turn = encode_chat(tok, c.messages)
            if len(ids) > limit:
                meta["truncated"] += 1
                log.warning("%s: example %s has %d tokens, more than the context (%d); truncated",
                            model_dir, c.qid, len(ids), limit)
                ids = ids[:limit]
                per_turn = [t[t < limit] for t in per_turn]
            encoded.append((ids, per_turn))
        records = list(extract(model_dir, tok, encoded, top_k, batch_size=batch_size, device=device))
        store.add_shard([record_key(c) for c in block], records, meta)
    return store


def _context_length(model_dir: Path) -> int:
    cfg = json.loads((model_dir / "config.json").read_text())
    return int(cfg.get("max_position_embeddings") or cfg.get("n_positions") or 2048)


# ------------------------------------------------------------------------------------------------
# Fusion functions: combine the candidate distributions of one example into one target.


def topk_probs(logprobs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities over the K stored entries: softmax(logprob / τ) renormalized over them (padding → 0)."""
    z = np.where(np.isfinite(logprobs), logprobs / temperature, -np.inf)
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(z - m)
    s = e.sum(-1, keepdims=True)
    return np.divide(e, s, out=np.zeros_like(e), where=s > 0)


@dataclass
class Candidate:
    """One model's distribution over the target's response tokens: ids/probs [R, K]."""

    ids: np.ndarray
    probs: np.ndarray
    ce: float


def min_ce(cands: list[Candidate]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distribution of the candidate with the lowest CE on this example; weights one-hot."""
    ces = np.array([c.ce for c in cands])
    best = int(np.nanargmin(np.where(np.isnan(ces), np.inf, ces)))
    w = np.zeros(len(cands))
    w[best] = 1.0
    return cands[best].ids, cands[best].probs, w


def avg_ce(cands: list[Candidate], k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixture of the candidates weighted by softmax(−CE); per token the top-K of the mixture, renormalized."""
    ces = np.array([c.ce for c in cands], dtype=np.float64)
    z = -np.where(np.isnan(ces), np.inf, ces)
    w = np.exp(z - z.max())
    w /= w.sum()
    k = k or cands[0].ids.shape[1]
    rows = cands[0].ids.shape[0]
    all_ids = np.concatenate([c.ids for c in cands], axis=1)  # [R, M·K]
    all_p = np.concatenate([c.probs * wi for c, wi in zip(cands, w)], axis=1)
    out_ids = np.full((rows, k), -1, np.int64)
    out_p = np.zeros((rows, k))
    for r in range(rows):
        valid = all_ids[r] >= 0
        uniq, inv = np.unique(all_ids[r][valid], return_inverse=True)
        mass = np.bincount(inv, weights=all_p[r][valid], minlength=len(uniq))
        top = np.argsort(-mass, kind="stable")[:k]
        total = mass[top].sum()
        out_ids[r, :len(top)] = uniq[top]
        out_p[r, :len(top)] = mass[top] / total if total > 0 else 0.0
    return out_ids, out_p, w


FUSION_FUNCTIONS = {"min_ce": min_ce, "avg_ce": avg_ce}
