//! `session-worker trigger TYPE --url URL --secret S [--user U] [--customer
//! C] [--subscription ID] [--status S] [--livemode]`: a realistic event
//! (src/sample_event.rs), signed with S as Stripe signs, POSTed to URL as
//! Stripe posts it. Prints the answer's status and body; exit 0 on a 2xx.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::sample_event::{self, Subject};
use crate::signature;

/// Stripe waits this long for an answer too.
const TIMEOUT: Duration = Duration::from_secs(30);
/// More than any answer of ours; an answer past it is cut.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The event's type.
    #[arg(value_name = "TYPE", value_parser = clap::builder::PossibleValuesParser::new(sample_event::TYPES))]
    pub kind: String,
    /// The webhook endpoint: http(s)://HOST/webhooks/stripe.
    #[arg(long)]
    pub url: String,
    /// The endpoint's signing secret (whsec_...), as the deployment has it in
    /// STRIPE_WEBHOOK_SECRET.
    #[arg(long)]
    pub secret: String,
    /// The web app's username (client_reference_id, metadata.username).
    #[arg(long)]
    pub user: Option<String>,
    /// The Stripe customer id [default: one derived from --user].
    #[arg(long)]
    pub customer: Option<String>,
    /// The subscription id [default: one derived from --user].
    #[arg(long)]
    pub subscription: Option<String>,
    /// The subscription's status (active, past_due, canceled...), or a
    /// checkout's payment_status (paid, unpaid) [default: the type's usual].
    #[arg(long)]
    pub status: Option<String>,
    /// Send a live-mode event (`"livemode": true`), to check a deployment
    /// with STRIPE_MODE=live (which records test-mode events as
    /// `wrong_mode` and changes nothing).
    #[arg(long)]
    pub livemode: bool,
}

pub fn run(args: Args) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
    match runtime.block_on(trigger(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("session-worker: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(true)` for a 2xx answer.
async fn trigger(args: Args) -> anyhow::Result<bool> {
    let uri: Uri = args
        .url
        .parse()
        .map_err(|error| anyhow::anyhow!("--url {:?} is not a URL: {error}", args.url))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        anyhow::bail!("--url must be http(s)://HOST/..., got {:?}", args.url);
    }
    let now = chrono::Utc::now().timestamp();
    let mut subject = Subject::new(args.user, now);
    subject.customer = args.customer.unwrap_or(subject.customer);
    subject.subscription = args.subscription.unwrap_or(subject.subscription);
    subject.status = args.status;
    subject.livemode = args.livemode;
    let event = sample_event::build(&args.kind, &subject).expect("clap allows only known types");
    let body = serde_json::to_vec_pretty(&event)?;
    let signature = signature::sign(&args.secret, now, &body);
    println!(
        "{} {} (customer {}, subscription {})",
        event["type"].as_str().unwrap_or_default(),
        event["id"].as_str().unwrap_or_default(),
        subject.customer,
        subject.subscription
    );

    let request = Request::post(uri)
        .header("content-type", "application/json; charset=utf-8")
        .header(
            "user-agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        )
        .header("stripe-signature", signature)
        .body(Full::new(Bytes::from(body)))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(https);
    let response = tokio::time::timeout(TIMEOUT, client.request(request))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", TIMEOUT.as_secs()))??;
    let status = response.status();
    let answer = tokio::time::timeout(
        TIMEOUT,
        Limited::new(response.into_body(), MAX_ANSWER).collect(),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "the answer's body did not end within {} s",
            TIMEOUT.as_secs()
        )
    })?
    .map_err(|error| anyhow::anyhow!("reading the answer: {error}"))?
    .to_bytes();
    println!("{status}");
    println!("{}", String::from_utf8_lossy(&answer));
    Ok(status.is_success())
}
