# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_lap_global_optspecs
    string join \n server= json q/quiet v/verbose no-color h/help V/version
end

function __fish_lap_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_lap_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_lap_using_subcommand
    set -l cmd (__fish_lap_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c lap -n "__fish_lap_needs_command" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_needs_command" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_needs_command" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_needs_command" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_needs_command" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_needs_command" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_needs_command" -s V -l version -d 'Print version'
complete -c lap -n "__fish_lap_needs_command" -f -a "serve" -d 'Run the control plane: REST and WebSocket API, store, sandboxes'
complete -c lap -n "__fish_lap_needs_command" -f -a "login" -d 'Save a server URL and its master key for this user'
complete -c lap -n "__fish_lap_needs_command" -f -a "logout" -d 'Forget the saved master key and server URL'
complete -c lap -n "__fish_lap_needs_command" -f -a "config" -d 'Show the effective client settings and where each comes from'
complete -c lap -n "__fish_lap_needs_command" -f -a "agents" -d 'Create, list, show, edit and delete agents'
complete -c lap -n "__fish_lap_needs_command" -f -a "sessions" -d 'Create, list, show and delete sessions'
complete -c lap -n "__fish_lap_needs_command" -f -a "vault" -d 'The credential vault: its CA certificate'
complete -c lap -n "__fish_lap_needs_command" -f -a "admin" -d 'Server administration: warm pool and session statistics'
complete -c lap -n "__fish_lap_needs_command" -f -a "attach" -d 'Attach this terminal to a session by id'
complete -c lap -n "__fish_lap_needs_command" -f -a "exec" -d 'Run a command inside a session\'s sandbox'
complete -c lap -n "__fish_lap_needs_command" -f -a "send" -d 'Send one message to an API agent (or session) and print the reply'
complete -c lap -n "__fish_lap_needs_command" -f -a "chat" -d 'Chat with an API agent: a line-editing REPL over the message API'
complete -c lap -n "__fish_lap_needs_command" -f -a "doctor" -d 'Show which harness tools are installed for local sandboxes, and how to install the others'
complete -c lap -n "__fish_lap_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c lap -n "__fish_lap_needs_command" -f -a "man" -d 'Write man pages'
complete -c lap -n "__fish_lap_needs_command" -f -a "harness" -d 'Run a sandbox\'s harness (started by `lap serve`)'
complete -c lap -n "__fish_lap_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lap -n "__fish_lap_using_subcommand serve" -l listen -d 'Address to listen on' -r
complete -c lap -n "__fish_lap_using_subcommand serve" -l data-dir -d 'Where the database, keys and sandboxes live [default: the XDG data dir, ~/.local/share/lap]' -r -F
complete -c lap -n "__fish_lap_using_subcommand serve" -l backend -d 'Sandbox backend' -r -f -a "local\t'Linux namespaces on this machine'
kube\t'Pods in a Kubernetes cluster'"
complete -c lap -n "__fish_lap_using_subcommand serve" -l tls-cert -d 'Serve HTTPS and WSS with this certificate chain (PEM)' -r -F
complete -c lap -n "__fish_lap_using_subcommand serve" -l tls-key -d 'Private key of --tls-cert (PEM)' -r -F
complete -c lap -n "__fish_lap_using_subcommand serve" -l vault-resolve -d 'Make the vault connect to ADDR for HOST:PORT, like curl\'s --resolve (repeatable); these addresses count as explicitly allowed, internal ones included' -r
complete -c lap -n "__fish_lap_using_subcommand serve" -l idle-ttl -d 'Reap sessions with no activity (message, terminal input, attach) for this long: `90s`, `15m`, `24h`' -r
complete -c lap -n "__fish_lap_using_subcommand serve" -l egress-default -d 'What the vault does with a destination an agent\'s allow_out does not list, when it has none' -r -f -a "allow\t'Every public destination is reachable unless deny_out names it'
deny\t'Only destinations in the agent\'s allow_out are reachable'"
complete -c lap -n "__fish_lap_using_subcommand serve" -l vault-upstream-ca -d 'Also trust this CA certificate (PEM) for upstream servers (repeatable)' -r -F
complete -c lap -n "__fish_lap_using_subcommand serve" -l warm-pool-size -d 'Warm sandboxes kept ready in total, divided between the harnesses in use and recent agents (0: no pool, every session creates its sandbox)' -r
complete -c lap -n "__fish_lap_using_subcommand serve" -l warm-pool-recent-agent-hours -d 'Agents with a session in the last this many hours get a warm sandbox with their repo cloned' -r
complete -c lap -n "__fish_lap_using_subcommand serve" -l warm-pool-max-age -d 'Recycle warm sandboxes older than this: `30m`, `2h`' -r
complete -c lap -n "__fish_lap_using_subcommand serve" -l sandbox-cgroups -d 'How the local backend limits memory, processes and CPU: cgroups where writable, else rlimits (`auto`), or rlimits only (`off`)' -r -f -a "auto\t'cgroup v1 or v2 where writable, rlimits for the rest'
off\t'rlimits only'"
complete -c lap -n "__fish_lap_using_subcommand serve" -l kube-context -d 'Kubernetes backend: the kubeconfig context to use [default: the current one, or the in-cluster service account]' -r
complete -c lap -n "__fish_lap_using_subcommand serve" -l kube-namespace -d 'Kubernetes backend: the namespace sandbox pods are made in [default: the context\'s, else `default`]' -r
complete -c lap -n "__fish_lap_using_subcommand serve" -l kube-image -d 'Kubernetes backend: the sandbox image (`lap` on PATH; see `kind/Dockerfile`)' -r
complete -c lap -n "__fish_lap_using_subcommand serve" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand serve" -l insecure-http -d 'Allow plain HTTP on a non-loopback address (the master key then crosses the network in clear)'
complete -c lap -n "__fish_lap_using_subcommand serve" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand serve" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand serve" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand serve" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lap -n "__fish_lap_using_subcommand login" -l url -d 'Server URL to log in to [default: the effective server URL]' -r
complete -c lap -n "__fish_lap_using_subcommand login" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand login" -l key-stdin -d 'Read the master key from the first line of stdin'
complete -c lap -n "__fish_lap_using_subcommand login" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand login" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand login" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand login" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand login" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand logout" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand logout" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand logout" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand logout" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand logout" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand logout" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand config" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand config" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand config" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand config" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand config" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand config" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -f -a "list" -d 'List agents, newest first'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -f -a "show" -d 'Show one agent'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -f -a "create" -d 'Create an agent'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -f -a "edit" -d 'Change an agent; flags not given leave their field alone'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -f -a "delete" -d 'Delete an agent; its live sessions are stopped first'
complete -c lap -n "__fish_lap_using_subcommand agents; and not __fish_seen_subcommand_from list show create edit delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from list" -l search -d 'Only agents whose name, id or harness contains this text' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from list" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from list" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from show" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from show" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from show" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l harness -d 'Harness: claude-code, codex, codex-app-server, gemini, hermes, opencode, claude-agent-sdk or shell [create default: opencode]' -r -f -a "claude-code\t''
codex\t''
codex-app-server\t''
gemini\t''
hermes\t''
opencode\t''
claude-agent-sdk\t''
shell\t''"
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l command -d 'A custom agent command instead of the harness\'s own ("" clears)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l repo -d 'Git repository cloned into /work/repo ("" clears)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l branch -d 'Branch to clone [create default: main]' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l prompt -d 'System prompt for the agent ("" clears)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l model -d 'Model the agent uses ("" clears)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l env -d 'Plain, non-secret environment variable (repeatable; on edit, replaces all)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l credential -d 'Credential whose real value is read from this shell\'s env var NAME, bound to the hosts (repeatable)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l credential-file -d 'Credential whose real value is read from PATH (repeatable)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l allow-out -d 'Allow egress only to these hosts (repeatable; on edit, replaces the list)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l deny-out -d 'Refuse egress to these hosts (repeatable; on edit, replaces the list)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l memory-mb -d 'Memory limit of each sandbox, in MiB (0: the server\'s default, 4096)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l pids -d 'Process and thread limit of each sandbox (0: the server\'s default, 1024)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l cpus -d 'CPU limit of each sandbox, in CPUs, fractions allowed (0: the server\'s default, 2)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l rename -d 'Rename the agent' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l harness -d 'Harness: claude-code, codex, codex-app-server, gemini, hermes, opencode, claude-agent-sdk or shell [create default: opencode]' -r -f -a "claude-code\t''
codex\t''
codex-app-server\t''
gemini\t''
hermes\t''
opencode\t''
claude-agent-sdk\t''
shell\t''"
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l command -d 'A custom agent command instead of the harness\'s own ("" clears)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l repo -d 'Git repository cloned into /work/repo ("" clears)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l branch -d 'Branch to clone [create default: main]' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l prompt -d 'System prompt for the agent ("" clears)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l model -d 'Model the agent uses ("" clears)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l env -d 'Plain, non-secret environment variable (repeatable; on edit, replaces all)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l credential -d 'Credential whose real value is read from this shell\'s env var NAME, bound to the hosts (repeatable)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l credential-file -d 'Credential whose real value is read from PATH (repeatable)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l allow-out -d 'Allow egress only to these hosts (repeatable; on edit, replaces the list)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l deny-out -d 'Refuse egress to these hosts (repeatable; on edit, replaces the list)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l memory-mb -d 'Memory limit of each sandbox, in MiB (0: the server\'s default, 4096)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l pids -d 'Process and thread limit of each sandbox (0: the server\'s default, 1024)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l cpus -d 'CPU limit of each sandbox, in CPUs, fractions allowed (0: the server\'s default, 2)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l remove-credential -d 'Remove a credential (repeatable)' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from edit" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from delete" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from delete" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from delete" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from delete" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from delete" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from help" -f -a "list" -d 'List agents, newest first'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one agent'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create an agent'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from help" -f -a "edit" -d 'Change an agent; flags not given leave their field alone'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete an agent; its live sessions are stopped first'
complete -c lap -n "__fish_lap_using_subcommand agents; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -f -a "list" -d 'List sessions, newest first'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -f -a "show" -d 'Show one session'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -f -a "create" -d 'Start a session of an agent and wait until it is ready'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -f -a "egress" -d 'Show what went through a session\'s vault: requests, swaps, blocks'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -f -a "delete" -d 'Stop a session: its sandbox is deleted'
complete -c lap -n "__fish_lap_using_subcommand sessions; and not __fish_seen_subcommand_from list show create egress delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from list" -l agent -d 'Only sessions of this agent (name or id)' -r
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from list" -l limit -d 'At most this many' -r
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from list" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from list" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from list" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from show" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from show" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from show" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from create" -l title -d 'A title for the session' -r
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from create" -l timeout -d 'Give up waiting after this many seconds' -r
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from create" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from create" -l no-wait -d 'Return at once, while the session is still `creating`'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from create" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from create" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from create" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from egress" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from egress" -s f -l follow -d 'Keep printing new records until the session ends (Ctrl-C stops)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from egress" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from egress" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from egress" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from egress" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from egress" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from delete" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from delete" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from delete" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from delete" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from delete" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "list" -d 'List sessions, newest first'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one session'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "create" -d 'Start a session of an agent and wait until it is ready'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "egress" -d 'Show what went through a session\'s vault: requests, swaps, blocks'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Stop a session: its sandbox is deleted'
complete -c lap -n "__fish_lap_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lap -n "__fish_lap_using_subcommand vault; and not __fish_seen_subcommand_from ca sidecar help" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand vault; and not __fish_seen_subcommand_from ca sidecar help" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand vault; and not __fish_seen_subcommand_from ca sidecar help" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand vault; and not __fish_seen_subcommand_from ca sidecar help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand vault; and not __fish_seen_subcommand_from ca sidecar help" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand vault; and not __fish_seen_subcommand_from ca sidecar help" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand vault; and not __fish_seen_subcommand_from ca sidecar help" -f -a "ca" -d 'Print the vault CA certificate (PEM) that sandboxes trust for intercepted HTTPS'
complete -c lap -n "__fish_lap_using_subcommand vault; and not __fish_seen_subcommand_from ca sidecar help" -f -a "sidecar" -d 'Run the vault standalone, as a sandbox pod\'s sidecar (Kubernetes backend)'
complete -c lap -n "__fish_lap_using_subcommand vault; and not __fish_seen_subcommand_from ca sidecar help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from ca" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from ca" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from ca" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from ca" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from ca" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from ca" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -l listen -d 'Where the proxy listens (inside the pod)' -r
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -l ca-dir -d 'Directory with the vault CA (`ca.pem`, `ca.key`)' -r -F
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -l binding -d 'JSON file with the session\'s binding (credentials with stubs, values and hosts; egress policy)' -r -F
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -l admin -d 'Where the admin endpoint listens' -r
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -l admin-token-file -d 'File holding the admin endpoint\'s bearer token' -r -F
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -l vault-resolve -d 'Make the vault connect to ADDR for HOST:PORT (repeatable), as `lap serve --vault-resolve`' -r
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -l vault-upstream-ca -d 'Also trust this CA certificate (PEM) for upstream servers (repeatable)' -r -F
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from sidecar" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "ca" -d 'Print the vault CA certificate (PEM) that sandboxes trust for intercepted HTTPS'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "sidecar" -d 'Run the vault standalone, as a sandbox pod\'s sidecar (Kubernetes backend)'
complete -c lap -n "__fish_lap_using_subcommand vault; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lap -n "__fish_lap_using_subcommand admin; and not __fish_seen_subcommand_from stats help" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand admin; and not __fish_seen_subcommand_from stats help" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand admin; and not __fish_seen_subcommand_from stats help" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand admin; and not __fish_seen_subcommand_from stats help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand admin; and not __fish_seen_subcommand_from stats help" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand admin; and not __fish_seen_subcommand_from stats help" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand admin; and not __fish_seen_subcommand_from stats help" -f -a "stats" -d 'Show the warm pool and sessions at a glance'
complete -c lap -n "__fish_lap_using_subcommand admin; and not __fish_seen_subcommand_from stats help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lap -n "__fish_lap_using_subcommand admin; and __fish_seen_subcommand_from stats" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand admin; and __fish_seen_subcommand_from stats" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand admin; and __fish_seen_subcommand_from stats" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand admin; and __fish_seen_subcommand_from stats" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand admin; and __fish_seen_subcommand_from stats" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand admin; and __fish_seen_subcommand_from stats" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand admin; and __fish_seen_subcommand_from help" -f -a "stats" -d 'Show the warm pool and sessions at a glance'
complete -c lap -n "__fish_lap_using_subcommand admin; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lap -n "__fish_lap_using_subcommand attach" -l detach-keys -d 'Keys that detach, e.g. `ctrl-d`, `ctrl-p,ctrl-q`; `none` never detaches' -r
complete -c lap -n "__fish_lap_using_subcommand attach" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand attach" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand attach" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand attach" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand attach" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand attach" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand exec" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand exec" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand exec" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand exec" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand exec" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand exec" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand send" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand send" -l stream -d 'Print the reply as it arrives'
complete -c lap -n "__fish_lap_using_subcommand send" -l new -d 'Start a new session even when the agent has a live one'
complete -c lap -n "__fish_lap_using_subcommand send" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand send" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand send" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand send" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand send" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand chat" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand chat" -l new -d 'Start a new session even when the agent has a live one'
complete -c lap -n "__fish_lap_using_subcommand chat" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand chat" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand chat" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand chat" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand chat" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand doctor" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand doctor" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand doctor" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand doctor" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand doctor" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand completions" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand completions" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand completions" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand completions" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand completions" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand completions" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand man" -l out -d 'Directory to write the pages to' -r -F
complete -c lap -n "__fish_lap_using_subcommand man" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand man" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand man" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand man" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand man" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand man" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand harness" -l config -d 'The sandbox\'s `config.json`, written by `lap serve`' -r -F
complete -c lap -n "__fish_lap_using_subcommand harness" -l server -d 'Server URL [default: the config file\'s, else http://127.0.0.1:3000; env: LAP_URL]' -r
complete -c lap -n "__fish_lap_using_subcommand harness" -l probe -d 'Only check that this process can create the sandbox namespaces'
complete -c lap -n "__fish_lap_using_subcommand harness" -l json -d 'Print data as JSON'
complete -c lap -n "__fish_lap_using_subcommand harness" -s q -l quiet -d 'Print only data and errors: no status lines, no spinners'
complete -c lap -n "__fish_lap_using_subcommand harness" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lap -n "__fish_lap_using_subcommand harness" -l no-color -d 'Never use colour (also when NO_COLOR is set)'
complete -c lap -n "__fish_lap_using_subcommand harness" -s h -l help -d 'Print help'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "serve" -d 'Run the control plane: REST and WebSocket API, store, sandboxes'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "login" -d 'Save a server URL and its master key for this user'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "logout" -d 'Forget the saved master key and server URL'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "config" -d 'Show the effective client settings and where each comes from'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "agents" -d 'Create, list, show, edit and delete agents'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "sessions" -d 'Create, list, show and delete sessions'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "vault" -d 'The credential vault: its CA certificate'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "admin" -d 'Server administration: warm pool and session statistics'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "attach" -d 'Attach this terminal to a session by id'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "exec" -d 'Run a command inside a session\'s sandbox'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "send" -d 'Send one message to an API agent (or session) and print the reply'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "chat" -d 'Chat with an API agent: a line-editing REPL over the message API'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "doctor" -d 'Show which harness tools are installed for local sandboxes, and how to install the others'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "completions" -d 'Print a shell completion script'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "man" -d 'Write man pages'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "harness" -d 'Run a sandbox\'s harness (started by `lap serve`)'
complete -c lap -n "__fish_lap_using_subcommand help; and not __fish_seen_subcommand_from serve login logout config agents sessions vault admin attach exec send chat doctor completions man harness help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from agents" -f -a "list" -d 'List agents, newest first'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from agents" -f -a "show" -d 'Show one agent'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from agents" -f -a "create" -d 'Create an agent'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from agents" -f -a "edit" -d 'Change an agent; flags not given leave their field alone'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from agents" -f -a "delete" -d 'Delete an agent; its live sessions are stopped first'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "list" -d 'List sessions, newest first'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "show" -d 'Show one session'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "create" -d 'Start a session of an agent and wait until it is ready'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "egress" -d 'Show what went through a session\'s vault: requests, swaps, blocks'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "delete" -d 'Stop a session: its sandbox is deleted'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "ca" -d 'Print the vault CA certificate (PEM) that sandboxes trust for intercepted HTTPS'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from vault" -f -a "sidecar" -d 'Run the vault standalone, as a sandbox pod\'s sidecar (Kubernetes backend)'
complete -c lap -n "__fish_lap_using_subcommand help; and __fish_seen_subcommand_from admin" -f -a "stats" -d 'Show the warm pool and sessions at a glance'
