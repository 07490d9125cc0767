//! `ferrite-lab`: backend server, probing client, connect-rate load generator and the
//! benchmark harness behind `make bench`.

mod bench;
mod demo;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use ferrite_lab::probe::{Limit, ProbeConfig, Proto, probe};
use ferrite_lab::report::ClientReport;
use ferrite_lab::serve::{Server, ServerConfig, TcpMode};

/// Test and benchmark tool for ferrite's netns labs.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(ServeArgs),
    Client(ClientArgs),
    ConnectRate(ConnectRateArgs),
    Bench(bench::BenchArgs),
    Cleanup(CleanupArgs),
    Demo(demo::DemoArgs),
    Garbage(GarbageArgs),
    HttpGet(HttpGetArgs),
}

/// Answer every TCP connection and UDP datagram with NAME (and, with --echo-peer, the
/// client address this server sees) and a newline; HTTP listeners answer every request so.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct ServeArgs {
    /// the name to answer with
    #[argh(option)]
    name: String,
    /// TCP address to listen on (repeatable), e.g. 0.0.0.0:8080 or [::]:8080
    #[argh(option)]
    tcp: Vec<SocketAddr>,
    /// UDP address to answer on (repeatable)
    #[argh(option)]
    udp: Vec<SocketAddr>,
    /// shorthand: TCP and UDP on 0.0.0.0:PORT and [::]:PORT
    #[argh(option)]
    port: Option<u16>,
    /// request/response mode: wait for the client's request (a line) before answering
    #[argh(switch)]
    request: bool,
    /// answer `NAME PEER` where PEER is the client's address as this server sees it
    #[argh(switch)]
    echo_peer: bool,
    /// HTTP/1.1 keep-alive listener (repeatable): every request gets 200 and the answer line
    #[argh(option)]
    http: Vec<SocketAddr>,
}

/// Connect (or send) repeatedly, each time on a new socket, and tally who answered.
#[derive(FromArgs)]
#[argh(subcommand, name = "client")]
struct ClientArgs {
    /// address to connect or send to
    #[argh(option)]
    target: SocketAddr,
    /// tcp or udp
    #[argh(option, default = "Proto::Tcp")]
    proto: Proto,
    /// number of attempts
    #[argh(option)]
    count: Option<u64>,
    /// keep trying for this long instead of a count
    #[argh(option)]
    duration_ms: Option<u64>,
    /// pause between attempts (default 0)
    #[argh(option, default = "0")]
    interval_ms: u64,
    /// per-attempt timeout for connect and reply (default 1000)
    #[argh(option, default = "1000")]
    timeout_ms: u64,
    /// UDP: use sendto/recvfrom on an unconnected socket and report reply source addresses
    #[argh(switch)]
    udp_unconnected: bool,
    /// send this text and a newline before reading (for `serve --request`)
    #[argh(option)]
    send: Option<String>,
    /// local address to send from
    #[argh(option)]
    bind: Option<IpAddr>,
    /// attempt N uses source port PORT+N (TCP sockets then close with RST)
    #[argh(option)]
    source_port: Option<u16>,
    /// print the report as JSON
    #[argh(switch)]
    json: bool,
}

/// TCP connect + RST-close as fast as possible; prints JSON: connects, errors, seconds, rate.
#[derive(FromArgs)]
#[argh(subcommand, name = "connect-rate")]
struct ConnectRateArgs {
    /// address to connect to (repeatable: connects rotate over the targets)
    #[argh(option)]
    target: Vec<SocketAddr>,
    /// how long to run
    #[argh(option)]
    duration_ms: u64,
    /// connecting threads (default 1)
    #[argh(option, default = "1")]
    threads: u32,
}

