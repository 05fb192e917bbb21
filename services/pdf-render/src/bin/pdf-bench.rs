//! Typst against Chromium for the same 3-page proposal, measured in one run:
//! - typst (this crate's renderer, warm process),
//! - typst in the sandboxed worker pool pdf-render uses (a warm `pdf-render-worker` process,
//!   request and PDF over its pipes), interleaved document by document with the series above,
//! - Chromium kept warm across documents (playwright-core, as Gotenberg runs it),
//! - one Chromium process per document (`chromium --headless --print-to-pdf`).
//!
//!   scripts/bench-pdf.sh          (installs playwright-core, builds --release, runs this)

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{Context, bail};
use clap::Parser;
use pdf_render::{
    render::{DEFAULT_TEMPLATE, RenderInput, render},
    sandbox::{self, ByteSize, protocol::RenderRequest},
};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Documents per measured series.
    #[arg(long, default_value_t = 40)]
    documents: usize,
    /// Documents for the process-per-document series (each costs about a second).
    #[arg(long, default_value_t = 10)]
    process_documents: usize,
    /// Folder with node_modules/playwright-core.
    #[arg(long, env = "FOLIO_TOOLS_DIR", default_value = "/var/cache/folio-tools")]
    tools_dir: PathBuf,
    #[arg(long, env = "CHROMIUM", default_value = "/usr/bin/chromium")]
    chromium: PathBuf,
    /// Only typst in-process against typst in the sandbox (no Chromium needed).
    #[arg(long)]
    typst_only: bool,
}

