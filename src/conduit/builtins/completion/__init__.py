"""``conduit completion SHELL``: completion scripts that ask the index, not the plugins.

The scripts call ``conduit __complete WORDS...`` (the installed ``conduit``, by absolute
path: see :func:`program`), which the kernel answers from the
cached plugin index without importing Click or any plugin, so completion stays as fast
as ``conduit --help`` whatever the number of plugins.
"""

from __future__ import annotations

import click

from conduit.sdk import Plugin, PluginContext

__all__ = ["SCRIPTS", "CompletionPlugin", "program"]

_BASH = r"""# conduit completion for bash. Load with: eval "$(conduit completion bash)"
_conduit_complete() {
    local IFS=$'\n' line value cur prefix=""
    local -a words
    if [[ -n ${COMP_LINE+set} ]]; then
        # The words from the line itself: COMP_WORDS splits 'greet:hello' at the ':'
        # (it is in COMP_WORDBREAKS), which would make it three words.
        IFS=$' \t' read -r -a words <<< "${COMP_LINE:0:COMP_POINT}"
        [[ ${COMP_LINE:0:COMP_POINT} == *[[:space:]] ]] && words+=("")
        words=("${words[@]:1}")
    else
        words=("${COMP_WORDS[@]:1:COMP_CWORD}")
    fi
    (( ${#words[@]} )) || words=("")
    cur=${words[${#words[@]}-1]}
    # bash replaces only what follows the last ':' of the word: offer that part.
    [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]] && prefix=${cur%"${cur##*:}"}
    COMPREPLY=()
    while IFS= read -r line; do
        value=${line%%$'\t'*}
        [[ -n "$value" ]] && COMPREPLY+=("${value#"$prefix"}")
    done < <(@CONDUIT@ __complete "${words[@]}" 2>/dev/null)
}
complete -o default -F _conduit_complete conduit
"""

_ZSH = r"""#compdef conduit
# conduit completion for zsh. Load with: eval "$(conduit completion zsh)"
_conduit() {
    local -a items
    local line value
    for line in "${(@f)$(@CONDUIT@ __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}"; do
        [[ -z "$line" ]] && continue
        value=${line%%$'\t'*}
        if [[ $line == *$'\t'?* ]]; then
            items+=("${value//:/\\:}:${line#*$'\t'}")
        else
            items+=("${value//:/\\:}")
        fi
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
    @CONDUIT@ __complete $words 2>/dev/null
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
    click.echo(SCRIPTS[shell].replace("@CONDUIT@", program()), nl=False)


def program() -> str:
    """The installed ``conduit``, by absolute path and quoted for the shell, for the
    scripts to call: a bare ``conduit`` finds nothing when its venv is not activated."""
    import os
    import shlex
    import sys

    from conduit.paths import BUNDLE, conduit_argv

    if BUNDLE is not None:  # the bundle, by this interpreter (its sh header may find another)
        return shlex.join(conduit_argv())
    argv0 = sys.argv[0] if sys.argv else ""
    named = os.path.basename(argv0).startswith("conduit") and not argv0.endswith(".py")
    if named and os.path.isfile(argv0) and os.access(argv0, os.X_OK):
        return shlex.quote(os.path.abspath(argv0))
    script = os.path.join(os.path.dirname(sys.executable), "conduit")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return shlex.quote(script)
    return shlex.join(conduit_argv())


class CompletionPlugin(Plugin):
    """Shell completion scripts."""

    def boot(self, ctx: PluginContext) -> None:
        ctx.register_command(completion_cmd)