/// Send a catalog of malformed, unknown-port and stray frames at a frontend through an
/// `AF_PACKET` socket (run it inside the sender's netns); prints a JSON report.
#[derive(FromArgs)]
#[argh(subcommand, name = "garbage")]
struct GarbageArgs {
    /// interface to send on (default eth0)
    #[argh(option, default = "String::from(\"eth0\")")]
    iface: String,
    /// MAC of the next hop (the node that owns or routes the frontend)
    #[argh(option)]
    dst_mac: ferrite_lab::raw::Mac,
    /// source address of the packets
    #[argh(option)]
    src: IpAddr,
    /// the frontend: an LB IP or node address, with the service's TCP port
    #[argh(option)]
    target: SocketAddr,
    /// the service's UDP port at the frontend (default: the TCP port)
    #[argh(option)]
    udp_port: Option<u16>,
    /// rounds of the whole catalog (default 3)
    #[argh(option, default = "3")]
    rounds: u16,
    /// only this class: malformed, unknown-port or questionable
    #[argh(option)]
    class: Option<ferrite_lab::raw::Class>,
    /// list the catalog (kind and class) instead of sending
    #[argh(switch)]
    list: bool,
}

/// GET a path over HTTP/1.1 and print {status, headers, body} as JSON (exit 1 on errors).
#[derive(FromArgs)]
#[argh(subcommand, name = "http-get")]
struct HttpGetArgs {
    /// address to connect to
    #[argh(option)]
    target: SocketAddr,
    /// path (default /)
    #[argh(option, default = "String::from(\"/\")")]
    path: String,
    /// timeout for the whole exchange (default 2000)
    #[argh(option, default = "2000")]
    timeout_ms: u64,
}

