package main

import (
	"fmt"
	"io"
	"strings"
)

// completion prints a shell completion script for the static command set.
func completion(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usageError{fmt.Errorf("completion: want a shell: umbra completion bash|zsh")}
	}
	top := []string{"serve", "keygen", "sim", "bench", "version", "completion", "help"}
	var cases strings.Builder
	for _, g := range clientGroups {
		top = append(top, g.name)
		var verbs []string
		for _, v := range g.verbs {
			if v.name != g.name {
				verbs = append(verbs, v.name)
			}
		}
		if len(verbs) > 0 {
			fmt.Fprintf(&cases, "    %s) words=%q ;;\n", g.name, strings.Join(verbs, " "))
		}
	}
	cases.WriteString("    completion) words=\"bash zsh\" ;;\n")
	flags := "--server --api-key --ca-file --config --json --name --help"
	switch args[0] {
	case "bash":
		fmt.Fprintf(stdout, `# bash completion for umbra; load with: source <(umbra completion bash)
_umbra() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W %q -- "$cur"))
    return
  fi
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W %q -- "$cur"))
    return
  fi
  if [[ $COMP_CWORD -eq 2 ]]; then
    case "${COMP_WORDS[1]}" in
%s    *) words="" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  fi
}
complete -o default -F _umbra umbra
`, flags, strings.Join(top, " "), cases.String())
	case "zsh":
		fmt.Fprintf(stdout, `#compdef umbra
# zsh completion for umbra; load with: source <(umbra completion zsh)
_umbra() {
  if [[ "$PREFIX" == -* ]]; then
    compadd -- %s
    return
  fi
  if (( CURRENT == 2 )); then
    compadd -- %s
    return
  fi
  if (( CURRENT == 3 )); then
    local verbs_
    case "${words[2]}" in
%s    *) verbs_="" ;;
    esac
    compadd -- ${=verbs_}
  fi
}
compdef _umbra umbra
`, flags, strings.Join(top, " "), strings.ReplaceAll(cases.String(), "words=", "verbs_="))
	default:
		return usageError{fmt.Errorf("completion: unknown shell %q: want bash or zsh", args[0])}
	}
	return nil
}
