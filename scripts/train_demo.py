"""Train the embedded demo model: a small DiffusionGemma that is dg-chat's own guide, CPU only.

    python scripts/train_demo.py [--seed 0] [--steps 4400] [--minutes 60] [--threads 2] [--out models/demo.gguf]

Data: the question -> answer topics of models/demo-guide/*.toml (scripts/demo_guide.py), written
from this repository's README, docs and --help texts: how to use dg-chat and what block-diffusion
models are, 45-110 words per answer (66-150 tokens: two to four canvases); every
other question gets the "I am the small demo model" answer. Every hand-written question is
multiplied by seeded surface paraphrases; the quality check asks 40 hand-written paraphrases of
trained questions that are never trained on (models/demo-guide/eval.toml). A quarter
of the examples carry an earlier exchange of the chat in front of the question, so follow-up
questions in a chat are answered too.

Model: the DiffusionGemma architecture of transformers (`DiffusionGemmaForBlockDiffusion`) at a
small size, with its own byte-level BPE vocabulary and chat template, and a 48-token canvas.
Objective as the real model's (diffusiongemma-spec.md §1.1): the encoder reads prompt + answer
causally with a next-token loss; for every canvas of the answer, the decoder sees the KV cache of
the prompt and the answer's earlier canvases, and denoises that canvas, corrupted with uniform
random tokens at a rate t ~ U(0.001, 1); two-pass self-conditioning with p = 0.5 (the second pass
is fed the first pass's detached logits).

Deterministic for a seed, a step count and a thread count. The default 4,400 steps take about 51
minutes with 2 threads on the 2-core development machine when nothing else runs (0.7 s per step);
a run still going after `--minutes` stops early and says so. Outputs, next to --out: the GGUF, a
loss log (-train-log.csv), the loss curve (-loss.png) and the answers' word list (-words.txt.gz,
the dictionary of the quality check). Finally the quality figures of the GGUF, measured with
dg-chat's own engine, are printed (`evaluate`, also run by tests/test_demo_model.py and
`scripts/bench.py demo`).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import demo_guide  # noqa: E402
from dg_chat.config import SamplerSettings, Settings  # noqa: E402
from dg_chat.engine.backends.torch_dg.mkl_vml import resolve_vml_dispatch  # noqa: E402
from dg_chat.text.chat import JinjaFormat, Message, end_token_ids  # noqa: E402
from dg_chat.text.gguf_vocab import bpe_metadata  # noqa: E402
from dg_chat.text.template import ChatTemplate  # noqa: E402
from dg_chat.text.tokenizer import Tokenizer  # noqa: E402

MODEL_NAME = "dg-chat guide (demo, DiffusionGemma architecture)"

VOCAB_SIZE = 4096
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] | trim + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
# Short canvases, each mostly fixed by the text before it (a small model learns them fast); 4 (the
# default max_canvases) hold the longest answer.
CANVAS = 48
SLIDING_WINDOW = 512  # more than an earlier exchange, a question and its answer: all seen whole
MULTI_TURN_P = 0.25  # examples with an earlier exchange before the question

BATCH = 12  # examples; each brings every canvas of its answer
PEAK_LR = 3e-3
WARMUP = 60
SELF_CONDITIONING_P = 0.5
T_MIN = 0.001
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def train_tokenizer(texts: Sequence[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE (GPT-2 pre-tokenizer), special tokens first: <pad> 0, <eos> 1, <bos> 2."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return hf


def tokenizer_metadata(hf) -> dict:
    return bpe_metadata(hf, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", chat_template=CHAT_TEMPLATE)


@dataclass(frozen=True)
class Example:
    prompt: list[int]
    """The chat-formatted conversation up to the generation prompt, as dg-chat renders it."""
    answer: list[int]
    """The answer's tokens and the end-of-turn token (one or more canvases)."""


def build_examples(pairs: Sequence[tuple[str, str]], tokenizer: Tokenizer, chat: JinjaFormat, end_id: int,
                   rng: random.Random) -> list[Example]:
    """(question, answer) pairs as chat examples; MULTI_TURN_P of them follow another exchange."""
    examples = []
    for question, answer in pairs:
        history: list[Message] = []
        if rng.random() < MULTI_TURN_P:
            earlier_question, earlier_answer = rng.choice(pairs)
            history = [Message("user", earlier_question), Message("assistant", earlier_answer)]
        prompt = chat.render([*history, Message("user", question)], thinking=False)
        examples.append(Example(prompt, tokenizer.encode(answer) + [end_id]))
    return examples