/// Remove network namespaces and cgroups left behind by dead ferrite-lab runs.
#[derive(FromArgs)]
#[argh(subcommand, name = "cleanup")]
struct CleanupArgs {
    /// name prefix to clean (default flb, the benchmark's)
    #[argh(option, default = "String::from(\"flb\")")]
    prefix: String,
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Client(args) => client(&args),
        Command::ConnectRate(args) => connect_rate(&args),
        Command::Bench(args) => bench::main(&args),
        Command::Demo(args) => demo::main(&args),
        Command::Garbage(args) => garbage(&args),
        Command::HttpGet(args) => http_get(&args),
        Command::Cleanup(args) => match ferrite_lab::cleanup_stale(&args.prefix) {
            Ok(removed) => {
                for r in removed {
                    println!("removed {r}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferrite-lab cleanup: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let (mut tcp, mut udp) = (args.tcp.clone(), args.udp.clone());
    if let Some(port) = args.port {
        let any: [SocketAddr; 2] = [
            (std::net::Ipv4Addr::UNSPECIFIED, port).into(),
            (std::net::Ipv6Addr::UNSPECIFIED, port).into(),
        ];
        tcp.extend(any);
        udp.extend(any);
    }
    if tcp.is_empty() && udp.is_empty() && args.http.is_empty() {
        eprintln!("ferrite-lab serve: give --port or at least one --tcp, --udp or --http address");
        return ExitCode::FAILURE;
    }
    let config = ServerConfig {
        name: args.name.clone(),
        tcp,
        udp,
        http: args.http.clone(),
        mode: if args.request {
            TcpMode::Request
        } else {
            TcpMode::Banner
        },
        echo_peer: args.echo_peer,
    };
    let server = match Server::start(&config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("ferrite-lab serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    for addr in server.tcp_addrs() {
        let _ = writeln!(out, "listening tcp {addr}");
    }
    for addr in server.udp_addrs() {
        let _ = writeln!(out, "listening udp {addr}");
    }
    for addr in server.http_addrs() {
        let _ = writeln!(out, "listening http {addr}");
    }
    let _ = out.flush();
    drop(out);
    server.wait();
    ExitCode::SUCCESS
}

fn client(args: &ClientArgs) -> ExitCode {
    let limit = match (args.count, args.duration_ms) {
        (Some(n), None) => Limit::Count(n),
        (None, Some(ms)) => Limit::Duration(Duration::from_millis(ms)),
        _ => {
            eprintln!("ferrite-lab client: give exactly one of --count or --duration-ms");
            return ExitCode::FAILURE;
        }
    };
    let mut config = ProbeConfig::new(args.target, args.proto, limit);
    config.interval = Duration::from_millis(args.interval_ms);
    config.timeout = Duration::from_millis(args.timeout_ms);
    config.udp_unconnected = args.udp_unconnected;
    if let Some(text) = &args.send {
        config.payload = format!("{text}\n").into_bytes();
    }
    config.bind = args.bind;
    config.source_port = args.source_port;
    let report = probe(&config);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("reports serialize")
        );
    } else {
        print_client_report(&report);
    }
    ExitCode::SUCCESS
}

fn print_client_report(r: &ClientReport) {
    println!(
        "{} {} {}: {}/{} ok in {} ms",
        r.proto, r.mode, r.target, r.ok, r.attempts, r.elapsed_ms
    );
    for (name, n) in &r.names {
        println!("  {name}: {n}");
    }
    for (kind, n) in &r.failures {
        println!("  failed {kind}: {n}");
    }
    if let Some(s) = &r.refused_us {
        println!(
            "  refused after (us): min {} median {} p99 {} max {}",
            s.min_us, s.median_us, s.p99_us, s.max_us
        );
    }
    if !r.peers.is_empty() {
        let peers: Vec<&str> = r.peers.iter().map(String::as_str).collect();
        println!("  peers: {}", peers.join(", "));
    }
    if !r.reply_sources.is_empty() {
        let sources: Vec<&str> = r.reply_sources.iter().map(String::as_str).collect();
        println!("  reply sources: {}", sources.join(", "));
    }
    for (name, seen) in &r.peers_seen_by_server {
        let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
        println!("  {name} saw the client as: {}", seen.join(", "));
    }
}

fn garbage(args: &GarbageArgs) -> ExitCode {
    use ferrite_lab::raw::{Aim, RawSender, catalog, mac_of, send_catalog};
    if args.src.is_ipv4() != args.target.is_ipv4() {
        eprintln!("ferrite-lab garbage: --src and --target must be of one family");
        return ExitCode::FAILURE;
    }
    let src_mac = match mac_of(&args.iface) {
        Ok(mac) => mac,
        Err(e) => {
            eprintln!("ferrite-lab garbage: MAC of {}: {e}", args.iface);
            return ExitCode::FAILURE;
        }
    };
    let aim = Aim {
        src_mac,
        dst_mac: args.dst_mac,
        src: args.src,
        dst: args.target.ip(),
        tcp_port: args.target.port(),
        udp_port: args.udp_port.unwrap_or(args.target.port()),
    };
    if args.list {
        for frame in catalog(&aim, 0) {
            if args.class.is_none_or(|c| c == frame.class) {
                println!(
                    "{:<14} {:>4} bytes  {}",
                    frame.class,
                    frame.bytes.len(),
                    frame.kind
                );
            }
        }
        return ExitCode::SUCCESS;
    }
    let sender = match RawSender::open(&args.iface) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "ferrite-lab garbage: AF_PACKET socket on {}: {e}",
                args.iface
            );
            return ExitCode::FAILURE;
        }
    };
    let report = send_catalog(&sender, &aim, args.rounds, args.class);
    println!(
        "{}",
        serde_json::to_string(&report).expect("reports serialize")
    );
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn http_get(args: &HttpGetArgs) -> ExitCode {
    match ferrite_lab::http::get(
        args.target,
        &args.path,
        Duration::from_millis(args.timeout_ms),
    ) {
        Ok(r) => {
            println!(
                "{}",
                serde_json::to_string(&r).expect("responses serialize")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrite-lab http-get {}{}: {e}", args.target, args.path);
            ExitCode::FAILURE
        }
    }
}

fn connect_rate(args: &ConnectRateArgs) -> ExitCode {
    if args.target.is_empty() {
        eprintln!("ferrite-lab connect-rate: give at least one --target");
        return ExitCode::FAILURE;
    }
    let report = ferrite_lab::rate::connect_rate(
        &args.target,
        Duration::from_millis(args.duration_ms),
        args.threads,
    );
    println!(
        "{}",
        serde_json::to_string(&report).expect("reports serialize")
    );
    ExitCode::SUCCESS
}
