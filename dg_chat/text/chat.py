"""Conversations to prompt token ids, and model output back to thinking + answer.

`chat_format_for` picks one of three formats for a model file:
- `Gemma4Format` (DiffusionGemma): renders diffusiongemma-spec.md §4 straight to ids;
- `JinjaFormat`: any other GGUF with a `tokenizer.chat_template`;
- `PlainFormat`: a GGUF without a chat template.
In all of them, message text is tokenized without special-token parsing: a user can type
"<|turn>" or "<|im_end|>", but never forge the token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from dg_chat.errors import DgChatError
from dg_chat.text.template import ChatTemplate
from dg_chat.text.tokenizer import SpecialTokenText

Role = Literal["system", "user", "model"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str
    thinking: str = ""
    """A model turn's thoughts; never sent back to the model in later prompts."""


class ChatFormat(Protocol):
    end_ids: frozenset[int]
    """Token ids that end a model turn (`end_token_ids`)."""
    thinks: bool
    """Whether the format has a thinking channel: if not, `render(thinking=True)` is the same prompt
    as without it."""

    def render(self, messages: Sequence[Message], *, thinking: bool) -> list[int]:
        """Token ids of the whole conversation plus the generation prompt for the next model turn.
        User and model text is tokenized without special-token parsing."""
        ...

    def parse(self, token_ids: Sequence[int]) -> tuple[str, str]:
        """Generated ids (up to an end token) -> (thinking, answer) text."""
        ...


# Tokens that end a turn in common chat vocabularies, besides EOS (only when they are special tokens).
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|end_of_text|>",
                       "<|end|>", "<end_of_turn>", "<|EOT|>")
_THOUGHT_HEADER = "thought\n"
_PROBE = [{"role": "user", "content": "x"}]
"""A conversation to render a template on, to learn how it treats thinking."""


def _is_gemma4(metadata: Mapping[str, Any], tokenizer: SpecialTokenText) -> bool:
    return metadata.get("tokenizer.ggml.model") == "gemma4" or tokenizer.special_id("<|turn>") is not None


def end_token_ids(metadata: Mapping[str, Any], tokenizer: SpecialTokenText) -> frozenset[int]:
    """Ids that end a model turn: for Gemma 4 EOS, <turn|> and <|tool_response> ({1, 106, 50})."""
    if _is_gemma4(metadata, tokenizer):
        ids = [tokenizer.eos_id, tokenizer.special_id("<turn|>"), tokenizer.special_id("<|tool_response>")]
    else:
        ids = [tokenizer.eos_id, metadata.get("tokenizer.ggml.eot_token_id"),
               metadata.get("tokenizer.ggml.eom_token_id"), *map(tokenizer.special_id, _END_OF_TURN_TOKENS)]
    return frozenset(i for i in ids if i is not None)


def chat_format_for(metadata: Mapping[str, Any], tokenizer: SpecialTokenText) -> ChatFormat:
    source = metadata.get("tokenizer.chat_template")
    if source is not None and not isinstance(source, str):
        raise DgChatError("metadata 'tokenizer.chat_template' is not a string")
    template = ChatTemplate(source) if source else None
    ends = end_token_ids(metadata, tokenizer)
    if _is_gemma4(metadata, tokenizer):
        return Gemma4Format(tokenizer, ends, newline_after_think=_newline_after_think(template))
    if template is not None:
        return JinjaFormat(template, tokenizer, ends)
    return PlainFormat(tokenizer, ends)


def _newline_after_think(template: ChatTemplate | None) -> bool:
    """Gemma 4 templates differ in one place: spec §4 (and later Gemma 4 templates) put a newline
    after <|think|>, the template of llama.cpp's Gemma 4 test vocabulary does not. The model file's
    own template decides; without one (or if it fails) the spec does."""
    if template is None:
        return True
    try:
        probe = template.render(_PROBE, thinking=True, bos_token="<bos>", eos_token="<eos>")
    except DgChatError:
        return True
    return "<|think|>\n" in probe


def _until_end(token_ids: Sequence[int], end_ids: frozenset[int]) -> list[int]:
    ids = list(map(int, token_ids))  # also numpy/torch scalars, which would miss `end_ids`
    for n, token_id in enumerate(ids):
        if token_id in end_ids:
            return ids[:n]
    return ids


