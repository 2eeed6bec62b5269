"""In-process generation with transformers: the embedded default, batched, no server.

    with TransformersBackend("path/to/model") as b:
        b.generate([ChatRequest(messages, GenParams(temperature=0.7, seed=3)), ...])

Prompts are the model's own chat template (or an explicit template file) with the generation
prompt added. Requests are batched with left padding; greedy rows take the argmax and sampled rows
draw from their own seeded generator (`_RowSampler`), so an answer depends on its request only,
not on which other requests share its batch: the same seed gives the same answer on a rerun.
Generation stops at the template's end-of-turn token. No pickle weights, no remote code.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from fusion.chat import end_token_ids, load_tokenizer, prompt_ids
from fusion.common.errors import FusevalError
from harness.backends.base import (
    Backend,
    ChatRequest,
    ChatResult,
    GenParams,
    TokenLogprob,
    fit_to_context,
    template_hash,
)

log = logging.getLogger(__name__)


class TransformersOptions(BaseModel):
    """How to load and batch the model."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field("auto", description="auto (cuda when available), cpu or cuda[:N].")
    dtype: str = Field("auto", description="auto (float32 on CPU, the checkpoint's dtype on GPU), float32, bfloat16, "
                                           "float16.")
    batch_size: int = Field(16, ge=1, description="Requests generated together.")
    chat_template: Path | None = Field(None, description="A Jinja chat template file to use instead of the model's.")


def load_chat_tokenizer(model: str | Path, chat_template: str | Path | None = None):
    """The model's tokenizer with a chat template: its own, or the one in `chat_template` (a file)."""
    tok = load_tokenizer(model)
    if chat_template is not None:
        try:
            tok.chat_template = Path(chat_template).read_text(encoding="utf-8")
        except OSError as e:
            raise FusevalError(f"{chat_template}: cannot read chat template ({e.strerror})") from None
    if not getattr(tok, "chat_template", None):
        raise FusevalError(f"{model}: the tokenizer has no chat template; add one to tokenizer_config.json "
                           "or pass --chat-template FILE (fuseval never guesses a template from a model's name)")
    return tok


class _RowSampler:
    """Logits processor that samples each row with its own temperature, top-p and generator.

    It leaves greedy rows alone and turns a sampled row into a one-hot choice, so generate()'s
    greedy step then picks exactly the sampled token.
    """

    def __init__(self, params: list[GenParams], device: torch.device):
        self.rows = []
        for p in params:
            g = None
            if p.temperature > 0:
                g = torch.Generator(device=device)
                g.manual_seed(p.seed if p.seed is not None else torch.seed())
            self.rows.append((p.temperature, p.top_p, g))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for i, (temp, top_p, g) in enumerate(self.rows):
            if g is None:
                continue
            probs = torch.softmax(scores[i].float() / temp, dim=-1)  # [V]
            if top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = sorted_p.cumsum(0) - sorted_p < top_p  # the smallest prefix holding top_p mass
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            tok = torch.multinomial(probs, 1, generator=g)
            scores[i] = torch.where(torch.arange(scores.shape[1], device=scores.device) == tok, 0.0, -float("inf"))
        return scores