def canvases(example: Example) -> int:
    return math.ceil(len(example.answer) / CANVAS)


def batches(examples: list[Example], rng: random.Random) -> Iterator[list[Example]]:
    """Endless, seeded: shuffle, group examples of similar length (less padding), shuffle batches."""
    while True:
        order = examples[:]
        rng.shuffle(order)
        chunk = BATCH * 50
        epoch = []
        for start in range(0, len(order), chunk):
            group = sorted(order[start:start + chunk], key=lambda e: len(e.prompt) + len(e.answer))
            epoch += [group[i:i + BATCH] for i in range(0, len(group) - BATCH + 1, BATCH)]
        rng.shuffle(epoch)
        yield from epoch


# ---------------------------------------------------------------- model and objective

def make_model(vocab_size: int):
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, DiffusionGemmaTextConfig
    from transformers.models.gemma4 import Gemma4VisionConfig

    text = DiffusionGemmaTextConfig(
        vocab_size=vocab_size, hidden_size=192, intermediate_size=384, num_hidden_layers=4,
        layer_types=["sliding_attention"] * 3 + ["full_attention"], sliding_window=SLIDING_WINDOW,
        num_attention_heads=4, num_key_value_heads=2, head_dim=48,
        global_head_dim=96, num_global_key_value_heads=1,
        num_experts=8, top_k_experts=2, moe_intermediate_size=96, max_position_embeddings=4096,
        pad_token_id=0, eos_token_id=1, bos_token_id=2)
    # The vision tower is required by the config class; the converter drops it.
    vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=16, position_embedding_size=64)
    config = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=CANVAS)
    return DiffusionGemmaForBlockDiffusion(config)


def collate(batch: list[Example]) -> dict[str, torch.Tensor]:
    """Encoder input = prompt + answer, right-padded. Every canvas of every answer is one decoder
    row: it sees the prompt and the answer's earlier canvases (`context` positions of its
    example's cache); its target is that canvas, filled after the answer's end with end tokens."""
    length = max(len(e.prompt) + len(e.answer) for e in batch)
    sequence = torch.zeros(len(batch), length, dtype=torch.long)
    real = torch.zeros(len(batch), length, dtype=torch.bool)
    rows, context, targets = [], [], []
    for i, e in enumerate(batch):
        sequence[i, :len(e.prompt) + len(e.answer)] = torch.tensor(e.prompt + e.answer)
        real[i, :len(e.prompt) + len(e.answer)] = True
        for block in range(canvases(e)):
            # the end token fills the canvas after the answer (as LLaDA pads with EOS): the model
            # learns "the answer is over" at every later position, and dg-chat cuts at the first one
            target = e.answer[CANVAS * block:CANVAS * (block + 1)]
            rows.append(i)
            context.append(len(e.prompt) + CANVAS * block)
            targets.append(target + e.answer[-1:] * (CANVAS - len(target)))
    return {"sequence": sequence, "real": real, "rows": torch.tensor(rows), "context": torch.tensor(context),
            "canvas": torch.tensor(targets)}


def softcapped_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    cap = model.config.text_config.final_logit_softcapping
    return torch.tanh(model.lm_head(hidden).float() / cap) * cap


