//! `sipauth`: the SIP authentication edge and its control plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sipauth_agent::config::{Config, LogFormat, XdpMode};

#[derive(Parser)]
#[command(
    name = "sipauth",
    version,
    about = "SIP authentication edge with an XDP fast path"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Control plane and edge in one process: the REST API and store, SIP
    /// over UDP and TCP, the XDP program, /metrics and /admin.
    Run(RunArgs),
    /// The control plane only: REST API, store, snapshots for edges.
    Control(RunArgs),
    /// An edge only, following a control plane (`--control`, `--token`).
    Edge(RunArgs),
    /// Account management.
    #[command(subcommand)]
    Account(AccountCmd),
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account and print its auth_id and auth_token (shown once).
    Create {
        /// TOML configuration file (for control.database).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Database URL (control.database).
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// A name for the account.
        #[arg(long, default_value = "")]
        name: String,
        /// Print JSON: {"auth_id": ..., "auth_token": ...}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML configuration file; every setting has a default, and the flags
    /// below override the file. `--print-config` shows the result.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to take SIP on, UDP and TCP (repeat for several; replaces
    /// `sip.listen`). Default: 0.0.0.0:5060 and [::]:5060.
    #[arg(long = "sip-listen", value_name = "ADDR:PORT")]
    sip_listen: Vec<SocketAddr>,
    /// SIP domain of application URIs and digest realm (`sip.domain`).
    /// Default: app.plivo.com.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Address of the API, /metrics and /admin (`http.listen`).
    /// Default: 127.0.0.1:8080.
    #[arg(long = "http-listen", value_name = "ADDR:PORT")]
    http_listen: Option<SocketAddr>,
    /// File whose first line is the admin bearer token
    /// (`admin.token_file`). Without a token the admin endpoints are off.
    #[arg(long = "admin-token-file", value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Database (`control.database`): sqlite://PATH or postgres://...
    /// Default: `sqlite:///var/lib/sipauth/sipauth.db`.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Control plane to follow (`edge.control_url`; `sipauth edge`).
    #[arg(long = "control", value_name = "URL")]
    control_url: Option<String>,
    /// The control plane's edge token (`edge.token`; `sipauth edge`).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Redis of the fleet this edge joins (`cluster.redis_url`):
    /// redis://[:password@]host:port/db or rediss://. Default: none.
    #[arg(long = "redis", value_name = "URL")]
    redis: Option<String>,
    /// XDP mode (`xdp.mode`): auto = native, falling back to generic;
    /// native; generic; off = user space only.
    #[arg(long = "xdp-mode", value_name = "MODE", value_parser = parse_mode)]
    xdp_mode: Option<XdpMode>,
    /// Interface to attach XDP to (repeat for several; replaces
    /// `xdp.interfaces`). Default: the interface of the default route.
    #[arg(long = "xdp-interface", value_name = "IFACE")]
    xdp_interface: Vec<String>,
    /// Packets per second from locked-out sources still passed to user
    /// space, all together (`xdp.budget_per_sec`; 0 = drop all). Default: 10.
    #[arg(long = "xdp-budget", value_name = "PPS")]
    xdp_budget: Option<u32>,
    /// bpffs directory for the pinned maps (`xdp.pin_dir`).
    /// Default: /sys/fs/bpf/sipauth.
    #[arg(long = "pin-dir", value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Log filter (`log.filter`), e.g. `info` or `sipauth_edge=debug`.
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Log format (`log.format`): text, or json (one object per line).
    #[arg(long = "log-format", value_name = "FORMAT", value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn parse_mode(s: &str) -> Result<XdpMode, String> {
    match s {
        "auto" => Ok(XdpMode::Auto),
        "native" => Ok(XdpMode::Native),
        "generic" => Ok(XdpMode::Generic),
        "off" => Ok(XdpMode::Off),
        _ => Err("one of auto, native, generic, off".to_owned()),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("text or json".to_owned()),
    }
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    })
}

impl RunArgs {
    fn config(self) -> anyhow::Result<(Config, bool)> {
        let mut cfg = load(self.config.as_ref())?;
        if !self.sip_listen.is_empty() {
            cfg.sip.listen = self.sip_listen;
        }
        if let Some(d) = self.domain {
            cfg.sip.domain = d;
        }
        if let Some(a) = self.http_listen {
            cfg.http.listen = a;
        }
        if self.admin_token_file.is_some() {
            cfg.admin.token_file = self.admin_token_file;
        }
        if let Some(d) = self.database {
            cfg.control.database = d;
        }
        if let Some(u) = self.control_url {
            cfg.edge.control_url = u;
        }
        if let Some(t) = self.token {
            cfg.edge.token = t;
        }
        if let Some(u) = self.redis {
            cfg.cluster.redis_url = u;
        }
        if let Some(m) = self.xdp_mode {
            cfg.xdp.mode = m;
        }
        if !self.xdp_interface.is_empty() {
            cfg.xdp.interfaces = self.xdp_interface;
        }
        if let Some(b) = self.xdp_budget {
            cfg.xdp.budget_per_sec = b;
        }
        if let Some(p) = self.pin_dir {
            cfg.xdp.pin_dir = p;
        }
        if let Some(l) = self.log {
            cfg.log.filter = l;
        }
        if let Some(f) = self.log_format {
            cfg.log.format = f;
        }
        Ok((cfg, self.print_config))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// mimalloc in place of glibc's malloc: the edge allocates on one thread
/// and frees on another all the time (a request parsed on the socket task,
/// its call finished on a worker), where glibc's arenas spend a fifth of the
/// edge's CPU consolidating and unlinking chunks (perf, inbound benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (args, which): (RunArgs, fn(Config) -> _) = match cli.command {
        Command::Run(a) => (a, |c| {
            Box::pin(sipauth_agent::run::run(c))
                as std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>>>>
        }),
        Command::Control(a) => (a, |c| Box::pin(sipauth_agent::run::control(c)) as _),
        Command::Edge(a) => (a, |c| Box::pin(sipauth_agent::run::edge(c)) as _),
        Command::Account(AccountCmd::Create {
            config,
            database,
            name,
            json,
        }) => {
            let mut cfg = load(config.as_ref())?;
            if let Some(d) = database {
                cfg.control.database = d;
            }
            init_logging("warn", cfg.log.format)?;
            return runtime()?.block_on(create_account(cfg, &name, json));
        }
    };
    let (cfg, print) = args.config()?;
    if print {
        print!("{}", toml::to_string_pretty(&cfg)?);
        return Ok(());
    }
    let cfg = cfg.finish()?;
    init_logging(&cfg.log.filter, cfg.log.format)?;
    runtime()?.block_on(which(cfg))
}

async fn create_account(cfg: Config, name: &str, json: bool) -> anyhow::Result<()> {
    use sipauth_control::ControlState;
    use sipauth_store::Store;
    let store = Store::open(&cfg.control.database).await?;
    let state = ControlState::new(store, cfg.sip.domain.clone(), String::new()).await?;
    let acct = sipauth_control::create_account(&state, name, None)
        .await?
        .context("account id collision; run again")?;
    if json {
        println!("{}", serde_json::to_string(&acct)?);
    } else {
        println!(
            "auth_id:    {}\nauth_token: {}\n(the token is shown only now)",
            acct.auth_id, acct.auth_token
        );
    }
    Ok(())
}

fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    let output = sipauth_agent::logging::Output::stderr(format, journal_stream.as_deref());
    Ok(sipauth_agent::logging::init(filter, output)?)
}