class TransformersBackend(Backend):
    """A Hugging Face causal LM generating in this process."""

    kind = "transformers"

    def __init__(self, model: str | Path, options: TransformersOptions | None = None, model_id: str | None = None):
        self.path = Path(model)
        self.options = options or TransformersOptions()
        self.model_id = model_id or self.path.name
        self.model = self.tok = None

    def start(self) -> None:
        if self.model is not None:
            return
        if not self.path.is_dir():
            raise FusevalError(f"{self.path}: not a model directory")
        o = self.options
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if o.device == "auto" else o.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise FusevalError("--device cuda asked for, but torch sees no GPU")
        dtype = o.dtype if o.dtype != "auto" else ("auto" if device.type == "cuda" else "float32")
        self.tok = load_chat_tokenizer(self.path, o.chat_template)
        self.chat_template_hash = template_hash(self.tok.chat_template)
        from transformers import AutoModelForCausalLM  # noqa: PLC0415  (after the tokenizer: its errors come fast)

        try:
            self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype, use_safetensors=True,
                                                              trust_remote_code=False).to(device).eval()
        except (OSError, ValueError) as e:
            raise FusevalError(f"{self.path}: cannot load the model ({str(e).splitlines()[0]})") from None
        self.stops = end_token_ids(self.tok)
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.stops[0]
        cfg = self.model.config
        self.context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 1 << 30

    def stop(self) -> None:
        self.model = self.tok = None

    def generate(self, requests: list[ChatRequest], on_done: Callable[[int], None] | None = None) -> list[ChatResult]:
        self.start()
        results: list[ChatResult | None] = [None] * len(requests)
        prompts: dict[int, list[int]] = {}
        params: dict[int, GenParams] = {}
        for i, r in enumerate(requests):
            try:
                prompts[i] = prompt_ids(self.tok, r.messages)
            except Exception as e:  # a template that rejects these messages fails this request only
                results[i] = ChatResult(text=None, error=f"chat template failed: {e}")
                continue
            fitted = fit_to_context(len(prompts[i]), r.params, self.context)
            if isinstance(fitted, ChatResult):
                results[i] = fitted
            else:
                params[i] = fitted
        if on_done and len(params) < len(requests):
            on_done(len(requests) - len(params))
        for idx in self._batches(sorted(params, key=lambda i: len(prompts[i])), prompts, params):
            for i, r in zip(idx, self._batch([prompts[i] for i in idx], [params[i] for i in idx])):
                results[i] = r
            if on_done:
                on_done(len(idx))
        return results

    def _batches(self, order: list[int], prompts: dict, params: dict) -> list[list[int]]:
        """Consecutive requests (by prompt length) whose padded prompts plus new tokens fit the context.

        Then every row generates exactly what its own request allows, whatever shares its batch.
        """
        batches, cur = [], []
        for i in order:
            cand = cur + [i]
            need = max(len(prompts[j]) for j in cand) + max(params[j].max_new_tokens for j in cand)
            if cur and (len(cand) > self.options.batch_size or need > self.context):
                batches.append(cur)
                cand = [i]
            cur = cand
        return batches + [cur] if cur else batches

    @torch.no_grad()
    def _batch(self, prompts: list[list[int]], params: list[GenParams]) -> list[ChatResult]:
        t0 = time.perf_counter()
        device = next(self.model.parameters()).device
        width = max(map(len, prompts))
        room = [p.max_new_tokens for p in params]  # already fitted to the context (see `_batches`)
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, p in enumerate(prompts):  # left padding: every row continues at the same column
            ids[b, width - len(p):] = torch.tensor(p)
            mask[b, width - len(p):] = 1
        gc = copy.deepcopy(self.model.generation_config)
        gc.update(do_sample=False, temperature=None, top_p=None, top_k=None, num_beams=1, max_new_tokens=max(room),
                  eos_token_id=self.stops, pad_token_id=self.pad, return_dict_in_generate=True,
                  output_logits=any(p.logprobs is not None for p in params))
        out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gc,
                                  logits_processor=[_RowSampler(params, device)])
        latency = time.perf_counter() - t0
        results = []
        for b, (row, p) in enumerate(zip(out.sequences[:, width:].tolist(), params)):
            row = row[:room[b]]
            end = next((j for j, t in enumerate(row) if t in self.stops), None)
            gen = row[:end] if end is not None else row
            text = self.tok.decode(gen, skip_special_tokens=True)
            finish = "stop" if end is not None else "length"
            if finish == "length":  # cut inside a UTF-8 character: drop its partial bytes, as vLLM's detokenizer does
                text = text.rstrip("\ufffd")
            for s in p.stop:
                if s in text:
                    text, finish = text[:text.index(s)], "stop"
            lps = None
            if p.logprobs is not None:
                lps = self._logprobs([step[b] for step in out.logits[:len(gen)]], gen, p.logprobs)
            results.append(ChatResult(text=text, finish_reason=finish, prompt_tokens=len(prompts[b]),
                                      completion_tokens=len(gen) + (end is not None), latency_s=latency, logprobs=lps))
        return results

    def _logprobs(self, logits: list[torch.Tensor], tokens: list[int], k: int) -> list[TokenLogprob]:
        out = []
        for row, t in zip(logits, tokens):
            lp = torch.log_softmax(row.float(), dim=-1)
            top = lp.topk(k) if k else None
            alts = {self.tok.decode([int(i)]): float(v) for v, i in zip(*top)} if top is not None else {}
            out.append(TokenLogprob(self.tok.decode([t]), float(lp[t]), alts))
        return out
