# Usage: zsh -f zsh_complete.zsh CAPTURE_RC LINE
# Starts an interactive `zsh -f` on a zpty, sources CAPTURE_RC in it, types LINE and presses Tab;
# returns once that shell says the completion finished (CAPTURE_RC records the matches).
zmodload zsh/zpty
zpty takod 'zsh -f -i'
zpty -w takod "source ${(q)1}"
zpty -w -n takod "$2"$'\t'
zpty -r takod reply '*TAKOD-CAPTURE-DONE*'
zpty -d takod
