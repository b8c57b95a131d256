package main

import (
	"flag"
	"fmt"
	"io"
)

// completion prints a shell completion script. The script asks the binary
// itself (the hidden "umbra __complete" verb, see commands.go) for the
// candidates, so command and verb names come from the command table and
// thing names, group names, job and rollout ids from the server.
func completion(args []string, stdout io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, "Usage: umbra completion bash|zsh\n\nPrint a shell completion script; load it with source <(umbra completion bash).\nCommand, verb and flag names come from umbra itself; thing names, group names,\njob and rollout ids are asked from the server (with the same --server,\n--api-key, UMBRA_SERVER ... as the command being completed).\n")
		return flag.ErrHelp
	}
	if len(args) != 1 {
		return usageError{fmt.Errorf("completion: want a shell: umbra completion bash|zsh")}
	}
	switch args[0] {
	case "bash":
		fmt.Fprint(stdout, `# bash completion for umbra; load with: source <(umbra completion bash)
_umbra() {
  local IFS=$'\n'
  COMPREPLY=($("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _umbra umbra
`)
	case "zsh":
		fmt.Fprint(stdout, `#compdef umbra
# zsh completion for umbra; load with: source <(umbra completion zsh)
_umbra() {
  local -a cands
  cands=("${(@f)$("${words[1]}" __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
  compadd -- ${cands:#}
}
compdef _umbra umbra
`)
	default:
		return usageError{fmt.Errorf("completion: unknown shell %q: want bash or zsh", args[0])}
	}
	return nil
}
