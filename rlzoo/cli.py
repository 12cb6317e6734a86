"""The `rlzoo` command line.

    rlzoo train [--algo grpo] [--task arithmetic] [--model tiny] [--steps N] [--<algo field> V ...]
    rlzoo train --algo dapo --help          # the run flags and every DAPO config field, with defaults
    rlzoo sft  [--task arithmetic] [--model tiny] [--sft-steps N]
    rlzoo eval --run-dir runs/grpo-arithmetic-0
    rlzoo list [--family policy-loss]
    rlzoo list --envs                       # the built-in multi-turn environments
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import pathlib
import sys

from rlzoo import config as cfgparse
from rlzoo.checkpoint import Checkpointer
from rlzoo.registry import FAMILIES, UnknownAlgorithmError, get_algorithm, list_algorithms
from rlzoo.train import RunConfig, Trainer
from rlzoo.train.interrupts import TrainingInterrupted
from rlzoo.train.loop import NonFiniteTraining

COMMANDS = ("train", "sft", "eval", "list")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, with close matches for unknown flags."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments"):
            known = [o for action in self._actions for o in action.option_strings]
            described = []
            for arg in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(arg.split("=")[0], known, n=3) if arg.startswith("--") else []
                described.append(arg + (f" (did you mean {' / '.join(close)}?)" if close else ""))
            message = f"unknown option(s): {', '.join(described)}. `{self.prog} --help` lists the options"
        raise ValueError(message)


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.envs:
        from rlzoo.envs import describe_env, list_envs

        table = Table(title="rlzoo environments (rlzoo.envs.load_env: a NAME, or module:Class for your own)")
        for column in ("name", "what it is"):
            table.add_column(column, overflow="fold")
        for name in list_envs():
            table.add_row(name, describe_env(name))
        Console(width=args.width).print(table)
        return 0
    if args.family is not None and args.family not in FAMILIES:
        raise ValueError(f"unknown family {args.family!r}; choose one of {', '.join(FAMILIES)}")
    table = Table(title="rlzoo algorithms")
    for column in ("name", "family", "paper"):
        table.add_column(column, overflow="fold")
    algorithms = list_algorithms(args.family)
    if args.markdown:
        print("| name | family | paper |\n|---|---|---|")
        for algo in algorithms:
            print(f"| `{algo.name}` | {algo.family} | {algo.paper} |")
        return 0
    for algo in algorithms:
        table.add_row(algo.name, algo.family, algo.paper)
    Console(width=args.width).print(table)
    print(f"{len(algorithms)} algorithms")
    return 0


def _train_parser(algo_name: str | None, command: str, advantage: str | None = None) -> tuple[argparse.ArgumentParser, list[str], list[str], type | None]:
    parser = _Parser(
        prog=f"rlzoo {command}",
        description="Supervised warm start then RL on a task." if command == "train" else "Supervised warm start only.",
    )
    run_group = parser.add_argument_group("run")
    skip = frozenset({"task_options"}) | (frozenset({"algo"}) if command == "sft" else frozenset())
    run_names = cfgparse.add_arguments(run_group, RunConfig, skip=skip, dest_prefix="run.")
    run_group.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                           help="task constructor argument, e.g. digits=3 (repeatable)")
    algo_names: list[str] = []
    algo_config = None
    if command == "train" and algo_name is not None:
        algo = get_algorithm(algo_name, advantage=advantage)
        algo_config = algo.Config
        group = parser.add_argument_group(f"{algo.name} config ({algo.paper})")
        taken = {"--" + n.replace("_", "-") for n in run_names} | {"--help", "--task-option"}
        clash = {f.name for f in dataclasses.fields(algo.Config) if "--" + f.name.replace("_", "-") in taken}
        algo_names = cfgparse.add_arguments(group, algo.Config, skip=frozenset(clash), dest_prefix="algo.")
        algo_names += cfgparse.add_arguments(group, algo.Config, skip=frozenset(algo_names), dest_prefix="algo.", flag_prefix="algo-")
    return parser, run_names, algo_names, algo_config


def _task_options(pairs: list[str]) -> tuple:
    options = []
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--task-option must be KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        options.append((key.strip().replace("-", "_"), value))
    return tuple(options)


def _cmd_train(argv: list[str], command: str) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo", default=RunConfig.algo)
    pre.add_argument("--advantage", default=None)
    known, _ = pre.parse_known_args(argv)
    parser, run_names, algo_names, algo_config = _train_parser(known.algo, command, known.advantage)
    args = parser.parse_args(argv)
    run = cfgparse.from_namespace(RunConfig, args, run_names, dest_prefix="run.",
                                  task_options=_task_options(args.task_option))
    if run.data_dir is not None and not pathlib.Path(run.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {run.data_dir} does not exist")
    if run.preference_data is not None and not pathlib.Path(run.preference_data).is_file():
        raise FileNotFoundError(f"--preference-data {run.preference_data} is not a file")
    if command == "sft":
        trainer = Trainer(dataclasses.replace(run, steps=0, eval_every=0), None)
        trainer.warm_start()
        print(json.dumps(trainer.evaluate()))
        return 0
    cfg = cfgparse.from_namespace(algo_config, args, algo_names, dest_prefix="algo.")
    trainer = Trainer(run, cfg)
    summary = trainer.train()
    if trainer.primary:
        print(json.dumps(summary, indent=2))
    return 0


def _cmd_eval(argv: list[str]) -> int:
    parser = _Parser(prog="rlzoo eval", description="Held-out accuracy of a run's latest checkpoint.")
    parser.add_argument("--run-dir", required=True, help="a directory written by `rlzoo train`")
    args = parser.parse_args(argv)
    run_dir = pathlib.Path(args.run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: --run-dir must be a directory written by `rlzoo train`")
    meta = json.loads(config_path.read_text())
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    saved = {k: (tuple(map(tuple, v)) if k == "task_options" else v) for k, v in meta["run"].items() if k in run_fields}
    run = RunConfig(**{**saved, "resume": True, "run_dir": str(run_dir), "sft_steps": 0, "progress": False})
    algo = get_algorithm(run.algo, advantage=run.advantage)
    trainer = Trainer(run, algo.Config(**meta["algo_config"]))
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        step = int(trainer.restore(ckpt)["step"])
    finally:
        ckpt.close()
    print(json.dumps({"step": step, **trainer.evaluate()}))
    return 0


def _attach_negative_numbers(argv: list[str]) -> list[str]:
    """`--flag -1e-3` as `--flag=-1e-3`: argparse reads a negative number in
    exponent form as an option (and then reports a missing value)."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and arg.startswith("-") and _is_number(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = _attach_negative_numbers(list(sys.argv[1:] if argv is None else argv))
    top = argparse.ArgumentParser(prog="rlzoo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("command", choices=COMMANDS, help="what to do")
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    try:
        command, rest = argv[0], argv[1:]
        if command not in COMMANDS:
            close = difflib.get_close_matches(command, COMMANDS, n=1)
            raise ValueError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}"
                             + (f" (did you mean {close[0]}?)" if close else ""))
        if command == "list":
            listing = _Parser(prog="rlzoo list", description="The registered algorithms.")
            listing.add_argument("--family", help=f"only this family ({', '.join(FAMILIES)})")
            listing.add_argument("--width", type=int, default=None, help="table width in characters")
            listing.add_argument("--markdown", action="store_true", help="print a Markdown table")
            listing.add_argument("--envs", action="store_true", help="list the built-in environments instead")
            return _cmd_list(listing.parse_args(rest))
        if command == "eval":
            return _cmd_eval(rest)
        return _cmd_train(rest, command)
    except (ValueError, UnknownAlgorithmError, FileNotFoundError, NotADirectoryError) as err:
        print(f"rlzoo {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteTraining as err:
        print(f"rlzoo {argv[0]}: stopped: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:
        print(f"rlzoo {argv[0]}: {stop.message}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"rlzoo {argv[0]}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