class Gemma4Format:
    """`<bos>`, then every turn as `<|turn>{role}\\n{content}<turn|>\\n` (roles system/user/model,
    content trimmed, model turns without their thoughts), then the generation prompt `<|turn>model\\n`.
    Thinking on: the conversation opens with a system turn starting with `<|think|>` (followed by the
    system prompt, if any). Thinking off: the generation prompt pre-fills an empty, closed thought,
    `<|channel>thought\\n<channel|>`, so the model answers directly."""

    thinks = True

    def __init__(self, tokenizer: SpecialTokenText, end_ids: frozenset[int], *, newline_after_think: bool = True):
        self._tokenizer = tokenizer
        self.end_ids = end_ids
        self._after_think = "\n" if newline_after_think else ""
        ids = tokenizer.token_id
        self._bos, self._turn, self._end_turn = ids("<bos>"), ids("<|turn>"), ids("<turn|>")
        self._think, self._channel, self._end_channel = ids("<|think|>"), ids("<|channel>"), ids("<channel|>")

    def render(self, messages: Sequence[Message], *, thinking: bool) -> list[int]:
        messages = list(messages)
        parts: list[int | str] = [self._bos]
        system_first = bool(messages) and messages[0].role == "system"
        if thinking or system_first:
            parts += [self._turn, "system\n"]
            if thinking:
                parts += [self._think, self._after_think]
            if system_first:
                parts.append(messages.pop(0).content.strip())
            parts += [self._end_turn, "\n"]
        for message in messages:
            parts += [self._turn, f"{message.role}\n{message.content.strip()}", self._end_turn, "\n"]
        parts += [self._turn, "model\n"]
        if not thinking:
            parts += [self._channel, _THOUGHT_HEADER, self._end_channel]
        return self._tokenizer.encode_parts(parts)

    def parse(self, token_ids: Sequence[int]) -> tuple[str, str]:
        """Thoughts are what lies between <|channel>thought\\n and <channel|>; an unterminated
        thought (a model still thinking) is all thinking. Everything else is the answer."""
        thoughts: list[list[int]] = []
        answer: list[int] = []
        in_thought = False
        for token_id in _until_end(token_ids, self.end_ids):
            if token_id == self._channel:
                thoughts.append([])
                in_thought = True
            elif token_id == self._end_channel:
                in_thought = False
            else:
                (thoughts[-1] if in_thought else answer).append(token_id)
        decode = self._tokenizer.decode
        thinking = "\n".join(filter(None, (_without_header(decode(ids)).strip() for ids in thoughts)))
        return thinking, decode(answer).strip()


def _without_header(thought: str) -> str:
    if _THOUGHT_HEADER.startswith(thought):  # the channel name is still being written
        return ""
    return thought.removeprefix(_THOUGHT_HEADER)


_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")


class JinjaFormat:
    """Renders the model file's own jinja template. Each message's text is replaced by a sentinel
    before rendering (its leading and trailing whitespace is left for the template to trim or keep),
    and the rendered text is split at the sentinels: only the template's own text is searched for
    special tokens, the messages' text is put back and encoded as plain text."""

    def __init__(self, template: ChatTemplate, tokenizer: SpecialTokenText, end_ids: frozenset[int]):
        self._template = template
        self._tokenizer = tokenizer
        self.end_ids = end_ids
        def text_of(token_id: int | None) -> str:
            return "" if token_id is None else tokenizer.decode([token_id], skip_special=False)

        self._bos_token, self._eos_token = text_of(tokenizer.bos_id), text_of(tokenizer.eos_id)
        try:  # a template without a thinking channel ignores enable_thinking
            self.thinks = self._render(_PROBE, thinking=True) != self._render(_PROBE, thinking=False)
        except DgChatError:  # it fails on any prompt: `render` will say so
            self.thinks = False

    def _render(self, messages: list[dict[str, str]], *, thinking: bool) -> str:
        return self._template.render(messages, thinking=thinking, bos_token=self._bos_token,
                                     eos_token=self._eos_token)

    def render(self, messages: Sequence[Message], *, thinking: bool) -> list[int]:
        texts: list[str] = []

        def stand_in(text: str) -> str:
            core = text.strip()
            if not core:
                return text
            texts.append(core)
            start = text.index(core)
            return text[:start] + _SENTINEL.format(len(texts) - 1) + text[start + len(core):]

        rendered = self._render(
            [{"role": "assistant" if m.role == "model" else m.role, "content": stand_in(m.content)} for m in messages],
            thinking=thinking)
        parts: list[int | str] = []
        start = 0
        for match in _SENTINEL_RE.finditer(rendered):
            index = int(match.group(1))
            if index < len(texts):  # else the template wrote a look-alike: leave it as template text
                parts += [*self._tokenizer.split_specials(rendered[start:match.start()]), texts[index]]
                start = match.end()
        parts += self._tokenizer.split_specials(rendered[start:])
        ids = self._tokenizer.encode_parts(parts)
        bos = self._tokenizer.bos_id
        if self._tokenizer.add_bos and bos is not None and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids

    def parse(self, token_ids: Sequence[int]) -> tuple[str, str]:
        return "", self._tokenizer.decode(_until_end(token_ids, self.end_ids)).strip()


class PlainFormat:
    """For a model file without a chat template: a plain transcript, "User: …\\nAssistant: …\\n",
    ending with "Assistant:" for the model to continue. No thinking channel."""

    _LABELS = {"system": "System", "user": "User", "model": "Assistant"}
    thinks = False

    def __init__(self, tokenizer: SpecialTokenText, end_ids: frozenset[int]):
        self._tokenizer = tokenizer
        self.end_ids = end_ids

    def render(self, messages: Sequence[Message], *, thinking: bool) -> list[int]:
        transcript = "".join(f"{self._LABELS[m.role]}: {m.content.strip()}\n" for m in messages)
        return self._tokenizer.encode(transcript + "Assistant:", add_bos=self._tokenizer.add_bos)

    def parse(self, token_ids: Sequence[int]) -> tuple[str, str]:
        return "", self._tokenizer.decode(_until_end(token_ids, self.end_ids)).strip()
