"""GRPO-style RL with verifiable rewards (Shao et al., 2024) and the exact_match eval.

Batches are prompt rows (trainers/data/prompts.py): (prompt_ids (B, L) left-padded,
prompt_len (B,), answer_ids (B, L)). For each prompt the policy samples ``group_size``
completions of up to ``max_new_tokens`` tokens (no gradient; a row stops at end-of-text).
Each completion gets a reward (trainers/methods/rewards.py); its advantage is its reward
relative to its group: (r - mean) / (std + eps). The loss of a completion is the mean over
its tokens up to and including its end-of-text of

    -(min(ratio * A, clip(ratio, 1 - clip_eps, 1 + clip_eps) * A) - kl_coef * k3)

averaged over the batch, with ratio = pi / pi_old per token (one optimizer step per batch,
so pi_old is the policy itself, detached: ratio is 1 and the clip never binds; it is there,
and tested, for the general case) and k3 = exp(ref - pi) - (ref - pi) - 1, the
unbiased non-negative KL estimator against the stage's frozen starting weights. Log-probs are
those of the tempered distribution that was sampled (logits / temperature).

Sampling draws from a torch.Generator seeded from torch's global CPU RNG once per batch, so
it is a pure function of the RNG state the engine checkpoints: a resumed stage samples the
same completions as an uninterrupted one, on any device.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from trainers.data.prompts import answer_texts
from trainers.data.tokenizer import EOS, eos_id
from trainers.methods import Batch, Extras, MethodContext
from trainers.methods.rewards import exact_match, reward_fn
from trainers.plan import EvalSetSpec, RLSpec

ADV_EPS = 1e-4  # advantages of a group whose rewards are all equal are 0, not 0 / 0


def prompt_mask(prompt_ids: torch.Tensor, prompt_len: torch.Tensor) -> torch.Tensor:
    """(R, L) 1 on the real (right-aligned) prompt tokens, 0 on the left padding."""
    cols = torch.arange(prompt_ids.shape[1], device=prompt_ids.device)
    return (cols[None, :] >= prompt_ids.shape[1] - prompt_len[:, None]).long()


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted from each row's first real token (padding gets 0)."""
    return (mask.cumsum(1) - 1).clamp(min=0)


