
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'lap' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'lap'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'lap' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the control plane: REST and WebSocket API, store, sandboxes')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Save a server URL and its master key for this user')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Forget the saved master key and server URL')
            [CompletionResult]::new('config', 'config', [CompletionResultType]::ParameterValue, 'Show the effective client settings and where each comes from')
            [CompletionResult]::new('agents', 'agents', [CompletionResultType]::ParameterValue, 'Create, list, show, edit and delete agents')
            [CompletionResult]::new('sessions', 'sessions', [CompletionResultType]::ParameterValue, 'Create, list, show and delete sessions')
            [CompletionResult]::new('vault', 'vault', [CompletionResultType]::ParameterValue, 'The credential vault: its CA certificate')
            [CompletionResult]::new('admin', 'admin', [CompletionResultType]::ParameterValue, 'Server administration: warm pool and session statistics')
            [CompletionResult]::new('attach', 'attach', [CompletionResultType]::ParameterValue, 'Attach this terminal to a session by id')
            [CompletionResult]::new('exec', 'exec', [CompletionResultType]::ParameterValue, 'Run a command inside a session''s sandbox')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Send one message to an API agent (or session) and print the reply')
            [CompletionResult]::new('chat', 'chat', [CompletionResultType]::ParameterValue, 'Chat with an API agent: a line-editing REPL over the message API')
            [CompletionResult]::new('doctor', 'doctor', [CompletionResultType]::ParameterValue, 'Show which harness tools are installed for local sandboxes, and how to install the others')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Write man pages')
            [CompletionResult]::new('harness', 'harness', [CompletionResultType]::ParameterValue, 'Run a sandbox''s harness (started by `lap serve`)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lap;serve' {
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address to listen on')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Where the database, keys and sandboxes live [default: the XDG data dir, ~/.local/share/lap]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Sandbox backend')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Serve HTTPS and WSS with this certificate chain (PEM)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key of --tls-cert (PEM)')
            [CompletionResult]::new('--vault-resolve', '--vault-resolve', [CompletionResultType]::ParameterName, 'Make the vault connect to ADDR for HOST:PORT, like curl''s --resolve (repeatable); these addresses count as explicitly allowed, internal ones included')
            [CompletionResult]::new('--idle-ttl', '--idle-ttl', [CompletionResultType]::ParameterName, 'Reap sessions with no activity (message, terminal input, attach) for this long: `90s`, `15m`, `24h`')
            [CompletionResult]::new('--egress-default', '--egress-default', [CompletionResultType]::ParameterName, 'What the vault does with a destination an agent''s allow_out does not list, when it has none')
            [CompletionResult]::new('--vault-upstream-ca', '--vault-upstream-ca', [CompletionResultType]::ParameterName, 'Also trust this CA certificate (PEM) for upstream servers (repeatable)')
            [CompletionResult]::new('--warm-pool-size', '--warm-pool-size', [CompletionResultType]::ParameterName, 'Warm sandboxes kept ready in total, divided between the harnesses in use and recent agents (0: no pool, every session creates its sandbox)')
            [CompletionResult]::new('--warm-pool-recent-agent-hours', '--warm-pool-recent-agent-hours', [CompletionResultType]::ParameterName, 'Agents with a session in the last this many hours get a warm sandbox with their repo cloned')
            [CompletionResult]::new('--warm-pool-max-age', '--warm-pool-max-age', [CompletionResultType]::ParameterName, 'Recycle warm sandboxes older than this: `30m`, `2h`')
            [CompletionResult]::new('--sandbox-cgroups', '--sandbox-cgroups', [CompletionResultType]::ParameterName, 'How the local backend limits memory, processes and CPU: cgroups where writable, else rlimits (`auto`), or rlimits only (`off`)')
            [CompletionResult]::new('--kube-context', '--kube-context', [CompletionResultType]::ParameterName, 'Kubernetes backend: the kubeconfig context to use [default: the current one, or the in-cluster service account]')
            [CompletionResult]::new('--kube-namespace', '--kube-namespace', [CompletionResultType]::ParameterName, 'Kubernetes backend: the namespace sandbox pods are made in [default: the context''s, else `default`]')
            [CompletionResult]::new('--kube-image', '--kube-image', [CompletionResultType]::ParameterName, 'Kubernetes backend: the sandbox image (`lap` on PATH; see `kind/Dockerfile`)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--insecure-http', '--insecure-http', [CompletionResultType]::ParameterName, 'Allow plain HTTP on a non-loopback address (the master key then crosses the network in clear)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'lap;login' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Server URL to log in to [default: the effective server URL]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--key-stdin', '--key-stdin', [CompletionResultType]::ParameterName, 'Read the master key from the first line of stdin')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;logout' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;config' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;agents' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List agents, newest first')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one agent')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an agent')
            [CompletionResult]::new('edit', 'edit', [CompletionResultType]::ParameterValue, 'Change an agent; flags not given leave their field alone')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete an agent; its live sessions are stopped first')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lap;agents;list' {
            [CompletionResult]::new('--search', '--search', [CompletionResultType]::ParameterName, 'Only agents whose name, id or harness contains this text')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;agents;show' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;agents;create' {
            [CompletionResult]::new('--harness', '--harness', [CompletionResultType]::ParameterName, 'Harness: claude-code, codex, codex-app-server, gemini, hermes, opencode, claude-agent-sdk or shell [create default: opencode]')
            [CompletionResult]::new('--command', '--command', [CompletionResultType]::ParameterName, 'A custom agent command instead of the harness''s own ("" clears)')
            [CompletionResult]::new('--repo', '--repo', [CompletionResultType]::ParameterName, 'Git repository cloned into /work/repo ("" clears)')
            [CompletionResult]::new('--branch', '--branch', [CompletionResultType]::ParameterName, 'Branch to clone [create default: main]')
            [CompletionResult]::new('--prompt', '--prompt', [CompletionResultType]::ParameterName, 'System prompt for the agent ("" clears)')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'Model the agent uses ("" clears)')
            [CompletionResult]::new('--env', '--env', [CompletionResultType]::ParameterName, 'Plain, non-secret environment variable (repeatable; on edit, replaces all)')
            [CompletionResult]::new('--credential', '--credential', [CompletionResultType]::ParameterName, 'Credential whose real value is read from this shell''s env var NAME, bound to the hosts (repeatable)')
            [CompletionResult]::new('--credential-file', '--credential-file', [CompletionResultType]::ParameterName, 'Credential whose real value is read from PATH (repeatable)')
            [CompletionResult]::new('--allow-out', '--allow-out', [CompletionResultType]::ParameterName, 'Allow egress only to these hosts (repeatable; on edit, replaces the list)')
            [CompletionResult]::new('--deny-out', '--deny-out', [CompletionResultType]::ParameterName, 'Refuse egress to these hosts (repeatable; on edit, replaces the list)')
            [CompletionResult]::new('--memory-mb', '--memory-mb', [CompletionResultType]::ParameterName, 'Memory limit of each sandbox, in MiB (0: the server''s default, 4096)')
            [CompletionResult]::new('--pids', '--pids', [CompletionResultType]::ParameterName, 'Process and thread limit of each sandbox (0: the server''s default, 1024)')
            [CompletionResult]::new('--cpus', '--cpus', [CompletionResultType]::ParameterName, 'CPU limit of each sandbox, in CPUs, fractions allowed (0: the server''s default, 2)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;agents;edit' {
            [CompletionResult]::new('--rename', '--rename', [CompletionResultType]::ParameterName, 'Rename the agent')
            [CompletionResult]::new('--harness', '--harness', [CompletionResultType]::ParameterName, 'Harness: claude-code, codex, codex-app-server, gemini, hermes, opencode, claude-agent-sdk or shell [create default: opencode]')
            [CompletionResult]::new('--command', '--command', [CompletionResultType]::ParameterName, 'A custom agent command instead of the harness''s own ("" clears)')
            [CompletionResult]::new('--repo', '--repo', [CompletionResultType]::ParameterName, 'Git repository cloned into /work/repo ("" clears)')
            [CompletionResult]::new('--branch', '--branch', [CompletionResultType]::ParameterName, 'Branch to clone [create default: main]')
            [CompletionResult]::new('--prompt', '--prompt', [CompletionResultType]::ParameterName, 'System prompt for the agent ("" clears)')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'Model the agent uses ("" clears)')
            [CompletionResult]::new('--env', '--env', [CompletionResultType]::ParameterName, 'Plain, non-secret environment variable (repeatable; on edit, replaces all)')
            [CompletionResult]::new('--credential', '--credential', [CompletionResultType]::ParameterName, 'Credential whose real value is read from this shell''s env var NAME, bound to the hosts (repeatable)')
            [CompletionResult]::new('--credential-file', '--credential-file', [CompletionResultType]::ParameterName, 'Credential whose real value is read from PATH (repeatable)')
            [CompletionResult]::new('--allow-out', '--allow-out', [CompletionResultType]::ParameterName, 'Allow egress only to these hosts (repeatable; on edit, replaces the list)')
            [CompletionResult]::new('--deny-out', '--deny-out', [CompletionResultType]::ParameterName, 'Refuse egress to these hosts (repeatable; on edit, replaces the list)')
            [CompletionResult]::new('--memory-mb', '--memory-mb', [CompletionResultType]::ParameterName, 'Memory limit of each sandbox, in MiB (0: the server''s default, 4096)')
            [CompletionResult]::new('--pids', '--pids', [CompletionResultType]::ParameterName, 'Process and thread limit of each sandbox (0: the server''s default, 1024)')
            [CompletionResult]::new('--cpus', '--cpus', [CompletionResultType]::ParameterName, 'CPU limit of each sandbox, in CPUs, fractions allowed (0: the server''s default, 2)')
            [CompletionResult]::new('--remove-credential', '--remove-credential', [CompletionResultType]::ParameterName, 'Remove a credential (repeatable)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;agents;delete' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;agents;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List agents, newest first')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one agent')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an agent')
            [CompletionResult]::new('edit', 'edit', [CompletionResultType]::ParameterValue, 'Change an agent; flags not given leave their field alone')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete an agent; its live sessions are stopped first')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lap;agents;help;list' {
            break
        }
        'lap;agents;help;show' {
            break
        }
        'lap;agents;help;create' {
            break
        }
        'lap;agents;help;edit' {
            break
        }
        'lap;agents;help;delete' {
            break
        }
        'lap;agents;help;help' {
            break
        }
        'lap;sessions' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List sessions, newest first')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one session')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Start a session of an agent and wait until it is ready')
            [CompletionResult]::new('egress', 'egress', [CompletionResultType]::ParameterValue, 'Show what went through a session''s vault: requests, swaps, blocks')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Stop a session: its sandbox is deleted')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lap;sessions;list' {
            [CompletionResult]::new('--agent', '--agent', [CompletionResultType]::ParameterName, 'Only sessions of this agent (name or id)')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most this many')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;sessions;show' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;sessions;create' {
            [CompletionResult]::new('--title', '--title', [CompletionResultType]::ParameterName, 'A title for the session')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Give up waiting after this many seconds')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--no-wait', '--no-wait', [CompletionResultType]::ParameterName, 'Return at once, while the session is still `creating`')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;sessions;egress' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep printing new records until the session ends (Ctrl-C stops)')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep printing new records until the session ends (Ctrl-C stops)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;sessions;delete' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;sessions;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List sessions, newest first')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one session')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Start a session of an agent and wait until it is ready')
            [CompletionResult]::new('egress', 'egress', [CompletionResultType]::ParameterValue, 'Show what went through a session''s vault: requests, swaps, blocks')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Stop a session: its sandbox is deleted')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lap;sessions;help;list' {
            break
        }
        'lap;sessions;help;show' {
            break
        }
        'lap;sessions;help;create' {
            break
        }
        'lap;sessions;help;egress' {
            break
        }
        'lap;sessions;help;delete' {
            break
        }
        'lap;sessions;help;help' {
            break
        }
        'lap;vault' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('ca', 'ca', [CompletionResultType]::ParameterValue, 'Print the vault CA certificate (PEM) that sandboxes trust for intercepted HTTPS')
            [CompletionResult]::new('sidecar', 'sidecar', [CompletionResultType]::ParameterValue, 'Run the vault standalone, as a sandbox pod''s sidecar (Kubernetes backend)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lap;vault;ca' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;vault;sidecar' {
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Where the proxy listens (inside the pod)')
            [CompletionResult]::new('--ca-dir', '--ca-dir', [CompletionResultType]::ParameterName, 'Directory with the vault CA (`ca.pem`, `ca.key`)')
            [CompletionResult]::new('--binding', '--binding', [CompletionResultType]::ParameterName, 'JSON file with the session''s binding (credentials with stubs, values and hosts; egress policy)')
            [CompletionResult]::new('--admin', '--admin', [CompletionResultType]::ParameterName, 'Where the admin endpoint listens')
            [CompletionResult]::new('--admin-token-file', '--admin-token-file', [CompletionResultType]::ParameterName, 'File holding the admin endpoint''s bearer token')
            [CompletionResult]::new('--vault-resolve', '--vault-resolve', [CompletionResultType]::ParameterName, 'Make the vault connect to ADDR for HOST:PORT (repeatable), as `lap serve --vault-resolve`')
            [CompletionResult]::new('--vault-upstream-ca', '--vault-upstream-ca', [CompletionResultType]::ParameterName, 'Also trust this CA certificate (PEM) for upstream servers (repeatable)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;vault;help' {
            [CompletionResult]::new('ca', 'ca', [CompletionResultType]::ParameterValue, 'Print the vault CA certificate (PEM) that sandboxes trust for intercepted HTTPS')
            [CompletionResult]::new('sidecar', 'sidecar', [CompletionResultType]::ParameterValue, 'Run the vault standalone, as a sandbox pod''s sidecar (Kubernetes backend)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lap;vault;help;ca' {
            break
        }
        'lap;vault;help;sidecar' {
            break
        }
        'lap;vault;help;help' {
            break
        }
        'lap;admin' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'Show the warm pool and sessions at a glance')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lap;admin;stats' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;admin;help' {
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'Show the warm pool and sessions at a glance')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lap;admin;help;stats' {
            break
        }
        'lap;admin;help;help' {
            break
        }
        'lap;attach' {
            [CompletionResult]::new('--detach-keys', '--detach-keys', [CompletionResultType]::ParameterName, 'Keys that detach, e.g. `ctrl-d`, `ctrl-p,ctrl-q`; `none` never detaches')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;exec' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;send' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--stream', '--stream', [CompletionResultType]::ParameterName, 'Print the reply as it arrives')
            [CompletionResult]::new('--new', '--new', [CompletionResultType]::ParameterName, 'Start a new session even when the agent has a live one')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;chat' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--new', '--new', [CompletionResultType]::ParameterName, 'Start a new session even when the agent has a live one')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;doctor' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;completions' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;man' {
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Directory to write the pages to')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;harness' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'The sandbox''s `config.json`, written by `lap serve`')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server URL [default: the config file''s, else http://127.0.0.1:3000; env: LAP_URL]')
            [CompletionResult]::new('--probe', '--probe', [CompletionResultType]::ParameterName, 'Only check that this process can create the sandbox namespaces')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print data as JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only data and errors: no status lines, no spinners')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also when NO_COLOR is set)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'lap;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the control plane: REST and WebSocket API, store, sandboxes')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Save a server URL and its master key for this user')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Forget the saved master key and server URL')
            [CompletionResult]::new('config', 'config', [CompletionResultType]::ParameterValue, 'Show the effective client settings and where each comes from')
            [CompletionResult]::new('agents', 'agents', [CompletionResultType]::ParameterValue, 'Create, list, show, edit and delete agents')
            [CompletionResult]::new('sessions', 'sessions', [CompletionResultType]::ParameterValue, 'Create, list, show and delete sessions')
            [CompletionResult]::new('vault', 'vault', [CompletionResultType]::ParameterValue, 'The credential vault: its CA certificate')
            [CompletionResult]::new('admin', 'admin', [CompletionResultType]::ParameterValue, 'Server administration: warm pool and session statistics')
            [CompletionResult]::new('attach', 'attach', [CompletionResultType]::ParameterValue, 'Attach this terminal to a session by id')
            [CompletionResult]::new('exec', 'exec', [CompletionResultType]::ParameterValue, 'Run a command inside a session''s sandbox')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Send one message to an API agent (or session) and print the reply')
            [CompletionResult]::new('chat', 'chat', [CompletionResultType]::ParameterValue, 'Chat with an API agent: a line-editing REPL over the message API')
            [CompletionResult]::new('doctor', 'doctor', [CompletionResultType]::ParameterValue, 'Show which harness tools are installed for local sandboxes, and how to install the others')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Write man pages')
            [CompletionResult]::new('harness', 'harness', [CompletionResultType]::ParameterValue, 'Run a sandbox''s harness (started by `lap serve`)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lap;help;serve' {
            break
        }
        'lap;help;login' {
            break
        }
        'lap;help;logout' {
            break
        }
        'lap;help;config' {
            break
        }
        'lap;help;agents' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List agents, newest first')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one agent')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an agent')
            [CompletionResult]::new('edit', 'edit', [CompletionResultType]::ParameterValue, 'Change an agent; flags not given leave their field alone')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete an agent; its live sessions are stopped first')
            break
        }
        'lap;help;agents;list' {
            break
        }
        'lap;help;agents;show' {
            break
        }
        'lap;help;agents;create' {
            break
        }
        'lap;help;agents;edit' {
            break
        }
        'lap;help;agents;delete' {
            break
        }
        'lap;help;sessions' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List sessions, newest first')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show one session')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Start a session of an agent and wait until it is ready')
            [CompletionResult]::new('egress', 'egress', [CompletionResultType]::ParameterValue, 'Show what went through a session''s vault: requests, swaps, blocks')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Stop a session: its sandbox is deleted')
            break
        }
        'lap;help;sessions;list' {
            break
        }
        'lap;help;sessions;show' {
            break
        }
        'lap;help;sessions;create' {
            break
        }
        'lap;help;sessions;egress' {
            break
        }
        'lap;help;sessions;delete' {
            break
        }
        'lap;help;vault' {
            [CompletionResult]::new('ca', 'ca', [CompletionResultType]::ParameterValue, 'Print the vault CA certificate (PEM) that sandboxes trust for intercepted HTTPS')
            [CompletionResult]::new('sidecar', 'sidecar', [CompletionResultType]::ParameterValue, 'Run the vault standalone, as a sandbox pod''s sidecar (Kubernetes backend)')
            break
        }
        'lap;help;vault;ca' {
            break
        }
        'lap;help;vault;sidecar' {
            break
        }
        'lap;help;admin' {
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'Show the warm pool and sessions at a glance')
            break
        }
        'lap;help;admin;stats' {
            break
        }
        'lap;help;attach' {
            break
        }
        'lap;help;exec' {
            break
        }
        'lap;help;send' {
            break
        }
        'lap;help;chat' {
            break
        }
        'lap;help;doctor' {
            break
        }
        'lap;help;completions' {
            break
        }
        'lap;help;man' {
            break
        }
        'lap;help;harness' {
            break
        }
        'lap;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
