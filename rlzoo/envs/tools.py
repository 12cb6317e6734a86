"""The tool-call syntax of rlzoo's tool environments, and their base class.

A policy turn is one of:

    <call>NAME: ARGUMENT</call>     run tool NAME on ARGUMENT; its result is the next observation,
                                    written back as <result>...</result>
    <answer>TEXT</answer>           the final answer; the episode ends and is scored

Text around the tags is allowed (a model may think first); the first tag
counts. Anything else (no tag, an unknown tool, a tool that fails on its
argument) is an invalid turn: its observation says why ("invalid call:
..."), the reward is 0 and the episode goes on, so a malformed call never
crashes a run. The syntax is plain text, so it works the same with the
byte tokenizers and with chat-template models.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

from rlzoo.envs import Step

_CALL = re.compile(r"<call>\s*([A-Za-z_][\w\-]*)\s*:(.*?)</call>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


@dataclasses.dataclass(frozen=True)
class Call:
    tool: str
    argument: str


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str


@dataclasses.dataclass(frozen=True)
class Invalid:
    reason: str


def parse_action(text: str) -> Call | Answer | Invalid:
    """The first call or answer tag in `text`, whichever comes first."""
    call, answer = _CALL.search(text), _ANSWER.search(text)
    if call and (not answer or call.start() < answer.start()):
        return Call(call.group(1), call.group(2).strip())
    if answer:
        return Answer(answer.group(1).strip())
    if "<call>" in text:
        return Invalid("a call is written <call>NAME: ARGUMENT</call>")
    return Invalid("no <call>NAME: ARGUMENT</call> or <answer>TEXT</answer> found")


class ToolEnvironment:
    """Base of question-answering environments with tools.

    A subclass sets `name`, `tools` ({name: function(argument) -> result
    text, raising ValueError on a bad argument}) and implements
    `question(seed) -> (prompt text, reference answer)` and `score(answer,
    reference) -> reward`. `max_turns` bounds an episode (the runner marks
    an episode that reaches it without an answer `truncated`).
    """

    name = "tools"
    max_turns = 4
    tools: dict[str, Callable[[str], str]] = {}

    def question(self, seed: int) -> tuple[str, str]:
        raise NotImplementedError

    def score(self, answer: str, reference: str) -> float:
        raise NotImplementedError

    def reset(self, seed: int) -> tuple[str, dict]:
        self.prompt, self.reference = self.question(seed)
        self.calls = 0
        return self.prompt, {"state_key": ("start",)}

    def step(self, action: str) -> Step:
        parsed = parse_action(action)
        if isinstance(parsed, Answer):
            reward = self.score(parsed.text, self.reference)
            return Step("", reward, True, {"reward_parts": {"correct": reward}})
        if isinstance(parsed, Call):
            tool = self.tools.get(parsed.tool)
            if tool is None:
                return Step(f"invalid call: unknown tool {parsed.tool!r}; tools: {', '.join(sorted(self.tools))}",
                            0.0, False, {"state_key": ("invalid",)})
            try:
                result = tool(parsed.argument)
            except ValueError as error:
                return Step(f"invalid call: {error}", 0.0, False, {"state_key": ("invalid",)})
            self.calls += 1
            return Step(f"<result>{result}</result>", 0.0, False, {"state_key": ("result", result)})
        return Step(f"invalid call: {parsed.reason}", 0.0, False, {"state_key": ("invalid",)})
