# Sourced in an interactive `zsh -f`: compinit, the generated script ($TAKOD_COMPLETION_SCRIPT),
# and Tab bound to a widget that completes the line as zsh does, writing each match the
# completion system adds to $TAKOD_COMPLETION_OUT, one a line, and the line as completion left
# it to $TAKOD_COMPLETION_OUT.line, what the menu shows for them to $TAKOD_COMPLETION_OUT.shown, then
# prints a done marker.
PS1='' RPS1='' PS2=''
# Never list the matches on the terminal: a long list would stop at "do you wish to see all ...?".
unsetopt auto_list
autoload -Uz compinit && compinit -u -D
source $TAKOD_COMPLETION_SCRIPT
compadd() {
  # -O/-A/-D only compute matches into an array for the caller: nothing is offered yet.
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi
  local -a hits
  builtin compadd -A hits "$@"
  (( $#hits )) && print -rl -- $hits >> $TAKOD_COMPLETION_OUT
  # What the menu shows for them (-d ARRAY: _describe's "name  -- help" lines) to $TAKOD_COMPLETION_OUT.shown.
  local i
  for (( i = 1; i < $#; i++ )); do
    [[ ${@[i]} == -d ]] && print -rl -- "${(@P)${@[i+1]}}" >> $TAKOD_COMPLETION_OUT.shown
  done
  builtin compadd "$@"
}
_takod_capture() {
  zle complete-word
  print -rn -- "$BUFFER" > $TAKOD_COMPLETION_OUT.line
  print -n "TAKOD-CAPTURE""-DONE"  # split so the echo of this file never matches
}
zle -N _takod_capture
bindkey '^I' _takod_capture