@contextmanager
def _eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _pick(logits: torch.Tensor, temperature: float | None, gen: torch.Generator | None):
    """(R,) next tokens: argmax when temperature is None, else a sample at that temperature."""
    if temperature is None:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_len: torch.Tensor,
    max_new_tokens: int,
    eos: int,
    temperature: float | None = None,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """(R, max_new_tokens) completions of left-padded prompts, with the KV cache: greedy
    (temperature None) or sampled. A row that has emitted end-of-text continues with it."""
    with _eval_mode(model):
        mask = prompt_mask(prompt_ids, prompt_len)
        pos = _positions(mask)
        out = model(input_ids=prompt_ids, attention_mask=mask, position_ids=pos, use_cache=True)
        r = len(prompt_ids)
        done = torch.zeros(r, dtype=torch.bool, device=prompt_ids.device)
        tokens = torch.full((r, max_new_tokens), eos, dtype=torch.long, device=prompt_ids.device)
        next_pos = pos[:, -1:] + 1
        for t in range(max_new_tokens):
            tok = torch.where(done, eos, _pick(out.logits[:, -1], temperature, gen))
            tokens[:, t] = tok
            done |= tok == eos
            if t == max_new_tokens - 1 or bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = model(
                input_ids=tok[:, None],
                attention_mask=mask,
                position_ids=next_pos,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            next_pos = next_pos + 1
    return tokens


def completion_mask(tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """(R, N) float: 1 on each completion's tokens up to and including its first EOS."""
    is_eos = (tokens == eos).long()
    return ((is_eos.cumsum(1) - is_eos) == 0).float()


def completion_texts(tok: Tokenizer, tokens: torch.Tensor, eos: int) -> list[str]:
    """Decoded completions, an emitted end-of-text written as EOS and nothing after it."""
    rows = tokens.tolist()
    cut = [row.index(eos) if eos in row else len(row) for row in rows]
    texts = tok.decode_batch([row[:k] for row, k in zip(rows, cut, strict=True)])
    return [t + (EOS if k < len(row) else "") for t, k, row in zip(texts, cut, rows, strict=True)]


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(B, G) rewards -> (B, G) advantages (r - group mean) / (group std + eps)."""
    mean = rewards.mean(1, keepdim=True)
    return (rewards - mean) / (rewards.std(1, keepdim=True) + ADV_EPS)


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip_eps: float
) -> torch.Tensor:
    """PPO's per-token objective min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)."""
    ratio = torch.exp(logp - old_logp)
    return torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate exp(ref - pi) - (ref - pi) - 1 (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def token_logps(
    model: nn.Module, seq: torch.Tensor, mask: torch.Tensor, n_new: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp (R, n_new) of the last n_new tokens of seq, log-softmax (R, n_new, V)) under
    the model's logits / temperature; mask is seq's attention mask."""
    logits = model(input_ids=seq, attention_mask=mask, position_ids=_positions(mask)).logits
    logp_all = F.log_softmax(logits[:, -n_new - 1 : -1].float() / temperature, -1)
    return logp_all.gather(-1, seq[:, -n_new:, None]).squeeze(-1), logp_all


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum()


class GRPO:
    """An rl stage's loss; extras: reward (mean), reward_std (mean within-group std), kl
    (mean per-token k3 to the reference), response_len (mean tokens per completion, its
    end-of-text included) and entropy (mean per-token entropy of the sampled distribution)."""

    def __init__(self, ctx: MethodContext):
        assert ctx.tok is not None
        self.model, self.tok, self.device = ctx.model, ctx.tok, ctx.device
        self.spec = ctx.stage.rl or RLSpec()
        self.reward = reward_fn(self.spec.reward)
        self.reference = ctx.reference()
        self.eos = eos_id(ctx.tok)

    def _sample(self, prompt_ids: torch.Tensor, prompt_len: torch.Tensor) -> torch.Tensor:
        """(B * G, N) completions, group_size per prompt (rows of a group are adjacent)."""
        seed = int(torch.randint(0, 2**62, (1,)))  # from the checkpointed global CPU RNG
        gen = torch.Generator(device=self.device).manual_seed(seed)
        g = self.spec.group_size
        ids, lens = prompt_ids.repeat_interleave(g, 0), prompt_len.repeat_interleave(g, 0)
        s = self.spec
        return generate(self.model, ids, lens, s.max_new_tokens, self.eos, s.temperature, gen)

    def _rewards(self, tokens: torch.Tensor, answer_ids: torch.Tensor) -> torch.Tensor:
        """(B, G) rewards of the completions."""
        answers = answer_texts(self.tok, answer_ids.cpu().numpy())
        texts = completion_texts(self.tok, tokens, self.eos)
        g = self.spec.group_size
        values = [self.reward(t, answers[k // g]) for k, t in enumerate(texts)]
        return torch.tensor(values, device=self.device).view(-1, g)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, Extras]:
        prompt_ids, prompt_len, answer_ids = batch
        g, s = self.spec.group_size, self.spec
        tokens = self._sample(prompt_ids, prompt_len)
        rewards = self._rewards(tokens, answer_ids)
        adv = group_advantages(rewards).view(-1, 1)  # (B * G, 1)
        seq = torch.cat([prompt_ids.repeat_interleave(g, 0), tokens], 1)
        mask = prompt_mask(prompt_ids, prompt_len).repeat_interleave(g, 0)
        mask = torch.cat([mask, torch.ones_like(tokens)], 1)
        n = tokens.shape[1]
        logp, logp_all = token_logps(self.model, seq, mask, n, s.temperature)
        with torch.no_grad():
            ref_logp, _ = token_logps(self.reference, seq, mask, n, s.temperature)
        kl = k3_kl(logp, ref_logp)
        per_token = -(clipped_surrogate(logp, logp.detach(), adv, s.clip_eps) - s.kl_coef * kl)
        valid = completion_mask(tokens, self.eos)
        loss = ((per_token * valid).sum(1) / valid.sum(1)).mean()
        la = logp_all.detach()
        entropy = -(la.exp() * la).sum(-1)
        extras = {
            "reward": rewards.mean(),
            "reward_std": rewards.std(1).mean(),
            "kl": _masked_mean(kl.detach(), valid),
            "response_len": valid.sum(1).mean(),
            "entropy": _masked_mean(entropy, valid),
        }
        return loss, extras


@torch.no_grad()
def evaluate_exact_match(
    model: nn.Module, batches: list[Batch], es: EvalSetSpec, tok: Tokenizer | None
) -> dict[str, float]:
    """acc = fraction of prompts whose greedy completion of es.max_new_tokens tokens has the
    answer as its final answer (the exact_match reward)."""
    assert tok is not None
    eos = eos_id(tok)
    correct, count = 0, 0
    for prompt_ids, prompt_len, answer_ids in batches:
        tokens = generate(model, prompt_ids, prompt_len, es.max_new_tokens, eos)
        texts = completion_texts(tok, tokens, eos)
        answers = answer_texts(tok, answer_ids.cpu().numpy())
        correct += sum(exact_match(t, a) == 1.0 for t, a in zip(texts, answers, strict=True))
        count += len(texts)
    return {"acc": correct / max(count, 1)}