def losses(model, batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(diffusion loss, encoder next-token loss) of one batch."""
    from transformers.cache_utils import DynamicCache

    sequence, real, rows, context, clean = (batch[k] for k in ("sequence", "real", "rows", "context", "canvas"))
    length = sequence.shape[1]
    vocab = model.config.text_config.vocab_size

    # Encoder: causal over prompt + answer; its KV cache is what the decoder reads.
    cache = DynamicCache(config=model.config.text_config)
    encoded = model.model.encoder(input_ids=sequence, past_key_values=cache, use_cache=True)
    ar_logits = softcapped_logits(model, encoded.last_hidden_state[:, :-1])
    targets = real[:, 1:]
    ar_loss = F.cross_entropy(ar_logits[targets], sequence[:, 1:][targets])
    cache.batch_select_indices(rows)  # one cache row per canvas (gradients flow back to the encoder)
    size = len(rows)

    # Uniform-state corruption: each canvas position is replaced by a uniform random token with
    # probability t. The answer and the end tokens after it draw their own t: at inference the
    # sampler settles the easy end tokens first, and a model that had learnt "clean end tokens,
    # so a clean answer" would take the noise still in the answer for text and copy it.
    t_answer, t_filler = T_MIN + (1 - T_MIN) * torch.rand(2, size, 1, generator=generator)
    answer_tokens = (real.sum(1)[rows] - context).clamp(max=CANVAS)
    in_answer = torch.arange(CANVAS) < answer_tokens[:, None]
    t = torch.where(in_answer, t_answer, t_filler)
    corrupt = torch.rand(size, CANVAS, generator=generator) < t
    noisy = torch.where(corrupt, torch.randint(0, vocab, (size, CANVAS), generator=generator), clean)
    use_self_conditioning = torch.rand(size, generator=generator) < SELF_CONDITIONING_P

    # A canvas sees the prompt and the canvases before it (not itself nor later ones, which the
    # encoder also read), at the positions after them.
    sees = torch.cat([torch.arange(length) < context[:, None], torch.ones(size, CANVAS, dtype=torch.bool)], 1)
    decoder = {"past_key_values": cache, "decoder_input_ids": noisy, "decoder_attention_mask": sees.long(),
               "decoder_position_ids": context[:, None] + torch.arange(CANVAS)}
    with torch.no_grad():
        first = model(**decoder).logits
    second = model(**decoder, self_conditioning_logits=first, self_conditioning_mask=use_self_conditioning).logits
    # Summed over the whole canvas, averaged per answer token: the end tokens after the answer are
    # learnt too, without diluting the answer's weight against the next-token loss.
    return F.cross_entropy(second.reshape(-1, vocab), clean.reshape(-1), reduction="sum") / answer_tokens.sum(), ar_loss


def learning_rate(step: int, steps: int) -> float:
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return PEAK_LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, examples: list[Example], *, steps: int, seed: int, budget_s: float, log_path: Path) -> int:
    """The full objective for `steps` (or until `budget_s` is spent). Returns the number of steps done."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    feed = batches(examples, rng)
    started = time.perf_counter()
    done = 0
    with open(log_path, "w", newline="") as log_file, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn()) as progress:
        log = csv.writer(log_file)
        log.writerow(["step", "seconds", "lr", "diffusion_loss", "ar_loss"])
        task = progress.add_task("training", total=steps)
        for step in range(steps):
            if time.perf_counter() - started > budget_s:
                progress.console.print(f"[yellow]time budget spent: stopped after {step} of {steps} steps[/yellow]")
                break
            lr = learning_rate(step, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            diffusion_loss, ar_loss = losses(model, collate(next(feed)), generator)
            loss = diffusion_loss + 1.0 * ar_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            done = step + 1
            log.writerow([done, f"{time.perf_counter() - started:.1f}", f"{lr:.6f}", f"{diffusion_loss.item():.4f}",
                          f"{ar_loss.item():.4f}"])
            log_file.flush()
            progress.update(task, advance=1,
                            description=f"diffusion {diffusion_loss.item():.3f}  next-token {ar_loss.item():.3f}")
    model.eval()
    return done


# ---------------------------------------------------------------- outputs

def plot_losses(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path) as f:
        rows = list(csv.DictReader(f))

    def smoothed(key: str, width: int = 25) -> tuple[list[int], list[float]]:
        points = [(int(r["step"]), float(r[key])) for r in rows if r[key]]
        means = [sum(v for _, v in points[max(0, i - width + 1):i + 1]) / min(width, i + 1) for i in range(len(points))]
        return [step for step, _ in points], means

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(*smoothed("ar_loss"), label="encoder next-token loss")
    ax.plot(*smoothed("diffusion_loss"), label="diffusion (denoising) loss, per answer token")
    ax.set_xlabel("step")
    ax.set_ylabel(f"cross-entropy (nats), mean of {25} steps")
    ax.set_title("dg-chat demo model: training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, metadata={"Software": None})
    plt.close(fig)


def write_gguf(model, tokenizer_meta: dict, out: Path) -> None:
    """save_pretrained + scripts/hf_to_gguf.py, with our tokenizer's metadata."""
    import importlib.util

    from gguf import GGMLQuantizationType

    spec = importlib.util.spec_from_file_location("hf_to_gguf", ROOT / "scripts" / "hf_to_gguf.py")
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        config_file = Path(tmp) / "config.json"
        config = json.loads(config_file.read_text())
        config["_name_or_path"] = MODEL_NAME  # the converter's source of general.name
        config_file.write_text(json.dumps(config))
        converter.convert(Path(tmp), out, None, GGMLQuantizationType.F32, metadata=tokenizer_meta)


def words(text: str) -> list[str]:
    """Lower-case words: runs of letters, with inner apostrophes ("don't"); hyphens, digits and
    punctuation split them ("dg-chat" -> "dg", "chat")."""
    return WORD.findall(text.lower())


def write_word_list(texts: Sequence[str], path: Path) -> None:
    vocabulary = sorted({w for text in texts for w in words(text)})
    path.write_bytes(gzip.compress("\n".join(vocabulary).encode(), mtime=0))


def read_word_list(path: Path) -> frozenset[str]:
    return frozenset(gzip.decompress(path.read_bytes()).decode().split("\n"))


# ---------------------------------------------------------------- quality, with dg-chat's engine

EVAL_SEEDS = (1, 2, 3)
GOOD_F1 = 0.7  # an answer is "the intended answer" at this word-level F1 or above


def f1(generated: str, intended: str) -> float:
    """Word-level F1 of two texts (bags of `words`, as SQuAD scores answers)."""
    ours, theirs = Counter(words(generated)), Counter(words(intended))
    common = sum((ours & theirs).values())
    if not common:
        return 0.0
    precision, recall = common / sum(ours.values()), common / sum(theirs.values())
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Answer:
    prompt: str
    intended: str
    text: str
    steps: list[int]
    """Denoising steps of each block (canvas)."""
    tokens: int
    seconds: float

    @property
    def f1(self) -> float:
        return f1(self.text, self.intended)


@dataclass(frozen=True)
class Quality:
    in_domain: list[Answer]
    """The held-out paraphrases, once per seed."""
    outside: list[Answer]
    """The held-out out-of-domain prompts, once per seed."""
    known_words: frozenset[str]
    max_steps: int

    @staticmethod
    def share(answers: list[Answer], test) -> float:
        return sum(map(test, answers)) / max(1, len(answers))

    @property
    def generated_words(self) -> list[str]:
        return [w for a in self.in_domain + self.outside for w in words(a.text)]

    def figures(self) -> dict:
        every = self.in_domain + self.outside
        blocks = [s for a in every for s in a.steps]
        generated = self.generated_words
        return {
            "in_domain_intended": self.share(self.in_domain, lambda a: a.f1 >= GOOD_F1),
            "in_domain_mean_f1": sum(a.f1 for a in self.in_domain) / max(1, len(self.in_domain)),
            "in_domain_empty": sum(not a.text.strip() for a in self.in_domain),
            "in_domain_two_canvases_or_more": self.share(self.in_domain, lambda a: len(a.steps) >= 2),
            "outside_demo_answer": self.share(self.outside, lambda a: a.f1 >= GOOD_F1),
            "outside_empty": sum(not a.text.strip() for a in self.outside),
            "dictionary_words": sum(w in self.known_words for w in generated) / max(1, len(generated)),
            "words": len(generated),
            "answers": len(every),
            "mean_steps_per_canvas": sum(blocks) / max(1, len(blocks)),
            "canvases_stopped_early": sum(s < self.max_steps for s in blocks) / max(1, len(blocks)),
            "tokens_per_second": sum(a.tokens for a in every) / max(1e-9, sum(a.seconds for a in every)),
        }

    def summary(self) -> str:
        f = self.figures()
        return (f"in-domain: {f['in_domain_intended']:.0%} intended (mean F1 {f['in_domain_mean_f1']:.2f}), "
                f"{f['in_domain_empty']} empty, {f['in_domain_two_canvases_or_more']:.0%} in 2+ canvases; "
                f"outside: {f['outside_demo_answer']:.0%} demo answer, {f['outside_empty']} empty; "
                f"{f['dictionary_words']:.1%} of {f['words']} words in the dictionary; "
                f"{f['mean_steps_per_canvas']:.1f} steps per canvas; {f['tokens_per_second']:.0f} tok/s")


def answer(engine, prompt: str, intended: str, seed: int) -> Answer:
    """One user turn with dg-chat's default sampler and `seed`."""
    from dg_chat.engine.events import TurnFailed, TurnFinished

    for event in engine.turn([Message("user", prompt)], SamplerSettings(seed=seed)):
        if isinstance(event, TurnFailed):
            raise RuntimeError(event.error)
        if isinstance(event, TurnFinished):
            stats = event.stats
            return Answer(prompt, intended, event.answer, stats.steps, stats.tokens, stats.seconds)
    raise RuntimeError("the turn ended without TurnFinished")


def evaluate(gguf: Path, word_list: Path, split: demo_guide.Split, seeds: Sequence[int] = EVAL_SEEDS) -> Quality:
    """Answer the held-out paraphrases and out-of-domain prompts once per seed with dg-chat's engine."""
    from dg_chat.engine.loader import load_engine

    outside_answer = demo_guide.load().outside_answer
    engine = load_engine(Settings(model=str(gguf), device="cpu"))
    try:
        in_domain = [answer(engine, q, a, seed) for seed in seeds for q, a in split.held_out]
        outside = [answer(engine, q, outside_answer, seed) for seed in seeds for q in split.outside_eval]
    finally:
        engine.close()
    return Quality(in_domain, outside, read_word_list(word_list), SamplerSettings().max_steps)


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=4400, help="optimizer steps (the shipped run: 4400)")
    parser.add_argument("--minutes", type=float, default=60, help="time budget: stop early when it is spent")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads: 2 needs both cores free (more than the free cores is much slower)")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "demo.gguf")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    resolve_vml_dispatch()  # a seeded run must not depend on MKL's first-call race
    torch.manual_seed(args.seed)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    log_path, png, word_list = (Path(f"{stem}-train-log.csv"), Path(f"{stem}-loss.png"), Path(f"{stem}-words.txt.gz"))

    guide = demo_guide.load()
    split = demo_guide.split(guide, args.seed)
    pairs = demo_guide.paraphrases(split.train, args.seed)
    hf = train_tokenizer([text for pair in split.train for text in pair])
    metadata = tokenizer_metadata(hf)
    tokenizer = Tokenizer.from_metadata(metadata)
    chat = JinjaFormat(ChatTemplate(CHAT_TEMPLATE), tokenizer, end_token_ids(metadata, tokenizer))
    examples = build_examples(pairs, tokenizer, chat, tokenizer.token_id("<|end|>"), random.Random(args.seed))
    write_word_list([t.answer for t in guide.topics] + [guide.outside_answer], word_list)

    model = make_model(tokenizer.vocab_size)
    params = sum(p.numel() for name, p in model.named_parameters() if "vision" not in name)
    steps = args.steps
    blocks = sum(map(canvases, examples))
    print(f"{len(guide.topics)} topics, {len(split.train)} questions -> {len(examples)} examples "
          f"({blocks} canvases); vocabulary {tokenizer.vocab_size}; {params / 1e6:.2f}M parameters; "
          f"{steps} steps of {BATCH}")
    started = time.perf_counter()
    done = train(model, examples, steps=steps, seed=args.seed, budget_s=args.minutes * 60, log_path=log_path)
    minutes = (time.perf_counter() - started) / 60
    print(f"trained {done} steps in {minutes:.1f} min")

    write_gguf(model, metadata, out)
    plot_losses(log_path, png)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), {log_path.name}, {png.name}, {word_list.name}")
    quality = evaluate(out, word_list, split)
    print(quality.summary())
    print(json.dumps(quality.figures(), indent=2))
    for a in quality.in_domain[:len(split.held_out)] + quality.outside[:len(split.outside_eval)]:
        print(f"  > {a.prompt}  (F1 {a.f1:.2f}, steps {a.steps})\n    {a.text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
