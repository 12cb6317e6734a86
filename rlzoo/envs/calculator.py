"""Calculator: multi-step arithmetic where calling the tool is what makes
the answer right.

A question is an expression of `terms` numbers of `digits` digits joined by
+, − and ×, e.g. "Compute 48*27-91. Use <call>calc: EXPRESSION</call>, then
give <answer>NUMBER</answer>." The `calc` tool evaluates an arithmetic
expression (integers, + - * and parentheses only; anything else is an
invalid call). Reward 1 for the exact answer, else 0. The scripted optimal
policy (`optimal_action`) calls the tool on the whole expression, then
answers with its result: two turns.
"""

from __future__ import annotations

import ast

import numpy as np

from rlzoo.envs.tools import ToolEnvironment

_OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


def evaluate(expression: str) -> int:
    """The value of an integer + - * expression; ValueError for anything else."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"cannot parse {expression.strip()!r} as arithmetic") from None

    def value(node) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = value(node.left), value(node.right)
            if max(abs(left), abs(right)) > 10**12:
                raise ValueError("numbers too large")
            return _OPERATORS[type(node.op)](left, right)
        raise ValueError(f"only integers, + - * and parentheses are allowed in {expression.strip()!r}")

    return value(tree.body)


class CalculatorEnv(ToolEnvironment):
    name = "calculator"

    def __init__(self, digits: int = 2, terms: int = 3, max_turns: int = 4):
        if digits < 1 or terms < 2 or max_turns < 2:
            raise ValueError(f"need digits >= 1, terms >= 2, max_turns >= 2; got {digits}, {terms}, {max_turns}")
        self.digits, self.terms, self.max_turns = digits, terms, max_turns
        self.tools = {"calc": lambda argument: str(evaluate(argument))}

    def expression(self, seed: int) -> str:
        rng = np.random.default_rng([seed, 17])
        low, high = 10 ** (self.digits - 1), 10**self.digits
        numbers = [str(int(n)) for n in rng.integers(low, high, self.terms)]
        operators = rng.choice(["+", "-", "*"], self.terms - 1)
        return numbers[0] + "".join(op + n for op, n in zip(operators, numbers[1:]))

    def question(self, seed: int) -> tuple[str, str]:
        expression = self._expression = self.expression(seed)
        prompt = (f"Compute {expression}. Use <call>calc: EXPRESSION</call>, then give <answer>NUMBER</answer>.")
        return prompt, str(evaluate(expression))

    def score(self, answer: str, reference: str) -> float:
        return float(answer.strip() == reference)

    def optimal_action(self) -> str:
        """The scripted optimal policy's next turn."""
        if self.calls == 0:
            return f"<call>calc: {self._expression}</call>"
        return f"<answer>{self.reference}</answer>"
