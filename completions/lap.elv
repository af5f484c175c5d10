
use builtin;
use str;

set edit:completion:arg-completer[lap] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'lap'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'lap'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run the control plane: REST and WebSocket API, store, sandboxes'
            cand login 'Save a server URL and its master key for this user'
            cand logout 'Forget the saved master key and server URL'
            cand config 'Show the effective client settings and where each comes from'
            cand agents 'Create, list, show, edit and delete agents'
            cand sessions 'Create, list, show and delete sessions'
            cand vault 'The credential vault: its CA certificate'
            cand admin 'Server administration: warm pool and session statistics'
            cand attach 'Attach this terminal to a session by id'
            cand exec 'Run a command inside a session''s sandbox'
            cand send 'Send one message to an API agent (or session) and print the reply'
            cand chat 'Chat with an API agent: a line-editing REPL over the message API'
            cand doctor 'Show which harness tools are installed for local sandboxes, and how to install the others'
            cand completions 'Print a shell completion script'
            cand man 'Write man pages'
            cand harness 'Run a sandbox''s harness (started by `lap serve`)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lap;serve'= {
            cand --listen 'Address to listen on'
            cand --data-dir 'Where the database, keys and sandboxes live [default: the XDG data dir, ~/.local/share/lap]'
            cand --backend 'Sandbox backend'
            cand --tls-cert 'Serve HTTPS and WSS with this certificate chain (PEM)'
            cand --tls-key 'Private key of --tls-cert (PEM)'
            cand --vault-resolve 'Make the vault connect to ADDR for HOST:PORT, like curl''s --resolve (repeatable); these addresses count as explicitly allowed, internal ones included'
            cand --idle-ttl 'Reap sessions with no activity (message, terminal input, attach) for this long: `90s`, `15m`, `24h`'
            cand --egress-default 'What the vault does with a destination an agent''s allow_out does not list, when it has none'
            cand --vault-upstream-ca 'Also trust this CA certificate (PEM) for upstream servers (repeatable)'
            cand --warm-pool-size 'Warm sandboxes kept ready in total, divided between the harnesses in use and recent agents (0: no pool, every session creates its sandbox)'
            cand --warm-pool-recent-agent-hours 'Agents with a session in the last this many hours get a warm sandbox with their repo cloned'
            cand --warm-pool-max-age 'Recycle warm sandboxes older than this: `30m`, `2h`'
            cand --sandbox-cgroups 'How the local backend limits memory, processes and CPU: cgroups where writable, else rlimits (`auto`), or rlimits only (`off`)'
            cand --kube-context 'Kubernetes backend: the kubeconfig context to use [default: the current one, or the in-cluster service account]'
            cand --kube-namespace 'Kubernetes backend: the namespace sandbox pods are made in [default: the context''s, else `default`]'
            cand --kube-image 'Kubernetes backend: the sandbox image (`lap` on PATH; see `kind/Dockerfile`)'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --insecure-http 'Allow plain HTTP on a non-loopback address (the master key then crosses the network in clear)'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'lap;login'= {
            cand --url 'Server URL to log in to [default: the effective server URL]'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --key-stdin 'Read the master key from the first line of stdin'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;logout'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;config'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;agents'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand list 'List agents, newest first'
            cand show 'Show one agent'
            cand create 'Create an agent'
            cand edit 'Change an agent; flags not given leave their field alone'
            cand delete 'Delete an agent; its live sessions are stopped first'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lap;agents;list'= {
            cand --search 'Only agents whose name, id or harness contains this text'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;agents;show'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;agents;create'= {
            cand --harness 'Harness: claude-code, codex, codex-app-server, gemini, hermes, opencode, claude-agent-sdk or shell [create default: opencode]'
            cand --command 'A custom agent command instead of the harness''s own ("" clears)'
            cand --repo 'Git repository cloned into /work/repo ("" clears)'
            cand --branch 'Branch to clone [create default: main]'
            cand --prompt 'System prompt for the agent ("" clears)'
            cand --model 'Model the agent uses ("" clears)'
            cand --env 'Plain, non-secret environment variable (repeatable; on edit, replaces all)'
            cand --credential 'Credential whose real value is read from this shell''s env var NAME, bound to the hosts (repeatable)'
            cand --credential-file 'Credential whose real value is read from PATH (repeatable)'
            cand --allow-out 'Allow egress only to these hosts (repeatable; on edit, replaces the list)'
            cand --deny-out 'Refuse egress to these hosts (repeatable; on edit, replaces the list)'
            cand --memory-mb 'Memory limit of each sandbox, in MiB (0: the server''s default, 4096)'
            cand --pids 'Process and thread limit of each sandbox (0: the server''s default, 1024)'
            cand --cpus 'CPU limit of each sandbox, in CPUs, fractions allowed (0: the server''s default, 2)'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;agents;edit'= {
            cand --rename 'Rename the agent'
            cand --harness 'Harness: claude-code, codex, codex-app-server, gemini, hermes, opencode, claude-agent-sdk or shell [create default: opencode]'
            cand --command 'A custom agent command instead of the harness''s own ("" clears)'
            cand --repo 'Git repository cloned into /work/repo ("" clears)'
            cand --branch 'Branch to clone [create default: main]'
            cand --prompt 'System prompt for the agent ("" clears)'
            cand --model 'Model the agent uses ("" clears)'
            cand --env 'Plain, non-secret environment variable (repeatable; on edit, replaces all)'
            cand --credential 'Credential whose real value is read from this shell''s env var NAME, bound to the hosts (repeatable)'
            cand --credential-file 'Credential whose real value is read from PATH (repeatable)'
            cand --allow-out 'Allow egress only to these hosts (repeatable; on edit, replaces the list)'
            cand --deny-out 'Refuse egress to these hosts (repeatable; on edit, replaces the list)'
            cand --memory-mb 'Memory limit of each sandbox, in MiB (0: the server''s default, 4096)'
            cand --pids 'Process and thread limit of each sandbox (0: the server''s default, 1024)'
            cand --cpus 'CPU limit of each sandbox, in CPUs, fractions allowed (0: the server''s default, 2)'
            cand --remove-credential 'Remove a credential (repeatable)'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;agents;delete'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;agents;help'= {
            cand list 'List agents, newest first'
            cand show 'Show one agent'
            cand create 'Create an agent'
            cand edit 'Change an agent; flags not given leave their field alone'
            cand delete 'Delete an agent; its live sessions are stopped first'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lap;agents;help;list'= {
        }
        &'lap;agents;help;show'= {
        }
        &'lap;agents;help;create'= {
        }
        &'lap;agents;help;edit'= {
        }
        &'lap;agents;help;delete'= {
        }
        &'lap;agents;help;help'= {
        }
        &'lap;sessions'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand list 'List sessions, newest first'
            cand show 'Show one session'
            cand create 'Start a session of an agent and wait until it is ready'
            cand egress 'Show what went through a session''s vault: requests, swaps, blocks'
            cand delete 'Stop a session: its sandbox is deleted'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lap;sessions;list'= {
            cand --agent 'Only sessions of this agent (name or id)'
            cand --limit 'At most this many'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;sessions;show'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;sessions;create'= {
            cand --title 'A title for the session'
            cand --timeout 'Give up waiting after this many seconds'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --no-wait 'Return at once, while the session is still `creating`'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;sessions;egress'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand -f 'Keep printing new records until the session ends (Ctrl-C stops)'
            cand --follow 'Keep printing new records until the session ends (Ctrl-C stops)'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;sessions;delete'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;sessions;help'= {
            cand list 'List sessions, newest first'
            cand show 'Show one session'
            cand create 'Start a session of an agent and wait until it is ready'
            cand egress 'Show what went through a session''s vault: requests, swaps, blocks'
            cand delete 'Stop a session: its sandbox is deleted'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lap;sessions;help;list'= {
        }
        &'lap;sessions;help;show'= {
        }
        &'lap;sessions;help;create'= {
        }
        &'lap;sessions;help;egress'= {
        }
        &'lap;sessions;help;delete'= {
        }
        &'lap;sessions;help;help'= {
        }
        &'lap;vault'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand ca 'Print the vault CA certificate (PEM) that sandboxes trust for intercepted HTTPS'
            cand sidecar 'Run the vault standalone, as a sandbox pod''s sidecar (Kubernetes backend)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lap;vault;ca'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;vault;sidecar'= {
            cand --listen 'Where the proxy listens (inside the pod)'
            cand --ca-dir 'Directory with the vault CA (`ca.pem`, `ca.key`)'
            cand --binding 'JSON file with the session''s binding (credentials with stubs, values and hosts; egress policy)'
            cand --admin 'Where the admin endpoint listens'
            cand --admin-token-file 'File holding the admin endpoint''s bearer token'
            cand --vault-resolve 'Make the vault connect to ADDR for HOST:PORT (repeatable), as `lap serve --vault-resolve`'
            cand --vault-upstream-ca 'Also trust this CA certificate (PEM) for upstream servers (repeatable)'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;vault;help'= {
            cand ca 'Print the vault CA certificate (PEM) that sandboxes trust for intercepted HTTPS'
            cand sidecar 'Run the vault standalone, as a sandbox pod''s sidecar (Kubernetes backend)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lap;vault;help;ca'= {
        }
        &'lap;vault;help;sidecar'= {
        }
        &'lap;vault;help;help'= {
        }
        &'lap;admin'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand stats 'Show the warm pool and sessions at a glance'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lap;admin;stats'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;admin;help'= {
            cand stats 'Show the warm pool and sessions at a glance'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lap;admin;help;stats'= {
        }
        &'lap;admin;help;help'= {
        }
        &'lap;attach'= {
            cand --detach-keys 'Keys that detach, e.g. `ctrl-d`, `ctrl-p,ctrl-q`; `none` never detaches'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;exec'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;send'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --stream 'Print the reply as it arrives'
            cand --new 'Start a new session even when the agent has a live one'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;chat'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --new 'Start a new session even when the agent has a live one'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;doctor'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;completions'= {
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;man'= {
            cand --out 'Directory to write the pages to'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;harness'= {
            cand --config 'The sandbox''s `config.json`, written by `lap serve`'
            cand --server 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]'
            cand --probe 'Only check that this process can create the sandbox namespaces'
            cand --json 'Print data as JSON'
            cand -q 'Print only data and errors: no status lines, no spinners'
            cand --quiet 'Print only data and errors: no status lines, no spinners'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --no-color 'Never use colour (also when NO_COLOR is set)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'lap;help'= {
            cand serve 'Run the control plane: REST and WebSocket API, store, sandboxes'
            cand login 'Save a server URL and its master key for this user'
            cand logout 'Forget the saved master key and server URL'
            cand config 'Show the effective client settings and where each comes from'
            cand agents 'Create, list, show, edit and delete agents'
            cand sessions 'Create, list, show and delete sessions'
            cand vault 'The credential vault: its CA certificate'
            cand admin 'Server administration: warm pool and session statistics'
            cand attach 'Attach this terminal to a session by id'
            cand exec 'Run a command inside a session''s sandbox'
            cand send 'Send one message to an API agent (or session) and print the reply'
            cand chat 'Chat with an API agent: a line-editing REPL over the message API'
            cand doctor 'Show which harness tools are installed for local sandboxes, and how to install the others'
            cand completions 'Print a shell completion script'
            cand man 'Write man pages'
            cand harness 'Run a sandbox''s harness (started by `lap serve`)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lap;help;serve'= {
        }
        &'lap;help;login'= {
        }
        &'lap;help;logout'= {
        }
        &'lap;help;config'= {
        }
        &'lap;help;agents'= {
            cand list 'List agents, newest first'
            cand show 'Show one agent'
            cand create 'Create an agent'
            cand edit 'Change an agent; flags not given leave their field alone'
            cand delete 'Delete an agent; its live sessions are stopped first'
        }
        &'lap;help;agents;list'= {
        }
        &'lap;help;agents;show'= {
        }
        &'lap;help;agents;create'= {
        }
        &'lap;help;agents;edit'= {
        }
        &'lap;help;agents;delete'= {
        }
        &'lap;help;sessions'= {
            cand list 'List sessions, newest first'
            cand show 'Show one session'
            cand create 'Start a session of an agent and wait until it is ready'
            cand egress 'Show what went through a session''s vault: requests, swaps, blocks'
            cand delete 'Stop a session: its sandbox is deleted'
        }
        &'lap;help;sessions;list'= {
        }
        &'lap;help;sessions;show'= {
        }
        &'lap;help;sessions;create'= {
        }
        &'lap;help;sessions;egress'= {
        }
        &'lap;help;sessions;delete'= {
        }
        &'lap;help;vault'= {
            cand ca 'Print the vault CA certificate (PEM) that sandboxes trust for intercepted HTTPS'
            cand sidecar 'Run the vault standalone, as a sandbox pod''s sidecar (Kubernetes backend)'
        }
        &'lap;help;vault;ca'= {
        }
        &'lap;help;vault;sidecar'= {
        }
        &'lap;help;admin'= {
            cand stats 'Show the warm pool and sessions at a glance'
        }
        &'lap;help;admin;stats'= {
        }
        &'lap;help;attach'= {
        }
        &'lap;help;exec'= {
        }
        &'lap;help;send'= {
        }
        &'lap;help;chat'= {
        }
        &'lap;help;doctor'= {
        }
        &'lap;help;completions'= {
        }
        &'lap;help;man'= {
        }
        &'lap;help;harness'= {
        }
        &'lap;help;help'= {
        }
    ]
    $completions[$command]
}
