//! The README tour, for real.

use super::*;

pub(crate) struct Network {
    pub(crate) child: tokio::process::Child,
    pub(crate) registrar: String,
    pub(crate) relay: String,
}

/// `rmb up` on free ports with `data` as its data dir; returns once it prints that it
/// is running.
pub(crate) async fn rmb_up(data: &Path, log: &Path) -> Network {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmb"))
        .args([
            "up",
            "--registrar-port",
            "0",
            "--relay-port",
            "0",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("RMB_UP_DIR")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("rmb up's log"))
        .kill_on_drop(true)
        .spawn()
        .expect("rmb up starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("Ctrl-C stops the network") {
                return true;
            }
        }
        false
    };
    let running = tokio::time::timeout(WAIT, read).await.unwrap_or(false);
    let stderr = || std::fs::read_to_string(log).unwrap_or_default();
    assert!(running, "rmb up did not start:\n{printed}\n{}", stderr());
    assert!(printed.contains("demo call succeeded"), "{printed}");
    let value = |name: &str| {
        printed
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("rmb up printed no {name} line:\n{printed}"))
            .to_string()
    };
    let (registrar, relay) = (value("registrar"), value("relay"));
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Network {
        child,
        registrar,
        relay,
    }
}

pub(crate) fn host_port(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_string()
}

pub(crate) fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where a documented command's output must contain `# → text`.
pub(crate) fn expectation(comment: &Option<String>) -> Option<String> {
    comment
        .as_deref()
        .and_then(|c| c.strip_prefix('→'))
        .map(squash)
}

pub(crate) struct Tour {
    pub(crate) dir: PathBuf,
    pub(crate) net: Network,
    /// Documented address → actual address.
    pub(crate) addresses: Vec<(&'static str, String)>,
    pub(crate) redis: Option<rmb_testkit::RedisServer>,
    pub(crate) peers: Vec<rmb_peer::Peer>,
    pub(crate) python_ok: Option<bool>,
    pub(crate) ran: Vec<String>,
}

impl Tour {
    pub(crate) fn substitute(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (documented, actual) in &self.addresses {
            text = text.replace(documented, actual);
        }
        text
    }

    pub(crate) fn redis(&mut self) -> String {
        if self.redis.is_none() {
            let redis = rmb_testkit::RedisServer::start().expect("redis-server for the tour");
            self.addresses
                .push(("127.0.0.1:6379", format!("127.0.0.1:{}", redis.port())));
            self.redis = Some(redis);
        }
        self.redis.as_ref().unwrap().url()
    }

