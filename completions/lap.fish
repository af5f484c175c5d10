complete --keep-order --exclusive --command lap --arguments "(COMPLETE=fish lap -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token))"
