"""A tiny GPT-2 for Hugging Face Trainer tests: built from a config (no download), with a
512-token BPE trained here on the builtin prose and code, and packed rows of both."""

from __future__ import annotations


def tiny_data(seq_len: int = 64):
    """(vocab size, eos id, {"prose", "code"} train sets, {"prose", "code"} eval sets)."""
    import torch

    from trainers.data.packing import pack
    from trainers.data.sources import load_source
    from trainers.data.tokenizer import encode, eos_id, train_tokenizer
    from trainers.plan import SourceSpec

    def docs(source: str, split: str, n: int) -> list[str]:
        return load_source(SourceSpec(source=f"builtin:{source}"), split).docs[:n]

    tok = train_tokenizer(docs("prose", "train", 40) + docs("code", "train", 8), 512)
    eos = eos_id(tok)

    class Rows(torch.utils.data.Dataset):
        def __init__(self, source: str, split: str, n_docs: int, n_rows: int):
            rows = pack(encode(tok, docs(source, split, n_docs)), seq_len, eos)[:n_rows]
            self.rows = torch.as_tensor(rows)

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": self.rows[i], "labels": self.rows[i]}

    train = {"prose": Rows("prose", "train", 20, 200), "code": Rows("code", "train", 4, 200)}
    evals = {"prose": Rows("prose", "heldout", 3, 8), "code": Rows("code", "heldout", 2, 8)}
    return tok.get_vocab_size(), eos, train, evals


def tiny_gpt2(vocab: int, eos: int, seq_len: int = 64):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=vocab, n_positions=seq_len,
                     bos_token_id=eos, eos_token_id=eos)  # fmt: skip
    return GPT2LMHeadModel(cfg)


def tiny_args(out, steps: int = 30, **over):
    """CPU TrainingArguments: ``steps`` steps, logging every 3, evaluation every 10."""
    from transformers import TrainingArguments

    kw = dict(
        output_dir=str(out), use_cpu=True, report_to=[], disable_tqdm=True, seed=0,
        max_steps=steps, per_device_train_batch_size=4, per_device_eval_batch_size=8,
        learning_rate=1e-3, logging_steps=3, eval_strategy="steps", eval_steps=10,
        save_strategy="no", include_num_input_tokens_seen=True,
    )  # fmt: skip
    return TrainingArguments(**{**kw, **over})


def readme_objects(out: str = "hf-out"):
    """What the README's Hugging Face example calls "your own": model, args, train and eval
    sets (one torch thread, for a quick run)."""
    import torch

    torch.set_num_threads(1)
    vocab, eos, train, evals = tiny_data()
    return (tiny_gpt2(vocab, eos), tiny_args(out, 20), train["prose"], train["code"],
            evals["prose"], evals["code"])  # fmt: skip
