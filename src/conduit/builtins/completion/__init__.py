"""``conduit completion SHELL``: completion scripts that ask the index, not the plugins.

The scripts call ``conduit __complete WORDS...``, which the kernel answers from the
cached plugin index without importing Click or any plugin, so completion stays as fast
as ``conduit --help`` whatever the number of plugins.
"""

from __future__ import annotations

import click

from conduit.sdk import Plugin, PluginContext

__all__ = ["SCRIPTS", "CompletionPlugin"]

_BASH = r"""# conduit completion for bash. Load with: eval "$(conduit completion bash)"
_conduit_complete() {
    local IFS=$'\n' line
    local -a words=("${COMP_WORDS[@]:1:COMP_CWORD}")
    COMPREPLY=()
    while IFS= read -r line; do
        [[ -n "$line" ]] && COMPREPLY+=("${line%%$'\t'*}")
    done < <(conduit __complete "${words[@]}" 2>/dev/null)
    if [[ ${#COMPREPLY[@]} -eq 0 ]]; then
        COMPREPLY=($(compgen -f -- "${COMP_WORDS[COMP_CWORD]}"))
    fi
}
complete -o default -F _conduit_complete conduit
"""

_ZSH = r"""#compdef conduit
# conduit completion for zsh. Load with: eval "$(conduit completion zsh)"
_conduit() {
    local -a items
    local line value
    for line in "${(@f)$(conduit __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}"; do
        [[ -z "$line" ]] && continue
        value=${line%%$'\t'*}
        items+=("${value//:/\\:}:${line#*$'\t'}")
    done
    if (( ${#items} )); then
        _describe 'conduit' items
    else
        _files
    fi
}
compdef _conduit conduit
"""

_FISH = r"""# conduit completion for fish. Load with: conduit completion fish | source
function __conduit_complete
    set -l words (commandline -opc)[2..-1] (commandline -ct)
    conduit __complete $words 2>/dev/null
end
complete -c conduit -f -a '(__conduit_complete)'
"""

SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


@click.command("completion")
@click.argument("shell", type=click.Choice(sorted(SCRIPTS)))
def completion_cmd(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    \b
    bash:  eval "$(conduit completion bash)"    (in ~/.bashrc)
    zsh:   eval "$(conduit completion zsh)"     (in ~/.zshrc)
    fish:  conduit completion fish | source    (in config.fish)
    """
    click.echo(SCRIPTS[shell], nl=False)


class CompletionPlugin(Plugin):
    """Shell completion scripts."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(completion_cmd)
