//! `observastack openapi`: writes the OpenAPI document of every service, generated from the
//! services' code, into `docs/api/`, or checks that the checked-in documents still match.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use gateway::GatewayRole;

use crate::ui;

#[derive(Debug, Args)]
pub struct OpenapiArgs {
    /// The folder the documents go to, one `<service>.json` each.
    #[arg(long, default_value = "docs/api")]
    pub out: PathBuf,
    /// Write nothing; exit 1 when a document in `--out` is missing or differs from the code.
    #[arg(long)]
    pub check: bool,
}

/// Every service's document as `(file name, pretty JSON with a trailing newline)`. Each
/// service's `/config` routes carry its own config schema, the one `GET /config/schema` serves;
/// the gateways' forwarded routes carry the shop's and the orchestrator's descriptions.
pub fn documents() -> anyhow::Result<Vec<(String, String)>> {
    use service_kit::config::json_schema;
    // The shop serves the shared internal routes on its own listener, so its document has them;
    // the gateways serve them on their admin listeners, described once in `internal.json`.
    let with_config = |mut doc: serde_json::Value, config: serde_json::Value, name: &str| {
        service_kit::openapi::add_config_schema(&mut doc, config)
            .map_err(|e| anyhow::anyhow!("the config schema of {name}: {e}"))?;
        anyhow::Ok(doc)
    };
    let mut shop = shop::openapi();
    shop.merge(service_kit::openapi::internal_api());
    let shop = with_config(serde_json::to_value(shop)?, json_schema::<shop::config::ShopConfig>()?, "shop")?;
    let mut runner = runner::openapi();
    runner.merge(service_kit::openapi::internal_api());
    let runner = with_config(serde_json::to_value(runner)?, json_schema::<runner::config::RunnerConfig>()?, "runner")?;
    let mut orchestrator = orchestrator::openapi();
    orchestrator.merge(service_kit::openapi::internal_api());
    let orchestrator = with_config(
        serde_json::to_value(orchestrator)?,
        json_schema::<orchestrator::config::OrchestratorConfig>()?,
        "orchestrator",
    )?;
    // Every gateway role has the same config shape (only which fault keys `check` accepts
    // differs), so one document describes the three admin listeners.
    let mut internal = service_kit::openapi::internal_api();
    internal.info.title = "ObservaStack gateways' admin listener".to_owned();
    internal.info.description = Some(
        "The routes every service serves (`/healthz`, `/readyz`, `/metrics`, `/config`), here with the \
         gateways' config; each service's own document has them with its config."
            .to_owned(),
    );
    let internal =
        with_config(serde_json::to_value(internal)?, json_schema::<gateway::GatewayConfig>()?, "the gateways")?;
    let mut docs = Vec::new();
    for role in [GatewayRole::User, GatewayRole::Control, GatewayRole::Observability] {
        let doc = gateway::openapi::document(role, &shop, &orchestrator)
            .map_err(|e| anyhow::anyhow!("the {} document: {e}", role.service_name()))?;
        docs.push((format!("{}.json", role.service_name()), doc));
    }
    docs.splice(
        0..0,
        [
            ("shop.json".to_owned(), shop),
            ("orchestrator.json".to_owned(), orchestrator),
            ("runner.json".to_owned(), runner),
            ("internal.json".to_owned(), internal),
        ],
    );
    docs.into_iter()
        .map(|(name, mut doc)| {
            service_kit::openapi::fix_link_names(&mut doc);
            let mut text = serde_json::to_string_pretty(&doc).with_context(|| format!("serialising {name}"))?;
            text.push('\n');
            Ok((name, text))
        })
        .collect()
}

/// The names of the documents in `dir` that are missing or differ from the code.
pub fn stale_documents(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut stale = Vec::new();
    for (name, text) in documents()? {
        match std::fs::read_to_string(dir.join(&name)) {
            Ok(on_disk) if on_disk == text => {}
            _ => stale.push(name),
        }
    }
    Ok(stale)
}

pub fn run(args: OpenapiArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        let stale = stale_documents(&args.out)?;
        if stale.is_empty() {
            ui::done(&format!("OpenAPI documents in {} match the code", args.out.display()));
            return Ok(ExitCode::SUCCESS);
        }
        ui::error(&format!(
            "{} out of date in {}: {}; regenerate with `observastack openapi --out {}`",
            if stale.len() == 1 { "this document is" } else { "these documents are" },
            args.out.display(),
            stale.join(", "),
            args.out.display()
        ));
        return Ok(ExitCode::FAILURE);
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for (name, text) in documents()? {
        let path = args.out.join(&name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        ui::done(&format!("wrote {}", path.display()));
    }
    Ok(ExitCode::SUCCESS)
}
