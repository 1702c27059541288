# bash completion for mailbeacon. Generated from its help: mailbeacon completion bash
_mailbeacon() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmdpath= i
	# The command: the leading words that name one.
	for ((i = 1; i < COMP_CWORD; i++)); do
		case "$cmdpath${cmdpath:+ }${COMP_WORDS[i]}" in
		"check" | "completion" | "config" | "config check" | "dns" | "health" | "help" | "init" | "lookup" | "serve" | "version") cmdpath="$cmdpath${cmdpath:+ }${COMP_WORDS[i]}" ;;
		*) break ;;
		esac
	done
	local words= flags= files= values=
	case $cmdpath in
	"") words="check completion config dns health help init lookup serve version" flags="--start-degraded --demo --demo-sign" files="" values="" ;;
	"check") words="" flags="--address --ca-file --config --demo --json --min-days --resolver --target --timeout" files="--ca-file --config" values="--address --min-days --resolver --target --timeout" ;;
	"completion") words="bash zsh" flags="" files="" values="" ;;
	"config") words="check" flags="" files="" values="" ;;
	"config check") words="" flags="--online --strict" files="" values="" ;;
	"dns") words="" flags="--address --config --demo --target --ttl" files="--config" values="--address --target --ttl" ;;
	"health") words="" flags="--config --timeout --url" files="--config" values="--timeout --url" ;;
	"help") words="" flags="--man" files="" values="" ;;
	"init") words="" flags="--base-dn --bind-dn --bind-password-file --ca-file --dial-timeout --domain --out --preset --request-timeout --sample --start-tls --tls-server-name" files="--bind-password-file --ca-file --out" values="--base-dn --bind-dn --dial-timeout --domain --preset --request-timeout --sample --tls-server-name" ;;
	"lookup") words="" flags="--config --demo" files="--config" values="" ;;
	"serve") words="" flags="--config --demo --demo-sign --listen --operations-listen --start-degraded" files="--config" values="--listen --operations-listen" ;;
	"version") words="" flags="" files="" values="" ;;
	esac
	if [[ " $values " == *" $prev "* ]]; then
		COMPREPLY=() # a value: nothing to offer
	elif [[ " $files " == *" $prev "* ]]; then
		COMPREPLY=($(compgen -f -- "$cur"))
	elif [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	elif [[ -n $words ]]; then
		COMPREPLY=($(compgen -W "$words" -- "$cur"))
	else
		COMPREPLY=($(compgen -f -- "$cur"))
	fi
}
complete -o filenames -F _mailbeacon mailbeacon
