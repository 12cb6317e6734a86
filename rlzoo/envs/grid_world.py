"""Grid world: walk a text maze to the goal with up / down / left / right.

The observation draws the grid (`#` wall, `.` floor, `A` the agent, `G` the
goal) and asks for a move; a turn is a direction word (the first of up,
down, left, right in the text). Walking into a wall leaves the agent where
it is. Reward 1 and the end of the episode on reaching the goal; 0
otherwise. The state is the agent's cell, so episodes of one maze pass
through the same states (GiGPO's anchor states). Mazes come from the seed:
a `size` x `size` floor with random walls, regenerated until the goal is
reachable. The scripted optimal policy (`optimal_action`) follows a
breadth-first shortest path.
"""

from __future__ import annotations

import collections
import re

import numpy as np

from rlzoo.envs import Step

MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
_MOVE = re.compile(r"\b(up|down|left|right)\b", re.I)


class GridWorldEnv:
    name = "grid_world"

    def __init__(self, size: int = 4, wall_fraction: float = 0.2, max_turns: int | None = None):
        if size < 2 or not 0 <= wall_fraction < 1:
            raise ValueError(f"need size >= 2 and 0 <= wall_fraction < 1, got {size}, {wall_fraction}")
        self.size, self.wall_fraction = size, wall_fraction
        self.max_turns = max_turns if max_turns is not None else 2 * size * size

    def reset(self, seed: int) -> tuple[str, dict]:
        rng = np.random.default_rng([seed, 29])
        while True:
            walls = rng.random((self.size, self.size)) < self.wall_fraction
            cells = [(r, c) for r in range(self.size) for c in range(self.size) if not walls[r, c]]
            if len(cells) < 2:
                continue
            start, goal = (cells[i] for i in rng.choice(len(cells), 2, replace=False))
            self.walls, self.agent, self.goal = walls, tuple(start), tuple(goal)
            if self.distances().get(self.agent) is not None:
                return self.render(), {"state_key": self.agent}

    def render(self) -> str:
        rows = []
        for r in range(self.size):
            rows.append("".join("A" if (r, c) == self.agent else "G" if (r, c) == self.goal
                                else "#" if self.walls[r, c] else "." for c in range(self.size)))
        return "\n".join(rows) + "\nMove (up, down, left or right):"

    def _neighbour(self, cell: tuple[int, int], move: str) -> tuple[int, int]:
        r, c = cell[0] + MOVES[move][0], cell[1] + MOVES[move][1]
        inside = 0 <= r < self.size and 0 <= c < self.size
        return (r, c) if inside and not self.walls[r, c] else cell

    def distances(self) -> dict[tuple[int, int], int]:
        """Steps from each reachable cell to the goal (breadth-first from the goal)."""
        dist, queue = {self.goal: 0}, collections.deque([self.goal])
        while queue:
            cell = queue.popleft()
            for move in MOVES:
                nxt = self._neighbour(cell, move)
                if nxt not in dist:
                    dist[nxt] = dist[cell] + 1
                    queue.append(nxt)
        return dist

    def step(self, action: str) -> Step:
        match = _MOVE.search(action)
        if match is None:
            return Step("invalid move: write up, down, left or right.\n" + self.render(), 0.0, False,
                        {"state_key": self.agent})
        self.agent = self._neighbour(self.agent, match.group(1).lower())
        if self.agent == self.goal:
            return Step("", 1.0, True, {"reward_parts": {"reached": 1.0}})
        return Step(self.render(), 0.0, False, {"state_key": self.agent})

    def optimal_action(self) -> str:
        """The scripted optimal policy's next turn: a move one step closer to the goal."""
        dist = self.distances()
        return min(MOVES, key=lambda move: dist.get(self._neighbour(self.agent, move), 10**9))