const ITEMS: usize = 62;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = proposal_data();
    let input = RenderInput {
        template: DEFAULT_TEMPLATE,
        data: &data,
        logo_svg: None,
        date: time::macros::date!(2026 - 11 - 26),
        ident: "folio/bench/1".into(),
        original_pdf: None,
    };
    let warm = render(&input)?;
    let again = render(&input)?;
    assert_eq!(warm.sha256, again.sha256, "deterministic");
    if warm.pages != 3 {
        bail!("the benchmark document must be 3 pages, typst made {}", warm.pages);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let pool = runtime.block_on(sandbox::Pool::start(sandbox::Settings {
        program: sandbox::locate_worker(None)?,
        memory: ByteSize::mib(256),
        time: std::time::Duration::from_secs(10),
        workers: 1,
    }))?;
    let request = |data: &serde_json::Value, ident: String| RenderRequest {
        template: DEFAULT_TEMPLATE.to_owned(),
        data: data.clone(),
        logo_svg: None,
        date: input.date,
        ident,
        original_pdf: None,
    };
    let sandboxed = runtime.block_on(pool.render(&request(&data, "folio/bench/1".into())))?;
    assert_eq!(sandboxed.sha256, warm.sha256, "the sandbox renders the same bytes");
    // Each measured document differs (as every job does), and the memo cache is trimmed after
    // each one exactly as the worker does, so typst cannot answer from its cache. The two typst
    // series alternate document by document, so neither gets the quieter half of the run.
    let mut typst_ms = Vec::new();
    let mut sandbox_ms = Vec::new();
    for n in 0..args.documents {
        let mut varied = data.clone();
        varied["proposal"]["number"] = json!(format!("{n:08X}"));
        varied["client"]["name"] = json!(format!("Client {n}"));
        let input = RenderInput { data: &varied, ident: format!("folio/bench/{n}"), ..input };
        let started = Instant::now();
        let pdf = render(&input)?;
        comemo::evict(10);
        typst_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(pdf.pages, 3);

        // Includes what the pool adds: encoding the request, the pipes, and the PDF coming back.
        let request = request(&varied, format!("folio/bench/{n}"));
        let started = Instant::now();
        let boxed = runtime.block_on(pool.render(&request))?;
        sandbox_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(boxed.sha256, pdf.sha256, "the sandbox renders the same bytes");
    }
    let typst = stats(&typst_ms);
    let boxed = stats(&sandbox_ms);
    println!("3-page proposal ({ITEMS} line items), {} documents per series", args.documents);
    println!("{:<34} {:>9} {:>9} {:>9}", "typst", "p50 ms", "p99 ms", "docs/s");
    for (name, s) in [("in-process (warm)", typst), ("sandboxed worker pool (warm)", boxed)] {
        println!("{name:<34} {:>9.1} {:>9.1} {:>9.1}", s.p50, s.p99, s.per_second);
    }
    println!("sandboxed / in-process: p50 {:.2}x, p99 {:.2}x", boxed.p50 / typst.p50, boxed.p99 / typst.p99);
    println!("most heap one sandboxed render used: {:.1} MiB", pool.heap_peak() as f64 / 1048576.0);
    if args.typst_only {
        return Ok(());
    }

    let dir = std::env::temp_dir().join(format!("folio-pdf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let html_path = dir.join("proposal.html");
    std::fs::write(&html_path, proposal_html(&data))?;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/chromium.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(&html_path)
        .arg(args.documents.to_string())
        .env("NODE_PATH", args.tools_dir.join("node_modules"))
        .env("CHROMIUM", &args.chromium)
        .current_dir(&args.tools_dir)
        .output()
        .context("run node (playwright-core)")?;
    if !out.status.success() {
        bail!("chromium (warm) failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("parse the chromium report")?;
    let warm_ms: Vec<f64> = report["ms"].as_array().into_iter().flatten().filter_map(|v| v.as_f64()).collect();
    let chromium_pages = report["pages"].as_u64().unwrap_or(0);

    let mut process_ms = Vec::new();
    for i in 0..args.process_documents {
        let pdf = dir.join(format!("cold-{i}.pdf"));
        let profile = dir.join(format!("profile-{i}"));
        let started = Instant::now();
        let status = Command::new(&args.chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args([
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-pdf-header-footer",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--print-to-pdf={}", pdf.display()))
            .arg(format!("file://{}", html_path.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("run chromium")?;
        process_ms.push(started.elapsed().as_secs_f64() * 1e3);
        if !status.success() || !pdf.exists() {
            bail!("chromium --print-to-pdf failed");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!("3-page proposal ({ITEMS} line items); typst {} pages, chromium {chromium_pages} pages", warm.pages);
    println!("{:<34} {:>9} {:>9} {:>9} {:>13}", "renderer", "p50 ms", "p99 ms", "docs/s", "typst speedup");
    for (name, s) in [
        ("typst (library, warm process)", typst),
        ("chromium warm (playwright-core)", stats(&warm_ms)),
        ("chromium process per document", stats(&process_ms)),
    ] {
        println!("{name:<34} {:>9.1} {:>9.1} {:>9.1} {:>12.1}x", s.p50, s.p99, s.per_second, s.p50 / typst.p50);
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
    per_second: f64,
}

fn stats(ms: &[f64]) -> Stats {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    Stats { p50: at(0.5), p99: at(0.99), per_second: 1e3 * ms.len() as f64 / ms.iter().sum::<f64>() }
}

fn proposal_data() -> serde_json::Value {
    let items: Vec<_> = (1..=ITEMS)
        .map(|n| {
            json!({"position": n, "description": format!("Sprint {n}: feature work, QA and release"), "quantity": "40",
                   "unit_price": "145.00", "tax_rate": "19 %", "subtotal": "5,800.00", "tax": "1,102.00"})
        })
        .collect();
    json!({
        "agency": {"name": "Northwind Studio", "brand_color": "#0b6e4f", "has_logo": false},
        "proposal": {"id": "bench", "number": "01A2169C", "title": "Fleet dashboard MVP", "version": 1, "currency": "EUR",
            "date": "26 November 2026", "valid_until": "31 March 2027",
            "content": "Thank you for considering Northwind Studio. ".repeat(12) + "\n\n" + &"We will design, build and launch the dashboard in sprints. ".repeat(10),
            "terms": "50 % on acceptance, 50 % on delivery. Payment within 30 days of invoice."},
        "client": {"name": "Tomás Novak", "company": "Orbit Logistics", "email": "tomas@orbit.example"},
        "owner": {"name": "María Álvarez", "email": "maria@northwind.example"},
        "items": items,
        "totals": {"subtotal": "220,400.00", "tax": "41,876.00", "total": "262,276.00"},
    })
}

fn esc(v: &serde_json::Value) -> String {
    v.as_str().map(|s| s.to_string()).unwrap_or_else(|| v.to_string()).replace('&', "&amp;").replace('<', "&lt;")
}

/// The same document as the typst template, as the HTML a Gotenberg user would print.
fn proposal_html(d: &serde_json::Value) -> String {
    let rows: String = d["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            format!(
                "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                esc(&i["position"]), esc(&i["description"]), esc(&i["quantity"]), esc(&i["unit_price"]), esc(&i["tax_rate"]), esc(&i["subtotal"])
            )
        })
        .collect();
    let p = &d["proposal"];
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><style>
body{{font-family:"DejaVu Sans",sans-serif;font-size:9.5pt;margin:0}}
.brand{{color:#0b6e4f}} h1{{font-size:24pt;margin:.8cm 0 .5cm}} h2{{font-size:11pt;color:#0b6e4f;text-transform:uppercase;margin-top:1.2em}}
.head{{display:flex;justify-content:space-between;border-bottom:2.5pt solid #0b6e4f;padding-bottom:.2cm}}
.cols{{display:flex;gap:.8cm}} .cols div{{flex:1}} .label{{font-size:7.5pt;color:#6e6e6e;text-transform:uppercase}}
table{{width:100%;border-collapse:collapse}} thead{{display:table-header-group}} th{{background:#0b6e4f;color:#fff;font-size:8pt;text-align:left;padding:5px 6px}}
td{{padding:5px 6px}} tr:nth-child(even) td{{background:#f6f6f6}} .n{{text-align:right}} tr{{break-inside:avoid}}
.totals{{width:60%;margin-left:40%;break-inside:avoid}} .totals td{{background:none!important}} .total td{{font-size:12pt;font-weight:bold;border-top:1pt solid #0b6e4f}}
.sign{{display:flex;gap:1.5cm;margin-top:1.2cm;break-inside:avoid}} .sign div{{flex:1}} .line{{border-bottom:.6pt solid #000;height:1.4cm}}
</style></head><body>
<div class="head"><b class="brand" style="font-size:17pt">{agency}</b><span class="label">{agency}<br>Proposal {number}</span></div>
<h1>{title}</h1>
<div class="cols"><div><span class="label">Prepared for</span><br><b>{client}</b><br>{company}<br>{email}</div>
<div><span class="label">Prepared by</span><br><b>{owner}</b><br>{agency}<br>{owner_email}</div>
<div><span class="label">Date</span><br>{date}<br><span class="label">Valid until</span><br>{valid}</div></div>
<h2>Introduction</h2><p>{content}</p>
<h2>Investment</h2><table><thead><tr><th>#</th><th>Description</th><th class=n>Qty</th><th class=n>Unit price ({cur})</th><th class=n>Tax</th><th class=n>Amount ({cur})</th></tr></thead><tbody>{rows}</tbody></table>
<table class="totals"><tr><td>Subtotal</td><td class=n>{sub}</td></tr><tr><td>Tax</td><td class=n>{tax}</td></tr><tr class="total"><td>Total ({cur})</td><td class=n>{total}</td></tr></table>
<h2>Terms</h2><p>{terms}</p><p>This proposal is valid until {valid}.</p>
<div class="sign"><div><span class="label">Accepted for {company}</span><div class="line"></div></div><div><span class="label">For {agency}</span><div class="line"></div></div></div>
</body></html>"#,
        agency = esc(&d["agency"]["name"]),
        number = esc(&p["number"]),
        title = esc(&p["title"]),
        client = esc(&d["client"]["name"]),
        company = esc(&d["client"]["company"]),
        email = esc(&d["client"]["email"]),
        owner = esc(&d["owner"]["name"]),
        owner_email = esc(&d["owner"]["email"]),
        date = esc(&p["date"]),
        valid = esc(&p["valid_until"]),
        content = esc(&p["content"]).replace("\n\n", "</p><p>"),
        cur = esc(&p["currency"]),
        terms = esc(&p["terms"]),
        sub = esc(&d["totals"]["subtotal"]),
        tax = esc(&d["totals"]["tax"]),
        total = esc(&d["totals"]["total"]),
    )
}
