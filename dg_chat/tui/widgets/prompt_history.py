"""Earlier prompts for ↑/↓ in the prompt: recalled in an empty box, stepped through while the recalled
text is unchanged (an edit ends the recall; ↑/↓ then move the cursor again)."""

from __future__ import annotations


class PromptHistory:
    def __init__(self, prompts: list[str] | None = None) -> None:
        self.prompts: list[str] = list(prompts or [])
        """Oldest first."""
        self._index: int | None = None
        """Index of the prompt recalled into the box."""

    def remember(self, text: str) -> None:
        if not self.prompts or self.prompts[-1] != text:
            self.prompts.append(text)
        self._index = None

    def recalling(self, box: str) -> bool:
        return self._index is not None and box == self.prompts[self._index]

    def step(self, box: str, direction: int) -> str | None:
        """The text the box shows after ↑ (-1) or ↓ (1); None: not a history key here (move the cursor)."""
        if not self.recalling(box):
            self._index = None
            if box or direction > 0 or not self.prompts:
                return None
        index = (len(self.prompts) if self._index is None else self._index) + direction
        if index >= len(self.prompts):
            self._index = None
            return ""
        self._index = max(index, 0)
        return self.prompts[self._index]