    pub(crate) async fn python_available(&mut self) -> bool {
        if self.python_ok.is_none() {
            let ok = Command::new("python3")
                .args(["-c", "import redis"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            self.python_ok = Some(ok);
        }
        self.python_ok == Some(true)
    }

    /// `$(cat FILE)` → the file's content, as the shell would.
    pub(crate) fn expand(&self, word: &str) -> String {
        let mut word = word.to_string();
        while let Some(start) = word.find("$(cat ") {
            let end = word[start..]
                .find(')')
                .map(|e| start + e)
                .expect("closing )");
            let path = self.dir.join(word[start + 6..end].trim());
            let content = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            word.replace_range(start..=end, content.trim());
        }
        word
    }

    pub(crate) async fn run_line(&mut self, at: &str, line: &str) {
        let crates: BTreeSet<String> = ["rmb-core", "rmb-gone"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let arch = "| `rmb-core` | x |\n| `rmb-new` | y |\nsee route.rs and nowhere.rs\n";
        let sources = vec!["crates/rmb-relay/src/route.rs".to_string()];
        let arch = architecture_problems(arch, &crates, &sources);
        assert_eq!(arch.len(), 2, "{arch:#?}"); // the crate lists differ; nowhere.rs

        let (words, comment) = shell_words(&self.substitute(line));
        let expect = expectation(&comment);
        let env: Vec<(String, String)> = words
            .iter()
            .take_while(|w| is_assignment(w))
            .map(|w| {
                let (k, v) = w.split_once('=').unwrap();
                (k.to_string(), self.expand(v))
            })
            .collect();
        let args: Vec<String> = words[env.len()..].iter().map(|w| self.expand(w)).collect();
        let joined = args.join(" ");
        self.ran.push(joined.clone());
        let output = match args.first().map(String::as_str) {
            Some("scripts/demo") => None, // the network this tour runs against
            Some("cargo") if joined.starts_with("cargo install --path crates/") => None,
            Some("pip" | "pip3") if joined.ends_with("install redis") => None,
            Some("redis-server") => {
                self.redis();
                None
            }
            Some("rmb") => Some(self.rmb(at, &args[1..]).await),
            Some("rmb-peer") => {
                self.start_peer(at, &args[1..]).await;
                None
            }
            Some("cargo") if joined.starts_with("cargo run -p rmb-sdk --example call -- ") => {
                Some(self.sdk_call(at, &env, &args[7..]).await)
            }
            _ => panic!("{at}: the tour harness does not know how to run `{line}`"),
        };
        if let Some(want) = expect {
            let got = output.unwrap_or_else(|| panic!("{at}: `{line}` has no output to check"));
            assert!(
                squash(&got).contains(&want),
                "{at}: `{line}` printed\n{got}\nwhich does not contain {want:?}"
            );
        }
    }

    pub(crate) async fn rmb(&self, at: &str, args: &[String]) -> String {
        let out = tokio::time::timeout(
            WAIT,
            Command::new(env!("CARGO_BIN_EXE_rmb"))
                .args(args)
                .current_dir(&self.dir)
                .env("RMB_REGISTRAR", &self.net.registrar)
                .env("RMB_RELAY", &self.net.relay)
                .env_remove("RMB_MNEMONIC")
                .env_remove("RMB_MNEMONIC_FILE")
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{at}: rmb {args:?} did not finish"))
        .expect("rmb runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{at}: rmb {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    pub(crate) fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    }

    pub(crate) async fn start_peer(&mut self, at: &str, args: &[String]) {
        let secret = match (
            Self::flag(args, "--mnemonic-file"),
            Self::flag(args, "--mnemonic"),
        ) {
            (Some(file), _) => std::fs::read_to_string(self.dir.join(file))
                .unwrap_or_else(|e| panic!("{at}: {file}: {e}"))
                .trim()
                .to_string(),
            (None, Some(m)) => m.to_string(),
            (None, None) => panic!("{at}: rmb-peer without a secret"),
        };
        let key_type: KeyType = Self::flag(args, "--key-type")
            .unwrap_or("sr25519")
            .parse()
            .unwrap();
        let relays: Vec<String> = args
            .windows(2)
            .filter(|w| w[0] == "--relay")
            .map(|w| w[1].clone())
            .collect();
        let registrar = Self::flag(args, "--registrar")
            .expect("--registrar")
            .to_string();
        let redis = Self::flag(args, "--redis").expect("--redis").to_string();
        assert!(
            self.redis
                .as_ref()
                .is_some_and(|r| host_port(&r.url()) == host_port(&redis)),
            "{at}: the tour starts rmb-peer on a Redis it did not start"
        );
        let config = rmb_peer::PeerConfig::new(secret, key_type, relays.clone(), redis, registrar);
        let peer = rmb_peer::Peer::start(config)
            .await
            .expect("rmb-peer starts");
        assert!(
            peer.client().wait_connected(relays.len(), WAIT).await,
            "{at}: rmb-peer did not connect to {relays:?}"
        );
        self.peers.push(peer);
    }

    /// What crates/rmb-sdk/examples/call.rs does, with the env and arguments shown.
    pub(crate) async fn sdk_call(
        &self,
        at: &str,
        env: &[(String, String)],
        args: &[String],
    ) -> String {
        let var = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{at}: {name} is not set on the example's line"))
        };
        let twin: u32 = args[0].parse().expect("twin id");
        let key_type: KeyType = env
            .iter()
            .find(|(k, _)| k == "RMB_KEY_TYPE")
            .map_or("sr25519", |(_, v)| v)
            .parse()
            .unwrap();
        let relays = var("RMB_RELAY");
        let client = rmb_sdk::Client::builder(var("RMB_MNEMONIC"), key_type)
            .registrar(var("RMB_REGISTRAR"))
            .relays(relays.split(',').map(str::trim))
            .build()
            .await
            .unwrap_or_else(|e| panic!("{at}: the SDK client: {e}"));
        let body = args.get(2).cloned().unwrap_or_default();
        let reply = client
            .request(twin, args[1].as_str())
            .payload(body)
            .timeout(Duration::from_secs(30))
            .call()
            .await;
        client.shutdown();
        let reply = reply.unwrap_or_else(|e| panic!("{at}: the SDK call failed: {e}"));
        String::from_utf8_lossy(&reply.payload).into_owned()
    }

    pub(crate) async fn run_python(&mut self, at: &str, code: &str) {
        if !self.python_available().await {
            eprintln!(
                "skipped {at}: python3 with the redis package is not installed (pip install redis)"
            );
            return;
        }
        let code = self.substitute(code);
        let script = self.dir.join("tour.py");
        std::fs::write(&script, &code).unwrap();
        let out = tokio::time::timeout(
            WAIT,
            Command::new("python3")
                .arg(&script)
                .current_dir(&self.dir)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{at}: the Python snippet did not finish"))
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{at}: the Python snippet failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut checked = 0;
        for line in code.lines() {
            if let Some(want) = line.trim().strip_prefix("# →") {
                checked += 1;
                assert!(
                    squash(&stdout).contains(&squash(want)),
                    "{at}: the Python snippet printed {stdout:?}, the doc says {want:?}"
                );
            }
        }
        assert!(
            checked > 0,
            "{at}: the Python snippet says nothing about its output (# → ...)"
        );
        self.ran.push("python3".into());
    }
}

#[tokio::test]
pub(crate) async fn readme_tour_runs_against_a_real_network() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let tour: Vec<Block> = parse_blocks("README.md", &readme)
        .into_iter()
        .filter(|b| b.tags.iter().any(|t| t == "tour"))
        .collect();
    assert!(tour.len() >= 3, "the README tour is missing");

    let dir = tempfile::tempdir().unwrap();
    let net = rmb_up(&dir.path().join(".rmb-up"), &dir.path().join("up.log")).await;
    let addresses = vec![
        ("127.0.0.1:8080", host_port(&net.registrar)),
        ("127.0.0.1:8081", host_port(&net.relay)),
    ];
    let mut run = Tour {
        dir: dir.path().to_path_buf(),
        net,
        addresses,
        redis: None,
        peers: Vec::new(),
        python_ok: None,
        ran: Vec::new(),
    };
    for block in &tour {
        match block.lang.as_str() {
            "python" => run.run_python(&block.at(), &block.body).await,
            _ if is_shell(block) => {
                for line in shell_lines(&block.body) {
                    run.run_line(&block.at(), &line).await;
                }
            }
            other => panic!("{}: a tour block in {other}", block.at()),
        }
    }
    for needed in [
        "scripts/demo",
        "rmb call",
        "rmb-peer",
        "cargo run -p rmb-sdk",
    ] {
        assert!(
            run.ran.iter().any(|r| r.starts_with(needed)),
            "the tour never runs {needed}: {:?}",
            run.ran
        );
    }
    for peer in run.peers.drain(..) {
        peer.shutdown().await;
    }
    let mut net = run.net;
    net.child.kill().await.unwrap();
}
