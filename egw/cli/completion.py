"""`egw completion bash|zsh`: a completion script made from the parser itself, so it
lists every command and option there is without a dependency (zsh runs the bash
script through its bashcompinit)."""

from __future__ import annotations

import argparse
import sys


def script(shell: str) -> str:
    from egw.cli.parser import build

    parser = build()
    cases = []
    for name, command in sorted(parser.commands.items()):
        options = sorted(
            flag
            for action in command._actions
            for flag in action.option_strings
            if flag not in ("-h", "--help")
        )
        choices = [
            " ".join(action.choices)
            for action in command._actions
            if not action.option_strings and action.choices
        ]
        words = " ".join(options + choices)
        cases.append(f'    {name}) words="{words}" ;;')
    names = " ".join(sorted(parser.commands))
    body = "\n".join(
        [
            '# egw completion: eval "$(egw completion bash)" (in ~/.bashrc)',
            "_egw() {",
            '    local cur="${COMP_WORDS[COMP_CWORD]}" words',
            '    if [ "$COMP_CWORD" -eq 1 ]; then',
            f'        COMPREPLY=($(compgen -W "{names} --help --version" -- "$cur"))',
            "        return",
            "    fi",
            '    case "${COMP_WORDS[1]}" in',
            *cases,
            '    *) words="" ;;',
            "    esac",
            '    COMPREPLY=($(compgen -W "$words --help" -- "$cur"))',
            "}",
            "complete -o default -F _egw egw",
            "",
        ]
    )
    if shell == "zsh":
        return (
            '# egw completion for zsh: eval "$(egw completion zsh)" (in ~/.zshrc)\n'
            "autoload -U +X compinit && compinit\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + body
        )
    return body


def completion_command(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell))
    return 0
